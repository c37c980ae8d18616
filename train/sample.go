package train

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/data"
	"github.com/attnlab/attnlab/graph"
	"github.com/attnlab/attnlab/models"
)

// ErrNoTokenizer is LoadSampler's error (wrapped) for a run whose task's
// tokens are not text, such as copy or a classification task.
var ErrNoTokenizer = errors.New("the task has no text tokenizer")

// Sampler generates text with a trained decoder: one graph of the model for
// a single sequence of the task's seq_len, built once, whose tape machine is
// re-run for every token.
//
// The context is fed right-padded: its last min(len, seq_len) tokens at
// positions 0, 1, ..., the rest of the window filled with token 0, and the
// next-token logits are read at the last real position. For a causal decoder
// this is exact: no position attends to a later one (and norms, feed-forward
// layers and the head work position by position), so the padding cannot
// change the logits before it. The real tokens also sit at the positions
// training windows use, 0 onwards, whatever the position scheme (learned,
// sinusoidal, rope, alibi, ...). A context longer than seq_len slides: the
// model sees its last seq_len tokens.
type Sampler struct {
	Tokenizer data.Tokenizer
	SeqLen    int
	Step      int // the training step of the checkpoint

	model  *models.Model
	vm     G.VM
	inputs []int
}

// shapeTask stands in for the task when building a model to sample from: the
// model needs only the vocabulary and the sequence length, and sampling then
// needs no corpus.
type shapeTask struct{ vocab, seqLen int }

func (t shapeTask) Vocab() int   { return t.vocab }
func (t shapeTask) SeqLen() int  { return t.seqLen }
func (t shapeTask) Classes() int { return 0 }
func (t shapeTask) Fill(*data.Batch, data.Stream, uint64) {
	panic("train: a sampler's model has no data")
}

// LoadSampler builds the model exp describes for one sequence and loads the
// checkpoint at path into it, with its step inputs (Performer's features)
// set for the checkpoint's step. The tokenizer comes from the checkpoint's
// metadata (saved by Run), so the corpus need not exist any more; a
// checkpoint without one gets the task's own, and a task without one is
// ErrNoTokenizer. Every error is a bad-input error.
func LoadSampler(exp config.Experiment, path string) (*Sampler, error) {
	if err := exp.Validate(); err != nil {
		return nil, badInput(err)
	}
	opts, err := data.Options(exp.Task)
	if err != nil {
		return nil, badInput(err)
	}
	seqLen, ok := opts["seq_len"].(int)
	if !ok || seqLen < 1 {
		return nil, badInput(fmt.Errorf("task: %s has no positive seq_len", exp.Task.Kind))
	}
	f, ferr := readCheckpoint(path)
	var tok data.Tokenizer
	if ferr == nil && f.Metadata["tokenizer"] != "" {
		if tok, err = data.ParseTokenizer(f.Metadata["tokenizer"]); err != nil {
			return nil, badInput(fmt.Errorf("%s: %w", path, err))
		}
	} else {
		task, err := data.New(exp.Task, exp.Seed)
		if err != nil {
			return nil, badInput(err)
		}
		if tok = data.TokenizerOf(task); tok == nil {
			return nil, badInput(fmt.Errorf("task %s: %w", exp.Task.Kind, ErrNoTokenizer))
		}
	}
	if ferr != nil {
		return nil, badInput(ferr)
	}
	store, err := newStore(exp)
	if err != nil {
		return nil, err
	}
	m, err := models.Build(exp.Model, shapeTask{vocab: tok.Vocab(), seqLen: seqLen}, store, 1)
	if err != nil {
		return nil, badInput(err)
	}
	st, err := restoreCheckpoint(f, path, store, NewAdamW(store, 0, 0, 0, 0), tok.Spec())
	if err != nil {
		return nil, badInput(err)
	}
	if err := m.SetStep(st.Step); err != nil { // the draw of the checkpoint's step
		return nil, err
	}
	return &Sampler{Tokenizer: tok, SeqLen: seqLen, Step: st.Step, model: m,
		vm: G.NewTapeMachine(m.Graph), inputs: make([]int, seqLen)}, nil
}

// Close releases the sampler's tape machine.
func (s *Sampler) Close() error { return s.vm.Close() }

