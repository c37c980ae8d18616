// Package train runs an experiment: one fixed-shape training graph reused
// across steps, evaluation on held-out data at intervals, AdamW with warm-up
// and cosine decay and clipping by global norm, a progress bar, metrics as
// JSON lines, atomic checkpoints, and resume that continues exactly where a
// run stopped.
package train

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/data"
	"github.com/attnlab/attnlab/gpu"
	"github.com/attnlab/attnlab/graph"
	"github.com/attnlab/attnlab/internal/atomicfile"
	"github.com/attnlab/attnlab/internal/finitejson"
	"github.com/attnlab/attnlab/internal/version"
	"github.com/attnlab/attnlab/models"
)

// The files of a run folder besides the checkpoint and the metrics.
const (
	ConfigFile  = "config.yaml"
	SummaryFile = "summary.json"
)

// Options says where a run writes and how it reports.
type Options struct {
	Dir      string    // the run folder; created if absent
	Resume   bool      // continue from the checkpoint in Dir
	Progress io.Writer // progress output; nil for none
	TTY      bool      // Progress is a terminal: redraw one line
	// Banner, if not empty, is printed to Progress (as a line) once the
	// run folder's checks have passed, so that a refused run prints only
	// its error.
	Banner string
	// Columns, with TTY, is the terminal's width now (it may change while
	// the run goes), e.g. TerminalWidth(os.Stdout); nil or 0 means 80.
	Columns func() int

	// graphUpdate runs device cuda's step on the CPU: the optimizer step
	// in the graph, evaluation results read back (tests).
	graphUpdate bool
}

// ErrInterrupted is returned when the context is cancelled (Ctrl-C): the
// step in flight finished and a checkpoint was written.
var ErrInterrupted = errors.New("interrupted")

// BadInputError marks errors caused by the user's input (config, files,
// flags), as opposed to failures during training.
type BadInputError struct{ Err error }

func (e *BadInputError) Error() string { return e.Err.Error() }
func (e *BadInputError) Unwrap() error { return e.Err }

func badInput(err error) error {
	if err == nil {
		return nil
	}
	return &BadInputError{Err: err}
}

// IsBadInput reports whether err was caused by the user's input.
func IsBadInput(err error) bool {
	var b *BadInputError
	return errors.As(err, &b)
}

// Setup is a built experiment: the task, the parameters, the training and
// evaluation graphs.
type Setup struct {
	Exp   config.Experiment
	Task  data.Task
	Store *graph.Store
	Train *models.Model
	Eval  *models.Model
}

// Build validates exp and builds everything a run needs; every error it
// returns is a bad-input error naming the config key.
func Build(exp config.Experiment) (*Setup, error) {
	task, store, err := prepare(exp)
	if err != nil {
		return nil, err
	}
	if exp.Device == "cuda" && !gpu.Available() {
		return nil, badInput(fmt.Errorf("device cuda: %w (or run on the CPU: --device cpu)", gpu.ErrNoCUDA))
	}
	if err := checkResources(exp, task); err != nil { // before any model is allocated
		return nil, err
	}
	s := &Setup{Exp: exp, Task: task, Store: store}
	if s.Train, err = models.Build(exp.Model, task, store, exp.Train.BatchSize); err != nil {
		return nil, badInput(err)
	}
	eb := exp.Train.EvalBatchSize
	if eb == 0 {
		eb = exp.Train.BatchSize
	}
	eb = min(eb, exp.Train.EvalExamples)
	if s.Eval, err = models.Build(exp.Model, task, store, eb); err != nil {
		return nil, badInput(err)
	}
	if exp.Device == "cuda" {
		for _, g := range []*G.ExprGraph{s.Train.Graph, s.Eval.Graph} {
			if err := gpu.CheckGraph(g); err != nil {
				return nil, badInput(fmt.Errorf("device cuda: %w", err))
			}
		}
	}
	return s, nil
}

// prepare validates exp and makes its task and an empty parameter store;
// its errors are bad-input errors.
func prepare(exp config.Experiment) (data.Task, *graph.Store, error) {
	if err := exp.Validate(); err != nil {
		return nil, nil, badInput(err)
	}
	task, err := data.New(exp.Task, exp.Seed)
	if err != nil {
		return nil, nil, badInput(err)
	}
	store, err := newStore(exp)
	if err != nil {
		return nil, nil, err
	}
	return task, store, nil
}

