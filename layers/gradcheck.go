package layers

import (
	"fmt"
	"math/rand/v2"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// CheckSetting is one configuration a variant is gradient-checked in.
type CheckSetting struct {
	Name    string
	Causal  bool
	Padded  bool // random key-padding mask
	Batch   int
	SeqLen  int
	DModel  int
	Heads   int
	Options map[string]any // variant options (defaults when nil)
}

// CheckSettings are the settings `trainer gradcheck` and the tests use: tiny
// sizes, float64.
func CheckSettings() []CheckSetting {
	return []CheckSetting{
		{Name: "causal", Causal: true, Batch: 2, SeqLen: 5, DModel: 8, Heads: 2},
		{Name: "bidirectional", Batch: 2, SeqLen: 5, DModel: 8, Heads: 2},
		{Name: "bidirectional-padded", Padded: true, Batch: 2, SeqLen: 5, DModel: 8, Heads: 2},
		{Name: "causal-padded", Causal: true, Padded: true, Batch: 2, SeqLen: 4, DModel: 8, Heads: 2},
	}
}

// CheckAttention gradient-checks one layer of variant kind in setting st:
// random input, random parameters (uniform in +-0.5, so the function is far
// from linear), gradients with respect to the input and every parameter.
func CheckAttention(kind string, st CheckSetting, seed uint64) (graph.GradResult, error) {
	return checkLayer(st, seed, func(s Scope, x *G.Node, c Context) (*G.Node, error) {
		a, err := NewAttention(config.Component{Kind: kind, Options: st.Options}, Spec{DModel: st.DModel, Heads: st.Heads, NLayers: 2})
		if err != nil {
			return nil, err
		}
		return a.Forward(s.Sub("attn"), x, c)
	})
}

// CheckBlock gradient-checks a whole pre-norm block with variant kind.
func CheckBlock(kind, norm string, st CheckSetting, seed uint64) (graph.GradResult, error) {
	return checkLayer(st, seed, func(s Scope, x *G.Node, c Context) (*G.Node, error) {
		a, err := NewAttention(config.Component{Kind: kind, Options: st.Options}, Spec{DModel: st.DModel, Heads: st.Heads, NLayers: 2})
		if err != nil {
			return nil, err
		}
		return Block(s, x, c, BlockSpec{DModel: st.DModel, DFF: 2 * st.DModel, NLayers: 2, Norm: norm, Activation: graph.GELU, Attention: a})
	})
}

func checkLayer(st CheckSetting, seed uint64, build func(Scope, *G.Node, Context) (*G.Node, error)) (graph.GradResult, error) {
	rng := rand.New(rand.NewPCG(seed, 7))
	store, err := graph.NewStore(tensor.Float64, seed)
	if err != nil {
		return graph.GradResult{}, err
	}
	g := G.NewGraph()
	b := store.Bind(g)
	sh := Shape{Batch: st.Batch, SeqLen: st.SeqLen, DModel: st.DModel}
	x := graph.Variable(g, "x", graph.RandomTensor(rng, 1, sh.Rows(), sh.DModel))
	c := Context{Shape: sh, Causal: st.Causal}
	if st.Padded {
		c.KeyMask = b.Input("key_mask", sh.Rows())
		m := make([]float64, sh.Rows())
		for i := range m {
			// every sequence keeps its first position; the rest are padding at random
			if i%sh.SeqLen == 0 || rng.Float64() < 0.6 {
				m[i] = 1
			}
		}
		if err := graph.SetValues(c.KeyMask, m); err != nil {
			return graph.GradResult{}, err
		}
	}
	out, err := build(NewScope(b), x, c)
	if err != nil {
		return graph.GradResult{}, err
	}
	for _, p := range store.Params() {
		d := p.Value.Data().([]float64)
		for i := range d {
			d[i] = rng.Float64() - 0.5
		}
	}
	wrt := append([]*G.Node{x}, b.Nodes()...)
	res, err := graph.GradCheck{Seed: seed}.Run(g, out, wrt)
	if err != nil {
		return res, fmt.Errorf("%s: %w", st.Name, err)
	}
	return res, nil
}
