package layers

import (
	"errors"
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/graph"
)

// What the rows and columns of an attention map index.
const (
	AxisPosition   = "position"   // positions of the sequence (queries or keys)
	AxisAgent      = "agent"      // agent tokens (agent attention)
	AxisLatent     = "latent"     // learned latents (Perceiver latent attention)
	AxisHead       = "head"       // the heads a token is softly assigned to (ToST's membership)
	AxisCompressed = "compressed" // compressed block tokens (NSA's compression branch)
)

// DefaultMapLabel labels the map of a layer with a single attention core.
const DefaultMapLabel = "attention"

// MapRecorder collects the attention maps of a model built with
// Context.Maps set to it: for every attention core a layer runs, the weights
// each query row puts on each key column, per head, as a graph node that
// the model's graph computes alongside its output (graph.AttentionWeights,
// dense [Batch*Heads*QLen, KLen]). It is for inspection (trainer attnmap):
// training graphs are built with Context.Maps nil and contain none of these
// nodes, so recording costs nothing there.
//
// Build the graph, run it once, then Read the values of one example.
type MapRecorder struct {
	maps []*AttentionMap
}

// AttentionMap is one recorded map: the weights of one attention core call
// of one layer.
type AttentionMap struct {
	Layer int    // the block the layer is in (Context.Layer)
	Label string // which core of the layer: "attention", or e.g. "agents<-keys" for a layer with several
	Note  string // anything a reader needs to interpret the map (shared heads, signed weights, ...)
	// Rows and Cols say what the map's rows (queries) and columns (keys)
	// index: AxisPosition, AxisAgent, AxisLatent, or a new variant's own.
	Rows, Cols string
	Shape      graph.AttentionShape // the core's shape: Batch, Heads, KVHeads, QLen, KLen, Causal, ...
	// Sparse says the core ran a pattern: a row whose query the pattern
	// shows no key (or none but padding) is all zeros.
	Sparse bool
	// Unnormalized says the weights are not a distribution over the
	// visible keys: rows need not sum to 1, and weights may be negative (a
	// signed or unnormalized form; Note says which).
	Unnormalized bool
	// Weights is [Batch*Heads*QLen, KLen]: row (b*Heads + h)*QLen + i holds
	// the weights query i of sequence b puts on each key under head h.
	Weights *G.Node
	// RowMask [Batch*QLen] and ColMask [Batch*KLen] are 1 for a real row or
	// column and 0 for padding; nil when there is none.
	RowMask, ColMask *G.Node

	vals [3]G.Value // Weights, RowMask, ColMask, read by the graph when it runs
}

// MapSpec describes one attention core call for Context.RecordMap.
type MapSpec struct {
	Label string // default DefaultMapLabel
	Note  string
	// Q, K, KeyMask and Shape are exactly what the layer passes to the
	// core (queries and keys after any rotation), so that the recorded
	// weights are the ones the core applies.
	Q, K, KeyMask *G.Node
	Shape         graph.AttentionShape
	// Pattern is the core's visibility pattern (nil: none), drawn as
	// graph.DenseAttention applies it.
	Pattern *graph.Pattern
	// EmptyRows says a row of Weights may be all zeros (a query whose
	// features meet no key's in linear attention); a Pattern implies it.
	EmptyRows bool
	// Unnormalized marks Weights as not summing to 1 per row (see
	// AttentionMap.Unnormalized).
	Unnormalized bool
	// Weights, if not nil, is the map itself, [Batch*Heads*QLen, KLen], for
	// a core whose weights are not softmax(scale Q K^T + masks) (a linear or
	// low-rank form, say); Q and K are then not used.
	Weights *G.Node
	// Rows and Cols default to AxisPosition. RowMask defaults to the
	// context's KeyMask when the rows are positions of the sequence; the
	// column mask is always KeyMask.
	Rows, Cols string
	RowMask    *G.Node
}

// RecordMap records the map of one attention core call when c.Maps is set
// and returns it; without a recorder it adds nothing to the graph and
// returns nil. Every attention layer must call it (directly, or through
// SelfAttention, which does) for each core it runs; see Attention.
func (c Context) RecordMap(m MapSpec) (*AttentionMap, error) {
	if c.Maps == nil {
		return nil, nil
	}
	if m.Label == "" {
		m.Label = DefaultMapLabel
	}
	if m.Rows == "" {
		m.Rows = AxisPosition
	}
	if m.Cols == "" {
		m.Cols = AxisPosition
	}
	if m.RowMask == nil && m.Rows == AxisPosition && m.Shape.QLen == c.SeqLen {
		m.RowMask = c.KeyMask
	}
	w := m.Weights
	if w == nil {
		var err error
		if w, err = graph.AttentionWeights(m.Q, m.K, m.KeyMask, m.Shape, m.Pattern); err != nil {
			return nil, fmt.Errorf("recording the %s map of layer %d: %w", m.Label, c.Layer, err)
		}
	}
	return c.Maps.Add(AttentionMap{Layer: c.Layer, Label: m.Label, Note: m.Note, Rows: m.Rows, Cols: m.Cols,
		Shape: m.Shape, Sparse: m.Pattern != nil || m.EmptyRows, Unnormalized: m.Unnormalized, Weights: w, RowMask: m.RowMask, ColMask: m.KeyMask})
}