// newStore makes the parameter store of exp's dtype and seed; its error is
// a bad-input error.
func newStore(exp config.Experiment) (*graph.Store, error) {
	dt := tensor.Float32
	if exp.DType == "float64" {
		dt = tensor.Float64
	}
	store, err := graph.NewStore(dt, exp.Seed)
	if err != nil {
		return nil, badInput(err)
	}
	switch {
	case exp.Device == "cuda" && exp.TF32:
		store.Placement = graph.OnGPUTF32
	case exp.Device == "cuda":
		store.Placement = graph.OnGPU
	}
	return store, nil
}

// KVCacheBytesPerToken is the bytes one layer's KV cache holds per token
// in the experiment's dtype, or nil when the attention variant has none.
func (s *Setup) KVCacheBytesPerToken() *int {
	if s.Train.KVCacheElems < 0 {
		return nil
	}
	b := s.Train.KVCacheElems * int(s.Store.Dtype().Size())
	return &b
}

// StateBytesPerSequence is the bytes one layer's recurrent state holds per
// sequence (linear attention's d x d per head), or nil when the variant
// keeps none.
func (s *Setup) StateBytesPerSequence() *int {
	if s.Train.StateElems < 0 {
		return nil
	}
	b := s.Train.StateElems * int(s.Store.Dtype().Size())
	return &b
}

