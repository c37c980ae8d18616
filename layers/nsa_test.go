package layers

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// nsaSmall are options under which the check settings' short sequences
// hold several compressed tokens and selection blocks.
func nsaSmall(window int) map[string]any {
	return map[string]any{"compress_block": 3, "compress_stride": 1, "select_block": 2, "selected": 3, "window": window}
}

// nsaGates pins the gates: w_gate = 0, and the gate biases to bias(branch)
// for branches 0 (compression), 1 (selection) and 2 (window).
func nsaGates(heads int, bias func(branch int) float64) func(*graph.Param) {
	return func(p *graph.Param) {
		d := p.Value.Data().([]float64)
		switch {
		case strings.HasSuffix(p.Name, "w_gate"):
			clear(d)
		case strings.HasSuffix(p.Name, "w_gate_b"):
			for i := range d {
				d[i] = bias(i / heads)
			}
		}
	}
}

// TestNSAWindowOnlyIsSlidingWindow: with the compression and selection
// gates shut (sigmoid(-40) ~ 4e-18) and the window gate open (sigmoid(40)
// is 1.0 in float64), NSA with window w is sliding_window with window w
// through the whole layer: output, input gradient and the gradients of
// every parameter both have (wq, wk, wv, wo and their biases) to 1e-10,
// in every check setting NSA declares, with w = 2 and w >= T (standard
// causal attention). With the gates free it must differ, or the test could
// not fail.
func TestNSAWindowOnlyIsSlidingWindow(t *testing.T) {
	sup, err := SupportOf("nsa")
	if err != nil {
		t.Fatal(err)
	}
	ran := 0
	for _, st := range CheckSettings() {
		if sup.Allows(st.Setting()) != nil {
			continue
		}
		for _, w := range []int{2, st.SeqLen} {
			ran++
			t.Run(fmt.Sprintf("%s/window=%d", st.Name, w), func(t *testing.T) {
				seed := uint64(time.Now().UnixNano())
				t.Logf("seed %d window %d", seed, w)
				nsa := config.Component{Kind: "nsa", Options: nsaSmall(w)}
				fix := nsaGates(st.Heads, func(b int) float64 {
					if b == 2 {
						return 40
					}
					return -40
				})
				got := runLayerFixed(t, nsa, st, seed, nil, fix)
				want := runLayer(t, config.Component{Kind: "sliding_window", Options: map[string]any{"window": w}}, st, seed)
				if d := relDiff(got.out, want.out); !(d <= 1e-10) {
					t.Errorf("output: relative difference %g", d)
				}
				if d := relDiff(got.dx, want.dx); !(d <= 1e-10) {
					t.Errorf("input gradient: relative difference %g", d)
				}
				for name, wg := range want.dparams {
					g, ok := got.dparams[name]
					if !ok {
						t.Errorf("nsa has no parameter %s", name)
						continue
					}
					if d := relDiff(g, wg); !(d <= 1e-10) {
						t.Errorf("gradient of %s: relative difference %g", name, d)
					}
				}
				for _, open := range []int{0, 1} {
					free := runLayerFixed(t, nsa, st, seed, nil, nsaGates(st.Heads, func(b int) float64 {
						if b == open || b == 2 {
							return 40
						}
						return -40
					}))
					if d := relDiff(free.out, want.out); d < 1e-6 {
						t.Errorf("branch %d's gate open: output equals sliding_window's (relative difference %g)", open, d)
					}
				}
			})
		}
	}
	if ran == 0 {
		t.Fatal("nsa declares none of the check settings")
	}
}

