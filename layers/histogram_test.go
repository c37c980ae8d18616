package layers

import (
	"errors"
	"strings"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// TestHistogramOneBinIsStandard: histogram attention with one bin puts
// every position in it, so the whole layer is standard attention: outputs
// and the gradients of the input and of every parameter to 1e-10
// (float64), in every bidirectional gradient-check setting (padded, the
// position schemes it takes, both groupings). Unpadded, with three bins it
// must differ, or the test could not fail.
func TestHistogramOneBinIsStandard(t *testing.T) {
	sup, err := SupportOf("histogram")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, st := range CheckSettings() {
		if st.Causal || sup.Allows(st.Setting()) != nil {
			continue
		}
		n++
		t.Run(st.Name, func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			want := runLayer(t, config.Component{Kind: "standard"}, st, seed)
			for _, grouping := range []string{HistogramContiguous, HistogramInterleaved} {
				got := runLayer(t, config.Component{Kind: "histogram", Options: map[string]any{"bins": 1, "grouping": grouping}}, st, seed)
				if d := relDiff(got.out, want.out); !(d <= 1e-10) {
					t.Errorf("%s: output: relative difference %g", grouping, d)
				}
				if d := relDiff(got.dx, want.dx); !(d <= 1e-10) {
					t.Errorf("%s: input gradient: relative difference %g", grouping, d)
				}
				for name, w := range want.dparams {
					g, ok := got.dparams[name]
					if !ok {
						t.Errorf("histogram has no parameter %s", name)
						continue
					}
					if d := relDiff(g, w); !(d <= 1e-10) {
						t.Errorf("%s: gradient of %s: relative difference %g", grouping, name, d)
					}
				}
				if len(got.dparams) != len(want.dparams) {
					t.Errorf("histogram has %d parameters, standard %d", len(got.dparams), len(want.dparams))
				}
			}
			if st.Padded {
				return
			}
			three := runLayer(t, config.Component{Kind: "histogram", Options: map[string]any{"bins": 3}}, st, seed)
			if d := relDiff(three.out, want.out); d < 1e-6 {
				t.Errorf("bins=3 of %d: output equals standard's (relative difference %g)", st.SeqLen, d)
			}
		})
	}
	if n < 3 {
		t.Errorf("only %d bidirectional settings checked", n)
	}
}

// TestHistogramGradCheck: the layer's gradients (input and every
// parameter) agree with finite differences with the interleaved grouping
// too (trainer gradcheck runs the contiguous CheckOptions), in the
// bidirectional settings; a seed that fails is retried (see below).
func TestHistogramGradCheck(t *testing.T) {
	for _, st := range CheckSettings() {
		if st.Causal {
			continue
		}
		st.Options = map[string]any{"bins": 2, "grouping": HistogramInterleaved}
		t.Run(st.Name, func(t *testing.T) {
			// Two intensities within the step of each other (about 1e-3 of
			// draws) swap under it, a jump finite differences cannot
			// follow: a failing seed is retried with two fresh ones, which
			// must both pass (a wrong gradient fails every seed).
			for try, failed := 0, 0; try < 1+2*failed && try < 3; try++ {
				seed := uint64(time.Now().UnixNano())
				t.Logf("seed %d", seed)
				res, err := CheckAttention("histogram", st, seed)
				if err != nil {
					if errors.Is(err, ErrNotApplicable) {
						t.Skip(err)
					}
					t.Fatal(err)
				}
				if res.Pass {
					continue
				}
				if failed++; try > 0 {
					t.Errorf("%s", res)
				} else {
					t.Logf("failed, retrying with fresh seeds (a near tie?): %s", res)
				}
			}
		})
	}
}

// TestHistogramOptions: bad options are errors naming their key; causal
// and alibi are refused by the declaration.
func TestHistogramOptions(t *testing.T) {
	st := CheckSettings()[1] // bidirectional
	for _, c := range []struct {
		opts map[string]any
		key  string
	}{
		{map[string]any{"bins": 0}, "model.attention.bins"},
		{map[string]any{"bins": -2}, "model.attention.bins"},
		{map[string]any{"bin_size": -1}, "model.attention.bin_size"},
		{map[string]any{"grouping": "frequency"}, "model.attention.grouping"},
	} {
		_, err := NewAttention(config.Component{Kind: "histogram", Options: c.opts}, st.spec())
		if err == nil {
			t.Errorf("%v: no error", c.opts)
		} else if !strings.Contains(err.Error(), c.key) {
			t.Errorf("%v: error %q does not name %s", c.opts, err, c.key)
		}
	}
	causal := CheckSettings()[0]
	if _, err := NewAttention(config.Component{Kind: "histogram"}, causal.spec()); err == nil || !strings.Contains(err.Error(), "cannot be causal") {
		t.Errorf("causal: error %v, want a refusal", err)
	}
	alibi := st
	alibi.Positional = "alibi"
	if _, err := NewAttention(config.Component{Kind: "histogram"}, alibi.spec()); err == nil || !strings.Contains(err.Error(), "model.positional") {
		t.Errorf("alibi: error %v, want a refusal", err)
	}
}

