package models

// Segment recurrence: a decoder whose example of T tokens is cut into
// S = T / L segments of L tokens, run through the block stack one segment
// after another with a memory carried from each segment to the next. The
// kinds (rmt.go, memformer.go, hmt.go) say what the memory is, how a
// segment reads it and how it is written; this file holds their registry
// and the unrolling they share.
//
// The unrolling. All S segments of an example are unrolled in the one
// training graph, parameters shared across segments (the block parameters
// are named as in the plain model, blocks.i.*, so that a memory model with
// its memory switched off is the plain model, parameter for parameter).
// Nothing is carried between examples or steps: resume is exact with no
// state in the checkpoint, and evaluation, sampling and attention maps use
// the same builder (Build). What the attention layer sees is one segment's
// sequence (the kind's memory rows plus the segment's tokens), causal:
// every attention variant works inside the segments unchanged, with
// Context.Shape.SeqLen the segment sequence's length.
//
// Positions. The token embedding and the learned or sinusoidal positions
// index positions within the segment, 0..L-1 (the position table has L
// rows); memory rows get no absolute position. rope, partial_rope, xpos and
// alibi act inside attention over the segment sequence as the layer sees
// it, memory rows included.
//
// Truncated backpropagation through time (bptt_segments, every kind): the
// memory passed into segment s > 0 goes through graph.StopGradient when
// s % bptt_segments == 0 (0: never), so the gradient of a segment's loss
// reaches back at most to the start of its window of bptt_segments
// segments. The forward pass is unchanged.
//
// Cost. Each segment costs what the plain model costs on a sequence of
// its length (L plus the memory rows), so time and activation memory are
// O(S) = O(T / L) segments: linear in T at a fixed segment length, where
// quadratic attention over T would be O(T^2). Cutting and reassembling the
// segments (graph.GatherRows) is O(T D).
//
// Block add-on modules (model.block_modules) run inside every segment's
// blocks as in the plain model, over the segment sequence (memory rows
// included), causal as they declare.
//
// Attention maps (BuildRecording): each layer records one map per
// segment, labelled "segment s" (variants with their own labels keep
// them); rows and columns index the segment sequence, memory rows
// included.

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/data"
	"github.com/attnlab/attnlab/graph"
	"github.com/attnlab/attnlab/layers"
)

// MemorySpec is what a memory kind's factory is given besides its options.
type MemorySpec struct {
	DModel int
	SeqLen int // the task's T
	Norm   string
}

// MemoryFactory builds a memory kind from its resolved options; errors
// name the option's key (model.memory.segment: ...).
type MemoryFactory func(o config.Values, s MemorySpec) (Memory, error)

// Memory is one memory kind, as its factory configured it.
type Memory interface {
	// Segment is the segment length L; BPTT the truncation window
	// (bptt_segments, 0 = none).
	Segment() int
	BPTT() int
	// Rows is the number of memory rows a segment's sequence adds to its
	// L tokens; Params the memory's own parameters (for EstimateCost).
	Rows() int
	Params() int
	// Init is the memory entering segment 0.
	Init(u *Unroll) (MemoryState, error)
	// Step runs segment s on its token embeddings tokens [Batch*L, D]
	// (positions added) and the memory st, and returns the tokens'
	// outputs [Batch*L, D] after the final norm, in order, and the memory
	// it writes for segment s+1.
	Step(u *Unroll, s int, tokens *G.Node, st MemoryState) (*G.Node, MemoryState, error)
}

// MemoryState is the memory passed from one segment to the next: the
// kind's nodes, each stopped as a whole by truncation.
type MemoryState []*G.Node

var memoryKinds = config.NewRegistry[MemoryFactory]("memory kind")

// RegisterMemory adds a memory kind; each kind registers itself from an
// init function. It panics on an empty or duplicate name.
func RegisterMemory(e config.Entry[MemoryFactory]) { memoryKinds.Register(e) }

// MemoryKinds returns every registered memory kind in name order.
func MemoryKinds() []config.Entry[MemoryFactory] { return memoryKinds.Entries() }

// memoryOn reports whether cfg asks for a memory model.
func memoryOn(cfg config.Model) bool {
	return cfg.Memory.Kind != "" && cfg.Memory.Kind != "none"
}

// newMemory resolves cfg.Memory against the registry.
func newMemory(cfg config.Model, seqLen int) (Memory, error) {
	e, o, err := memoryKinds.Resolve("model.memory", cfg.Memory)
	if err != nil {
		return nil, err
	}
	return e.Factory(o, MemorySpec{DModel: cfg.DModel, SeqLen: seqLen, Norm: cfg.Norm})
}

