package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/configs"
	"github.com/attnlab/attnlab/graph"
	"github.com/attnlab/attnlab/internal/atomicfile"
	"github.com/attnlab/attnlab/layers"
	"github.com/attnlab/attnlab/report"
	"github.com/attnlab/attnlab/train"
)

// Files trainer bench attention writes under --out.
const (
	attnBenchJSON     = "attention-bench.json"
	attnTimePlot      = "attention-time-vs-T"
	attnMemoryPlot    = "attention-memory-vs-T"
	defaultBenchSteps = 10
)

func newBenchCmd() *cobra.Command {
	var cfgPath, device string
	var sets []string
	var warmup, steps int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Time a config's training step (ms, tokens/s, allocations, peak RSS), or single attention layers (bench attention)",
		Long: `bench builds a config's experiment as train does, takes --warmup untimed
training steps, then --steps timed ones, each exactly train's step (forward,
backward, gradient clipping, AdamW update; filling the batch is left out, as
in train's step_ms_median), and reports the median, min and max step time,
tokens/s at the median, the Go heap bytes and objects allocated per step, and
the process's peak RSS (which includes building the graphs). Nothing is
written. A --config path that is not a file is looked up among the embedded
configs (bench/ref-t256.yaml, bench/ref-t1024.yaml, ...).

bench attention measures single attention layers instead; see its --help.`,
		Example: `  trainer bench                                          # the embedded quickstart
  trainer bench --config configs/bench/ref-t256.yaml --steps 20 --json
  GOMAXPROCS=1 trainer bench --config bench/ref-t1024.yaml --set model.attention.kind=flash`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exp, err := loadBenchExperiment(cfgPath, withDevice(cmd, sets, device), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if warmup < 0 {
				return usageError{fmt.Errorf("--warmup: want 0 or more, got %d", warmup)}
			}
			if steps < 1 {
				return usageError{fmt.Errorf("--steps: want at least 1, got %d", steps)}
			}
			res, err := train.Bench(exp, warmup, steps)
			if err != nil {
				return fmt.Errorf("bench %s: %w", exp.Name, err)
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			printModelBench(w, res)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgPath, "config", "", "experiment YAML file, or the name of an embedded one (default: the embedded quickstart)")
	f.StringArrayVar(&sets, "set", nil, "override a config key by dotted path, KEY=VALUE (repeatable)")
	f.IntVar(&warmup, "warmup", 3, "untimed warm-up steps")
	f.IntVar(&steps, "steps", defaultBenchSteps, "timed steps")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	addDeviceFlag(cmd, &device)
	att := newBenchAttentionCmd()
	att.Args = wrapArgs(att.Args)
	cmd.AddCommand(att)
	return cmd
}

// loadBenchExperiment is loadExperiment, except that a --config that is
// not a file may name an embedded config ("bench/ref-t256.yaml", or
// "configs/bench/ref-t256.yaml" outside the repository).
func loadBenchExperiment(cfgPath string, sets []string, notes io.Writer) (config.Experiment, error) {
	if cfgPath != "" {
		name := strings.TrimPrefix(path.Clean(filepath.ToSlash(cfgPath)), "configs/")
		if _, err := os.Stat(cfgPath); errors.Is(err, fs.ErrNotExist) && fs.ValidPath(name) {
			if text, rerr := fs.ReadFile(configs.FS, name); rerr == nil {
				exp, err := config.Parse(name+" (embedded)", text)
				if err != nil {
					return exp, &train.BadInputError{Err: err}
				}
				return finishExperiment(exp, sets, notes)
			}
		}
	}
	return loadExperiment(cfgPath, "", sets, notes)
}

func printModelBench(w io.Writer, r *train.BenchResult) {
	memory := ""
	if r.Memory != "" {
		memory = ", memory " + r.Memory
	}
	fmt.Fprintf(w, "bench %s: %s, %s attention%s, task %s, T=%d, batch %d, %s, %d params\n",
		r.Name, r.Model, r.Attention, memory, r.Task, r.SeqLen, r.BatchSize, r.DType, r.Params)
	fmt.Fprintf(w, "%d threads (GOMAXPROCS), BLAS %s; %d warm-up + %d timed steps; build %.2fs\n",
		r.Threads, r.BLAS, r.Warmup, r.Steps, r.BuildSeconds)
	if r.Device == "cuda" {
		fmt.Fprintf(w, "device cuda (GPU 0), %d layers: per step %d host-to-device copies (%s) and %d device-to-host (%s)\n",
			r.Layers, len(r.CopiesToDevice), strings.Join(r.CopiesToDevice, ", "), len(r.CopiesToHost), strings.Join(r.CopiesToHost, ", "))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "step ms\tmedian %.1f\tmin %.1f\tmax %.1f\n", r.StepMsMedian, r.StepMsMin, r.StepMsMax)
	fmt.Fprintf(tw, "tokens/s\t%.0f\t(batch x T at the median step)\n", r.TokensPerSec)
	fmt.Fprintf(tw, "allocated/step\t%s\t%d objects (Go heap)\n", humanBytes(float64(r.AllocBytesPerStep)), r.AllocsPerStep)
	rss := "n/a on this platform"
	if r.PeakRSSBytes > 0 {
		rss = humanBytes(float64(r.PeakRSSBytes))
	}
	fmt.Fprintf(tw, "peak RSS\t%s\t(process, includes building the graphs)\n", rss)
	fmt.Fprintf(tw, "final loss\t%.4f\t\n", r.FinalLoss)
	tw.Flush()
}

// attentionBench is what trainer bench attention reports.
type attentionBench struct {
	Batch      int                       `json:"batch"`
	Heads      int                       `json:"heads"`
	HeadDim    int                       `json:"head_dim"`
	DModel     int                       `json:"d_model"`
	Causal     bool                      `json:"causal"`
	DType      string                    `json:"dtype"`
	Warmup     int                       `json:"warmup_reps"`
	Reps       int                       `json:"reps"`
	Threads    int                       `json:"threads"`
	BLAS       string                    `json:"blas"`
	MemoryNote string                    `json:"memory_note"`
	Rows       []train.AttentionBenchRow `json:"rows"`
	Slopes     []attentionSlope          `json:"slopes"`
	Plots      []string                  `json:"plots,omitempty"`
	PlotNote   string                    `json:"plot_note,omitempty"`
	// SequenceParallel is --sequence-parallel when above 1, and Balance the
	// work balance of its schedule at each T.
	SequenceParallel int             `json:"sequence_parallel,omitempty"`
	Balance          []seqParBalance `json:"schedule_balance,omitempty"`
}

// seqParBalance is a sequence-parallel schedule's work balance at one
// length: the tiles (graph.DefaultFlashBlock square) the busiest worker
// visits over the mean, for the schedule the cores run and, for causal
// attention, for the plain ring it replaces.
type seqParBalance struct {
	T         int     `json:"T"`
	Steps     int     `json:"steps"`
	Busiest   float64 `json:"busiest_over_mean"`
	RingSteps int     `json:"ring_steps,omitempty"`
	Ring      float64 `json:"ring_busiest_over_mean,omitempty"`
}

func scheduleBalance(p, T int, causal bool) seqParBalance {
	b := graph.SeqParChunks(T, p)
	ratio := func(steps []graph.SeqParStep) float64 {
		return graph.SeqParBalance(graph.SeqParTiles(steps, b, causal, graph.DefaultFlashBlock))
	}
	bal := graph.SeqParSchedule(p, b, causal, true)
	r := seqParBalance{T: T, Steps: len(bal), Busiest: ratio(bal)}
	if causal {
		ring := graph.SeqParSchedule(p, b, causal, false)
		r.RingSteps, r.Ring = len(ring), ratio(ring)
	}
	return r
}

// attentionSlope is one variant's and pass's least-squares slopes of log
// cost against log T (the power of T the cost grows with); nil with fewer
// than two sequence lengths.
type attentionSlope struct {
	Kind     string   `json:"kind"`
	Pass     string   `json:"pass"`
	Time     *float64 `json:"time_slope"`
	Alloc    *float64 `json:"alloc_slope"`
	PeakHeap *float64 `json:"peak_heap_slope"`
	SeqLens  []int    `json:"T"`
	timeXY   [2][]float64
	peakXY   [2][]float64
	allocXY  [2][]float64
}

func newBenchAttentionCmd() *cobra.Command {
	var kinds, sets []string
	var seqLens []int
	var o train.AttentionBenchOptions
	var mode, out string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "attention",
		Short: "Time one attention layer per variant and sequence length, forward and forward+backward, with allocations and peak heap",
		Long: `bench attention builds one attention layer of each --kinds variant (its
default options or those --set gives it, no position scheme, random float32
input of --batch sequences of T positions, d_model = --heads x --head-dim)
for each T, and
measures the forward pass and forward+backward (the gradients of
sum(output) with respect to the input and every parameter), each in its own
graph: --warmup untimed reps, then --reps timed ones (median/min/max ms),
the Go heap bytes and objects allocated per rep (runtime.MemStats TotalAlloc
and Mallocs deltas), and the peak heap growth: in one more untimed rep run
with GOGC=10, the maximum of runtime.MemStats.HeapAlloc read every 250us,
less its value after a GC before the layer was built (parameters, input,
every node's value and gradient, and scratch at their peak; within about 10%
of the peak live heap, and a peak shorter than the sampling interval can be
missed).

--set model.attention.KEY=VALUE (repeatable) gives option KEY to every
--kinds variant that takes it (see trainer list); a variant that does not
take KEY is built without it, and a KEY that no --kinds variant takes is an
error. VALUE is read as YAML (256, true, softmax, [1,2,4]) and checked as in
a config's model.attention. The options given are in the table's header
line and in each JSON row (options).

Each variant and pass gets the least-squares slope of log cost against log T
(2 = quadratic). Variants that refuse the setting (agent and latent are
bidirectional only: run them with --causal=false) are reported as n/a with
their reason. --out DIR writes attention-bench.json and log-log plots of time
and of peak heap against T (PNG and SVG) with the slopes in the labels at the lines' ends.`,
		Example: `  trainer bench attention --kinds standard,flash --T 1024,2048,4096
  trainer bench attention --kinds all --causal=false --T 256,512,1024 --reps 3 --out bench-out
  trainer bench attention --kinds flash --T 4096 --mode fwd --json
  trainer bench attention --kinds flash --set model.attention.block=128 --T 1024,4096
  trainer bench attention --kinds standard,gqa --set model.attention.kv_heads=1 --T 1024   # standard gets no kv_heads`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if o.Kinds, err = resolveKinds(kinds); err != nil {
				return err
			}
			if o.Options, err = attentionSetOptions(sets, o.Kinds); err != nil {
				return err
			}
			if len(seqLens) == 0 {
				return usageError{errors.New("--T: give at least one sequence length")}
			}
			o.SeqLens = nil
			for _, T := range seqLens {
				if T < 1 {
					return usageError{fmt.Errorf("--T %d: sequence lengths must be at least 1", T)}
				}
				if !slices.Contains(o.SeqLens, T) {
					o.SeqLens = append(o.SeqLens, T)
				}
			}
			slices.Sort(o.SeqLens)
			switch mode {
			case "fwd":
				o.Passes = []string{train.PassForward}
			case "fwdbwd":
				o.Passes = []string{train.PassBackward}
			case "both":
				o.Passes = []string{train.PassForward, train.PassBackward}
			default:
				return usageError{fmt.Errorf("--mode %s: want fwd, fwdbwd or both", mode)}
			}
			for _, c := range []struct {
				flag string
				v    int
				min  int
			}{{"--batch", o.Batch, 1}, {"--heads", o.Heads, 1}, {"--head-dim", o.HeadDim, 1}, {"--reps", o.Reps, 1}, {"--warmup", o.Warmup, 0}, {"--sequence-parallel", o.SequenceParallel, 1}} {
				if c.v < c.min {
					return usageError{fmt.Errorf("%s: want at least %d, got %d", c.flag, c.min, c.v)}
				}
			}
			if o.DType != "float32" && o.DType != "float64" {
				return usageError{fmt.Errorf("--dtype %s: want float32 or float64", o.DType)}
			}
			// --T, --batch, --heads and --head-dim: refuse a layer too big
			// for one tensor or this machine before building any.
			if err := train.CheckAttentionBench(o); err != nil {
				return err
			}
			// --set: each kind's options, checked as a config's are.
			if err := train.CheckAttentionOptions(o); err != nil {
				return err
			}
			if out != "" {
				if err := os.MkdirAll(out, 0o755); err != nil {
					return usageError{fmt.Errorf("--out: %w", err)}
				}
			}
			if cmd.ErrOrStderr() == os.Stderr && train.IsTerminal(os.Stderr) {
				o.Progress = func(kind string, T int, pass string) {
					fmt.Fprintf(os.Stderr, "\r\033[Kmeasuring %s at T=%d (%s)", kind, T, pass)
				}
				defer fmt.Fprint(os.Stderr, "\r\033[K")
			}
			rows, err := benchDeclared(o)
			if err != nil {
				return fmt.Errorf("bench attention: %w", err)
			}
			res := attentionBench{Batch: o.Batch, Heads: o.Heads, HeadDim: o.HeadDim, DModel: o.Heads * o.HeadDim,
				Causal: o.Causal, DType: o.DType, Warmup: o.Warmup, Reps: o.Reps, Threads: runtime.GOMAXPROCS(0),
				BLAS: graph.BLASName(), MemoryNote: train.AttentionMemoryNote, Rows: rows, Slopes: attentionSlopes(rows)}
			if o.SequenceParallel > 1 {
				res.SequenceParallel = o.SequenceParallel
				for _, T := range o.SeqLens {
					res.Balance = append(res.Balance, scheduleBalance(o.SequenceParallel, T, o.Causal))
				}
			}
			if out != "" {
				if err := writeAttentionBench(out, &res); err != nil {
					return err
				}
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			printAttentionBench(w, &res)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&kinds, "kinds", []string{"standard", "flash"}, "attention variants, comma-separated, or all")
	f.IntSliceVar(&seqLens, "T", []int{1024, 2048, 4096}, "sequence lengths, comma-separated")
	f.StringArrayVar(&sets, "set", nil, "give an attention option to every --kinds variant that takes it, model.attention.KEY=VALUE (repeatable)")
	f.IntVar(&o.Batch, "batch", 1, "sequences per batch")
	f.IntVar(&o.Heads, "heads", 4, "attention heads")
	f.IntVar(&o.HeadDim, "head-dim", 32, "dimensions per head (d_model = heads x head-dim)")
	f.BoolVar(&o.Causal, "causal", true, "causal attention (decoder); --causal=false for bidirectional")
	f.StringVar(&mode, "mode", "both", "fwd, fwdbwd or both")
	f.IntVar(&o.Reps, "reps", 5, "timed reps per measurement")
	f.IntVar(&o.SequenceParallel, "sequence-parallel", 1, "workers over chunks of the sequence for the full (flash) attention cores (model.sequence_parallel); the table's header gives the causal schedule's balance")
	f.IntVar(&o.Warmup, "warmup", 1, "untimed warm-up reps per measurement")
	f.StringVar(&o.DType, "dtype", "float32", "float32 or float64")
	f.Uint64Var(&o.Seed, "seed", 1, "seed of the input and the parameters")
	f.StringVar(&out, "out", "", "folder for attention-bench.json and the plots")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// resolveKinds checks the --kinds names against the registered variants;
// "all" stands for every one.
func resolveKinds(kinds []string) ([]string, error) {
	var known []string
	for _, v := range layers.Variants() {
		known = append(known, v.Name)
	}
	var out []string
	for _, k := range kinds {
		k = strings.TrimSpace(k)
		switch {
		case k == "all":
			for _, n := range known {
				if !slices.Contains(out, n) {
					out = append(out, n)
				}
			}
		case slices.Contains(known, k):
			if !slices.Contains(out, k) {
				out = append(out, k)
			}
		default:
			return nil, usageError{fmt.Errorf("--kinds: unknown attention kind %q (known: %s, or all)", k, strings.Join(known, ", "))}
		}
	}
	if len(out) == 0 {
		return nil, usageError{errors.New("--kinds: give at least one attention kind (see trainer list)")}
	}
	return out, nil
}

// attentionSetPrefix is the only key prefix bench attention's --set takes.
const attentionSetPrefix = "model.attention."

// attentionSetOptions reads the --set model.attention.KEY=VALUE
// assignments (VALUE parsed as a YAML scalar or list, as config's --set
// does for a component option; a later KEY replaces an earlier one) and
// gives each option to every kind in kinds that declares it. Any other key,
// and a KEY that no kind declares, is a usage error. The values are checked
// later (train.CheckAttentionOptions). It returns nil for no --set.
func attentionSetOptions(sets, kinds []string) (map[string]map[string]any, error) {
	if len(sets) == 0 {
		return nil, nil
	}
	declared := map[string][]string{} // kind -> its option names
	for _, v := range layers.Variants() {
		for _, spec := range v.Options {
			declared[v.Name] = append(declared[v.Name], spec.Name)
		}
	}
	var given config.Component
	for _, a := range sets {
		key, value, ok := strings.Cut(a, "=")
		key = strings.TrimSpace(key)
		if !ok {
			return nil, usageError{fmt.Errorf("--set %s: want %sKEY=VALUE, e.g. %sblock=128", oneLine(a), attentionSetPrefix, attentionSetPrefix)}
		}
		name, isAttention := strings.CutPrefix(key, attentionSetPrefix)
		switch {
		case !isAttention:
			return nil, usageError{fmt.Errorf("--set %s: bench attention takes only %sKEY=VALUE, an option of the --kinds variants", oneLine(key), attentionSetPrefix)}
		case name == "" || strings.Contains(name, "."):
			return nil, usageError{fmt.Errorf("--set %s: want %sKEY, KEY an option name (see trainer list)", oneLine(key), attentionSetPrefix)}
		case name == "kind":
			return nil, usageError{fmt.Errorf("--set %s: the kinds are --kinds", key)}
		}
		if err := given.Set(name, value); err != nil {
			return nil, usageError{fmt.Errorf("--set %s: %v", key, err)}
		}
	}
	out := map[string]map[string]any{}
	for _, name := range slices.Sorted(maps.Keys(given.Options)) {
		taken := false
		for _, k := range kinds {
			if !slices.Contains(declared[k], name) {
				continue
			}
			if out[k] == nil {
				out[k] = map[string]any{}
			}
			out[k][name] = given.Options[name]
			taken = true
		}
		if !taken {
			return nil, usageError{fmt.Errorf("--set %s%s: no kind in --kinds takes option %s (see trainer list)", attentionSetPrefix, name, name)}
		}
	}
	return out, nil
}

// benchDeclared runs train.BenchAttention on the --kinds that declare
// o's setting (layers.Support) and gives each of the others a row per T
// with its declared reason; a declared variant that refuses the setting
// anyway is an error, not an n/a row. Rows keep the order of o.Kinds.
func benchDeclared(o train.AttentionBenchOptions) ([]train.AttentionBenchRow, error) {
	refused := map[string]string{}
	run := o
	run.Kinds = nil
	for _, k := range o.Kinds {
		sup, err := layers.SupportOf(k)
		if err != nil {
			return nil, err
		}
		if err := sup.Allows(layers.Setting{Causal: o.Causal}); err != nil {
			refused[k] = err.Error()
			continue
		}
		run.Kinds = append(run.Kinds, k)
	}
	var measured []train.AttentionBenchRow
	if len(run.Kinds) > 0 {
		var err error
		if measured, err = train.BenchAttention(run); err != nil {
			return nil, err
		}
	}
	rows, err := mergeBenchRows(o.Kinds, o.SeqLens, refused, measured)
	if err != nil {
		return nil, err
	}
	for i, r := range rows { // a refused kind's rows say what it was given too
		if _, ok := refused[r.Kind]; ok && len(o.Options[r.Kind]) > 0 {
			rows[i].Options = maps.Clone(o.Options[r.Kind])
		}
	}
	return rows, nil
}

// mergeBenchRows puts the measured rows and one row per T for each refused
// kind in the order of kinds; a measured kind with a skipped row refused a
// setting it declares, which is an error.
func mergeBenchRows(kinds []string, seqLens []int, refused map[string]string, measured []train.AttentionBenchRow) ([]train.AttentionBenchRow, error) {
	var rows []train.AttentionBenchRow
	for _, k := range kinds {
		if why, ok := refused[k]; ok {
			for _, T := range seqLens {
				rows = append(rows, train.AttentionBenchRow{Kind: k, T: T, Skipped: why})
			}
			continue
		}
		for _, r := range measured {
			if r.Kind != k {
				continue
			}
			if r.Skipped != "" && !strings.HasPrefix(r.Skipped, layers.SequenceParallelRefusal) {
				return nil, fmt.Errorf("%s at T=%d: refused a setting it declares (see trainer list): %s", k, r.T, r.Skipped)
			}
			rows = append(rows, r)
		}
	}
	return rows, nil
}

// attentionSlopes fits each measured variant and pass, in the order they
// first appear in rows.
func attentionSlopes(rows []train.AttentionBenchRow) []attentionSlope {
	var out []*attentionSlope
	by := map[[2]string]*attentionSlope{}
	for _, r := range rows {
		if r.Skipped != "" {
			continue
		}
		key := [2]string{r.Kind, r.Pass}
		s := by[key]
		if s == nil {
			s = &attentionSlope{Kind: r.Kind, Pass: r.Pass}
			by[key] = s
			out = append(out, s)
		}
		T := float64(r.T)
		s.SeqLens = append(s.SeqLens, r.T)
		s.timeXY[0], s.timeXY[1] = append(s.timeXY[0], T), append(s.timeXY[1], r.MsMed)
		s.allocXY[0], s.allocXY[1] = append(s.allocXY[0], T), append(s.allocXY[1], float64(r.Alloc))
		s.peakXY[0], s.peakXY[1] = append(s.peakXY[0], T), append(s.peakXY[1], float64(r.Peak))
	}
	fit := func(xy [2][]float64) *float64 {
		if v, ok := report.FitLogLog(xy[0], xy[1]); ok {
			return &v
		}
		return nil
	}
	res := make([]attentionSlope, len(out))
	for i, s := range out {
		s.Time, s.Alloc, s.PeakHeap = fit(s.timeXY), fit(s.allocXY), fit(s.peakXY)
		res[i] = *s
	}
	return res
}

var passLabel = map[string]string{train.PassForward: "fwd", train.PassBackward: "fwd+bwd"}

// writeAttentionBench writes the plots (with two or more sequence lengths)
// and attention-bench.json into dir, recording the plot files in res.
func writeAttentionBench(dir string, res *attentionBench) error {
	distinctT := 0
	for _, s := range res.Slopes {
		distinctT = max(distinctT, len(s.SeqLens))
	}
	if distinctT < 2 {
		res.PlotNote = "no plots: they need a variant measured at two or more sequence lengths"
	} else {
		var timeS, peakS []report.Series
		for _, s := range res.Slopes {
			lab := s.Kind + " " + passLabel[s.Pass]
			timeS = append(timeS, report.Series{Label: lab, X: s.timeXY[0], Y: s.timeXY[1]})
			mib := make([]float64, len(s.peakXY[1]))
			for i, b := range s.peakXY[1] {
				mib[i] = b / (1 << 20)
			}
			peakS = append(peakS, report.Series{Label: lab, X: s.peakXY[0], Y: mib})
		}
		causal := "bidirectional"
		if res.Causal {
			causal = "causal"
		}
		setting := fmt.Sprintf("batch %d, %d heads x %d, %s, %s, %d threads", res.Batch, res.Heads, res.HeadDim, causal, res.DType, res.Threads)
		xl := "sequence length T (tokens, log scale)"
		for _, p := range []struct {
			file, title, ylabel string
			ss                  []report.Series
		}{
			{attnTimePlot, "One attention layer: time vs T (log-log)\n" + setting, "time per rep (ms, median), log scale", timeS},
			{attnMemoryPlot, "One attention layer: peak heap growth vs T (log-log)\n" + setting, "peak heap growth (MiB), log scale", peakS},
		} {
			if !plottable(p.ss) {
				res.PlotNote = strings.TrimPrefix(res.PlotNote+"; no "+p.file+" plot: fewer than two sequence lengths with a positive figure", "; ")
				continue
			}
			base := filepath.Join(dir, p.file)
			if err := report.WriteScalingPlot(base, p.title, xl, p.ylabel, p.ss); err != nil {
				return fmt.Errorf("--out: plot %s: %w", p.file, err)
			}
			res.Plots = append(res.Plots, base+".png", base+".svg")
		}
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteBytes(filepath.Join(dir, attnBenchJSON), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	return nil
}

// plottable reports whether a log-log plot of ss has two or more x
// values with a positive y.
func plottable(ss []report.Series) bool {
	var xs []float64
	for _, s := range ss {
		for i, x := range s.X {
			if x > 0 && i < len(s.Y) && s.Y[i] > 0 && !slices.Contains(xs, x) {
				xs = append(xs, x)
			}
		}
	}
	return len(xs) >= 2
}

func printAttentionBench(w io.Writer, res *attentionBench) {
	causal := "bidirectional"
	if res.Causal {
		causal = "causal"
	}
	fmt.Fprintf(w, "attention bench: batch %d, %d heads x %d (d_model %d), %s, %s; %d warm-up + %d timed reps; %d threads (GOMAXPROCS), BLAS %s%s\n",
		res.Batch, res.Heads, res.HeadDim, res.DModel, causal, res.DType, res.Warmup, res.Reps, res.Threads, res.BLAS, optionsNote(res.Rows))
	for _, b := range res.Balance {
		line := fmt.Sprintf("sequence parallel: %d workers at T=%d, %d steps, the busiest worker visits %.3f x the mean tiles", res.SequenceParallel, b.T, b.Steps, b.Busiest)
		if b.RingSteps > 0 {
			line += fmt.Sprintf(" (the plain causal ring: %d steps, %.3f x)", b.RingSteps, b.Ring)
		}
		fmt.Fprintln(w, line)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tT\tPASS\tMEDIAN MS\tMIN MS\tMAX MS\tALLOC/REP\tOBJECTS/REP\tPEAK HEAP GROWTH\tSCORES (x FLASH)")
	for i := 0; i < len(res.Rows); i++ {
		r := res.Rows[i]
		if r.Skipped != "" { // one line for a run of the same refusal
			ts := []string{strconv.Itoa(r.T)}
			for i+1 < len(res.Rows) && res.Rows[i+1].Kind == r.Kind && res.Rows[i+1].Skipped == r.Skipped {
				i++
				ts = append(ts, strconv.Itoa(res.Rows[i].T))
			}
			fmt.Fprintf(tw, "%s\t%s\t-\tn/a: %s\n", r.Kind, strings.Join(ts, ","), r.Skipped)
			continue
		}
		scores := "- (no softmax core)"
		if r.Scores > 0 {
			scores = fmt.Sprintf("%s (%.4f)", humanCount(r.Scores), r.FlashShare)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%.2f\t%.2f\t%.2f\t%s\t%d\t%s\t%s\n", r.Kind, r.T, passLabel[r.Pass], r.MsMed, r.MsMin, r.MsMax,
			humanBytes(float64(r.Alloc)), r.Allocs, humanBytes(float64(r.Peak)), scores)
	}
	tw.Flush()
	if len(res.Slopes) > 0 {
		fmt.Fprintln(w, "\nslopes (least squares of log cost against log T; 1 = linear, 2 = quadratic):")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KIND\tPASS\tTIME\tALLOC\tPEAK HEAP")
		sl := func(p *float64) string {
			if p == nil {
				return "n/a (one T)"
			}
			return fmt.Sprintf("%.2f", *p)
		}
		for _, s := range res.Slopes {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Kind, passLabel[s.Pass], sl(s.Time), sl(s.Alloc), sl(s.PeakHeap))
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "\nmemory: %s\n", res.MemoryNote)
	if len(res.Plots) > 0 {
		fmt.Fprintf(w, "plots: %s\n", strings.Join(res.Plots, ", "))
	}
	if res.PlotNote != "" {
		fmt.Fprintln(w, res.PlotNote)
	}
}

// optionsNote is "; options: KIND KEY=VALUE ..., KIND ..." for the kinds
// of rows built with options (in their order), or "" when none was.
func optionsNote(rows []train.AttentionBenchRow) string {
	var parts []string
	seen := map[string]bool{}
	for _, r := range rows {
		if len(r.Options) == 0 || seen[r.Kind] {
			continue
		}
		seen[r.Kind] = true
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(r.Options)) {
			kv = append(kv, k+"="+optionText(r.Options[k]))
		}
		parts = append(parts, r.Kind+" "+strings.Join(kv, " "))
	}
	if len(parts) == 0 {
		return ""
	}
	return "; options: " + strings.Join(parts, ", ")
}

// optionText writes an option value as --set takes it: 256, softmax, [1,2,4].
func optionText(v any) string {
	if l, ok := v.([]any); ok {
		s := make([]string, len(l))
		for i, x := range l {
			s[i] = optionText(x)
		}
		return "[" + strings.Join(s, ",") + "]"
	}
	return fmt.Sprint(v)
}

// humanBytes formats a byte count with a binary unit.
func humanBytes(b float64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}

// humanCount is n with a metric suffix: 1.23M.
func humanCount(n int64) string {
	x := float64(n)
	switch {
	case x >= 1e9:
		return fmt.Sprintf("%.2fG", x/1e9)
	case x >= 1e6:
		return fmt.Sprintf("%.2fM", x/1e6)
	case x >= 1e3:
		return fmt.Sprintf("%.1fk", x/1e3)
	}
	return fmt.Sprintf("%d", n)
}