// Run trains exp, writing the run folder o.Dir. It returns the summary, or
// ErrInterrupted (with a checkpoint written) when ctx is cancelled.
func Run(ctx context.Context, exp config.Experiment, o Options) (*Summary, error) {
	start := time.Now()
	s, err := Build(exp)
	if err != nil {
		return nil, err
	}
	// Nothing is written to the folder before every check has passed (the
	// config, the folder and its lock, the checkpoint): see runfolder.go.
	rf, err := openRunFolder(o.Dir, o.Resume, exp, o.Progress)
	if err != nil {
		return nil, err
	}
	defer rf.close()
	if o.Banner != "" && o.Progress != nil {
		fmt.Fprintln(o.Progress, o.Banner)
	}
	ckptPath := filepath.Join(o.Dir, CheckpointFile)

	tr := exp.Train
	cuda := exp.Device == "cuda"
	trainer, err := newTrainer(s, cuda || o.graphUpdate, cuda)
	if err != nil {
		return nil, err
	}
	defer trainer.Close()
	opt := trainer.Opt
	evm, err := newEvalMachine(s, cuda || o.graphUpdate)
	if err != nil {
		return nil, err
	}
	defer evm.Close()

	var st checkpointState
	spec := tokenizerSpec(s.Task)
	if o.Resume {
		if st, err = loadCheckpoint(ckptPath, s.Store, opt, spec); err != nil {
			return nil, badInput(fmt.Errorf("--resume: %w", err))
		}
		if err := trainer.SyncFromHost(); err != nil {
			return nil, err
		}
	}
	st.Tokenizer = spec
	if err := rf.commit(exp, st.Step); err != nil {
		return nil, err
	}
	metrics, err := openMetrics(filepath.Join(o.Dir, MetricsFile), st.Step, o.Resume)
	if err != nil {
		return nil, badInput(fmt.Errorf("run folder: %w", err))
	}
	defer metrics.close()

	prevWall := st.WallSeconds
	wall := func() float64 { return prevWall + time.Since(start).Seconds() }
	save := func() error {
		st.WallSeconds = wall()
		if err := trainer.SyncToHost(); err != nil {
			return fmt.Errorf("checkpoint: %w", err)
		}
		if err := saveCheckpoint(ckptPath, s.Store, opt, st); err != nil {
			return fmt.Errorf("checkpoint: %w", err)
		}
		return nil
	}

	sched := Schedule{Kind: tr.Schedule, Peak: tr.LR, MinRatio: tr.MinLRRatio, Warmup: min(tr.WarmupSteps, tr.Steps), Total: tr.Steps}
	prog := newProgress(o.Progress, o.TTY, tr.Steps, tr.LogEvery)
	prog.columns = o.Columns
	defer prog.finish()
	if o.Resume {
		prog.line("resuming %s at step %d/%d", o.Dir, st.Step, tr.Steps)
	}
	for _, n := range metrics.notes {
		prog.line("note: %s", n)
	}
	if tr.WarmupSteps > tr.Steps {
		prog.line("note: train.warmup_steps (%d) is more than train.steps (%d): warming up over all %d steps, no decay", tr.WarmupSteps, tr.Steps, tr.Steps)
	}
	batch := data.NewBatch(s.Task, tr.BatchSize)
	tokens := float64(tr.BatchSize * s.Task.SeqLen())
	var trainSeconds float64
	var final *evalResult // the evaluation of the last step, when the loop ran it
	loopStart := time.Now()
	firstStep := st.Step

	for step := st.Step + 1; step <= tr.Steps; step++ {
		// Let the signal goroutine run: with GOMAXPROCS=1 a long run of
		// steps could otherwise keep it waiting and Ctrl-C go unseen.
		runtime.Gosched()
		if ctx.Err() != nil {
			if err := save(); err != nil {
				return nil, err
			}
			prog.line("interrupted after step %d; checkpoint saved", st.Step)
			return nil, ErrInterrupted
		}
		t0 := time.Now()
		s.Task.Fill(batch, data.Train, st.Examples)
		if err := s.Train.Feed(batch); err != nil {
			return nil, err
		}
		// Step inputs (Performer's random features) for this step: a pure
		// function of the step, so a resumed run sees what an
		// uninterrupted one does.
		if err := s.Train.SetStep(step); err != nil {
			return nil, err
		}
		lr := sched.At(step)
		logged := step%tr.LogEvery == 0 || step == tr.Steps || step == firstStep+1
		var accBatch *data.Batch
		if logged || prog.tty {
			accBatch = batch
		}
		t1 := time.Now()
		res, err := trainer.Step(lr, accBatch)
		var nf *NonFiniteError
		switch {
		case errors.As(err, &nf) && nf.What == "loss":
			return nil, fmt.Errorf("step %d: loss is %v (lr %.3g); %s; try a lower train.lr or train.grad_clip", step, nf.Value, lr, intactCheckpoint(st.Step, firstStep, tr.CheckpointEvery))
		case errors.As(err, &nf):
			return nil, fmt.Errorf("step %d: gradient norm is %v (lr %.3g); %s; try a lower train.lr or train.grad_clip", step, nf.Value, lr, intactCheckpoint(st.Step, firstStep, tr.CheckpointEvery))
		case err != nil:
			return nil, fmt.Errorf("step %d: %w", step, err)
		}
		dt := time.Since(t1)
		loss, norm, acc := res.Loss, res.GradNorm, res.Accuracy
		trainSeconds += time.Since(t0).Seconds()
		st.Stats.add(loss, float64(dt.Microseconds())/1000)
		st.Step = step
		st.Examples += uint64(tr.BatchSize)

		done := step - firstStep
		perStep := time.Since(loopStart) / time.Duration(done)
		tps := tokens * float64(done) / trainSeconds
		row := Row{Step: step, Loss: loss, Accuracy: acc, LR: lr, GradNorm: norm, TokensPerSec: tps, ElapsedSec: wall()}
		prog.update(progressState{step: step, loss: loss, acc: acc, tokensPerSec: tps, lr: lr,
			eta: perStep * time.Duration(tr.Steps-step)}, logged)
		// The last step's checkpoint is saved before its evaluation, so
		// that a kill during that (possibly long) evaluation loses no
		// training: the resumed run evaluates the checkpoint and writes the
		// summary, and metrics.jsonl then has no row for the last step.
		if step == tr.Steps {
			if err := save(); err != nil {
				return nil, err
			}
		}
		evalNow := (tr.EvalEvery > 0 && step%tr.EvalEvery == 0) || step == tr.Steps
		if evalNow {
			if err := s.Eval.SetStep(step); err != nil { // the draw this step trained with
				return nil, err
			}
			if err := trainer.SyncToHost(); err != nil {
				return nil, err
			}
			r, err := evaluateAfterTraining(s, evm)
			if err != nil {
				return nil, err
			}
			el, ea := r.loss, r.acc
			row.EvalLoss, row.EvalAccuracy = &el, &ea
			if step == tr.Steps {
				final = &evalResult{loss: el, acc: ea}
			}
			prog.line("eval step %d: loss %.4f accuracy %.4f (%d held-out examples)", step, el, ea, tr.EvalExamples)
		}
		if logged || evalNow {
			if err := metrics.write(row); err != nil {
				return nil, err
			}
		}
		// Other checkpoints follow their step's metrics row, so that a kill
		// between the two leaves a row after the checkpoint, which the
		// resume drops and trains again, rather than a step with no row.
		if tr.CheckpointEvery > 0 && step%tr.CheckpointEvery == 0 && step != tr.Steps {
			if err := save(); err != nil {
				return nil, err
			}
		}
	}
	prog.finish()

	// Final figures: the loop evaluated the last step; a run that was
	// already complete when resumed (or was killed during that evaluation,
	// after its last checkpoint) evaluates the checkpoint's weights here.
	if final == nil {
		if err := s.Eval.SetStep(st.Step); err != nil {
			return nil, err
		}
		if err := trainer.SyncToHost(); err != nil {
			return nil, err
		}
		r, err := evaluateAfterTraining(s, evm)
		if err != nil {
			return nil, err
		}
		final = &r
		prog.line("eval step %d: loss %.4f accuracy %.4f (%d held-out examples)", st.Step, r.loss, r.acc, tr.EvalExamples)
	}
	// The training figures cover the run's last steps whichever process ran
	// them (runStats travels in the checkpoint).
	sum := &Summary{
		Name: exp.Name, Attention: exp.Model.Attention.Kind, Task: exp.Task.Kind, Seed: exp.Seed, DType: exp.DType, Device: exp.Device,
		Version: version.String(), Commit: version.Commit(),
		BLAS: s.Store.Placement.BLAS(), Threads: runtime.GOMAXPROCS(0), Steps: st.Step, Params: s.Store.NumElements(),
		EvalAccuracy: final.acc, EvalLoss: final.loss, EvalExamples: tr.EvalExamples, TrainLoss: st.Stats.trainLoss(),
		StepMsMedian: st.Stats.stepMsMedian(), PeakRSSBytes: peakRSS(), WallSeconds: wall(), Resumed: o.Resume,
	}
	sum.KVCacheBytesPerToken = s.KVCacheBytesPerToken()
	sum.StateBytesPerSequence = s.StateBytesPerSequence()
	if m := sum.StepMsMedian; m > 0 {
		// From the median step, like StepMsMedian: a few steps slowed by
		// another process must not move the figure a sweep compares.
		sum.TrainTokensPerSec = tokens / (m / 1000)
	}
	if err := writeJSON(filepath.Join(o.Dir, SummaryFile), sum); err != nil {
		return nil, err
	}
	return sum, nil
}

