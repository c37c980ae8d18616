package data

import (
	"fmt"

	"github.com/attnlab/attnlab/config"
)

// Stream selects the training or the held-out stream of a task.
type Stream uint8

// The two streams of every task.
const (
	Train Stream = iota
	Eval
)

// String returns "train" or "eval".
func (s Stream) String() string {
	switch s {
	case Train:
		return "train"
	case Eval:
		return "eval"
	default:
		return fmt.Sprintf("Stream(%d)", uint8(s))
	}
}

// Batch holds Size examples of SeqLen positions, flattened row-major.
type Batch struct {
	Size, SeqLen int
	Inputs       []int     // Size*SeqLen token ids in [0, Vocab())
	Targets      []int     // LM tasks: Size*SeqLen, the token to predict at each position (0 where LossMask is 0); classification tasks: Size class ids
	LossMask     []float64 // LM tasks: Size*SeqLen, 1 where the position is scored, else 0; classification: Size ones
	KeyMask      []float64 // nil for tasks without padding; otherwise Size*SeqLen with 1 = real token, 0 = padding
}

// Task generates deterministic examples.
//
// A task whose examples contain padding also implements
// interface{ Pads() bool }, returning true; NewBatch then allocates KeyMask.
// A task may implement interface{ Describe() string }, a one-line summary of
// its resolved options.
type Task interface {
	Vocab() int   // token ids are in [0, Vocab())
	SeqLen() int  // positions per example
	Classes() int // 0 for language-model tasks (a target per position); >0 for sequence classification
	// Fill writes examples first, first+1, ..., first+b.Size-1 of stream s into b
	// (b made by NewBatch for this task). Same task options + seed + stream + index => same example, always.
	Fill(b *Batch, s Stream, first uint64)
}

// NewBatch allocates a batch of size examples for t: every slice, and KeyMask
// only if t pads (implements Pads() returning true). For a classification task
// LossMask is already all ones. It panics if size < 1.
func NewBatch(t Task, size int) *Batch {
	if size < 1 {
		panic(fmt.Sprintf("data: NewBatch with size %d, want at least 1", size))
	}
	n := t.SeqLen()
	b := &Batch{Size: size, SeqLen: n, Inputs: make([]int, size*n)}
	if t.Classes() > 0 {
		b.Targets = make([]int, size)
		b.LossMask = make([]float64, size)
		for i := range b.LossMask {
			b.LossMask[i] = 1
		}
	} else {
		b.Targets = make([]int, size*n)
		b.LossMask = make([]float64, size*n)
	}
	if p, ok := t.(interface{ Pads() bool }); ok && p.Pads() {
		b.KeyMask = make([]float64, size*n)
	}
	return b
}

// Factory builds a task from its resolved options and a seed. It validates
// the options, returning errors that name the option as "task.NAME".
type Factory func(opts config.Values, seed uint64) (Task, error)

var registry = config.NewRegistry[Factory]("task kind")

// Register makes a task kind available to New under name; each task file calls
// it from init. It panics on a duplicate name or a default that does not match
// its option's kind.
func Register(name, description string, options []config.OptionSpec, f Factory) {
	registry.Register(config.Entry[Factory]{Name: name, Description: description, Options: options, Factory: f})
}

// MaxSeqLen bounds every task's seq_len, checked by New before the task is
// made: a task allocates tables and probe examples proportional to its
// length, and the trainer estimates a model's memory from the task, so an
// absurd length (1e12) must be refused before either. 2^20 positions is far
// beyond what a dense or flash core trains on a CPU (one flash layer at
// d_model 128 needs some 40 GiB there); the memory estimate refuses much
// shorter lengths on most machines.
const MaxSeqLen = 1 << 20

// New builds the task c names, resolving its options through the registry
// under the path "task": an unknown kind, an unknown option, a value of the
// wrong type or one the task rejects is an error naming the key, as in
// "task.seq_len: must be at least 32 (4 x kv_pairs), got 0".
func New(c config.Component, seed uint64) (Task, error) {
	e, opts, err := registry.Resolve("task", c)
	if err != nil {
		return nil, err
	}
	if n, ok := opts["seq_len"].(int); ok && n > MaxSeqLen {
		return nil, optErr("seq_len", "must be at most %d, got %d", MaxSeqLen, n)
	}
	t, err := e.Factory(opts, seed)
	if err != nil {
		return nil, err
	}
	if p, ok := t.(prober); ok {
		for _, s := range []Stream{Train, Eval} {
			if !p.probe(s) {
				return nil, fmt.Errorf("task: %s has too few distinct examples to split into train and held-out streams (no %s example in %d candidates); raise seq_len or vocab",
					describe(c.Kind, t), s, probeAttempts)
			}
		}
	}
	return t, nil
}

// Entries returns every registered task kind in name order.
func Entries() []config.Entry[Factory] { return registry.Entries() }

// describe returns t's own summary if it has one, else kind.
func describe(kind string, t Task) string {
	if d, ok := t.(interface{ Describe() string }); ok {
		return d.Describe()
	}
	return kind
}

// optErr returns an error naming option name of the task.
func optErr(name, format string, args ...any) error {
	return fmt.Errorf("task.%s: %s", name, fmt.Sprintf(format, args...))
}
