package layers

import (
	"fmt"
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

// TestRoutingOneClusterIsStandard: routing with one cluster, a window >=
// T and no local heads lets every query see every visible key, so the
// whole layer is standard attention: outputs and the gradients of the
// input and of every parameter (wq, wk, wv, wo and their biases) to 1e-10
// (float64), in every gradient-check setting. Unpadded, with two clusters
// and a window of 2 it must differ, or the test could not fail.
func TestRoutingOneClusterIsStandard(t *testing.T) {
	for _, st := range CheckSettings() {
		t.Run(st.Name, func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			want := runLayer(t, config.Component{Kind: "standard"}, st, seed)
			got := runLayer(t, config.Component{Kind: "routing", Options: map[string]any{"clusters": 1, "window": st.SeqLen, "local_window": 0}}, st, seed)
			if d := relDiff(got.out, want.out); !(d <= 1e-10) {
				t.Errorf("output: relative difference %g", d)
			}
			if d := relDiff(got.dx, want.dx); !(d <= 1e-10) {
				t.Errorf("input gradient: relative difference %g", d)
			}
			for name, w := range want.dparams {
				g, ok := got.dparams[name]
				if !ok {
					t.Errorf("routing has no parameter %s", name)
					continue
				}
				if d := relDiff(g, w); !(d <= 1e-10) {
					t.Errorf("gradient of %s: relative difference %g", name, d)
				}
			}
			if len(got.dparams) != len(want.dparams) {
				t.Errorf("routing has %d parameters, standard %d", len(got.dparams), len(want.dparams))
			}
			if st.Padded {
				return
			}
			small := runLayer(t, config.Component{Kind: "routing", Options: map[string]any{"clusters": 2, "window": 2}}, st, seed)
			if d := relDiff(small.out, want.out); d < 1e-6 {
				t.Errorf("clusters 2, window 2 of %d: output equals standard's (relative difference %g)", st.SeqLen, d)
			}
		})
	}
}

