package graph

import (
	"fmt"
	"strings"

	"github.com/attnlab/attnlab/graph/blockmask"
)

// A Pattern says which keys each query may see, beyond the causal and
// key-padding masks (which the cores apply on top of it): per query head,
// one or more streams, each the attention of a gathered, evenly spaced
// subsequence under a block mask. Both attention cores consume it: the
// tiled core (TiledAttention) visits only the tiles the masks list, the
// dense core (DenseAttention) evaluates the same predicates at every score
// and is the oracle the tiled one is tested against.
//
// A query outside every stream of its head, or one whose stream shows it no
// key, outputs zeros and has logsumexp -Inf.
type Pattern struct {
	// Heads holds the streams of each query head: one entry for every
	// head, or one per head.
	Heads [][]Stream

	causal bool // the masks already include the causal mask (FullPattern)
	full   bool // FullPattern's: every key visible (every earlier one when causal)
}

// A Stream is the attention of one gathered subsequence: the positions
// Offset, Offset+Stride, Offset+2*Stride, ... (all positions when Offset is
// 0 and Stride 1) attend among themselves, query i' to key j' (indices in
// the subsequence) where Mask.Visible(i', j'). Mask is over the gathered
// positions: Mask.Q = Mask.K = ceil((T - Offset) / Stride). Gathering is
// free: the cores read every Stride-th row through the leading dimension.
//
// The Sparse Transformer's strided head is Stride streams, one per offset,
// each dense; a local pattern is one stream of stride 1; LongNet's dilated
// attention is one stream per (segment, dilation) pair (offset h mod r).
// Streams of a head may overlap (other strides, or the same positions
// under another mask): a query then attends over the keys of all its
// streams as one softmax in which a key shown by two streams counts
// twice, which is LongNet's mixing of its pairs by their softmax
// denominators; over disjoint streams it is plain attention over their
// union. The tiled core merges each stream's rows into the output through
// the logsumexp as it goes.
type Stream struct {
	Offset, Stride int
	Mask           *blockmask.Mask
}

// MaskPattern is the pattern of one block mask over all positions, the
// same for every head.
func MaskPattern(m *blockmask.Mask) *Pattern {
	return &Pattern{Heads: [][]Stream{{{Offset: 0, Stride: 1, Mask: m}}}}
}

// FullPattern is every key in tiles of block (the causal mask's tiles when
// s is causal): FlashAttention's pattern.
func FullPattern(s AttentionShape, block int) *Pattern {
	m := blockmask.Dense(s.QLen, s.KLen, block)
	if s.Causal {
		m = blockmask.Causal(s.QLen, s.KLen, block)
	}
	p := MaskPattern(m)
	p.causal, p.full = s.Causal, true
	return p
}

// Streams are the streams of query head h.
func (p *Pattern) Streams(h int) []Stream {
	if len(p.Heads) == 1 {
		return p.Heads[0]
	}
	return p.Heads[h]
}

// gathered is the number of positions of a stream over n positions.
func (st Stream) gathered(n int) int {
	if st.Offset >= n {
		return 0
	}
	return (n-1-st.Offset)/st.Stride + 1 // no overflow for a huge stride
}

// check reports a pattern that does not fit the shape.
func (p *Pattern) check(s AttentionShape) error {
	if len(p.Heads) != 1 && len(p.Heads) != s.Heads {
		return fmt.Errorf("attention pattern: streams for %d heads, want 1 or %d", len(p.Heads), s.Heads)
	}
	for h, streams := range p.Heads {
		if len(streams) == 0 {
			return fmt.Errorf("attention pattern: head %d has no stream", h)
		}
		for _, st := range streams {
			switch {
			case st.Mask == nil:
				return fmt.Errorf("attention pattern: head %d: a stream without a mask", h)
			case st.Stride < 1 || st.Offset < 0 || st.Offset >= st.Stride:
				return fmt.Errorf("attention pattern: head %d: stream offset %d, stride %d: want 0 <= offset < stride", h, st.Offset, st.Stride)
			case s.QLen != s.KLen && (st.Stride != 1 || len(streams) != 1):
				return fmt.Errorf("attention pattern: %d queries over %d keys: only one stream of stride 1", s.QLen, s.KLen)
			}
			if nq, nk := st.gathered(s.QLen), st.gathered(s.KLen); st.Mask.Q != nq || st.Mask.K != nk {
				return fmt.Errorf("attention pattern: head %d: mask %s is %dx%d, the stream (offset %d, stride %d) has %dx%d positions",
					h, st.Mask.Name, st.Mask.Q, st.Mask.K, st.Offset, st.Stride, nq, nk)
			}
		}
	}
	return nil
}

