package train

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/data"
	"github.com/attnlab/attnlab/gpu"
	"github.com/attnlab/attnlab/graph"
	"github.com/attnlab/attnlab/layers"
)

// BenchResult is what Bench measures of a whole model's training step.
type BenchResult struct {
	Name      string `json:"name"`
	Model     string `json:"model"`
	Attention string `json:"attention"`
	// Memory is the model.memory kind and segment ("rmt, segments of
	// 64"), empty for a plain model.
	Memory    string `json:"memory,omitempty"`
	Task      string `json:"task"`
	DType     string `json:"dtype"`
	SeqLen    int    `json:"seq_len"`
	BatchSize int    `json:"batch_size"`
	Params    int    `json:"params"`
	Threads   int    `json:"threads"` // GOMAXPROCS
	BLAS      string `json:"blas"`
	Warmup    int    `json:"warmup_steps"`
	Steps     int    `json:"steps"` // timed steps
	// BuildSeconds is the time to build the training and evaluation
	// graphs, the backward graph and the tape machine.
	BuildSeconds float64 `json:"build_seconds"`
	StepMsMedian float64 `json:"step_ms_median"`
	StepMsMin    float64 `json:"step_ms_min"`
	StepMsMax    float64 `json:"step_ms_max"`
	// TokensPerSec is batch_size x seq_len over the median step.
	TokensPerSec float64 `json:"tokens_per_sec"`
	// AllocBytesPerStep and AllocsPerStep are the Go heap bytes and objects
	// one timed step allocates (runtime.MemStats TotalAlloc and Mallocs
	// deltas over the timed steps, divided by their number).
	AllocBytesPerStep uint64 `json:"alloc_bytes_per_step"`
	AllocsPerStep     uint64 `json:"allocs_per_step"`
	// PeakRSSBytes is the process's peak resident set size (getrusage) at
	// the end: it includes building the graphs and the warm-up steps; 0
	// where the platform does not report it.
	PeakRSSBytes int64   `json:"peak_rss_bytes"`
	FinalLoss    float64 `json:"final_loss"`
	// Device is where the step ran (cpu, or cuda); on cuda CopiesToDevice
	// and CopiesToHost name the nodes whose values one step's program
	// copies between host and device (Gorgonia's transport instructions),
	// one name per copy: the per-step traffic.
	Device         string   `json:"device"`
	Layers         int      `json:"n_layers"`
	CopiesToDevice []string `json:"copies_to_device,omitempty"`
	CopiesToHost   []string `json:"copies_to_host,omitempty"`
}