// segmentOptions are the options every kind takes; defaultSegment is the
// segment option's default.
func segmentOptions(defaultSegment int) []config.OptionSpec {
	return []config.OptionSpec{
		{Name: "segment", Kind: config.Int, Default: defaultSegment, Help: "segment length L in tokens; must divide task.seq_len"},
		{Name: "bptt_segments", Kind: config.Int, Default: 2, Help: "gradient windows of this many segments: the memory entering segment s is stopped when s % bptt_segments == 0 (0 = never)"},
	}
}

// memoryInitStd is the default of init_std (rmt, hmt): the standard
// deviation of the learned initial memory memory.init, small next to the
// token embeddings' N(0, 1) (layers.EmbedStd). At segment 0 the write rows
// (rmt) or the writing last row (hmt) enter the blocks as memory.init,
// the same for every example, and their outputs are what the next segment
// reads: an initial memory of the tokens' scale stays the bulk of those
// outputs, whereas a small one leaves them made of what the rows gathered
// from the segment. Measured on passkey (5 digits, d_model 64, 2 layers,
// segments of 16; models/rmt.go): with N(0, 1) the example-dependent part
// of the memory entering segment 1 (its variance across the batch over
// its mean square) is 0.1% at initialization (rmt; 0.2% hmt) and falls to
// 0.003% by step 500 with the loss on ln 10; with 0.02 it is 9% (rmt; 18%
// hmt) and rmt learns the task (seeds 1 and 2), hmt with its one memory
// row with seed 1 only (seed 2 stays at chance, as rmt with one memory
// token does: a single memory row is fragile), hmt with memory_tokens 4
// with seeds 1, 2 and 3 (models/hmt.go).
const memoryInitStd = 0.02

// initStdOption is the init_std option of the kinds with a learned
// initial memory read and written by the blocks (rmt, hmt).
func initStdOption() config.OptionSpec {
	return config.OptionSpec{Name: "init_std", Kind: config.Float, Default: memoryInitStd,
		Help: "standard deviation of the learned initial memory memory.init at initialization; small so that the first write is made of what it reads (models/memory.go)"}
}

// initStdOf checks the init_std option.
func initStdOf(o config.Values) (float64, error) {
	v := o.Float("init_std")
	if !(v > 0) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("model.memory.init_std: must be a positive finite number, got %g", v)
	}
	return v, nil
}

// segmentOf checks the segment and bptt_segments options.
func segmentOf(o config.Values, s MemorySpec) (segment, bptt int, err error) {
	segment, bptt = o.Int("segment"), o.Int("bptt_segments")
	switch {
	case segment < 1:
		return 0, 0, fmt.Errorf("model.memory.segment: must be positive, got %d", segment)
	case s.SeqLen%segment != 0:
		return 0, 0, fmt.Errorf("model.memory.segment: must divide task.seq_len (%d), got %d", s.SeqLen, segment)
	case bptt < 0:
		return 0, 0, fmt.Errorf("model.memory.bptt_segments: must not be negative (0 = never stop), got %d", bptt)
	}
	return segment, bptt, nil
}

// Unroll is what a memory kind's segment step works with: the model's
// scope, block stack and sizes.
type Unroll struct {
	Root  layers.Scope
	Cfg   config.Model
	Spec  layers.BlockSpec
	Ctx   layers.Context // Batch and DModel set; Run sets SeqLen and the layer
	Batch int
	L, S  int // segment length and number of segments
	// Prev is segment s-1's token embeddings [Batch*L, D] (positions
	// added) while Step(s) runs, nil for s = 0: for kinds that read the
	// previous segment's tokens (hmt). It is input, not memory: truncation
	// does not stop it.
	Prev *G.Node
}

// Part is one run of rows of a segment sequence: X holds Rows rows per
// sequence ([Batch*Rows, D]), or, with Shared, the same Rows rows for every
// sequence ([Rows, D], a learned initial memory).
type Part struct {
	X      *G.Node
	Rows   int
	Shared bool
}

