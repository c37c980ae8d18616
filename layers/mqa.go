package layers

import (
	"github.com/attnlab/attnlab/config"
)

// Multi-query attention (Shazeer 2019, "Fast Transformer Decoding: One
// Write-Head is All You Need"): every query head reads the same single key
// head and value head,
//
//	head_h = softmax(Q_h K^T / sqrt(d)) V,  K = x Wk [D -> d], V = x Wv [D -> d]
//
// which is grouped-query attention with one group (GroupedQuery, kv_heads
// 1). The KV cache is 2 d per token per layer, H times smaller than MHA's;
// O(T^2 D) time, O(T D) memory (flash core).
func init() {
	Register("mqa", "multi-query attention (Shazeer 2019): all query heads share one key/value head",
		Support{Causal: true, Bidirectional: true, Padding: true, Positions: Positions},
		[]config.OptionSpec{{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the q, k, v and output projections"}},
		func(s Spec) (Attention, error) {
			return &GroupedQuery{spec: s, kvHeads: 1, bias: s.Options.Bool("bias")}, nil
		})
}