// Bench builds exp (as Run does), takes warmup untimed training steps, then
// steps timed ones, each exactly Run's step (Trainer.Step: forward,
// backward, clipping, AdamW update) on the next training batch with the
// config's learning-rate schedule. Like Run's step_ms_median, a step's time
// leaves out filling and feeding the batch; batch accuracy is not computed.
// Nothing is written.
func Bench(exp config.Experiment, warmup, steps int) (*BenchResult, error) {
	if warmup < 0 {
		return nil, badInput(fmt.Errorf("--warmup: want 0 or more, got %d", warmup))
	}
	if steps < 1 {
		return nil, badInput(fmt.Errorf("--steps: want at least 1, got %d", steps))
	}
	t0 := time.Now()
	s, err := Build(exp)
	if err != nil {
		return nil, err
	}
	trainer, err := NewTrainer(s)
	if err != nil {
		return nil, err
	}
	defer trainer.Close()
	build := time.Since(t0).Seconds()

	tr := exp.Train
	sched := Schedule{Kind: tr.Schedule, Peak: tr.LR, MinRatio: tr.MinLRRatio, Warmup: tr.WarmupSteps, Total: max(tr.Steps, warmup+steps)}
	batch := data.NewBatch(s.Task, tr.BatchSize)
	var stepMs []float64
	var allocBytes, allocs uint64
	var loss float64
	for step := 1; step <= warmup+steps; step++ {
		s.Task.Fill(batch, data.Train, uint64((step-1)*tr.BatchSize))
		if err := s.Train.Feed(batch); err != nil {
			return nil, fmt.Errorf("bench step %d: %w", step, err)
		}
		if err := s.Train.SetStep(step); err != nil { // as Run does, off the clock
			return nil, fmt.Errorf("bench step %d: %w", step, err)
		}
		timed := step > warmup
		if step == warmup+1 {
			runtime.GC() // the warm-up's garbage is not the timed steps' to collect
		}
		var before, after runtime.MemStats
		if timed {
			runtime.ReadMemStats(&before)
		}
		t1 := time.Now()
		res, err := trainer.Step(sched.At(step), nil)
		dt := time.Since(t1)
		if err != nil {
			return nil, fmt.Errorf("bench step %d: %w", step, err)
		}
		if timed {
			runtime.ReadMemStats(&after)
			allocBytes += after.TotalAlloc - before.TotalAlloc
			allocs += after.Mallocs - before.Mallocs
			stepMs = append(stepMs, float64(dt.Microseconds())/1000)
		}
		loss = res.Loss
	}
	memory := ""
	if k := exp.Model.Memory.Kind; k != "" && k != "none" {
		memory = k
		if seg, ok := exp.Model.Memory.Options["segment"]; ok {
			memory = fmt.Sprintf("%s, segments of %v", k, seg)
		}
	}
	r := &BenchResult{
		Name: exp.Name, Model: exp.Model.Kind, Attention: exp.Model.Attention.Kind, Memory: memory, Task: exp.Task.Kind, DType: exp.DType,
		SeqLen: s.Task.SeqLen(), BatchSize: tr.BatchSize, Params: s.Store.NumElements(),
		Threads: runtime.GOMAXPROCS(0), BLAS: s.Store.Placement.BLAS(), Warmup: warmup, Steps: steps, BuildSeconds: build,
		StepMsMedian: median(stepMs), StepMsMin: slices.Min(stepMs), StepMsMax: slices.Max(stepMs),
		AllocBytesPerStep: allocBytes / uint64(steps), AllocsPerStep: allocs / uint64(steps),
		PeakRSSBytes: peakRSS(), FinalLoss: loss, Device: exp.Device, Layers: exp.Model.NLayers,
	}
	if trainer.onDevice {
		if r.CopiesToDevice, r.CopiesToHost, err = gpu.Copies(trainer.vm); err != nil {
			return nil, err
		}
		// an op node's name is its expression: the op's name says enough
		for _, names := range [][]string{r.CopiesToDevice, r.CopiesToHost} {
			for i, n := range names {
				names[i], _, _ = strings.Cut(n, "(")
			}
		}
	}
	if r.StepMsMedian > 0 {
		r.TokensPerSec = float64(tr.BatchSize*r.SeqLen) / (r.StepMsMedian / 1000)
	}
	return r, nil
}

// Attention benchmark passes.
const (
	PassForward  = "fwd"    // the layer's forward
	PassBackward = "fwdbwd" // forward and backward (gradients of the input and every parameter)
)

// AttentionBenchOptions says what BenchAttention measures: each kind at
// each sequence length, one layer with the variant's default options or
// those Options gives it.
type AttentionBenchOptions struct {
	Kinds []string
	// Options maps a kind to the options its layer is built with, as a
	// config's model.attention holds them besides kind (values decoded
	// from YAML, checked by the variant's option specs and factory as a
	// config's are; see CheckAttentionOptions). A kind without an entry
	// gets its defaults.
	Options               map[string]map[string]any
	SeqLens               []int
	Batch, Heads, HeadDim int
	Causal                bool
	DType                 string   // float32 (default) or float64
	Passes                []string // PassForward, PassBackward
	Warmup, Reps          int
	Seed                  uint64
	// SequenceParallel, above 1, runs the layers' full attention cores
	// with that many sequence-parallel workers (layers.Context).
	SequenceParallel int
	// Progress, if not nil, is called before each measurement.
	Progress func(kind string, seqLen int, pass string)
}

// AttentionBenchRow is one variant at one sequence length in one pass, or
// a variant that refuses the setting (Skipped says why; no figures).
type AttentionBenchRow struct {
	Kind string `json:"kind"`
	T    int    `json:"T"`
	Pass string `json:"pass,omitempty"`
	// Options are the options the layer was built with besides its
	// defaults (AttentionBenchOptions.Options of Kind); nil for none.
	Options map[string]any `json:"options,omitempty"`
	Skipped string         `json:"skipped,omitempty"`
	*AttentionFigures
}

