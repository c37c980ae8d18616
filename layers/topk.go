package layers

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// DefaultTopK is the topk variant's default k: the keys each query keeps.
const DefaultTopK = graph.DefaultTopK

// TopK is top-k attention (Gupta et al. 2021, "Memory-efficient
// Transformers via Top-k Attention"): standard multi-head attention in
// which each query keeps only its k best-scoring keys,
//
//	s_ij = q_i . k_j / sqrt(d)            (per head, q and k rotated by rope,
//	                                       partial_rope or xpos; alibi adds
//	                                       its distance bias here)
//	S_i  = the k visible keys of largest s_ij (unpadded; j <= i if causal;
//	       all of them when fewer than k are visible; ties to the lower j)
//	head_h(i) = sum_{j in S_i} softmax_{S_i}(s_ij) v_j
//	out = concat(head_1..head_H) Wo
//
// The selection is not differentiated. With k >= T it is standard
// attention. The core (graph.TopKAttention) computes the scores tile by
// tile and keeps each row's k best in a heap: O(T^2 d) time for the scores
// (top-k must see every score to choose; causal skips the tiles above the
// diagonal) plus O(T k d) for the softmax, the gathered values and the
// backward, and O(T k) memory for the kept indices, never T x T. The
// ALiBi bias is applied to the scores before the selection, so it changes
// which keys are kept.
type TopK struct {
	spec Spec
	k    int
	bias bool
}

func init() {
	Register("topk", fmt.Sprintf("each query keeps its k largest scores (Gupta et al. 2021; k default %d); O(T^2 d) scores, O(T k) memory", DefaultTopK),
		Support{Causal: true, Bidirectional: true, Padding: true, Positions: Positions,
			CheckOptions: map[string]any{"k": 3}, NonSmooth: true},
		[]config.OptionSpec{
			{Name: "k", Kind: config.Int, Default: DefaultTopK, Help: "keys each query keeps (those of largest score); k >= T is standard attention"},
			{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the q, k, v and output projections"},
		},
		func(s Spec) (Attention, error) {
			a := &TopK{spec: s, k: s.Options.Int("k"), bias: s.Options.Bool("bias")}
			if a.k < 1 {
				return nil, fmt.Errorf("model.attention.k: must be positive, got %d", a.k)
			}
			return a, nil
		})
}

// Forward implements Attention.
func (a *TopK) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	d, h, dh := a.spec.DModel, a.spec.Heads, a.spec.HeadDim()
	q, k, v, err := ProjectQKV(s, x, d, d, d, d, a.bias)
	if err != nil {
		return nil, err
	}
	pos := a.spec.Pos
	if q, err = pos.Rotate(q, c.Shape, h, dh, true); err != nil {
		return nil, err
	}
	if k, err = pos.Rotate(k, c.Shape, h, dh, false); err != nil {
		return nil, err
	}
	block := c.Tile
	if block == 0 {
		block = graph.DefaultFlashBlock
	}
	ts := graph.TopKShape{
		AttentionShape: graph.AttentionShape{Batch: c.Batch, QLen: c.SeqLen, KLen: c.SeqLen, Heads: h, KVHeads: h, HeadDim: dh,
			Causal: c.Causal, ALiBi: pos.ALiBi()},
		TopK:  a.k,
		Block: min(block, c.SeqLen),
	}
	if c.Maps != nil {
		w, err := graph.TopKWeights(q, k, c.KeyMask, ts)
		if err != nil {
			return nil, fmt.Errorf("recording the topk map of layer %d: %w", c.Layer, err)
		}
		m := MapSpec{Label: c.mapLabel, Note: c.mapNote, Q: q, K: k, KeyMask: c.KeyMask, Shape: ts.AttentionShape,
			Weights: w, EmptyRows: c.KeyMask != nil}
		if m.Note == "" {
			m.Note = fmt.Sprintf("each query keeps its %d largest scores", a.k)
		}
		if _, err := c.RecordMap(m); err != nil {
			return nil, err
		}
	}
	if c.Cores != nil {
		// Every score of the visited tiles is computed to choose from.
		flash := graph.ScoresComputed(ts.AttentionShape, nil, graph.DefaultFlashBlock)
		c.Cores.Calls = append(c.Cores.Calls, CoreCall{Label: DefaultMapLabel,
			Scores: graph.ScoresComputed(ts.AttentionShape, nil, ts.Block), FlashScores: flash})
	}
	o, err := graph.TopKAttention(q, k, v, c.KeyMask, ts)
	if err != nil {
		return nil, err
	}
	return Project(s, "wo", o, d, d, a.bias)
}

// KVCacheElems implements KVCache: every key and value stays a candidate,
// so a key and a value of D per token.
func (a *TopK) KVCacheElems() int { return 2 * a.spec.DModel }
