package layers

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// lshBuild builds an lsh layer in a store of seed storeSeed (after
// installing the buffer restored, if given, as a checkpoint's load would
// find it), fills its parameters and input from inputSeed (so that the
// output depends on storeSeed only through the rotations), runs it and
// returns the output and the store's buffers.
func lshBuild(t *testing.T, storeSeed, inputSeed uint64, restored *graph.Param) ([]float64, []*graph.Param) {
	t.Helper()
	st := CheckSetting{Causal: true, Batch: 2, SeqLen: 9, DModel: 8, Heads: 2}
	store, err := graph.NewStore(tensor.Float64, storeSeed)
	if err != nil {
		t.Fatal(err)
	}
	if restored != nil {
		src := restored.Value.Data().([]float64)
		if _, err := store.Buffer(restored.Name, []int(restored.Value.Shape()), func(_ *rand.Rand, v []float64) { copy(v, src) }); err != nil {
			t.Fatal(err)
		}
	}
	g := G.NewGraph()
	b := store.Bind(g)
	rng := rand.New(rand.NewPCG(inputSeed, 1))
	sh := Shape{Batch: st.Batch, SeqLen: st.SeqLen, DModel: st.DModel}
	x := graph.Variable(g, "x", graph.RandomTensor(rng, 1, sh.Rows(), sh.DModel))
	a, err := NewAttention(config.Component{Kind: "lsh", Options: map[string]any{"buckets": 4, "hashes": 2, "chunk": 3}}, st.spec())
	if err != nil {
		t.Fatal(err)
	}
	out, err := a.Forward(NewScope(b).Sub("attn"), x, Context{Shape: sh, Causal: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range store.Params() {
		d := p.Value.Data().([]float64)
		for i := range d {
			d[i] = rng.Float64() - 0.5
		}
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	return slices.Clone(graph.Float64s(out.Value())), store.Buffers()
}

// TestLSHRotationsSurviveResume: the rotations are one store buffer of
// [hashes*heads*d, buckets/2]; a rebuild from the same seed draws the same
// values (what loading a checkpoint checks); the layer computes with the
// buffer's values, so a build of another seed given the saved buffer (a
// resumed run) reproduces the output exactly, and without it differs.
func TestLSHRotationsSurviveResume(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	out1, bufs1 := lshBuild(t, seed, 7, nil)
	if len(bufs1) != 1 || !strings.HasSuffix(bufs1[0].Name, "rotations") {
		t.Fatalf("want one buffer named ...rotations, got %d", len(bufs1))
	}
	if got, want := []int(bufs1[0].Value.Shape()), []int{2 * 2 * 4, 2}; !slices.Equal(got, want) {
		t.Fatalf("rotations shape %v, want %v", got, want)
	}
	_, bufs2 := lshBuild(t, seed, 7, nil)
	if !slices.Equal(bufs2[0].Value.Data().([]float64), bufs1[0].Value.Data().([]float64)) {
		t.Error("a rebuild from the same seed drew other rotations: a checkpoint would not load")
	}
	other, _ := lshBuild(t, seed+1, 7, nil)
	if d := relDiff(other, out1); d < 1e-6 {
		t.Errorf("another seed's rotations give the same output (relative difference %g): the test cannot fail", d)
	}
	resumed, bufs3 := lshBuild(t, seed+1, 7, bufs1[0])
	if !slices.Equal(bufs3[0].Value.Data().([]float64), bufs1[0].Value.Data().([]float64)) {
		t.Fatal("the restored buffer was replaced")
	}
	if !slices.Equal(resumed, out1) {
		t.Errorf("output with the restored rotations differs from the saved run's (relative difference %g)", relDiff(resumed, out1))
	}
}

// TestLSHOptions: impossible options are errors naming their key.
func TestLSHOptions(t *testing.T) {
	st := CheckSettings()[0]
	for _, c := range []struct {
		opts map[string]any
		key  string
	}{
		{map[string]any{"buckets": 3}, "model.attention.buckets"},
		{map[string]any{"buckets": 0}, "model.attention.buckets"},
		{map[string]any{"hashes": 0}, "model.attention.hashes"},
		{map[string]any{"chunk": 0}, "model.attention.chunk"},
	} {
		_, err := NewAttention(config.Component{Kind: "lsh", Options: c.opts}, st.spec())
		if err == nil {
			t.Errorf("%v: no error", c.opts)
		} else if !strings.Contains(err.Error(), c.key) {
			t.Errorf("%v: error %q does not name %s", c.opts, err, c.key)
		}
	}
	for _, opts := range []map[string]any{{"buckets": 1}, {"buckets": 2, "hashes": 1, "chunk": 1}} {
		if _, err := NewAttention(config.Component{Kind: "lsh", Options: opts}, st.spec()); err != nil {
			t.Errorf("%v: %v", opts, err)
		}
	}
}
