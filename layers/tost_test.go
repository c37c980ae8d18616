package layers

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// ToST reports its recurrent state (P and M per head: H x (D/H + 1)),
// keeps no KV cache, and refuses rope and alibi with its reason.
func TestTostStateAndSupport(t *testing.T) {
	for _, c := range []struct{ d, h int }{{64, 4}, {32, 8}, {12, 1}} {
		a, err := NewAttention(config.Component{Kind: "tost"}, Spec{DModel: c.d, Heads: c.h, NLayers: 2, Causal: true, Pos: Position{Kind: "learned"}})
		if err != nil {
			t.Fatal(err)
		}
		st, ok := a.(RecurrentState)
		if want := c.h * (c.d/c.h + 1); !ok || st.StateElems() != want {
			t.Errorf("d %d, %d heads: state %v (%v), want %d", c.d, c.h, ok, st, want)
		}
		if _, kv := a.(KVCache); kv {
			t.Error("tost claims a KV cache")
		}
	}
	for _, pos := range []string{"rope", "alibi"} {
		_, err := NewAttention(config.Component{Kind: "tost"}, Spec{DModel: 8, Heads: 2, NLayers: 2, Causal: true, Pos: Position{Kind: pos, RopeBase: 10000}})
		if err == nil || !strings.Contains(err.Error(), "no query-key scores") {
			t.Errorf("%s: error %v, want a refusal giving the reason", pos, err)
		}
	}
}

// tostLayer builds one tost layer on input x [batch*T, 8] (parameters
// random from seed, tau among them), runs it, and returns its output and
// its membership map values.
func tostLayer(t *testing.T, causal bool, batch, T int, x, mask []float64, seed uint64) (out []float64, maps []MapValues) {
	t.Helper()
	st := CheckSetting{Causal: causal, Padded: mask != nil, Batch: batch, SeqLen: T, DModel: 8, Heads: 2}
	a, err := NewAttention(config.Component{Kind: "tost"}, st.spec())
	if err != nil {
		t.Fatal(err)
	}
	store, err := graph.NewStore(tensor.Float64, seed)
	if err != nil {
		t.Fatal(err)
	}
	g := G.NewGraph()
	b := store.Bind(g)
	sh := Shape{Batch: batch, SeqLen: T, DModel: 8}
	xn := graph.Variable(g, "x", tensor.New(tensor.WithShape(sh.Rows(), 8), tensor.WithBacking(append([]float64(nil), x...))))
	rec := &MapRecorder{}
	c := Context{Shape: sh, Causal: causal, Maps: rec}
	if mask != nil {
		c.KeyMask = b.Input("key_mask", sh.Rows())
		if err := graph.SetValues(c.KeyMask, mask); err != nil {
			t.Fatal(err)
		}
	}
	y, err := a.Forward(NewScope(b).Sub("attn"), xn, c)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 3))
	for _, p := range store.Params() {
		d := p.Value.Data().([]float64)
		for i := range d {
			d[i] = 2*rng.Float64() - 1
		}
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	if maps, err = rec.Read(0); err != nil {
		t.Fatal(err)
	}
	return graph.Float64s(y.Value()), maps
}

// What a token's output depends on: causal, changing token j changes no
// output before j and does change those from j on; padded, changing a
// padding token changes no other token's output (bidirectional and
// causal). The membership map has one row per position and one column
// per head, each row a distribution.
func TestTostDependencies(t *testing.T) {
	const T = 6
	rng := rand.New(rand.NewPCG(21, 22))
	x := make([]float64, T*8)
	for i := range x {
		x[i] = 2*rng.Float64() - 1
	}
	perturb := func(j int) []float64 {
		y := append([]float64(nil), x...)
		for c := 0; c < 8; c++ {
			y[j*8+c] += 0.5
		}
		return y
	}
	changed := func(a, b []float64, row int) bool {
		for c := 0; c < 8; c++ {
			if math.Abs(a[row*8+c]-b[row*8+c]) > 1e-12 {
				return true
			}
		}
		return false
	}
	base, maps := tostLayer(t, true, 1, T, x, nil, 5)
	if len(maps) != 1 || maps[0].Rows != AxisPosition || maps[0].Cols != AxisHead || maps[0].Heads != 1 || maps[0].QLen != T || maps[0].KLen != 2 {
		t.Fatalf("maps %+v: want one of positions x heads", maps)
	}
	for j := 0; j < T; j++ {
		got, _ := tostLayer(t, true, 1, T, perturb(j), nil, 5)
		for i := 0; i < T; i++ {
			if changed(base, got, i) != (i >= j) {
				t.Errorf("causal: changing token %d changed output %d: %v", j, i, changed(base, got, i))
			}
		}
	}
	mask := []float64{1, 0, 1, 1, 0, 1}
	for _, causal := range []bool{true, false} {
		base, _ := tostLayer(t, causal, 1, T, x, mask, 5)
		for _, j := range []int{1, 4} {
			got, _ := tostLayer(t, causal, 1, T, perturb(j), mask, 5)
			for i := 0; i < T; i++ {
				if i != j && changed(base, got, i) {
					t.Errorf("causal %v: changing padding token %d changed output %d", causal, j, i)
				}
			}
		}
		got, _ := tostLayer(t, causal, 1, T, perturb(5), mask, 5)
		if !changed(base, got, 0) && !causal {
			t.Errorf("bidirectional: changing real token 5 left output 0 unchanged")
		}
	}
}