// Trainer is the training half of a built Setup: the backward graph of
// the training model, the tape machine that runs forward and backward, and
// the AdamW optimizer over the store's parameters. Step is one training
// step exactly as Run takes (and times) it; trainer bench times the same
// call.
type Trainer struct {
	Setup *Setup
	Opt   *AdamW
	vm    G.VM
	clip  float64
	// update is the update in the graph of device cuda (devicestep.go);
	// nil on the CPU, where Step updates the host's parameters.
	update   *graphUpdate
	onDevice bool // update's values are kept on the GPU
}

// NewTrainer adds the backward graph to s.Train and makes its machine and
// optimizer (zero moments). Close releases the machine.
func NewTrainer(s *Setup) (*Trainer, error) {
	cuda := s.Exp.Device == "cuda"
	return newTrainer(s, cuda, cuda)
}

// newTrainer is NewTrainer with the update in the graph (inGraph, as
// device cuda; tested on the CPU) and its values kept on the GPU
// (onDevice).
func newTrainer(s *Setup, inGraph, onDevice bool) (*Trainer, error) {
	tr := s.Exp.Train
	params := s.Train.Params
	grads, err := G.Grad(s.Train.Loss, params...)
	if err != nil {
		return nil, fmt.Errorf("building the backward graph: %w", err)
	}
	opt := NewAdamW(s.Store, tr.Beta1, tr.Beta2, tr.Eps, tr.WeightDecay)
	if len(opt.params) != len(params) {
		return nil, fmt.Errorf("internal: %d parameters in the store, %d in the training graph", len(opt.params), len(params))
	}
	t := &Trainer{Setup: s, Opt: opt, clip: tr.GradClip, onDevice: onDevice}
	if !inGraph {
		t.vm = G.NewTapeMachine(s.Train.Graph, G.BindDualValues(params...))
		return t, nil
	}
	if t.update, err = newGraphUpdate(s.Train, grads, opt, tr.GradClip, onDevice); err != nil {
		return nil, fmt.Errorf("device %s: %w", s.Exp.Device, err)
	}
	if onDevice { // the backward's and the update's ops too
		if err := gpu.CheckGraph(s.Train.Graph); err != nil {
			return nil, badInput(fmt.Errorf("device cuda: %w", err))
		}
	}
	t.vm = G.NewTapeMachine(s.Train.Graph)
	return t, nil
}

