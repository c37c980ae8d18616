package layers

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
)

// GroupedQuery is grouped-query attention (Ainslie et al. 2023, "GQA:
// Training Generalized Multi-Query Transformer Models from Multi-Head
// Checkpoints"): the H query heads fall into G groups of H/G, and the heads
// of group g share one key and one value head:
//
//	Q = x Wq [D -> H d], K = x Wk [D -> G d], V = x Wv [D -> G d]
//	head_h = softmax(Q_h K_{g(h)}^T / sqrt(d)) V_{g(h)},  g(h) = h / (H/G)
//	out = concat(head_1..head_H) Wo
//
// G = H is multi-head attention, G = 1 multi-query attention. The KV cache
// shrinks to 2 G d per token per layer (from 2 H d); time stays O(T^2 D),
// memory O(T D) (the flash core, no T x T matrix).
type GroupedQuery struct {
	spec    Spec
	kvHeads int
	bias    bool
}

func init() {
	Register("gqa", "grouped-query attention (Ainslie et al. 2023): groups of query heads share a key/value head",
		Support{Causal: true, Bidirectional: true, Padding: true, Positions: Positions},
		[]config.OptionSpec{
			{Name: "kv_heads", Kind: config.Int, Default: 2, Help: "key/value heads G; must divide n_heads (G = n_heads is MHA, 1 is MQA)"},
			{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the q, k, v and output projections"},
		},
		func(s Spec) (Attention, error) {
			g := s.Options.Int("kv_heads")
			if g < 1 || s.Heads%g != 0 {
				return nil, fmt.Errorf("model.attention.kv_heads: %d does not divide model.n_heads (%d)", g, s.Heads)
			}
			return &GroupedQuery{spec: s, kvHeads: g, bias: s.Options.Bool("bias")}, nil
		})
}

// Forward implements Attention.
func (a *GroupedQuery) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	return multiHead(s, x, c, a.spec, a.kvHeads, a.bias, CoreSpec{})
}

// KVCacheElems implements KVCache: G keys and G values of d per token.
func (a *GroupedQuery) KVCacheElems() int { return 2 * a.kvHeads * a.spec.HeadDim() }