// routingLayerOutput runs one routing layer of store on x [batch*T, d] and
// returns its output.
func routingLayerOutput(t *testing.T, store *graph.Store, opts map[string]any, pos string, batch, T, d, heads int, x []float64) []float64 {
	t.Helper()
	a, err := NewAttention(config.Component{Kind: "routing", Options: opts},
		Spec{DModel: d, Heads: heads, NLayers: 1, Causal: true, Pos: CheckSetting{Positional: pos}.Position()})
	if err != nil {
		t.Fatal(err)
	}
	g := G.NewGraph()
	xn := graph.Variable(g, "x", tensor.New(tensor.WithShape(batch*T, d), tensor.WithBacking(append([]float64(nil), x...))))
	out, err := a.Forward(NewScope(store.Bind(g)).Sub("attn"), xn, Context{Shape: Shape{Batch: batch, SeqLen: T, DModel: d}, Causal: true})
	if err != nil {
		t.Fatal(err)
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	return append([]float64(nil), graph.Float64s(out.Value())...)
}

// TestRoutingIsCausal: a causal routing layer (routing and local heads,
// rope) is truly causal: changing the input at positions > p leaves the
// outputs at positions <= p unchanged (to the last bit), for every p;
// changing position p itself changes the output at p (or the test could
// not fail).
func TestRoutingIsCausal(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	const batch, T, d, heads = 2, 14, 8, 4
	store, err := graph.NewStore(tensor.Float64, seed)
	if err != nil {
		t.Fatal(err)
	}
	opts := map[string]any{"clusters": 3, "window": 2, "local_window": 2}
	x := graph.Float64s(graph.RandomTensor(rng, 1, batch*T, d))
	base := routingLayerOutput(t, store, opts, "rope", batch, T, d, heads, x)
	for p := 0; p < T-1; p++ {
		y := append([]float64(nil), x...)
		for b := 0; b < batch; b++ {
			for i := p + 1; i < T; i++ {
				for c := 0; c < d; c++ {
					y[(b*T+i)*d+c] = 2*rng.Float64() - 1
				}
			}
		}
		got := routingLayerOutput(t, store, opts, "rope", batch, T, d, heads, y)
		for b := 0; b < batch; b++ {
			for i := 0; i <= p; i++ {
				for c := 0; c < d; c++ {
					if r := (b*T+i)*d + c; got[r] != base[r] {
						t.Fatalf("changing positions > %d changed the output at %d (sequence %d): %g, was %g", p, i, b, got[r], base[r])
					}
				}
			}
		}
	}
	y := append([]float64(nil), x...)
	y[3*d] += 0.5
	if got := routingLayerOutput(t, store, opts, "rope", batch, T, d, heads, y); math.Abs(got[3*d]-base[3*d])+math.Abs(got[3*d+1]-base[3*d+1]) == 0 {
		t.Error("changing position 3 left its output unchanged: the comparison cannot see a leak")
	}
}

// TestRoutingOptions: out-of-range options are errors naming their key.
func TestRoutingOptions(t *testing.T) {
	st := CheckSettings()[0]
	for _, c := range []struct {
		opts map[string]any
		key  string
	}{
		{map[string]any{"clusters": 0}, "model.attention.clusters"},
		{map[string]any{"window": 0}, "model.attention.window"},
		{map[string]any{"window": -2}, "model.attention.window"},
		{map[string]any{"decay": 1.0}, "model.attention.decay"},
		{map[string]any{"decay": -0.1}, "model.attention.decay"},
		{map[string]any{"local_window": -1}, "model.attention.local_window"},
	} {
		_, err := NewAttention(config.Component{Kind: "routing", Options: c.opts}, st.spec())
		if err == nil {
			t.Errorf("%v: no error", c.opts)
		} else if !strings.Contains(err.Error(), c.key) {
			t.Errorf("%v: error %q does not name %s", c.opts, err, c.key)
		}
	}
}

// TestRoutingCentroidUpdate: the layer's state update moves the centroids
// toward what the last forward assigned and renormalizes them; a second
// update without a forward changes nothing; a layer built without
// Context.Steps (layer tests, bench) registers none.
func TestRoutingCentroidUpdate(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 9))
	store, err := graph.NewStore(tensor.Float64, seed)
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAttention(config.Component{Kind: "routing", Options: map[string]any{"clusters": 2, "window": 3, "decay": 0.5}},
		Spec{DModel: 8, Heads: 2, NLayers: 1, Causal: true})
	if err != nil {
		t.Fatal(err)
	}
	g := G.NewGraph()
	x := graph.Variable(g, "x", graph.RandomTensor(rng, 1, 12, 8))
	steps := &StepInputs{}
	if _, err := a.Forward(NewScope(store.Bind(g)).Sub("attn"), x, Context{Shape: Shape{Batch: 2, SeqLen: 6, DModel: 8}, Causal: true, Steps: steps}); err != nil {
		t.Fatal(err)
	}
	if len(store.Buffers()) != 1 || !store.Buffers()[0].Mutable {
		t.Fatalf("want one state buffer, got %d", len(store.Buffers()))
	}
	mu := store.Buffers()[0].Value.Data().([]float64)
	init := append([]float64(nil), mu...)
	if err := steps.AfterStep(); err != nil { // no forward yet: nothing to apply
		t.Fatal(err)
	}
	if d := routingMaxDiff(mu, init); d != 0 {
		t.Fatalf("an update before any forward moved the centroids by %g", d)
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	if err := steps.AfterStep(); err != nil {
		t.Fatal(err)
	}
	moved := append([]float64(nil), mu...)
	if routingMaxDiff(moved, init) == 0 {
		t.Fatal("the update after a forward left the centroids where they were")
	}
	for r := 0; r < len(mu)/4; r++ { // unit rows (a cluster nothing reached keeps its draw)
		n := 0.0
		for _, e := range mu[r*4 : (r+1)*4] {
			n += e * e
		}
		if moved, was := mu[r*4:(r+1)*4], init[r*4:(r+1)*4]; routingMaxDiff(moved, was) != 0 && math.Abs(n-1) > 1e-12 {
			t.Errorf("centroid %d moved to norm %g, want 1", r, math.Sqrt(n))
		}
	}
	if err := steps.AfterStep(); err != nil {
		t.Fatal(err)
	}
	if d := routingMaxDiff(mu, moved); d != 0 {
		t.Errorf("a second update without a forward moved the centroids by %g", d)
	}
}

func routingMaxDiff(a, b []float64) float64 {
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(a[i]-b[i]))
	}
	return d
}

// TestRoutingSegmentsShareOneSink: a routing layer whose Forward runs
// several times in one graph (each segment of a memory model) keeps one
// statistics sink and registers one update, and each run adds its
// assignments to the sink: after two runs every routing head has counted
// each token's query and key twice over.
func TestRoutingSegmentsShareOneSink(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 5))
	const batch, T, d, heads, clusters = 2, 6, 8, 2, 3
	store, err := graph.NewStore(tensor.Float64, seed)
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAttention(config.Component{Kind: "routing", Options: map[string]any{"clusters": clusters, "window": 2}},
		Spec{DModel: d, Heads: heads, NLayers: 1, Causal: true, Pos: CheckSetting{Positional: "none"}.Position()})
	if err != nil {
		t.Fatal(err)
	}
	g := G.NewGraph()
	steps := &StepInputs{}
	c := Context{Shape: Shape{Batch: batch, SeqLen: T, DModel: d}, Causal: true, Steps: steps}
	scope := NewScope(store.Bind(g)).Sub("attn")
	for i := 0; i < 2; i++ {
		x := graph.Variable(g, fmt.Sprintf("x%d", i), graph.RandomTensor(rng, 1, batch*T, d))
		if _, err := a.Forward(scope, x, c); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(steps.updates); n != 1 {
		t.Fatalf("two runs of one layer registered %d state updates, want 1", n)
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	sink := steps.shared[scope.Name("centroids")].(*graph.RoutingStats)
	for h := 0; h < heads; h++ {
		n := 0.0
		for _, x := range sink.Count[h*clusters : (h+1)*clusters] {
			n += x
		}
		if want := float64(2 * 2 * batch * T); n != want {
			t.Errorf("routing head %d counted %g queries and keys, want %g (two runs)", h, n, want)
		}
	}
}
