package layers

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
)

// Reuse is UniForm's reuse attention (Yeom and Kim 2024, "UniForm: A Reuse
// Attention Mechanism Optimized for Efficient Vision Transformers on Edge
// Devices"): one attention map per layer, computed once from a single
// query/key head, is shared by every head, and each head keeps its own
// values:
//
//	A = softmax(x Wq (x Wk)^T / sqrt(d_k))       [T x T, one map]
//	head_h = A V_h,  V = x Wv [D -> D]
//	out = concat(head_1..head_H) Wo = (A V) Wo
//
// With one head and d_k = D it is standard attention. Time O(T^2 (d_k + D));
// memory O(T D) with the flash core; the KV cache holds one key of d_k and
// the values, d_k + D per token per layer.
//
// UniForm also passes the values through multi-scale depthwise
// convolutions (a different kernel size per head) before the shared map is
// applied, which is what keeps its heads diverse; that is left out here, so
// this is the pure reuse form: the heads differ only by their columns of Wv
// and Wo, and A V is one attention over D-wide values.
type Reuse struct {
	spec  Spec
	qkDim int
	bias  bool
}

func init() {
	Register("reuse", "reuse attention (UniForm, Yeom and Kim 2024): one attention map shared by all heads, per-head values",
		Support{Causal: true, Bidirectional: true, Padding: true, Positions: Positions},
		[]config.OptionSpec{
			{Name: "qk_dim", Kind: config.Int, Default: 0, Help: "dims d_k of the single query/key head; 0 = d_model/n_heads"},
			{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the q, k, v and output projections"},
		},
		func(s Spec) (Attention, error) {
			dk := s.Options.Int("qk_dim")
			if dk == 0 {
				dk = s.HeadDim()
			}
			if dk < 1 {
				return nil, fmt.Errorf("model.attention.qk_dim: must be positive, got %d", dk)
			}
			if err := s.Pos.Check(dk); err != nil {
				return nil, err
			}
			return &Reuse{spec: s, qkDim: dk, bias: s.Options.Bool("bias")}, nil
		})
}

// Forward implements Attention.
func (a *Reuse) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	D := a.spec.DModel
	q, k, v, err := ProjectQKV(s, x, D, a.qkDim, a.qkDim, D, a.bias)
	if err != nil {
		return nil, err
	}
	// One head whose values are all H heads' values side by side: A V_h for
	// every h in one pass.
	o, err := SelfAttention(q, k, v, c.WithMapLabel(DefaultMapLabel, "one map shared by every head"), a.spec.Pos, CoreSpec{Heads: Heads{Heads: 1, HeadDim: a.qkDim, ValueDim: D}})
	if err != nil {
		return nil, err
	}
	return Project(s, "wo", o, D, D, a.bias)
}

// KVCacheElems implements KVCache: one key of d_k and D of values.
func (a *Reuse) KVCacheElems() int { return a.qkDim + a.spec.DModel }