// AttentionFigures is what BenchAttention measures of a row (see
// AttentionMemoryNote for the memory figures).
type AttentionFigures struct {
	Params int     `json:"params"`
	Reps   int     `json:"reps"`
	MsMed  float64 `json:"ms_median"`
	MsMin  float64 `json:"ms_min"`
	MsMax  float64 `json:"ms_max"`
	Alloc  uint64  `json:"alloc_bytes_per_rep"`
	Allocs uint64  `json:"allocs_per_rep"`
	Peak   uint64  `json:"peak_heap_growth_bytes"`
	// Scores is the attention scores the layer's cores compute per
	// forward (layers.CoreLog); FlashShare is it over what flash would
	// compute for the same cores (1 for flash, 0.5 = half flash's tiles).
	Scores     int64   `json:"scores"`
	FlashShare float64 `json:"flash_share"`
}

// AttentionMemoryNote says what BenchAttention's memory figures are.
const AttentionMemoryNote = "alloc_bytes_per_rep: Go heap bytes allocated per rep (runtime.MemStats TotalAlloc delta over the timed reps / reps). " +
	"peak_heap_growth_bytes: in one extra untimed rep run with GOGC=10 (so that garbage is collected within about 10% of the live heap), " +
	"the maximum of runtime.MemStats.HeapAlloc (live heap objects plus garbage not yet swept), read every 250us and at the rep's end, " +
	"less its value after a forced GC before the layer was built: parameters, input, every node's value and gradient, and scratch buffers at their peak; " +
	"a peak shorter than the sampling interval can be missed"

// ErrAttentionNotApplicable marks a variant that refuses the benchmark's
// setting (e.g. an encoder-only variant with causal attention).
var ErrAttentionNotApplicable = errors.New("not applicable")

// BenchAttention measures one attention layer (layers.NewAttention with
// the variant's defaults or o.Options, no position scheme) on a random input
// [Batch*T, Heads*HeadDim]: for each kind, sequence length and pass, one
// graph and tape machine, Warmup untimed reps, Reps timed reps (a rep is
// one RunAll of the tape), then one memory rep (see AttentionMemoryNote).
// The forward pass's graph has no backward part; the fwdbwd graph takes
// the gradients of sum(output) with respect to the input and every
// parameter. Variants that refuse the setting get a row with Skipped set;
// options a variant refuses are an error before anything is measured (see
// CheckAttentionOptions).
func BenchAttention(o AttentionBenchOptions) ([]AttentionBenchRow, error) {
	dt := tensor.Float32
	switch o.DType {
	case "", "float32":
	case "float64":
		dt = tensor.Float64
	default:
		return nil, badInput(fmt.Errorf("--dtype %s: want float32 or float64", o.DType))
	}
	if o.Batch < 1 || o.Heads < 1 || o.HeadDim < 1 {
		return nil, badInput(fmt.Errorf("batch, heads and head dim must be at least 1, got %d, %d, %d", o.Batch, o.Heads, o.HeadDim))
	}
	if o.Reps < 1 || o.Warmup < 0 {
		return nil, badInput(fmt.Errorf("want reps >= 1 and warm-up reps >= 0, got %d and %d", o.Reps, o.Warmup))
	}
	for _, T := range o.SeqLens {
		if T < 1 {
			return nil, badInput(fmt.Errorf("sequence length %d: want at least 1", T))
		}
	}
	for _, p := range o.Passes {
		if p != PassForward && p != PassBackward {
			return nil, badInput(fmt.Errorf("pass %q: want %s or %s", p, PassForward, PassBackward))
		}
	}
	if err := CheckAttentionOptions(o); err != nil {
		return nil, err
	}
	var rows []AttentionBenchRow
	for _, kind := range o.Kinds {
		for _, T := range o.SeqLens {
			for _, pass := range o.Passes {
				if o.Progress != nil {
					o.Progress(kind, T, pass)
				}
				r, err := benchAttentionOne(o, dt, kind, T, pass)
				if errors.Is(err, ErrAttentionNotApplicable) {
					// The refusal is the setting's, not the pass's: one row.
					rows = append(rows, AttentionBenchRow{Kind: kind, T: T, Options: maps.Clone(o.Options[kind]), Skipped: errors.Unwrap(err).Error()})
					break
				}
				if err != nil {
					return rows, fmt.Errorf("%s at T=%d (%s): %w", kind, T, pass, err)
				}
				rows = append(rows, r)
			}
		}
	}
	return rows, nil
}