// Logits returns the model's next-token logits after context (at least one
// token; only the last SeqLen are seen).
func (s *Sampler) Logits(context []int) ([]float64, error) {
	if len(context) == 0 {
		return nil, errors.New("sample: empty context")
	}
	if len(context) > s.SeqLen {
		context = context[len(context)-s.SeqLen:]
	}
	V := s.Tokenizer.Vocab()
	for _, id := range context {
		if id < 0 || id >= V {
			return nil, fmt.Errorf("sample: token id %d outside the vocabulary [0, %d)", id, V)
		}
	}
	n := copy(s.inputs, context)
	clear(s.inputs[n:])
	if err := graph.SetInts(s.model.Inputs, s.inputs); err != nil {
		return nil, err
	}
	defer s.vm.Reset()
	if err := s.vm.RunAll(); err != nil {
		return nil, fmt.Errorf("sample: %w", err)
	}
	switch z := s.model.Logits.Value().Data().(type) {
	case []float32:
		row := z[(n-1)*V : n*V]
		out := make([]float64, V)
		for i, x := range row {
			out[i] = float64(x)
		}
		return out, nil
	case []float64:
		return slices.Clone(z[(n-1)*V : n*V]), nil
	default:
		return nil, fmt.Errorf("sample: logits of type %T", z)
	}
}

// SampleOptions says how Generate picks each token.
type SampleOptions struct {
	Temperature float64 // softmax(logits / Temperature); 0 picks the most likely token (greedy)
	TopK        int     // sample among the TopK most likely tokens only; 0: all
	Seed        uint64  // the generator's seed: same seed, same text
}

// Generate appends n tokens to prompt, one at a time, calling emit with each
// as soon as it is chosen. An empty prompt starts the model after a newline
// (the tokenizer's encoding of "\n", not emitted).
func (s *Sampler) Generate(prompt []int, n int, o SampleOptions, emit func(id int) error) error {
	if math.IsNaN(o.Temperature) || math.IsInf(o.Temperature, 0) || o.Temperature < 0 {
		return fmt.Errorf("sample: temperature must be a finite number >= 0, got %v", o.Temperature)
	}
	if o.TopK < 0 {
		return fmt.Errorf("sample: top-k must be >= 0, got %d", o.TopK)
	}
	ctx := slices.Clone(prompt)
	if len(ctx) == 0 {
		ctx = s.Tokenizer.Encode("\n")
	}
	r := rand.New(rand.NewPCG(o.Seed, 0x5eed5a3b1e))
	for range n {
		logits, err := s.Logits(ctx)
		if err != nil {
			return err
		}
		id, err := pick(logits, o.Temperature, o.TopK, r)
		if err != nil {
			return err
		}
		if len(ctx) >= 2*s.SeqLen { // keep the context bounded
			ctx = append(ctx[:0], ctx[len(ctx)-s.SeqLen:]...)
		}
		ctx = append(ctx, id)
		if err := emit(id); err != nil {
			return err
		}
	}
	return nil
}

// pick chooses a token id from logits: the largest (lowest id on ties) when
// temperature is 0, else a draw from softmax(logits / temperature) over the
// topK largest logits (ties by id; all when topK is 0 or at least the
// vocabulary).
func pick(logits []float64, temperature float64, topK int, r *rand.Rand) (int, error) {
	for _, z := range logits {
		if math.IsNaN(z) || math.IsInf(z, 0) {
			return 0, fmt.Errorf("sample: the model's logits are not finite (%v)", z)
		}
	}
	if temperature == 0 {
		best := 0
		for i, z := range logits {
			if z > logits[best] {
				best = i
			}
		}
		return best, nil
	}
	ids := make([]int, len(logits))
	for i := range ids {
		ids[i] = i
	}
	if topK > 0 && topK < len(ids) {
		slices.SortStableFunc(ids, func(a, b int) int {
			switch {
			case logits[a] > logits[b]:
				return -1
			case logits[a] < logits[b]:
				return 1
			}
			return 0
		})
		ids = ids[:topK]
	}
	mx := math.Inf(-1)
	for _, i := range ids {
		mx = max(mx, logits[i])
	}
	w := make([]float64, len(ids))
	var sum float64
	for j, i := range ids {
		w[j] = math.Exp((logits[i] - mx) / temperature)
		sum += w[j]
	}
	u := r.Float64() * sum
	for j, i := range ids {
		if u < w[j] {
			return i, nil
		}
		u -= w[j]
	}
	return ids[len(ids)-1], nil
}
