package layers

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/graph"
)

// Heads describes the heads of one attention core: Heads query heads of
// HeadDim dims over KVHeads key/value heads (0 = Heads), values of ValueDim
// dims (0 = HeadDim).
type Heads struct {
	Heads, KVHeads    int
	HeadDim, ValueDim int
}

// PatternFunc builds a variant's visibility pattern for sequences of t
// positions in tiles of tile positions (the tile the context picked); the
// context composes it with the causal and padding masks.
type PatternFunc func(t, tile int) (*graph.Pattern, error)

// CoreSpec is what a variant asks of the context for one attention core
// call (Context.Attend): the heads, the pattern, and how the call's map is
// labelled. It names no kernel and no tile size: the context picks them.
type CoreSpec struct {
	Heads
	// Pattern, if not nil, restricts which keys each query sees (sparse
	// variants); nil is every key.
	Pattern PatternFunc
	// Materialize asks for the dense core, which computes every T x T
	// score per head: standard attention's baseline, and the oracle the
	// tiled core is tested against. Otherwise the tiled core visits only
	// the tiles the pattern lists, in O(T) memory.
	Materialize bool
	// Block is a tile size the variant was configured with (flash's
	// block option); 0 is graph.DefaultFlashBlock. Context.Tile overrides
	// it.
	Block int
	// ALiBi biases the scores by distance (the position scheme's part in
	// attention; SelfAttention sets it).
	ALiBi bool
	// Shape, when its QLen is not 0, is the core's shape for attention
	// that is not among the layer's own positions (agent and latent
	// attention read other tokens): it then gives the lengths and the
	// causal flag, and KeyMask is the key mask (nil: none). Otherwise the
	// core is self-attention over the context's positions with its causal
	// and padding masks.
	Shape   graph.AttentionShape
	KeyMask *G.Node
	// Map is how the call's attention map is recorded (label, note, axes,
	// row mask); Attend fills in the queries, keys, masks, shape and
	// pattern.
	Map MapSpec
}

// CoreLog records the attention core calls of a layer.
type CoreLog struct {
	Calls []CoreCall
}

// CoreCall is one core call: the scores it computes (dense: every
// Batch x Heads x QLen x KLen; tiled: the visited tiles' elements,
// graph.ScoresComputed) and those FlashAttention would compute for the
// same shape, for the share of flash's work a pattern does.
type CoreCall struct {
	Label               string
	Scores, FlashScores int64
}

// Scores sums the calls' scores and flash's.
func (l *CoreLog) Scores() (scores, flash int64) {
	for _, c := range l.Calls {
		scores += c.Scores
		flash += c.FlashScores
	}
	return scores, flash
}

// Attend runs one attention core over q [Rows, Heads*HeadDim] and k, v
// (already projected and, where the position scheme rotates them,
// rotated): it builds the variant's pattern for the context's tile, picks
// the core (the dense one when Materialize is set, the tiled one
// otherwise) and records the call's map when c.Maps is set. lse is each
// query's logsumexp [Batch*Heads, QLen], for variants that merge several
// calls (graph.MergeAttention).
func (c Context) Attend(q, k, v *G.Node, cs CoreSpec) (out, lse *G.Node, err error) {
	kvHeads := cs.KVHeads
	if kvHeads == 0 {
		kvHeads = cs.Heads.Heads
	}
	s, keyMask := cs.Shape, cs.KeyMask
	if s.QLen == 0 {
		s = graph.AttentionShape{Batch: c.Batch, QLen: c.SeqLen, KLen: c.SeqLen, Causal: c.Causal}
		keyMask = c.KeyMask
	}
	s.Heads, s.KVHeads, s.HeadDim, s.ValueDim, s.ALiBi = cs.Heads.Heads, kvHeads, cs.HeadDim, cs.ValueDim, cs.ALiBi
	tile := c.Tile
	if tile == 0 {
		tile = cs.Block
	}
	if tile == 0 {
		tile = graph.DefaultFlashBlock
	}
	tile = min(tile, max(s.QLen, s.KLen)) // a larger tile is one tile of the sequence
	var p, mapPattern *graph.Pattern
	if cs.Pattern != nil {
		if s.QLen != s.KLen {
			return nil, nil, fmt.Errorf("attention pattern over %d queries and %d keys: patterns are for self-attention", s.QLen, s.KLen)
		}
		if p, err = cs.Pattern(s.QLen, tile); err != nil {
			return nil, nil, err
		}
		mapPattern = p
	} else if !cs.Materialize {
		p = graph.FullPattern(s, tile)
	}
	m := cs.Map
	if m.Label == "" {
		m.Label, m.Note = c.mapLabel, c.mapNote
	}
	m.Q, m.K, m.KeyMask, m.Shape, m.Pattern = q, k, keyMask, s, mapPattern
	if _, err := c.RecordMap(m); err != nil {
		return nil, nil, err
	}
	if c.Cores != nil {
		call := CoreCall{Label: m.Label, FlashScores: graph.ScoresComputed(s, nil, graph.DefaultFlashBlock)}
		if cs.Materialize {
			call.Scores = int64(s.Batch * s.Heads * s.QLen * s.KLen)
		} else {
			call.Scores = graph.ScoresComputed(s, p, tile)
		}
		c.Cores.Calls = append(c.Cores.Calls, call)
	}
	if c.SequenceParallel > 1 && !c.oracle {
		if cs.Pattern != nil || cs.Materialize {
			return nil, nil, fmt.Errorf("%s the workers run the full (flash) attention core; this variant's core is another (a pattern, or T x T scores): use flash", SequenceParallelRefusal)
		}
		return graph.SequenceParallelAttentionLSE(q, k, v, keyMask, s, c.SequenceParallel)
	}
	if cs.Materialize || c.oracle {
		if cs.Pattern == nil {
			p = nil
		}
		return graph.DenseAttentionLSE(q, k, v, keyMask, s, p)
	}
	return graph.TiledAttentionLSE(q, k, v, keyMask, s, p)
}

// SequenceParallelRefusal begins Attend's error for a core that sequence
// parallelism does not run (a pattern, or T x T scores).
const SequenceParallelRefusal = "model.sequence_parallel:"

// SelfAttention is Attend over the layer's own positions with the position
// scheme's part inside attention applied: queries and keys rotated (rope,
// partial_rope, xpos) or scores biased (alibi).
func SelfAttention(q, k, v *G.Node, c Context, pos Position, cs CoreSpec) (*G.Node, error) {
	kvHeads := cs.KVHeads
	if kvHeads == 0 {
		kvHeads = cs.Heads.Heads
	}
	var err error
	if q, err = pos.Rotate(q, c.Shape, cs.Heads.Heads, cs.HeadDim, true); err != nil {
		return nil, err
	}
	if k, err = pos.Rotate(k, c.Shape, kvHeads, cs.HeadDim, false); err != nil {
		return nil, err
	}
	cs.ALiBi = pos.ALiBi()
	out, _, err := c.Attend(q, k, v, cs)
	return out, err
}