// Assemble stacks parts per sequence: sequence b of the result is part 0's
// rows of b, then part 1's, and so on ([Batch*n, D], n the parts' rows).
// Parts with no rows are skipped.
func (u *Unroll) Assemble(parts ...Part) (*G.Node, int, error) {
	var srcs G.Nodes
	var use []Part
	n := 0
	for _, p := range parts {
		if p.Rows > 0 {
			srcs, use, n = append(srcs, p.X), append(use, p), n+p.Rows
		}
	}
	if len(use) == 1 && !use[0].Shared { // already the layout
		return use[0].X, n, nil
	}
	refs := make([]graph.RowRef, 0, u.Batch*n)
	for b := 0; b < u.Batch; b++ {
		for i, p := range use {
			for r := 0; r < p.Rows; r++ {
				row := b*p.Rows + r
				if p.Shared {
					row = r
				}
				refs = append(refs, graph.RowRef{Src: i, Row: row})
			}
		}
	}
	x, err := graph.GatherRows(srcs, refs)
	return x, n, err
}

// Rows returns rows [lo, lo+count) of each sequence of y [Batch*n, D] as
// [Batch*count, D].
func (u *Unroll) Rows(y *G.Node, n, lo, count int) (*G.Node, error) {
	if lo == 0 && count == n {
		return y, nil
	}
	refs := make([]graph.RowRef, 0, u.Batch*count)
	for b := 0; b < u.Batch; b++ {
		for r := 0; r < count; r++ {
			refs = append(refs, graph.RowRef{Row: b*n + lo + r})
		}
	}
	return graph.GatherRows(G.Nodes{y}, refs)
}

// Run runs the block stack and the final norm of segment s on x
// [Batch*n, D], sequences of n rows, causal.
func (u *Unroll) Run(s int, x *G.Node, n int) (*G.Node, error) {
	return u.RunLabelled(fmt.Sprintf("segment %d", s), x, n)
}

// RunLabelled is Run with the attention maps (with more than one
// segment) labelled label: for a kind that runs the blocks more than once
// per segment (hmt's summary pass).
func (u *Unroll) RunLabelled(label string, x *G.Node, n int) (*G.Node, error) {
	ctx := u.Ctx
	ctx.SeqLen = n
	if ctx.Maps != nil && u.S > 1 {
		ctx = ctx.WithMapLabel(label, "memory model: rows and columns index the segment sequence, memory rows included")
	}
	var err error
	for i := 0; i < u.Cfg.NLayers; i++ {
		ctx.Layer = i
		if x, err = layers.Block(u.Root.Sub(fmt.Sprintf("blocks.%d", i)), x, ctx, u.Spec); err != nil {
			return nil, err
		}
	}
	return layers.Norm(u.Root.Sub("final_norm"), u.Cfg.Norm, x, u.Cfg.DModel)
}

