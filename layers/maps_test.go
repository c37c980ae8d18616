package layers

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// mapRun builds one layer of variant kind in setting st (random input,
// parameters and key mask from seed) with or without a map recorder, runs
// it, and returns its output and the maps of every example.
func mapRun(t *testing.T, kind string, st CheckSetting, seed uint64, record bool) (out []float64, maps [][]MapValues, err error) {
	t.Helper()
	opts := st.Options
	if sup, err := SupportOf(kind); err == nil && opts == nil {
		opts = sup.CheckOptions
	}
	a, err := NewAttention(config.Component{Kind: kind, Options: opts}, st.spec())
	if err != nil {
		return nil, nil, err
	}
	rng := rand.New(rand.NewPCG(seed, 11))
	store, err := graph.NewStore(tensor.Float64, seed)
	if err != nil {
		t.Fatal(err)
	}
	g := G.NewGraph()
	b := store.Bind(g)
	sh := Shape{Batch: st.Batch, SeqLen: st.SeqLen, DModel: st.DModel}
	x := graph.Variable(g, "x", graph.RandomTensor(rng, 1, sh.Rows(), sh.DModel))
	c := Context{Shape: sh, Causal: st.Causal, Layer: 3, Tile: st.FlashBlock}
	if st.Padded {
		c.KeyMask = b.Input("key_mask", sh.Rows())
		m := make([]float64, sh.Rows())
		for i := range m {
			if i%sh.SeqLen == 0 || rng.Float64() < 0.6 { // every sequence keeps position 0
				m[i] = 1
			}
		}
		if err := graph.SetValues(c.KeyMask, m); err != nil {
			t.Fatal(err)
		}
	}
	var rec *MapRecorder
	if record {
		rec = &MapRecorder{}
		c.Maps = rec
	}
	y, err := a.Forward(NewScope(b).Sub("attn"), x, c)
	if err != nil {
		t.Fatal(err)
	}
	if !record { // a training graph: no map in it
		for _, n := range g.AllNodes() {
			if op := n.Op(); op != nil && strings.HasPrefix(op.String(), "AttentionWeights") {
				t.Fatalf("%s: without a recorder the graph still builds %s", st.Name, op)
			}
		}
	}
	for _, p := range store.Params() {
		d := p.Value.Data().([]float64)
		for i := range d {
			d[i] = rng.Float64() - 0.5
		}
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	out = graph.Float64s(y.Value())
	if rec != nil {
		for e := 0; e < st.Batch; e++ {
			v, err := rec.Read(e)
			if err != nil {
				t.Fatal(err)
			}
			maps = append(maps, v)
		}
	}
	return out, maps, nil
}

// Every registered variant records at least one map when a model is built
// with a recorder (a new variant that forgets fails here; see Attention),
// and every map is a set of attention weights: each row sums to 1 over the
// columns it may see and puts 0 on masked columns, and in causal layers
// nothing above the diagonal. Recording changes nothing in the output.
func TestEveryVariantRecordsMaps(t *testing.T) {
	for _, v := range Variants() {
		t.Run(v.Name, func(t *testing.T) {
			sup, err := SupportOf(v.Name)
			if err != nil {
				t.Fatal(err)
			}
			applicable := 0
			for _, st := range CheckSettings() {
				if sup.Allows(st.Setting()) != nil {
					continue // a setting the variant does not declare
				}
				seed := uint64(len(v.Name)*1000 + len(st.Name))
				out, maps, err := mapRun(t, v.Name, st, seed, true)
				if err != nil {
					t.Fatalf("%s: %v (the variant declares %s)", st.Name, err, sup)
				}
				applicable++
				plain, _, err := mapRun(t, v.Name, st, seed, false)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(out, plain) {
					t.Errorf("%s: recording maps changed the layer's output", st.Name)
				}
				if len(maps[0]) == 0 {
					t.Fatalf("%s: building with Context.Maps set recorded no attention map; every variant must call Context.RecordMap (or SelfAttention) for each attention core it runs", st.Name)
				}
				for e, ms := range maps {
					for _, m := range ms {
						checkMap(t, st.Name, e, m)
					}
				}
			}
			if applicable == 0 {
				t.Fatal("the variant accepts none of the check settings, so its maps are untested")
			}
		})
	}
}

func checkMap(t *testing.T, setting string, example int, m MapValues) {
	t.Helper()
	if m.Layer != 3 || m.Label == "" || m.Rows == "" || m.Cols == "" {
		t.Errorf("%s: map %+v: want layer 3 and a label and axes", setting, m)
	}
	if len(m.Weights) != m.Heads*m.QLen*m.KLen || (m.RowMask != nil && len(m.RowMask) != m.QLen) || (m.ColMask != nil && len(m.ColMask) != m.KLen) {
		t.Fatalf("%s: %s map: %d weights, masks %d and %d, for %d heads of %dx%d", setting, m.Label,
			len(m.Weights), len(m.RowMask), len(m.ColMask), m.Heads, m.QLen, m.KLen)
	}
	causal := m.Causal && m.Rows == AxisPosition && m.Cols == AxisPosition
	for h := 0; h < m.Heads; h++ {
		w := m.Head(h)
		for i := 0; i < m.QLen; i++ {
			var sum float64
			for j, p := range w[i*m.KLen : (i+1)*m.KLen] {
				if (m.ColMask != nil && m.ColMask[j] == 0) || (causal && j > i) {
					if p != 0 {
						t.Errorf("%s: example %d, %s map, head %d: weight %g from row %d on hidden column %d", setting, example, m.Label, h, p, i, j)
					}
					continue
				}
				if math.IsNaN(p) || math.IsInf(p, 0) {
					t.Errorf("%s: example %d, %s map, head %d: weight %g at row %d, column %d", setting, example, m.Label, h, p, i, j)
				}
				sum += p
			}
			if m.Unnormalized {
				continue // a signed or unnormalized form: only what it hides is checked
			}
			if math.Abs(sum-1) > 1e-9 && !(m.Sparse && sum == 0) {
				t.Errorf("%s: example %d, %s map, head %d: row %d sums to %v over its visible columns", setting, example, m.Label, h, i, sum)
			}
		}
	}
}

// Without a recorder RecordMap adds no node to the graph (so a training
// graph is what it was before maps existed); with one it adds the weights,
// which cannot be read before the graph runs.
func TestMapRecordingIsOptIn(t *testing.T) {
	g := G.NewGraph()
	q := graph.Variable(g, "q", graph.RandomTensor(rand.New(rand.NewPCG(1, 2)), 1, 2, 2))
	spec := MapSpec{Q: q, K: q, Shape: graph.AttentionShape{Batch: 1, QLen: 2, KLen: 2, Heads: 1, KVHeads: 1, HeadDim: 2}}
	before := len(g.AllNodes())
	c := Context{Shape: Shape{Batch: 1, SeqLen: 2, DModel: 2}}
	if m, err := c.RecordMap(spec); m != nil || err != nil {
		t.Errorf("RecordMap without a recorder: %v, %v; want nothing", m, err)
	}
	if n := len(g.AllNodes()); n != before {
		t.Errorf("RecordMap without a recorder added %d nodes", n-before)
	}
	var rec MapRecorder
	if vals, err := rec.Read(0); err != nil || len(vals) != 0 {
		t.Errorf("reading an empty recorder: %v, %v", vals, err)
	}
	c.Maps = &rec
	m, err := c.RecordMap(spec)
	if err != nil || m == nil || m.Label != DefaultMapLabel || m.Rows != AxisPosition {
		t.Fatalf("RecordMap: %+v, %v", m, err)
	}
	if len(g.AllNodes()) == before {
		t.Error("recording added no node")
	}
	if _, err := rec.Read(0); !errors.Is(err, ErrNotRun) {
		t.Errorf("reading before the graph ran: %v, want ErrNotRun", err)
	}
}