// WithMapLabel returns c with the label and note that SelfAttention gives
// the map it records (by default DefaultMapLabel and none), for a layer
// that runs SelfAttention more than once.
func (c Context) WithMapLabel(label, note string) Context {
	c.mapLabel, c.mapNote = label, note
	return c
}

// RecordCombined records alpha A + beta B, the combination of two recorded
// maps of the same shape that a layer applies (as gpa mixes its two softmax
// maps), under label; without a recorder, or without the maps, it does
// nothing.
func (c Context) RecordCombined(label, note string, a, b *AttentionMap, alpha, beta float64) error {
	if c.Maps == nil || a == nil || b == nil {
		return nil
	}
	w, err := graph.Combine(a.Weights, b.Weights, alpha, beta)
	if err != nil {
		return fmt.Errorf("recording the %s map of layer %d: %w", label, c.Layer, err)
	}
	m := *a
	m.Label, m.Note, m.Weights = label, note, w
	_, err = c.Maps.Add(m)
	return err
}

// Add records m, whose Weights the caller built, and returns the stored map.
// It adds nodes that copy the map's values out when the graph runs.
func (r *MapRecorder) Add(m AttentionMap) (*AttentionMap, error) {
	if m.Weights == nil {
		return nil, fmt.Errorf("layer %d: %s map without weights", m.Layer, m.Label)
	}
	s := m.Shape
	if want := (tensor.Shape{s.Batch * s.Heads * s.QLen, s.KLen}); !m.Weights.Shape().Eq(want) {
		return nil, fmt.Errorf("layer %d: %s map of shape %v, want %v", m.Layer, m.Label, m.Weights.Shape(), want)
	}
	p := &m
	p.vals = [3]G.Value{}
	for i, n := range []*G.Node{m.Weights, m.RowMask, m.ColMask} {
		if n != nil {
			G.Read(n, &p.vals[i])
		}
	}
	r.maps = append(r.maps, p)
	return p, nil
}

// Maps returns the recorded maps in the order the layers recorded them.
func (r *MapRecorder) Maps() []*AttentionMap { return r.maps }

// Last returns the most recently recorded map, or nil.
func (r *MapRecorder) Last() *AttentionMap {
	if len(r.maps) == 0 {
		return nil
	}
	return r.maps[len(r.maps)-1]
}

// MapValues is one recorded map of one example, read after the graph ran.
type MapValues struct {
	Layer            int
	Label, Note      string
	Rows, Cols       string
	Heads, KVHeads   int
	QLen, KLen       int
	Causal           bool
	Sparse           bool      // a row may be all zeros (AttentionMap.Sparse)
	Unnormalized     bool      // rows need not sum to 1 (AttentionMap.Unnormalized)
	Weights          []float64 // [Heads][QLen][KLen]
	RowMask, ColMask []float64 // [QLen] and [KLen], 1 real, 0 padding; nil: all real
}

// Head returns head h's QLen x KLen map, row-major.
func (v MapValues) Head(h int) []float64 {
	n := v.QLen * v.KLen
	return v.Weights[h*n : (h+1)*n]
}

// ErrNotRun is Read's error when the graph has not been run.
var ErrNotRun = errors.New("the graph has not been run")

// Read returns the maps of example b of the batch, after the graph has run.
func (r *MapRecorder) Read(b int) ([]MapValues, error) {
	out := make([]MapValues, 0, len(r.maps))
	for _, m := range r.maps {
		s := m.Shape
		if b < 0 || b >= s.Batch {
			return nil, fmt.Errorf("example %d of a batch of %d", b, s.Batch)
		}
		if m.vals[0] == nil {
			return nil, fmt.Errorf("layer %d, %s map: %w", m.Layer, m.Label, ErrNotRun)
		}
		n := s.Heads * s.QLen * s.KLen
		v := MapValues{Layer: m.Layer, Label: m.Label, Note: m.Note, Rows: m.Rows, Cols: m.Cols,
			Heads: s.Heads, KVHeads: s.KVHeads, QLen: s.QLen, KLen: s.KLen, Causal: s.Causal, Sparse: m.Sparse,
			Unnormalized: m.Unnormalized, Weights: graph.Float64s(m.vals[0])[b*n : (b+1)*n]}
		if m.vals[1] != nil {
			v.RowMask = graph.Float64s(m.vals[1])[b*s.QLen : (b+1)*s.QLen]
		}
		if m.vals[2] != nil {
			v.ColMask = graph.Float64s(m.vals[2])[b*s.KLen : (b+1)*s.KLen]
		}
		out = append(out, v)
	}
	return out, nil
}
