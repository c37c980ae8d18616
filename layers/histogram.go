package layers

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// DefaultHistogramBins is the histogram variant's default number of bins.
const DefaultHistogramBins = graph.DefaultHistogramBins

// The histogram variant's groupings: how sorted ranks are dealt into bins.
const (
	HistogramContiguous  = "contiguous"  // rank r to bin floor(r B / T): the paper's bin-wise reshape (BHR)
	HistogramInterleaved = "interleaved" // rank r to bin r mod B: the paper's frequency-wise reshape (FHR)
)

// Histogram is the dynamic-range histogram self-attention (DHSA) of
// Histoformer (Sun et al. 2024, "Restoring Images in Adverse Weather
// Conditions via Histogram Transformer", ECCV), adapted from image
// pixels to token sequences. Histoformer sorts features by intensity,
// splits the sorted order into equal-count bins and attends within bins,
// so that tokens of similar intensity attend to each other however far
// apart they are; then un-sorts. Here, per head h (q and k rotated by
// rope, partial_rope or xpos as the other variants do):
//
//	q = x Wq,  k = x Wk,  v = x Wv
//	s_i = k^h_i[0]                       (the intensity: the first coordinate
//	                                      of the head's key as the core sees it)
//	r(i) = rank of i in the order of (s_i, i), padded positions last
//	bin(i) = floor(r(i) B / T)  (grouping contiguous, the paper's BHR)
//	       = r(i) mod B         (grouping interleaved, the paper's FHR)
//	head_h(i) = sum_{j in V(i)} softmax_{V(i)}(q_i . k_j / sqrt(d)) v_j,
//	V(i) = {j unpadded : bin(j) = bin(i)}
//	out = concat(head_1..head_H) Wo
//
// B is the bins option, or ceil(T / bin_size) when bin_size > 0 (a fixed
// bin size m makes the cost linear in T). A query whose bin holds no
// unpadded key outputs 0. With rotary positions the intensity is read
// after the rotation, so it mixes the first coordinate pair by position.
// The core can subtract ALiBi's slope_h |i - j| on the original positions
// (graph tests check it), but the layer refuses alibi until CheckSettings
// has a bidirectional ALiBi setting for the declaration to be checked in.
// With one bin every query sees every unpadded key: standard attention
// (the layer test checks this to 1e-10).
//
// Why the intensity is a key coordinate, and how it learns: Histoformer
// sorts features by their own values; the sort is a permutation whose
// order has no gradient, while the sorted values are used and so get
// gradient. Here the intensity is a coordinate of the key, a learned
// linear function of the input that also takes part in the scores, so Wk
// (and the input) learn it through them; the order itself is not
// differentiated (no straight-through estimator: the paper has none).
//
// Cost (graph.HistogramAttention): per sequence and head a sort,
// O(T log T), then per bin of m (about T/B) positions an m x m score
// block by GEMM, O(T m d) time forward and backward; memory O(T) for the
// kept sorted order plus O(m^2) scratch per worker, never T x T.
//
// Departures from the paper: (1) Histoformer's attention within a bin is
// Restormer-style channel-wise (transposed) attention, a C x C map over
// the pixels of the bin; here it is token-wise attention among the bin's
// tokens, since a sequence model needs token mixing. (2) The paper sorts
// the (convolved) features themselves and derives Q, K, V from the sorted
// maps; here the sort key is one learned scalar per token and head (the
// first key coordinate), and q, k, v are ordinary projections. (3) The
// paper runs the BHR and FHR reshapes as two branches whose outputs it
// multiplies; here one grouping per layer is chosen by an option. (4) The
// dynamic-range convolution and the depth-wise convolutions of the
// projections are left out (they are image operators). (5) Bidirectional
// only: the bins come from ranks over the whole sequence. (6) Equal
// intensities are ordered by position, and padded positions are sorted
// last and never seen as keys. No KV cache: the layer is encoder-only
// (like linformer, it does not implement KVCache).
type Histogram struct {
	spec        Spec
	bins        int
	binSize     int
	interleaved bool
	bias        bool
}

