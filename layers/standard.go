package layers

import (
	"math"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// Standard is multi-head scaled dot-product attention (Vaswani et al. 2017,
// "Attention Is All You Need"):
//
//	Q = x Wq, K = x Wk, V = x Wv   (each split into H heads of d = D/H)
//	head_h = softmax(Q_h K_h^T / sqrt(d) + M) V_h
//	out = concat(head_1..head_H) Wo
//
// with M the causal mask in decoders (-inf where key j > query i) and the
// key-padding mask where the batch pads. It materializes each head's T x T
// score matrix: O(T^2 D) time and O(T^2) memory per head in flight, plus
// O(T D) for the projections.
type Standard struct {
	spec Spec
	bias bool
}

func init() {
	Register("standard", "multi-head softmax attention (Vaswani et al. 2017), T x T scores per head",
		Support{Causal: true, Bidirectional: true, Padding: true, Positions: Positions},
		[]config.OptionSpec{{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the q, k, v and output projections"}},
		func(s Spec) (Attention, error) {
			return &Standard{spec: s, bias: s.Options.Bool("bias")}, nil
		})
}

// Forward implements Attention.
func (a *Standard) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	return multiHead(s, x, c, a.spec, a.spec.Heads, a.bias, CoreSpec{Materialize: true})
}

// KVCacheElems implements KVCache: a key and a value of D per token.
func (a *Standard) KVCacheElems() int { return 2 * a.spec.DModel }

// multiHead is the multi-head layer shared by standard, flash, mqa, gqa and
// the sparse variants: projections wq [D, D], wk and wv [D, kvHeads*d], wo
// [D, D] around the attention core cs asks for (its Heads filled in here).
func multiHead(s Scope, x *G.Node, c Context, spec Spec, kvHeads int, bias bool, cs CoreSpec) (*G.Node, error) {
	d, dh := spec.DModel, spec.HeadDim()
	q, k, v, err := ProjectQKV(s, x, d, d, kvHeads*dh, kvHeads*dh, bias)
	if err != nil {
		return nil, err
	}
	cs.Heads = Heads{Heads: spec.Heads, KVHeads: kvHeads, HeadDim: dh}
	o, err := SelfAttention(q, k, v, c, spec.Pos, cs)
	if err != nil {
		return nil, err
	}
	return Project(s, "wo", o, d, d, bias)
}

// ProjectQKV is the usual query, key and value projections of x [N, d]:
// "wq" to qd columns, "wk" to kd and "wv" to vd (Project each, with biases
// if bias).
func ProjectQKV(s Scope, x *G.Node, d, qd, kd, vd int, bias bool) (q, k, v *G.Node, err error) {
	if q, err = Project(s, "wq", x, d, qd, bias); err != nil {
		return nil, nil, nil, err
	}
	if k, err = Project(s, "wk", x, d, kd, bias); err != nil {
		return nil, nil, nil, err
	}
	if v, err = Project(s, "wv", x, d, vd, bias); err != nil {
		return nil, nil, nil, err
	}
	return q, k, v, nil
}

// Project is a linear map x [N, in] -> [N, out] with weight name [in, out]
// and, if bias, a zero-initialized bias "name_b". Weights start uniform in
// +-1/sqrt(in), PyTorch's nn.Linear default.
func Project(s Scope, name string, x *G.Node, in, out int, bias bool) (*G.Node, error) {
	w, err := s.Param(name, []int{in, out}, graph.Uniform(1/math.Sqrt(float64(in))))
	if err != nil {
		return nil, err
	}
	var b *G.Node
	if bias {
		if b, err = s.Param(name+"_b", []int{out}, graph.Constant(0)); err != nil {
			return nil, err
		}
	}
	return graph.Linear(x, w, b)
}

// EmbedStd is the standard deviation of token and learned position
// embeddings at initialization: N(0, 1), PyTorch's nn.Embedding default.
//
// Initialization decides whether small models learn recall at all: with
// GPT-2's N(0, 0.02) everywhere, a 2-layer d=64 decoder (ours, and the same
// model in PyTorch) sat at chance on MQAR (seq 32, 4 pairs) after 1000
// steps; with these defaults PyTorch solved it in 400.
const EmbedStd = 1.0