// withCausal is the pattern the kernels run: each mask composed with the
// causal mask when s is causal (query i' of a stream sees keys j' <= i' +
// KLen - QLen; gathering keeps the order, so this is causality in the
// original positions), else p itself. Without a pattern it is the full
// (or causal) pattern in tiles of block.
func (p *Pattern) withCausal(s AttentionShape, block int) *Pattern {
	if p == nil {
		return FullPattern(s, block)
	}
	if !s.Causal || p.causal {
		return p
	}
	done := map[*blockmask.Mask]*blockmask.Mask{}
	out := &Pattern{Heads: make([][]Stream, len(p.Heads))}
	for h, streams := range p.Heads {
		for _, st := range streams {
			m, ok := done[st.Mask]
			if !ok {
				m = blockmask.And(st.Mask, blockmask.Causal(st.Mask.Q, st.Mask.K, st.Mask.Block))
				done[st.Mask] = m
			}
			out.Heads[h] = append(out.Heads[h], Stream{Offset: st.Offset, Stride: st.Stride, Mask: m})
		}
	}
	return out
}

// id names the pattern in op names (Gorgonia merges nodes with equal op
// names and inputs, so two patterns must never share one).
func (p *Pattern) id() string {
	if p == nil {
		return "full"
	}
	var b strings.Builder
	for h, streams := range p.Heads {
		if h > 0 {
			b.WriteByte(';')
		}
		for i, st := range streams {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%d/%d:%s", st.Offset, st.Stride, st.Mask.Fingerprint())
		}
	}
	return b.String()
}

// ScoresComputed is the number of scores the tiled core computes for
// pattern p (nil: every key) over shape s in tiles of block: the visited
// tiles' elements, summed over sequences and query heads. Divided by the
// same for the nil pattern it is the share of FlashAttention's work the
// pattern does; the dense core computes Batch x Heads x QLen x KLen.
func ScoresComputed(s AttentionShape, p *Pattern, block int) int64 {
	run := p.withCausal(s, block)
	var n int64
	for h := 0; h < s.Heads; h++ {
		for _, st := range run.Streams(h) {
			m := st.Mask
			for qt := 0; qt < m.QueryTiles(); qt++ {
				rows := min(m.Block, m.Q-qt*m.Block)
				tiles, _ := m.Row(qt)
				for _, kt := range tiles {
					n += int64(rows * min(m.Block, m.K-int(kt)*m.Block))
				}
			}
		}
	}
	return n * int64(s.Batch)
}

// maxBlock is the largest tile of the pattern's masks.
func (p *Pattern) maxBlock() int {
	b := 1
	for _, streams := range p.Heads {
		for _, st := range streams {
			b = max(b, st.Mask.Block)
		}
	}
	return b
}

// tileBounds are the most query and key rows a tile of the pattern has:
// the block, or the masks' sizes when those are shorter (a block larger
// than the sequence is one tile of the sequence), which size the kernels'
// scratch buffers.
func (p *Pattern) tileBounds() (rows, cols int) {
	rows, cols = 1, 1
	for _, streams := range p.Heads {
		for _, st := range streams {
			rows = max(rows, min(st.Mask.Block, st.Mask.Q))
			cols = max(cols, min(st.Mask.Block, st.Mask.K))
		}
	}
	return rows, cols
}