// Close releases the tape machine.
func (t *Trainer) Close() error { return t.vm.Close() }

// SyncToHost makes the host's parameters and optimizer moments those of
// the last step (device cuda keeps them on the GPU): call it before
// saving a checkpoint or evaluating with another machine. On the CPU it
// does nothing.
func (t *Trainer) SyncToHost() error {
	if t.update == nil {
		return nil
	}
	if t.onDevice {
		if err := gpu.CopyToHost(t.vm); err != nil {
			return fmt.Errorf("copying the parameters back from the GPU: %w", err)
		}
	}
	t.update.toHost()
	return nil
}

// SyncFromHost makes the step use the host's parameters and optimizer
// moments (after a checkpoint was loaded into them).
func (t *Trainer) SyncFromHost() error {
	if t.update == nil {
		return nil
	}
	t.update.fromHost()
	if t.onDevice {
		if err := gpu.CopyToDevice(t.vm); err != nil {
			return fmt.Errorf("copying the parameters to the GPU: %w", err)
		}
	}
	return nil
}

// StepResult is what one training step reports.
type StepResult struct {
	Loss     float64 // the batch's training loss, before the update
	GradNorm float64 // global L2 norm of the gradients, before clipping
	Accuracy float64 // of the batch, when Step was given one; else 0
}

// NonFiniteError is Step's error when the loss ("loss") or the gradient
// norm ("gradient norm") is NaN or infinite; the parameters were not
// updated.
type NonFiniteError struct {
	What  string
	Value float64
}

func (e *NonFiniteError) Error() string { return fmt.Sprintf("%s is %v", e.What, e.Value) }

// Step runs one training step on the batch last fed to the training model
// (Setup.Train.Feed): forward and backward (one RunAll of the tape), the
// global gradient norm and the clipping factor for train.grad_clip, the
// AdamW update with learning rate lr, the layers' state updates
// (models.Model.AfterStep), then it clears the gradients and rewinds the
// tape. With accBatch (the fed batch) it also scores the
// batch's accuracy from the step's logits; nil skips that.
func (t *Trainer) Step(lr float64, accBatch *data.Batch) (StepResult, error) {
	var r StepResult
	m := t.Setup.Train
	if t.update != nil {
		r, err := t.update.step(t.vm, lr, accBatch)
		if err != nil {
			return r, err
		}
		return r, m.AfterStep()
	}
	if err := t.vm.RunAll(); err != nil {
		return r, err
	}
	r.Loss = graph.Float64s(m.Loss.Value())[0]
	if math.IsNaN(r.Loss) || math.IsInf(r.Loss, 0) {
		return r, &NonFiniteError{What: "loss", Value: r.Loss}
	}
	grads, err := Gradients(m.Params)
	if err != nil {
		return r, err
	}
	r.GradNorm = GlobalNorm(grads)
	if math.IsNaN(r.GradNorm) || math.IsInf(r.GradNorm, 0) {
		return r, &NonFiniteError{What: "gradient norm", Value: r.GradNorm}
	}
	scale := 1.0
	if t.clip > 0 && r.GradNorm > t.clip {
		scale = t.clip / r.GradNorm
	}
	if accBatch != nil {
		r.Accuracy = batchAccuracy(m, accBatch)
	}
	if err := t.Opt.Update(grads, lr, scale); err != nil {
		return r, err
	}
	if err := m.AfterStep(); err != nil { // non-gradient state (routing centroids)
		return r, err
	}
	ZeroGradients(grads)
	t.vm.Reset()
	return r, nil
}

