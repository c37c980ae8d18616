package layers

import (
	"hash/fnv"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// layerRun is one attention layer's output and gradients (of the input and
// of each parameter by name) for loss = sum(out * R).
type layerRun struct {
	out, dx []float64
	dparams map[string][]float64
}

// runLayer builds variant c in setting st, fills every parameter from an
// rng seeded by (seed, parameter name) so that variants sharing parameter
// names get identical weights, and runs forward and backward in float64.
func runLayer(t *testing.T, c config.Component, st CheckSetting, seed uint64) layerRun {
	t.Helper()
	return runLayerWith(t, c, st, seed, nil)
}

// runLayerWith is runLayer with the context changed by edit first.
func runLayerWith(t *testing.T, c config.Component, st CheckSetting, seed uint64, edit func(*Context)) layerRun {
	t.Helper()
	return runLayerFixed(t, c, st, seed, edit, nil)
}

// runLayerFixed is runLayerWith with fix applied to each parameter after
// the random fill (to pin some to chosen values).
func runLayerFixed(t *testing.T, c config.Component, st CheckSetting, seed uint64, edit func(*Context), fix func(*graph.Param)) layerRun {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 3))
	store, err := graph.NewStore(tensor.Float64, seed)
	if err != nil {
		t.Fatal(err)
	}
	g := G.NewGraph()
	b := store.Bind(g)
	sh := Shape{Batch: st.Batch, SeqLen: st.SeqLen, DModel: st.DModel}
	x := graph.Variable(g, "x", graph.RandomTensor(rng, 1, sh.Rows(), sh.DModel))
	ctx := Context{Shape: sh, Causal: st.Causal, Tile: st.FlashBlock}
	if st.Padded {
		ctx.KeyMask = b.Input("key_mask", sh.Rows())
		m := make([]float64, sh.Rows())
		for i := range m {
			if i%sh.SeqLen == 0 || rng.Float64() < 0.6 {
				m[i] = 1
			}
		}
		if err := graph.SetValues(ctx.KeyMask, m); err != nil {
			t.Fatal(err)
		}
	}
	r := graph.RandomTensor(rng, 1, sh.Rows(), sh.DModel)
	if edit != nil {
		edit(&ctx)
	}
	a, err := NewAttention(c, st.spec())
	if err != nil {
		t.Fatal(err)
	}
	out, err := a.Forward(NewScope(b).Sub("attn"), x, ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range store.Params() {
		h := fnv.New64a()
		h.Write([]byte(p.Name))
		prng := rand.New(rand.NewPCG(seed, h.Sum64()))
		d := p.Value.Data().([]float64)
		for i := range d {
			d[i] = prng.Float64() - 0.5
		}
		if fix != nil {
			fix(p)
		}
	}
	prod, err := G.HadamardProd(out, graph.Variable(g, "r", r))
	if err != nil {
		t.Fatal(err)
	}
	loss, err := G.Sum(prod)
	if err != nil {
		t.Fatal(err)
	}
	wrt := append([]*G.Node{x}, b.Nodes()...)
	if _, err := G.Grad(loss, wrt...); err != nil {
		t.Fatal(err)
	}
	m := G.NewTapeMachine(g, G.BindDualValues(wrt...))
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	grad := func(n *G.Node) []float64 {
		gv, err := n.Grad()
		if err != nil {
			t.Fatal(err)
		}
		return append([]float64(nil), graph.Float64s(gv)...)
	}
	res := layerRun{out: append([]float64(nil), graph.Float64s(out.Value())...), dx: grad(x), dparams: map[string][]float64{}}
	for _, n := range b.Nodes() {
		res.dparams[n.Name()] = grad(n)
	}
	return res
}

// relDiff is the largest difference relative to the largest magnitude, with
// a floor of 1e-3: some gradients are exactly zero in theory (the key bias,
// by softmax's shift invariance) and rounding noise in practice.
// sameLayerRun fails t unless got (a run of kind) has want's output, input
// gradient and parameter gradients, each to 1e-10 relative.
func sameLayerRun(t *testing.T, kind string, got, want layerRun) {
	t.Helper()
	if d := relDiff(got.out, want.out); d > 1e-10 {
		t.Errorf("output: relative difference %g", d)
	}
	if d := relDiff(got.dx, want.dx); d > 1e-10 {
		t.Errorf("input gradient: relative difference %g", d)
	}
	for name, w := range want.dparams {
		g, ok := got.dparams[name]
		if !ok {
			t.Errorf("%s has no parameter %s", kind, name)
			continue
		}
		if d := relDiff(g, w); d > 1e-10 {
			t.Errorf("gradient of %s: relative difference %g", name, d)
		}
	}
}

func relDiff(a, b []float64) float64 {
	var d, n float64
	for i := range a {
		d = math.Max(d, math.Abs(a[i]-b[i]))
		n = math.Max(n, math.Abs(b[i]))
	}
	return d / math.Max(n, 1e-3)
}

// TestExactReferences: variants that reduce to another in a special case
// compute the same outputs and gradients there (float64, 1e-10), in every
// gradient-check setting, with tied weights. Parameters only one side has
// are ignored (and must not change the output).
//
// Special cases only: gqa with 1 < G < H, mqa (which is gqa with one
// key/value head, so comparing the two proves nothing), reuse with several
// heads (with one head it is standard attention by construction), gpa with
// lambda != 0 and the variants with no special case are checked against
// naive references instead (TestNaiveReferences, naive_test.go).
func TestExactReferences(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want config.Component
	}{
		{"flash=standard", config.Component{Kind: "flash", Options: map[string]any{"block": 2}}, config.Component{Kind: "standard"}},
		{"gqa(G=H)=standard", config.Component{Kind: "gqa", Options: map[string]any{"kv_heads": 2}}, config.Component{Kind: "standard"}},
		{"gpa(lambda=0)=standard", config.Component{Kind: "gpa", Options: map[string]any{"lambda": 0.0}}, config.Component{Kind: "standard"}},
		{"sliding_window(window>=T)=standard", config.Component{Kind: "sliding_window", Options: map[string]any{"window": 9}}, config.Component{Kind: "standard"}},
		{"dilated(one segment>=T, r=1)=standard", config.Component{Kind: "dilated", Options: map[string]any{"segments": []any{9}, "dilations": []any{1}}}, config.Component{Kind: "standard"}},
		{"bigbird(window covers every block)=standard", config.Component{Kind: "bigbird", Options: map[string]any{"block": 2, "window_blocks": 9, "random_blocks": 2, "global_blocks": 1}}, config.Component{Kind: "standard"}},
	} {
		for _, st := range CheckSettings() {
			t.Run(c.name+"/"+st.Name, func(t *testing.T) {
				seed := uint64(time.Now().UnixNano())
				t.Logf("seed %d", seed)
				if _, err := NewAttention(c.got, st.spec()); err != nil {
					t.Skipf("not applicable: %v", err)
				}
				sameLayerRun(t, c.got.Kind, runLayer(t, c.got, st, seed), runLayer(t, c.want, st, seed))
			})
		}
	}
}