func init() {
	Register("histogram", fmt.Sprintf("Histoformer's histogram attention (Sun et al. 2024): sort tokens by a key coordinate, equal-count bins attend within (bins default %d, bin_size 0 = off, grouping %s); O(T log T + T m d), m = T/bins; encoder only",
		DefaultHistogramBins, HistogramContiguous),
		Support{Bidirectional: true, Padding: true, Positions: []string{"learned", "sinusoidal", "none", "rope", "partial_rope", "xpos"},
			Why: Refusals{Causal: "takes its equal-count bins from ranks over the whole sequence, so a causal form would let later tokens decide which earlier keys a query sees",
				Positions: "its core applies ALiBi on the original positions, but no gradient-check setting covers bidirectional ALiBi yet"},
			// Three bins at the checks' T of 4..9: bins of 1..3 positions.
			CheckOptions: map[string]any{"bins": 3}, NonSmooth: true},
		[]config.OptionSpec{
			{Name: "bins", Kind: config.Int, Default: DefaultHistogramBins, Help: "B: equal-count bins of the sorted order; 1 is standard attention"},
			{Name: "bin_size", Kind: config.Int, Default: 0, Help: "when > 0, B = ceil(T / bin_size) instead of bins (linear time in T)"},
			{Name: "grouping", Kind: config.String, Default: HistogramContiguous, Help: "contiguous (rank r to bin floor(r B / T), the paper's BHR) or interleaved (bin r mod B, its FHR)"},
			{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the q, k, v and output projections"},
		},
		func(s Spec) (Attention, error) {
			a := &Histogram{spec: s, bins: s.Options.Int("bins"), binSize: s.Options.Int("bin_size"), bias: s.Options.Bool("bias")}
			switch g := s.Options.String("grouping"); g {
			case HistogramContiguous:
			case HistogramInterleaved:
				a.interleaved = true
			default:
				return nil, fmt.Errorf("model.attention.grouping: must be %s or %s, got %q", HistogramContiguous, HistogramInterleaved, g)
			}
			switch {
			case a.bins < 1:
				return nil, fmt.Errorf("model.attention.bins: must be at least 1, got %d", a.bins)
			case a.binSize < 0:
				return nil, fmt.Errorf("model.attention.bin_size: must not be negative (0: use bins), got %d", a.binSize)
			}
			return a, nil
		})
}

// Bins is the number of bins for sequences of t positions: bins, or
// ceil(t / bin_size) when bin_size > 0.
func (a *Histogram) Bins(t int) int {
	if a.binSize > 0 {
		return (t + a.binSize - 1) / a.binSize
	}
	return a.bins
}

// Forward implements Attention.
func (a *Histogram) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
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
	hs := graph.HistogramShape{
		AttentionShape: graph.AttentionShape{Batch: c.Batch, QLen: c.SeqLen, KLen: c.SeqLen, Heads: h, KVHeads: h, HeadDim: dh,
			Causal: c.Causal, ALiBi: pos.ALiBi()},
		Bins:        a.Bins(c.SeqLen),
		Interleaved: a.interleaved,
	}
	if c.Maps != nil {
		w, err := graph.HistogramWeights(q, k, c.KeyMask, hs)
		if err != nil {
			return nil, fmt.Errorf("recording the histogram map of layer %d: %w", c.Layer, err)
		}
		m := MapSpec{Label: c.mapLabel, Note: c.mapNote, Q: q, K: k, KeyMask: c.KeyMask, Shape: hs.AttentionShape,
			Weights: w, EmptyRows: c.KeyMask != nil}
		if m.Note == "" {
			grouping := HistogramContiguous
			if a.interleaved {
				grouping = HistogramInterleaved
			}
			m.Note = fmt.Sprintf("tokens sorted by the first key coordinate into %d %s bins; each attends within its bin", hs.Bins, grouping)
		}
		if _, err := c.RecordMap(m); err != nil {
			return nil, err
		}
	}
	if c.Cores != nil {
		// Per head, the sum over bins of m_b^2 (padded positions included).
		c.Cores.Calls = append(c.Cores.Calls, CoreCall{Label: DefaultMapLabel, Scores: graph.HistogramScores(hs),
			FlashScores: graph.ScoresComputed(hs.AttentionShape, nil, graph.DefaultFlashBlock)})
	}
	o, err := graph.HistogramAttention(q, k, v, c.KeyMask, hs)
	if err != nil {
		return nil, err
	}
	return Project(s, "wo", o, d, d, a.bias)
}