// intactCheckpoint says which checkpoint a failed run left: the last one
// written at or before step (every train.checkpoint_every steps after the
// run's first step first, which is itself a checkpoint when the run was
// resumed), or that there is none yet.
func intactCheckpoint(step, first, every int) string {
	if c := lastCheckpoint(step, first, every); c > 0 {
		return fmt.Sprintf("the checkpoint of step %d is intact", c)
	}
	return "no checkpoint was written yet"
}

func lastCheckpoint(step, first, every int) int {
	if every <= 0 {
		return first
	}
	return max(first, step/every*every)
}

// batchAccuracy is the accuracy of the model's current logits on batch.
func batchAccuracy(m *models.Model, b *data.Batch) float64 {
	c, n, err := scoredAccuracy(m, b)
	if err != nil || n == 0 {
		return 0
	}
	return float64(c) / float64(n)
}

// scoredAccuracy counts the scored positions of b the model's current logits
// get right.
func scoredAccuracy(m *models.Model, b *data.Batch) (correct, scored int, err error) {
	targets := make([]float64, len(b.Targets))
	for i, t := range b.Targets {
		targets[i] = float64(t)
	}
	return graph.Accuracy(m.Logits.Value(), targets, b.LossMask)
}

// evaluate returns the loss and accuracy over the first n examples of the
// held-out stream, over the positions the task scores.
func evaluate(vm *evalMachine, m *models.Model, task data.Task, n int) (loss, acc float64, err error) {
	b := data.NewBatch(task, m.Batch)
	var lossSum, correct, scored float64
	for first := 0; first < n; first += m.Batch {
		task.Fill(b, data.Eval, uint64(first))
		if extra := first + m.Batch - n; extra > 0 { // score only the first n examples
			per := len(b.LossMask) / m.Batch
			clear(b.LossMask[len(b.LossMask)-extra*per:])
		}
		if err := m.Feed(b); err != nil {
			return 0, 0, err
		}
		if err := vm.RunAll(); err != nil {
			return 0, 0, fmt.Errorf("evaluation: %w", err)
		}
		l, c, k, err := vm.results(m, b)
		if err != nil {
			return 0, 0, err
		}
		vm.Reset()
		lossSum += l * float64(k)
		correct += float64(c)
		scored += float64(k)
	}
	graph.ReleaseValues(m.Graph) // training must not carry the evaluation's activations
	if scored == 0 {
		return 0, 0, fmt.Errorf("evaluation: the held-out examples score no position")
	}
	return lossSum / scored, correct / scored, nil
}

// evalMachine runs the evaluation graph. On device cuda its values live
// on the GPU: the loss and the correct count (graph.CorrectCount) are read
// back to the host (G.Read); on the CPU the nodes' values are read.
type evalMachine struct {
	G.VM
	loss, count G.Value // read back, device cuda only
	reads       bool
}

// newEvalMachine makes the machine of s's evaluation graph, reading the
// results back (reads: device cuda) or not.
func newEvalMachine(s *Setup, reads bool) (*evalMachine, error) {
	e := &evalMachine{}
	if reads {
		m := s.Eval
		count, err := graph.CorrectCount(m.Logits, m.Targets, m.Weights)
		if err != nil {
			return nil, err
		}
		G.Read(m.Loss, &e.loss)
		G.Read(count, &e.count)
		e.reads = true
	}
	e.VM = G.NewTapeMachine(s.Eval.Graph)
	return e, nil
}

// results are the last run's loss and its correct and scored positions of
// b.
func (e *evalMachine) results(m *models.Model, b *data.Batch) (loss float64, correct, scored int, err error) {
	if !e.reads {
		correct, scored, err = scoredAccuracy(m, b)
		return graph.Float64s(m.Loss.Value())[0], correct, scored, err
	}
	if loss, err = readScalar(e.loss); err != nil {
		return 0, 0, 0, err
	}
	nc := graph.Float64s(e.count)
	return loss, int(nc[0]), int(nc[1]), nil
}

