package layers

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// MultiHeadLatent is DeepSeek's multi-head latent attention (DeepSeek-AI
// 2024, "DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts
// Language Model", section 2.1). Keys and values are rebuilt from one
// low-rank latent per token, and position enters through a small decoupled
// RoPE part whose key is shared by the heads:
//
//	c_KV = RMSNorm(x W_DKV)             [D -> d_c]   (the only KV state cached, with k^R)
//	k^C = c_KV W_UK, v = c_KV W_UV      [d_c -> H d]
//	k^R = RoPE(x W_KR)                  [D -> d_r]   (one head, shared)
//	c_Q = RMSNorm(x W_DQ) (when q_rank > 0, else c_Q = x)
//	q^C = c_Q W_UQ [-> H d],  q^R = RoPE(c_Q W_QR) [-> H d_r]
//	head_h = softmax([q^C_h ; q^R_h] [k^C_h ; k^R]^T / sqrt(d + d_r)) v_h
//	out = concat(head_1..head_H) W_O
//
// The RMSNorms on the latents (the paper's, with a gain each) matter here:
// without them the two stacked projections shrink the keys and values at
// initialization and a 2-layer MQAR model stayed at chance for 2000 steps
// (eval accuracy 0.28 on the quickstart) where standard attention solves it
// in 400. RoPE is applied to the
// decoupled dims when model.positional is rope (with other schemes they are
// unrotated shared key dims; alibi biases the scores; partial_rope and xpos
// are refused, as MLA already rotates only part of each head). The KV cache
// is d_c + d_r elements per token per layer. Time O(T^2 H (d + d_r) + T D
// d_c); memory O(T (D + d_c)) with the flash core.
//
// There is no absorbed decode path: the paper's inference folds W_UK into
// the queries (q^C_h W_UK,h^T against c_KV) and W_UV into W_O, so that
// attention reads the cached c_KV and k^R directly. Here every forward
// (training and evaluation, which run whole sequences; there is no
// incremental decoder) rebuilds k^C and v for every position, H d each, so
// KVCacheElems (d_c + d_r) is a count of what such a cache would hold, for
// comparing variants, not memory this layer saves.
type MultiHeadLatent struct {
	spec                    Spec
	kvRank, qRank, ropeDims int
	bias                    bool
}

func init() {
	Register("mla", "multi-head latent attention (DeepSeek-V2, 2024): low-rank KV latent plus a shared decoupled RoPE key",
		Support{Causal: true, Bidirectional: true, Padding: true, Positions: []string{"rope", "alibi", "learned", "sinusoidal", "none"},
			Why: Refusals{Positions: "it rotates only its decoupled rope_dims"}},
		[]config.OptionSpec{
			{Name: "kv_rank", Kind: config.Int, Default: 0, Help: "rank d_c of the KV latent; 0 = d_model/2"},
			{Name: "rope_dims", Kind: config.Int, Default: 0, Help: "decoupled RoPE dims d_r per head (even); 0 = head_dim/2"},
			{Name: "q_rank", Kind: config.Int, Default: 0, Help: "rank of the query latent; 0 = no query compression"},
			{Name: "bias", Kind: config.Bool, Default: false, Help: "biases in the projections"},
		},
		func(s Spec) (Attention, error) {
			a := &MultiHeadLatent{spec: s, kvRank: s.Options.Int("kv_rank"), qRank: s.Options.Int("q_rank"),
				ropeDims: s.Options.Int("rope_dims"), bias: s.Options.Bool("bias")}
			if a.kvRank == 0 {
				a.kvRank = max(1, s.DModel/2)
			}
			if a.ropeDims == 0 {
				a.ropeDims = max(2, s.HeadDim()/2/2*2)
			}
			switch {
			case a.kvRank < 0:
				return nil, fmt.Errorf("model.attention.kv_rank: must be positive, got %d", a.kvRank)
			case a.qRank < 0:
				return nil, fmt.Errorf("model.attention.q_rank: must not be negative, got %d", a.qRank)
			case a.ropeDims < 2 || a.ropeDims%2 != 0:
				return nil, fmt.Errorf("model.attention.rope_dims: must be even and at least 2, got %d", a.ropeDims)
			}
			return a, nil
		})
}

// Forward implements Attention.
func (a *MultiHeadLatent) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	D, H, d, dr := a.spec.DModel, a.spec.Heads, a.spec.HeadDim(), a.ropeDims
	ckv, err := Project(s, "w_dkv", x, D, a.kvRank, a.bias)
	if err != nil {
		return nil, err
	}
	if ckv, err = Norm(s.Sub("kv_norm"), "rmsnorm", ckv, a.kvRank); err != nil {
		return nil, err
	}
	kc, err := Project(s, "w_uk", ckv, a.kvRank, H*d, a.bias)
	if err != nil {
		return nil, err
	}
	v, err := Project(s, "w_uv", ckv, a.kvRank, H*d, a.bias)
	if err != nil {
		return nil, err
	}
	kr, err := Project(s, "w_kr", x, D, dr, a.bias)
	if err != nil {
		return nil, err
	}
	cq, qIn := x, D
	if a.qRank > 0 {
		if cq, err = Project(s, "w_dq", x, D, a.qRank, a.bias); err != nil {
			return nil, err
		}
		if cq, err = Norm(s.Sub("q_norm"), "rmsnorm", cq, a.qRank); err != nil {
			return nil, err
		}
		qIn = a.qRank
	}
	qc, err := Project(s, "w_uq", cq, qIn, H*d, a.bias)
	if err != nil {
		return nil, err
	}
	qr, err := Project(s, "w_qr", cq, qIn, H*dr, a.bias)
	if err != nil {
		return nil, err
	}
	if qr, err = a.spec.Pos.Rotate(qr, c.Shape, H, dr, true); err != nil {
		return nil, err
	}
	if kr, err = a.spec.Pos.Rotate(kr, c.Shape, 1, dr, false); err != nil {
		return nil, err
	}
	q, err := graph.ConcatHeads(qc, qr, H, false)
	if err != nil {
		return nil, err
	}
	k, err := graph.ConcatHeads(kc, kr, H, true)
	if err != nil {
		return nil, err
	}
	o, _, err := c.Attend(q, k, v, CoreSpec{Heads: Heads{Heads: H, HeadDim: d + dr, ValueDim: d}, ALiBi: a.spec.Pos.ALiBi()})
	if err != nil {
		return nil, err
	}
	return Project(s, "wo", o, D, D, a.bias)
}

// KVCacheElems implements KVCache: the latent c_KV and the shared k^R.
func (a *MultiHeadLatent) KVCacheElems() int { return a.kvRank + a.ropeDims }
