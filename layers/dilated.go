package layers

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
	"github.com/attnlab/attnlab/graph/blockmask"
)

// Dilated is LongNet's dilated attention (Ding et al. 2023, "LongNet:
// Scaling Transformers to 1,000,000,000 Tokens"). For each pair (w_i,
// r_i) of segment length and dilation, the sequence is cut into segments
// of w_i positions and every r_i-th position of each segment is kept;
// softmax attention runs among the kept positions of each segment, head h
// keeping the positions at offset h mod r_i (so the heads together cover
// every position). The pairs are mixed by their softmax denominators:
//
//	O = sum_i s_i O_i / sum_j s_j,   s_i = sum of exp(scores) of pair i
//
// which is, through each pair's per-row logsumexp L_i = log s_i,
// O = sum_i exp(L_i - L) O_i with L = logsumexp_i L_i: one softmax over the
// keys of all pairs, a key two pairs keep counting twice. A position a pair
// does not keep contributes nothing to that pair. The pairs are the
// overlapping streams of one pattern (graph.Stream: every r-th row, read
// in place, block-diagonal in segments of w/r), so one call of the tiled
// core computes them all, merging each pair's rows through the logsumexp
// as it goes: O(T w_i / r_i^2 D) time for each pair and O(T D) memory in
// all; with fixed (w, r) the whole is linear in T. Causal models keep
// j <= i inside each segment. Each w_i must be a multiple of r_i
// (LongNet's geometric sequences are).
type Dilated struct {
	spec                Spec
	segments, dilations []int
	bias                bool
}

func init() {
	Register("dilated", "LongNet dilated attention (Ding et al. 2023): per (segment w, dilation r) pair, every r-th position of each w-segment, pairs mixed by their softmax denominators; O(T)",
		Support{Causal: true, Bidirectional: true, Padding: true, Positions: Positions,
			CheckOptions: map[string]any{"segments": []any{2, 4, 8}, "dilations": []any{1, 2, 4}}},
		[]config.OptionSpec{
			{Name: "segments", Kind: config.IntList, Default: []int{64, 256, 1024}, Help: "w_i: segment lengths, one per pair"},
			{Name: "dilations", Kind: config.IntList, Default: []int{1, 4, 16}, Help: "r_i: dilations, one per pair; each divides its segment length"},
			{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the q, k, v and output projections"},
		},
		func(s Spec) (Attention, error) {
			a := &Dilated{spec: s, segments: s.Options.Ints("segments"), dilations: s.Options.Ints("dilations"), bias: s.Options.Bool("bias")}
			if len(a.segments) == 0 || len(a.segments) != len(a.dilations) {
				return nil, fmt.Errorf("model.attention.dilations: want one dilation per segment length (%d segment lengths, %d dilations), at least one", len(a.segments), len(a.dilations))
			}
			for i, w := range a.segments {
				r := a.dilations[i]
				switch {
				case w < 1:
					return nil, fmt.Errorf("model.attention.segments: lengths must be positive, got %d", w)
				case r < 1:
					return nil, fmt.Errorf("model.attention.dilations: dilations must be positive, got %d", r)
				case w%r != 0:
					return nil, fmt.Errorf("model.attention.dilations: dilation %d does not divide its segment length %d", r, w)
				}
			}
			return a, nil
		})
}

// Forward implements Attention.
func (a *Dilated) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	d, dh, H := a.spec.DModel, a.spec.HeadDim(), a.spec.Heads
	q, k, v, err := ProjectQKV(s, x, d, d, d, d, a.bias)
	if err != nil {
		return nil, err
	}
	if q, err = a.spec.Pos.Rotate(q, c.Shape, H, dh, true); err != nil {
		return nil, err
	}
	if k, err = a.spec.Pos.Rotate(k, c.Shape, H, dh, false); err != nil {
		return nil, err
	}
	cs := CoreSpec{Heads: Heads{Heads: H, HeadDim: dh}, ALiBi: a.spec.Pos.ALiBi(), Pattern: DilatedPattern(H, a.segments, a.dilations)}
	o, _, err := c.Attend(q, k, v, cs)
	if err != nil {
		return nil, err
	}
	return Project(s, "wo", o, d, d, a.bias)
}

// DilatedPattern is dilated attention's pattern: for each pair (w_i, r_i)
// of segments and dilations, head h reads positions h mod r, h mod r + r,
// ..., in segments of w / r of them; the pairs are overlapping streams of
// each head.
func DilatedPattern(heads int, segments, dilations []int) PatternFunc {
	return func(t, tile int) (*graph.Pattern, error) {
		if len(segments) != len(dilations) {
			return nil, fmt.Errorf("dilated pattern: %d segment lengths, %d dilations", len(segments), len(dilations))
		}
		p := &graph.Pattern{Heads: make([][]graph.Stream, heads)}
		masks := map[[3]int]*blockmask.Mask{} // by offset, stride and segment
		for i, w := range segments {
			r := dilations[i]
			for h := range p.Heads {
				off := h % r
				if off >= t {
					off = 0 // more offsets than positions: the head reads from 0
				}
				// A dilation of T or more keeps one position per head, as a
				// dilation of T does (and the rows' stride must not overflow).
				stride := min(r, t)
				key := [3]int{off, stride, max(w/r, 1)}
				m, ok := masks[key]
				if !ok {
					n := (t-1-off)/stride + 1
					m = blockmask.Segments(n, tile, key[2])
					masks[key] = m
				}
				p.Heads[h] = append(p.Heads[h], graph.Stream{Offset: off, Stride: stride, Mask: m})
			}
		}
		return p, nil
	}
}

// KVCacheElems implements KVCache: a key and a value of D per token.
func (a *Dilated) KVCacheElems() int { return 2 * a.spec.DModel }