// CheckAttentionOptions checks o.Options as a config's model.attention
// options are checked: a kind's options against its declared option specs
// (an unknown option, a value of the wrong type) and by its factory in o's
// setting (kv_heads not dividing the heads, a block of 0). The error names
// the kind and the key (flash: model.attention.block: must be positive, got
// 0) and is a bad-input error. A kind that refuses o's setting whatever its
// options (BenchAttention reports it as skipped) has its options checked
// against their specs only; an unknown kind is left to BenchAttention.
func CheckAttentionOptions(o AttentionBenchOptions) error {
	spec := benchAttentionSpec(o)
	for _, kind := range o.Kinds {
		c := attentionComponent(o, kind)
		if len(c.Options) == 0 {
			continue
		}
		_, err := layers.NewAttention(c, spec)
		if err == nil {
			continue
		}
		if _, plain := layers.NewAttention(config.Component{Kind: kind}, spec); plain == nil {
			return badInput(fmt.Errorf("%s: %w", kind, err)) // the options, not the setting
		}
		for _, e := range layers.Variants() {
			if e.Name != kind {
				continue
			}
			if _, err := c.Resolve("model.attention", e.Options); err != nil {
				return badInput(fmt.Errorf("%s: %w", kind, err))
			}
		}
	}
	return nil
}

// attentionComponent is the model.attention component of kind: its kind
// and the options o gives it.
func attentionComponent(o AttentionBenchOptions, kind string) config.Component {
	return config.Component{Kind: kind, Options: maps.Clone(o.Options[kind])}
}

// benchAttentionSpec is the spec every benchmarked layer is built with.
func benchAttentionSpec(o AttentionBenchOptions) layers.Spec {
	return layers.Spec{DModel: o.Heads * o.HeadDim, Heads: o.Heads, NLayers: 1, Causal: o.Causal, Pos: layers.Position{Kind: "none"}}
}

// notApplicable wraps a variant's refusal of the setting.
type notApplicable struct{ err error }

func (e notApplicable) Error() string { return e.err.Error() }
func (e notApplicable) Unwrap() error { return e.err }
func (e notApplicable) Is(t error) bool {
	return t == ErrAttentionNotApplicable
}

func benchAttentionOne(o AttentionBenchOptions, dt tensor.Dtype, kind string, T int, pass string) (AttentionBenchRow, error) {
	c := attentionComponent(o, kind)
	row := AttentionBenchRow{Kind: kind, T: T, Pass: pass, Options: c.Options, AttentionFigures: &AttentionFigures{Reps: o.Reps}}
	if len(row.Options) == 0 {
		row.Options = nil
	}
	fullGC()
	floor := heapAllocBytes()

	vm, built, zero, err := buildAttentionBench(o, dt, c, T, pass == PassBackward)
	if err != nil {
		return row, err
	}
	defer vm.Close()
	row.Params = built.params
	row.Scores = built.scores
	if built.flashScores > 0 {
		row.FlashShare = float64(built.scores) / float64(built.flashScores)
	}
	// A rep is one run of the tape; the callers clear the gradients after
	// it, off the clock.
	rep := func() error {
		vm.Reset()
		return vm.RunAll()
	}
	for i := 0; i < o.Warmup; i++ {
		if err := rep(); err != nil {
			return row, err
		}
		zero()
	}
	runtime.GC()
	ms := make([]float64, 0, o.Reps)
	var alloc, mallocs uint64
	for i := 0; i < o.Reps; i++ {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		t0 := time.Now()
		if err := rep(); err != nil {
			return row, err
		}
		d := time.Since(t0)
		runtime.ReadMemStats(&after)
		zero()
		ms = append(ms, float64(d.Nanoseconds())/1e6)
		alloc += after.TotalAlloc - before.TotalAlloc
		mallocs += after.Mallocs - before.Mallocs
	}
	row.MsMed, row.MsMin, row.MsMax = median(ms), slices.Min(ms), slices.Max(ms)
	row.Alloc, row.Allocs = alloc/uint64(o.Reps), mallocs/uint64(o.Reps)

	// The memory rep: untimed, with the collector kept close to the live heap.
	fullGC()
	old := debug.SetGCPercent(10)
	stop := sampleHeapPeak(250 * time.Microsecond)
	err = rep()
	peak := stop()
	debug.SetGCPercent(old)
	if err != nil {
		return row, err
	}
	if peak > floor {
		row.Peak = peak - floor
	}
	return row, nil
}

