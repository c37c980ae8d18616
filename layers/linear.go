package layers

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// Linear is linear attention (Katharopoulos et al. 2020, "Transformers are
// RNNs: Fast Autoregressive Transformers with Linear Attention"): softmax's
// exp(q . k) replaced by a kernel phi(q) . phi(k) with a positive feature map
// phi (elu(x) + 1 as in the paper, or relu), so that per head
//
//	out_i = phi(q_i)^T S_i / (phi(q_i)^T z_i + eps),
//	S_i = sum_{j} phi(k_j) v_j^T,  z_i = sum_{j} phi(k_j)
//
// over the keys j <= i (causal: a recurrence, computed chunk by chunk,
// graph.LinearAttention) or all keys (bidirectional: two global sums). No
// T x T matrix is formed: O(T (chunk + d) d) time and O(T d) memory, a
// d x d state per head carried across chunks.
type Linear struct {
	spec    Spec
	feature string
	chunk   int
	bias    bool
}

func init() {
	Register("linear", "linear attention (Katharopoulos et al. 2020): a feature map phi in place of softmax, a chunked prefix-sum scan when causal; O(T d^2), no T x T",
		Support{Causal: true, Bidirectional: true, Padding: true, Positions: []string{"learned", "sinusoidal", "none"},
			Why:          Refusals{Positions: "it never forms the scores alibi biases, and rotating queries and keys before the feature map is not the paper's method"},
			CheckOptions: map[string]any{"chunk": 4}, NonSmooth: true},
		[]config.OptionSpec{
			{Name: "feature", Kind: config.String, Default: graph.FeatureELU1, Help: "the feature map phi: elu1 (elu(x) + 1, the paper's) or relu"},
			{Name: "chunk", Kind: config.Int, Default: 64, Help: "positions per chunk of the causal scan"},
			{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the q, k, v and output projections"},
		},
		func(s Spec) (Attention, error) {
			a := &Linear{spec: s, feature: s.Options.String("feature"), chunk: s.Options.Int("chunk"), bias: s.Options.Bool("bias")}
			if a.feature != graph.FeatureELU1 && a.feature != graph.FeatureReLU {
				return nil, fmt.Errorf("model.attention.feature: want %s or %s, got %q", graph.FeatureELU1, graph.FeatureReLU, a.feature)
			}
			if a.chunk < 1 {
				return nil, fmt.Errorf("model.attention.chunk: must be at least 1, got %d", a.chunk)
			}
			return a, nil
		})
}

// StateElems implements RecurrentState: per head the d x d sum S and the
// d-vector z of the causal recurrence.
func (a *Linear) StateElems() int {
	d := a.spec.HeadDim()
	return a.spec.Heads * (d*d + d)
}

// Forward implements Attention.
func (a *Linear) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	d, H := a.spec.DModel, a.spec.Heads
	q, k, v, err := ProjectQKV(s, x, d, d, d, d, a.bias)
	if err != nil {
		return nil, err
	}
	chunk := a.chunk
	if c.Tile > 0 { // a gradient check's small chunks
		chunk = c.Tile
	}
	sh := graph.LinearShape{Batch: c.Batch, SeqLen: c.SeqLen, Heads: H, HeadDim: d / H, Causal: c.Causal, Feature: a.feature, Chunk: chunk}
	if c.Maps != nil {
		w, err := graph.LinearAttentionWeights(q, k, c.KeyMask, sh)
		if err != nil {
			return nil, err
		}
		as := graph.AttentionShape{Batch: c.Batch, QLen: c.SeqLen, KLen: c.SeqLen, Heads: H, KVHeads: H, HeadDim: d / H, Causal: c.Causal}
		if _, err := c.RecordMap(MapSpec{Weights: w, Shape: as, KeyMask: c.KeyMask, EmptyRows: true,
			Note: "phi(q_i) . phi(k_j) over its row's sum (the layer adds 1e-6 to the sum)"}); err != nil {
			return nil, err
		}
	}
	o, err := graph.LinearAttention(q, k, v, c.KeyMask, sh)
	if err != nil {
		return nil, err
	}
	return Project(s, "wo", o, d, d, a.bias)
}
