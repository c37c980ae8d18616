package layers

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// Latte is latent attention (Dolga et al. 2024, "Latte: Latent Attention
// for Linear Time Transformers"): each head has L latent states; a token
// chooses among them by a softmax over its query's L scores, and each
// latent summarizes the values by a softmax over time of its key scores:
//
//	y_t = sum_l p(l | x_t) sum_{s in V(t)} p(s | l, t) v_s,
//	p(l | x_t) = softmax_l(x_t W_q)_l,
//	p(s | l, t) = exp(k_sl) / sum_{s' in V(t)} exp(k_s'l),  k_s = x_s W_k,
//
// per head (q_t, k_t in R^L, v_t = x_t W_v in R^{D/H}), V(t) the unpadded
// positions s <= t (causal) or all unpadded positions (bidirectional).
// With E_sl = exp(k_sl - c_l) and D_tl = sum_{s in V(t)} E_sl this is
// linear attention with query features p(l | x_t) / D_tl and key features
// E_sl (graph.Latte): a chunked scan when causal, two global sums when not.
// Time O(T L (chunk + D/H)) per head, memory O(T L + T D/H); no T x T; a
// decoder's state is L x D/H sums and L normalizers per head. The
// stabilizer c_l is the whole sequence's maximum, exact but, in float32,
// limited to causal rows within about 88 of it (see graph.Latte).
type Latte struct {
	spec    Spec
	latents int
	chunk   int
	bias    bool
}

// DefaultLatteLatents is the default number of latent states per head.
const DefaultLatteLatents = 32

func init() {
	Register("latte", "latent attention (Latte, Dolga et al. 2024): a softmax over L latents per head for the query, a softmax over time per latent for the keys; a chunked scan when causal; O(T L d), no T x T",
		Support{Causal: true, Bidirectional: true, Padding: true, Positions: []string{"learned", "sinusoidal", "none"},
			Why:          Refusals{Positions: "it scores each query and key against latent states, never against each other, so there is no query-key product to rotate or bias by distance"},
			CheckOptions: map[string]any{"latents": 3, "chunk": 4}},
		[]config.OptionSpec{
			{Name: "latents", Kind: config.Int, Default: DefaultLatteLatents, Help: "latent states L per head (the paper's repo configs: 40 on LRA ListOps, 256 on text and pathfinder)"},
			{Name: "chunk", Kind: config.Int, Default: 64, Help: "positions per chunk of the causal scan"},
			{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the q, k, v and output projections"},
		},
		func(s Spec) (Attention, error) {
			a := &Latte{spec: s, latents: s.Options.Int("latents"), chunk: s.Options.Int("chunk"), bias: s.Options.Bool("bias")}
			if a.latents < 1 {
				return nil, fmt.Errorf("model.attention.latents: must be at least 1, got %d", a.latents)
			}
			if a.chunk < 1 {
				return nil, fmt.Errorf("model.attention.chunk: must be at least 1, got %d", a.chunk)
			}
			return a, nil
		})
}

// StateElems implements RecurrentState: per head the running sums N =
// sum_s E_s v_s^T (L x D/H) and D = sum_s E_s (L) of the causal scan.
func (a *Latte) StateElems() int {
	return a.spec.Heads * a.latents * (a.spec.HeadDim() + 1)
}

// Forward implements Attention.
func (a *Latte) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	d, H, L := a.spec.DModel, a.spec.Heads, a.latents
	q, k, v, err := ProjectQKV(s, x, d, H*L, H*L, d, a.bias)
	if err != nil {
		return nil, err
	}
	chunk := a.chunk
	if c.Tile > 0 { // a gradient check's small chunks
		chunk = c.Tile
	}
	sh := graph.LatteShape{Batch: c.Batch, SeqLen: c.SeqLen, Heads: H, Latents: L, ValueDim: d / H, Causal: c.Causal, Chunk: chunk}
	qf, kf, err := graph.LatteFeatures(q, k, c.KeyMask, sh)
	if err != nil {
		return nil, err
	}
	if c.Maps != nil {
		w, err := graph.LinearAttentionWeights(qf, kf, c.KeyMask, sh.Linear())
		if err != nil {
			return nil, err
		}
		as := graph.AttentionShape{Batch: c.Batch, QLen: c.SeqLen, KLen: c.SeqLen, Heads: H, KVHeads: H, HeadDim: d / H, Causal: c.Causal}
		if _, err := c.RecordMap(MapSpec{Weights: w, Shape: as, KeyMask: c.KeyMask, EmptyRows: c.KeyMask != nil,
			Note: "sum_l p(l | x_t) p(s | l, t): a mixture over latents of softmaxes over time (a row that sees no key is 0)"}); err != nil {
			return nil, err
		}
	}
	o, err := graph.LinearAttention(qf, kf, v, c.KeyMask, sh.Linear())
	if err != nil {
		return nil, err
	}
	return Project(s, "wo", o, d, d, a.bias)
}