// evalResult is one evaluation's figures.
type evalResult struct{ loss, acc float64 }

// evaluateAfterTraining evaluates s's current weights on the configured
// number of held-out examples with evm, the evaluation graph's machine.
// First it releases the values the last training step left in the training
// graph, and evaluate releases the evaluation graph's when done, so the two
// graphs' activations are never held at once (see graph.ReleaseValues).
func evaluateAfterTraining(s *Setup, evm *evalMachine) (evalResult, error) {
	graph.ReleaseValues(s.Train.Graph)
	l, a, err := evaluate(evm, s.Eval, s.Task, s.Exp.Train.EvalExamples)
	return evalResult{loss: l, acc: a}, err
}

// writeJSON writes v as indented JSON to path atomically; a NaN or infinite
// figure is written as null rather than losing the file.
func writeJSON(path string, v any) error {
	b, err := finitejson.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(path, append(b, '\n'), 0o644)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	var t float64
	for _, x := range xs {
		t += x
	}
	return t / float64(len(xs))
}

// EvalResult is what Evaluate reports.
type EvalResult struct {
	Step         int     `json:"step"`
	Examples     int     `json:"examples"`
	EvalLoss     float64 `json:"eval_loss"`
	EvalAccuracy float64 `json:"eval_accuracy"`
	// Tensors, with EvaluateTensors, are the model's parameters and
	// buffers as loaded from the checkpoint, in store order.
	Tensors []TensorSummary `json:"tensors,omitempty"`
}

// TensorSummary describes one loaded tensor, for checking a checkpoint
// from another reader (scripts/check-safetensors.py): its checkpoint
// name, shape and dtype, the sum of its values and its first few.
type TensorSummary struct {
	Name  string    `json:"name"`
	Shape []int     `json:"shape"`
	DType string    `json:"dtype"`
	Sum   float64   `json:"sum"`
	First []float64 `json:"first"`
}

func summarize(name string, v G.Value) TensorSummary {
	vals := graph.Float64s(v)
	t := TensorSummary{Name: name, Shape: slices.Clone([]int(v.Shape())), DType: v.Dtype().String()}
	for _, x := range vals {
		t.Sum += x
	}
	t.First = slices.Clone(vals[:min(4, len(vals))])
	return t
}

// EvaluateTensors is Evaluate that also returns every parameter and
// buffer as loaded (EvalResult.Tensors).
func EvaluateTensors(exp config.Experiment, path string) (*EvalResult, error) {
	return evaluateCheckpoint(exp, path, true)
}

// Evaluate loads the checkpoint at path into the model exp describes and
// evaluates it on exp.Train.EvalExamples held-out examples, with the step
// inputs (Performer's features) of the checkpoint's step.
func Evaluate(exp config.Experiment, path string) (*EvalResult, error) {
	return evaluateCheckpoint(exp, path, false)
}

func evaluateCheckpoint(exp config.Experiment, path string, tensors bool) (*EvalResult, error) {
	s, err := Build(exp)
	if err != nil {
		return nil, err
	}
	st, err := loadCheckpoint(path, s.Store, NewAdamW(s.Store, 0, 0, 0, 0), tokenizerSpec(s.Task))
	if err != nil {
		return nil, badInput(err)
	}
	if err := s.Eval.SetStep(st.Step); err != nil { // the checkpoint's draw
		return nil, err
	}
	vm, err := newEvalMachine(s, exp.Device == "cuda")
	if err != nil {
		return nil, err
	}
	defer vm.Close()
	l, a, err := evaluate(vm, s.Eval, s.Task, exp.Train.EvalExamples)
	if err != nil {
		return nil, err
	}
	res := &EvalResult{Step: st.Step, Examples: exp.Train.EvalExamples, EvalLoss: l, EvalAccuracy: a}
	if tensors {
		for _, p := range s.Store.Params() {
			res.Tensors = append(res.Tensors, summarize(p.Name, p.Value))
		}
		for _, b := range s.Store.Buffers() {
			res.Tensors = append(res.Tensors, summarize(bufferPrefix+b.Name, b.Value))
		}
	}
	return res, nil
}