// buildMemory is Build for a decoder with cfg.Memory set (see the file's
// comment).
func buildMemory(cfg config.Model, task data.Task, store *graph.Store, batch int, maps *layers.MapRecorder, attn layers.Attention, aspec layers.Spec, mods []layers.BlockModule) (*Model, error) {
	if cfg.Kind != "decoder" {
		return nil, fmt.Errorf("model.memory: segment recurrence is for decoders (language-model tasks), and model.kind is %s", cfg.Kind)
	}
	if aspec.Padded {
		return nil, fmt.Errorf("model.memory: the task pads its sequences, which memory models do not support")
	}
	T := task.SeqLen()
	mem, err := newMemory(cfg, T)
	if err != nil {
		return nil, err
	}
	L := mem.Segment()
	S := T / L
	g := graph.NewGraph(store.Placement)
	b := store.Bind(g)
	root := layers.NewScope(b)
	m := &Model{Graph: g, Batch: batch, SeqLen: T, KVCacheElems: -1, StateElems: -1, StepInputs: &layers.StepInputs{}}
	if kv, ok := attn.(layers.KVCache); ok {
		m.KVCacheElems = kv.KVCacheElems()
	}
	if st, ok := attn.(layers.RecurrentState); ok {
		m.StateElems = st.StateElems()
	}
	m.Inputs = b.Input("inputs", batch*T)
	emb, err := root.Param("embed.tokens", []int{task.Vocab(), cfg.DModel}, graph.Normal(layers.EmbedStd))
	if err != nil {
		return nil, err
	}
	u := &Unroll{Root: root, Cfg: cfg, Batch: batch, L: L, S: S,
		Ctx: layers.Context{Shape: layers.Shape{Batch: batch, SeqLen: L, DModel: cfg.DModel}, Causal: true, Maps: maps, Steps: m.StepInputs},
		Spec: layers.BlockSpec{DModel: cfg.DModel, DFF: cfg.DFF, NLayers: cfg.NLayers, Norm: cfg.Norm,
			Activation: graph.Activation(cfg.Activation), Attention: attn, Modules: mods}}
	st, err := mem.Init(u)
	if err != nil {
		return nil, err
	}
	outs := make(G.Nodes, S)
	for s := 0; s < S; s++ {
		if s > 0 && mem.BPTT() > 0 && s%mem.BPTT() == 0 {
			for i := range st {
				if st[i], err = graph.StopGradient(st[i]); err != nil {
					return nil, err
				}
			}
		}
		// The segment's token ids, embedded with positions within the
		// segment. The ids are cut, not the embedded rows: a cut of x
		// [Batch*T, D] would give each segment a full-size gradient of x,
		// O(S T D) in all; the ids take none.
		ids := m.Inputs
		if S > 1 {
			refs := make([]graph.RowRef, 0, batch*L)
			for bi := 0; bi < batch; bi++ {
				for j := 0; j < L; j++ {
					refs = append(refs, graph.RowRef{Row: bi*T + s*L + j})
				}
			}
			if ids, err = graph.GatherRows(G.Nodes{G.Must(G.Reshape(m.Inputs, tensor.Shape{batch * T, 1}))}, refs); err != nil {
				return nil, err
			}
			if ids, err = G.Reshape(ids, tensor.Shape{batch * L}); err != nil {
				return nil, err
			}
		}
		tokens, err := graph.Embedding(ids, emb)
		if err != nil {
			return nil, err
		}
		if tokens, err = layers.AddPositions(root.Sub("embed"), aspec.Pos, tokens, layers.Shape{Batch: batch, SeqLen: L, DModel: cfg.DModel}); err != nil {
			return nil, err
		}
		if outs[s], st, err = mem.Step(u, s, tokens, st); err != nil {
			return nil, err
		}
		u.Prev = tokens
	}
	h := outs[0]
	if S > 1 { // the segments' token outputs back in the example's order
		refs := make([]graph.RowRef, 0, batch*T)
		for bi := 0; bi < batch; bi++ {
			for s := 0; s < S; s++ {
				for j := 0; j < L; j++ {
					refs = append(refs, graph.RowRef{Src: s, Row: bi*L + j})
				}
			}
		}
		if h, err = graph.GatherRows(outs, refs); err != nil {
			return nil, err
		}
	}
	m.Outputs = task.Vocab()
	m.Targets = b.Input("targets", batch*T)
	m.Weights = b.Input("loss_mask", batch*T)
	if m.Logits, err = layers.Project(root, "head", h, cfg.DModel, m.Outputs, true); err != nil {
		return nil, err
	}
	if m.Loss, err = graph.SoftmaxCrossEntropy(m.Logits, m.Targets, m.Weights); err != nil {
		return nil, err
	}
	m.Params = b.Nodes()
	if err := m.SetStep(0); err != nil {
		return nil, err
	}
	return m, nil
}

// segmentTask is a task seen as its segments' sequences: n rows each.
type segmentTask struct {
	data.Task
	n int
}

func (t segmentTask) SeqLen() int { return t.n }

// estimateMemory is EstimateCost for a memory model: the plain model's
// estimate over batch*S sequences of the segment sequence's n = L + rows
// rows (what the unrolled graph holds: the blocks run on every segment,
// all kept for the backward pass), with the position table's L rows and
// the memory's own parameters. Approximate as EstimateCost is; the cut
// and reassembly copies (O(T D)) and the logits at memory rows (counted,
// not computed) are within its margin.
func estimateMemory(cfg config.Model, task data.Task, bytesPerElem, batch, evalBatch int) (Estimate, error) {
	if cfg.Kind != "decoder" {
		return Estimate{}, fmt.Errorf("model.memory: segment recurrence is for decoders (language-model tasks), and model.kind is %s", cfg.Kind)
	}
	if p, ok := task.(interface{ Pads() bool }); ok && p.Pads() {
		return Estimate{}, fmt.Errorf("model.memory: the task pads its sequences, which memory models do not support")
	}
	mem, err := newMemory(cfg, task.SeqLen())
	if err != nil {
		return Estimate{}, err
	}
	L := mem.Segment()
	S, n := task.SeqLen()/L, L+mem.Rows()
	plain := cfg
	plain.Memory = config.Component{}
	e, err := EstimateCost(plain, segmentTask{task, n}, bytesPerElem, batch*S, evalBatch*S)
	if err != nil {
		return e, err
	}
	params := float64(e.Params) + float64(mem.Params())
	if cfg.Positional == "learned" {
		params -= float64((n - L) * cfg.DModel)
	}
	e.Params, e.ParamBytes = saturate(params), 4*params*float64(bytesPerElem)
	e.Batch, e.EvalBatch, e.SeqLen = batch, evalBatch, task.SeqLen()
	return e, nil
}