// buildAttentionBench builds one layer of the component c (a kind and its
// options) at sequence length T on a random input and returns its tape
// machine, its number of parameters, and a function that clears the
// gradients (Gorgonia adds each run's into the bound dual values).
// benchLayer is what building a benchmarked layer tells: its parameter
// count and the scores its cores compute, and flash's for the same cores.
type benchLayer struct {
	params              int
	scores, flashScores int64
}

func buildAttentionBench(o AttentionBenchOptions, dt tensor.Dtype, c config.Component, T int, backward bool) (G.VM, benchLayer, func(), error) {
	store, err := graph.NewStore(dt, o.Seed)
	if err != nil {
		return nil, benchLayer{}, nil, err
	}
	spec := benchAttentionSpec(o)
	a, err := layers.NewAttention(c, spec)
	if err != nil {
		return nil, benchLayer{}, nil, notApplicable{err}
	}
	g := G.NewGraph()
	b := store.Bind(g)
	sh := layers.Shape{Batch: o.Batch, SeqLen: T, DModel: spec.DModel}
	x := b.Input("x", sh.Rows(), sh.DModel)
	rng := rand.New(rand.NewPCG(o.Seed, 11))
	vals := make([]float64, sh.Rows()*sh.DModel)
	for i := range vals {
		vals[i] = rng.NormFloat64()
	}
	if err := graph.SetValues(x, vals); err != nil {
		return nil, benchLayer{}, nil, err
	}
	cores := &layers.CoreLog{}
	out, err := a.Forward(layers.NewScope(b).Sub("attn"), x, layers.Context{Shape: sh, Causal: o.Causal, Cores: cores, SequenceParallel: o.SequenceParallel})
	if err != nil {
		return nil, benchLayer{}, nil, notApplicable{err}
	}
	built := benchLayer{params: store.NumElements()}
	built.scores, built.flashScores = cores.Scores()
	if !backward {
		return G.NewTapeMachine(g), built, func() {}, nil
	}
	loss, err := graph.SumAll(out) // its gradient a fill: Gorgonia's Sum broadcasts through Repeat
	if err != nil {
		return nil, benchLayer{}, nil, fmt.Errorf("building the loss: %w", err)
	}
	wrt := append([]*G.Node{x}, b.Nodes()...)
	if _, err := G.Grad(loss, wrt...); err != nil {
		return nil, benchLayer{}, nil, fmt.Errorf("building the backward graph: %w", err)
	}
	vm := G.NewTapeMachine(g, G.BindDualValues(wrt...))
	zero := func() {
		if grads, err := Gradients(wrt); err == nil {
			ZeroGradients(grads)
		}
	}
	return vm, built, zero, nil
}

// fullGC collects twice: objects with finalizers (Gorgonia's tape
// machines) and sync.Pool contents survive the first collection.
func fullGC() {
	runtime.GC()
	runtime.GC()
}

// heapAllocBytes is runtime.MemStats.HeapAlloc: the bytes of allocated
// heap objects, live ones and garbage not yet swept. ReadMemStats stops the
// world briefly, but unlike runtime/metrics it flushes the per-P span
// caches first, so small objects are counted the moment they are allocated.
func heapAllocBytes() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// sampleHeapPeak samples heapAllocBytes every interval until the returned
// function is called; that returns the maximum seen, including one last
// sample taken then.
func sampleHeapPeak(every time.Duration) func() uint64 {
	stop := make(chan struct{})
	done := make(chan uint64)
	go func() {
		peak := heapAllocBytes()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				done <- max(peak, heapAllocBytes())
				return
			case <-t.C:
				peak = max(peak, heapAllocBytes())
			}
		}
	}()
	return func() uint64 {
		close(stop)
		return <-done
	}
}