// TestHistogramBinSize: bin_size > 0 overrides bins with ceil(T /
// bin_size): the layer with bins 1 and bin_size 2 equals the one with
// bins ceil(T/2) and differs from bins 1.
func TestHistogramBinSize(t *testing.T) {
	st := CheckSettings()[1] // bidirectional, T = 5
	a, err := NewAttention(config.Component{Kind: "histogram", Options: map[string]any{"bins": 1, "bin_size": 2}}, st.spec())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ t, want int }{{5, 3}, {4, 2}, {1, 1}, {512, 256}} {
		if got := a.(*Histogram).Bins(c.t); got != c.want {
			t.Errorf("bin_size 2, T=%d: %d bins, want %d", c.t, got, c.want)
		}
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	sized := runLayer(t, config.Component{Kind: "histogram", Options: map[string]any{"bins": 1, "bin_size": 2}}, st, seed)
	three := runLayer(t, config.Component{Kind: "histogram", Options: map[string]any{"bins": 3}}, st, seed)
	one := runLayer(t, config.Component{Kind: "histogram", Options: map[string]any{"bins": 1}}, st, seed)
	if d := relDiff(sized.out, three.out); !(d <= 1e-12) {
		t.Errorf("bin_size 2 differs from bins 3 at T=5 by %g", d)
	}
	if d := relDiff(sized.out, one.out); d < 1e-6 {
		t.Errorf("bin_size 2 equals bins 1 (relative difference %g): bins not overridden", d)
	}
}

// histogramCore builds the histogram layer with opts in setting st and
// returns the name of the HistogramAttention op in its graph.
func histogramCore(t *testing.T, opts map[string]any, st CheckSetting) string {
	t.Helper()
	a, err := NewAttention(config.Component{Kind: "histogram", Options: opts}, st.spec())
	if err != nil {
		t.Fatal(err)
	}
	store, err := graph.NewStore(tensor.Float64, 1)
	if err != nil {
		t.Fatal(err)
	}
	g := G.NewGraph()
	b := store.Bind(g)
	sh := Shape{Batch: st.Batch, SeqLen: st.SeqLen, DModel: st.DModel}
	if _, err := a.Forward(NewScope(b).Sub("attn"), b.Input("x", sh.Rows(), sh.DModel), Context{Shape: sh}); err != nil {
		t.Fatal(err)
	}
	for _, n := range g.AllNodes() {
		if op := n.Op(); op != nil && strings.HasPrefix(op.String(), "HistogramAttention(") {
			return op.String()
		}
	}
	t.Fatal("no HistogramAttention core in the graph")
	return ""
}

// TestHistogramCoreOptions: the options reach the core: bins, bin_size
// over bins, the grouping, the position scheme's ALiBi flag off.
func TestHistogramCoreOptions(t *testing.T) {
	st := CheckSettings()[1] // bidirectional, T = 5
	for _, c := range []struct {
		opts map[string]any
		want []string
	}{
		{nil, []string{"bins=8,", "interleaved=false,"}},
		{map[string]any{"bins": 4, "grouping": "interleaved"}, []string{"bins=4,", "interleaved=true,"}},
		{map[string]any{"bins": 1, "bin_size": 2}, []string{"bins=3,"}},
		{map[string]any{"bins": 7, "bin_size": 5}, []string{"bins=1,"}},
	} {
		name := histogramCore(t, c.opts, st)
		for _, w := range c.want {
			if !strings.Contains(name, w) {
				t.Errorf("%v: core %s, want %s", c.opts, name, w)
			}
		}
	}
}

// TestHistogramCores: the logged score count is the sum over bins of m^2
// per sequence and head, against flash's.
func TestHistogramCores(t *testing.T) {
	st := CheckSettings()[1] // Batch 2, T = 5, 2 heads
	a, err := NewAttention(config.Component{Kind: "histogram", Options: map[string]any{"bins": 2}}, st.spec())
	if err != nil {
		t.Fatal(err)
	}
	store, err := graph.NewStore(tensor.Float64, 1)
	if err != nil {
		t.Fatal(err)
	}
	g := G.NewGraph()
	b := store.Bind(g)
	sh := Shape{Batch: st.Batch, SeqLen: st.SeqLen, DModel: st.DModel}
	log := &CoreLog{}
	if _, err := a.Forward(NewScope(b).Sub("attn"), b.Input("x", sh.Rows(), sh.DModel), Context{Shape: sh, Cores: log}); err != nil {
		t.Fatal(err)
	}
	scores, flash := log.Scores()
	if want := int64(2 * 2 * (3*3 + 2*2)); scores != want { // bins of 3 and 2
		t.Errorf("scores %d, want %d", scores, want)
	}
	if want := int64(2 * 2 * 5 * 5); flash != want {
		t.Errorf("flash scores %d, want %d", flash, want)
	}
}