// nsaForward runs one nsa layer forward on x [Batch*SeqLen, DModel] with
// parameters drawn from seed (as runLayer draws them) and returns the
// output.
func nsaForward(t *testing.T, opts map[string]any, st CheckSetting, seed uint64, x []float64) []float64 {
	t.Helper()
	store, err := graph.NewStore(tensor.Float64, seed)
	if err != nil {
		t.Fatal(err)
	}
	g := G.NewGraph()
	b := store.Bind(g)
	sh := Shape{Batch: st.Batch, SeqLen: st.SeqLen, DModel: st.DModel}
	xn := graph.Variable(g, "x", tensor.New(tensor.WithShape(sh.Rows(), sh.DModel), tensor.WithBacking(append([]float64(nil), x...))))
	a, err := NewAttention(config.Component{Kind: "nsa", Options: opts}, st.spec())
	if err != nil {
		t.Fatal(err)
	}
	out, err := a.Forward(NewScope(b).Sub("attn"), xn, Context{Shape: sh, Causal: true, Tile: st.FlashBlock})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range store.Params() {
		h := fnv.New64a()
		h.Write([]byte(p.Name))
		prng := rand.New(rand.NewPCG(seed, h.Sum64()))
		d := p.Value.Data().([]float64)
		for i := range d {
			d[i] = 2 * (prng.Float64() - 0.5)
		}
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	return append([]float64(nil), graph.Float64s(out.Value())...)
}

// TestNSACausal: changing the inputs after position t leaves every output
// at positions <= t unchanged (whole layer: compression, selection and
// window), and changes some output after t. Also with the defaults on a
// sequence shorter than one compression block (no compressed token).
func TestNSACausal(t *testing.T) {
	for _, c := range []struct {
		name string
		opts map[string]any
		st   CheckSetting
	}{
		{"small blocks", map[string]any{"compress_block": 4, "compress_stride": 2, "select_block": 2, "selected": 3, "window": 2},
			CheckSetting{Causal: true, Batch: 2, SeqLen: 16, DModel: 8, Heads: 2, FlashBlock: 4}},
		{"rope, stride = block", map[string]any{"compress_block": 2, "compress_stride": 2, "select_block": 4, "selected": 3, "window": 1},
			CheckSetting{Causal: true, Batch: 1, SeqLen: 18, DModel: 8, Heads: 2, Positional: "rope"}},
		{"defaults, T < l", nil, CheckSetting{Causal: true, Batch: 1, SeqLen: 12, DModel: 8, Heads: 2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, 7))
			st := c.st
			x := make([]float64, st.Batch*st.SeqLen*st.DModel)
			for i := range x {
				x[i] = rng.NormFloat64()
			}
			base := nsaForward(t, c.opts, st, seed, x)
			for _, t0 := range []int{0, 3, st.SeqLen / 2, st.SeqLen - 2} {
				y := append([]float64(nil), x...)
				for b := 0; b < st.Batch; b++ {
					for p := t0 + 1; p < st.SeqLen; p++ {
						for c := 0; c < st.DModel; c++ {
							y[(b*st.SeqLen+p)*st.DModel+c] += rng.NormFloat64()
						}
					}
				}
				got := nsaForward(t, c.opts, st, seed, y)
				later := 0.0
				for b := 0; b < st.Batch; b++ {
					for p := 0; p < st.SeqLen; p++ {
						for c := 0; c < st.DModel; c++ {
							i := (b*st.SeqLen+p)*st.DModel + c
							if p <= t0 && got[i] != base[i] {
								t.Fatalf("t0 %d: output at position %d changed by %g", t0, p, got[i]-base[i])
							}
							if p > t0 {
								later = math.Max(later, math.Abs(got[i]-base[i]))
							}
						}
					}
				}
				if later < 1e-6 {
					t.Errorf("t0 %d: no output after it changed", t0)
				}
			}
		})
	}
}

// TestNSAOptions: impossible options are errors naming their key.
func TestNSAOptions(t *testing.T) {
	st := CheckSettings()[0]
	for _, c := range []struct {
		opts map[string]any
		key  string
	}{
		{map[string]any{"compress_block": 0}, "model.attention.compress_block"},
		{map[string]any{"compress_block": 4, "compress_stride": 3}, "model.attention.compress_stride"},
		{map[string]any{"compress_block": 4, "compress_stride": 8}, "model.attention.compress_stride"},
		{map[string]any{"compress_stride": 0}, "model.attention.compress_stride"},
		{map[string]any{"compress_block": 4, "compress_stride": 4, "select_block": 6}, "model.attention.select_block"},
		{map[string]any{"select_block": 0}, "model.attention.select_block"},
		{map[string]any{"selected": 2}, "model.attention.selected"},
		{map[string]any{"window": -1}, "model.attention.window"},
	} {
		_, err := NewAttention(config.Component{Kind: "nsa", Options: c.opts}, st.spec())
		if err == nil {
			t.Errorf("%v: no error", c.opts)
		} else if !strings.Contains(err.Error(), c.key) {
			t.Errorf("%v: error %q does not name %s", c.opts, err, c.key)
		}
	}
}
