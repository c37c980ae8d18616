package train

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/data"
	"github.com/attnlab/attnlab/models"
)

// ResourceEstimate is a config's estimated memory (models.EstimateCost)
// against the machine's, and the verdict Build gives.
type ResourceEstimate struct {
	models.Estimate
	// MachineBytes is the memory a run may use (MachineMemory), 0 where
	// it is unknown; MachineSource says where it was read.
	MachineBytes  int64
	MachineSource string
	// Refusal is Build's error for the config, nil when it fits: a limit
	// that holds on every machine (models.Estimate.CheckLimits) or more
	// memory than the machine has.
	Refusal error
}

// EstimateExperiment validates exp, makes its task (cheap: data.New bounds
// seq_len) and estimates it, building no model: trainer info uses it to
// report configs that Build refuses. Its errors are bad-input errors.
func EstimateExperiment(exp config.Experiment) (*ResourceEstimate, data.Task, error) {
	if err := exp.Validate(); err != nil {
		return nil, nil, badInput(err)
	}
	task, err := data.New(exp.Task, exp.Seed)
	if err != nil {
		return nil, nil, badInput(err)
	}
	r, err := estimateResources(exp, task)
	if err != nil {
		return nil, nil, badInput(err)
	}
	return r, task, nil
}

// checkResources is Build's check before it allocates any model: the
// config's refusal, as a bad-input error, or nil.
func checkResources(exp config.Experiment, task data.Task) error {
	r, err := estimateResources(exp, task)
	if err != nil {
		return badInput(err)
	}
	return badInput(r.Refusal)
}

// estimateResources estimates exp's training (both graphs, as Build makes
// them) on task, and decides whether it fits.
func estimateResources(exp config.Experiment, task data.Task) (*ResourceEstimate, error) {
	bpe := 4
	if exp.DType == "float64" {
		bpe = 8
	}
	e, err := models.EstimateCost(exp.Model, task, bpe, exp.Train.BatchSize, evalBatchSize(exp.Train))
	if err != nil {
		return nil, err
	}
	r := &ResourceEstimate{Estimate: e}
	r.MachineBytes, r.MachineSource = machineMemory()
	if r.Refusal = e.CheckLimits(); r.Refusal != nil {
		return r, nil
	}
	if r.MachineBytes > 0 && e.TotalBytes() > float64(r.MachineBytes) {
		r.Refusal = fmt.Errorf("model needs about %s for training (parameters %s, activations %s at batch %d x T %d); this machine has %s; %s",
			HumanBytes(e.TotalBytes()), HumanBytes(e.ParamBytes), HumanBytes(e.ActivationBytes()), e.Batch, e.SeqLen,
			HumanBytes(float64(r.MachineBytes)), advice(e))
	}
	return r, nil
}

// evalBatchSize is the evaluation graph's batch, as Build chooses it.
func evalBatchSize(tr config.Train) int {
	eb := tr.EvalBatchSize
	if eb == 0 {
		eb = tr.BatchSize
	}
	return min(eb, tr.EvalExamples)
}

// advice names the keys that shrink what dominates an estimate.
func advice(e models.Estimate) string {
	switch {
	case e.ParamBytes >= e.ActivationBytes():
		return "lower model.d_model, model.n_layers, model.d_ff or task.vocab"
	case e.ScratchBytes >= e.TrainActivationBytes+e.EvalActivationBytes:
		return "lower task.seq_len, or use model.attention.kind=flash (no T x T scores)"
	}
	return "lower train.batch_size, task.seq_len or model.d_model"
}

// CheckAttentionBench refuses, with a bad-input error, a `trainer bench
// attention` setting whose largest layer (any kind, at the longest T, in
// the costliest pass asked for) exceeds models.MaxTensorElems in one
// tensor or the machine's memory. Kinds the estimate does not know are
// left to the bench, which reports them.
func CheckAttentionBench(o AttentionBenchOptions) error {
	if len(o.SeqLens) == 0 {
		return nil
	}
	bpe := 4
	if o.DType == "float64" {
		bpe = 8
	}
	T := slices.Max(o.SeqLens)
	backward := slices.Contains(o.Passes, PassBackward)
	machine, _ := machineMemory()
	for _, kind := range o.Kinds {
		_, bytes, largest, err := models.AttentionLayerEstimate(kind, o.Heads, o.HeadDim, o.Causal, o.Batch, T, bpe, backward)
		if err != nil {
			continue
		}
		if largest.Elems() > models.MaxTensorElems {
			return badInput(fmt.Errorf("--T %d: %s attention: %s would have %.3g elements, more than 2^31 in one tensor; lower %s",
				T, kind, largest, largest.Elems(), largest.Keys))
		}
		if machine > 0 && bytes > float64(machine) {
			return badInput(fmt.Errorf("--T %d: one %s attention layer needs about %s (batch %d x T %d, %d heads x %d); this machine has %s; lower --T, --batch or --heads x --head-dim",
				T, kind, HumanBytes(bytes), o.Batch, T, o.Heads, o.HeadDim, HumanBytes(float64(machine))))
		}
	}
	return nil
}

// machineMemory is MachineMemory; tests replace it.
var machineMemory = MachineMemory

// MachineMemory is the memory a run may use, in bytes, and where it was
// read: MemTotal of /proc/meminfo, or the cgroup's limit
// (/sys/fs/cgroup/memory.max, v1 memory.limit_in_bytes) when that is
// smaller. It is 0 and "" where neither can be read (not Linux): the
// memory check is skipped there, the absolute limits still hold.
//
// MemTotal rather than MemAvailable: the check is there to refuse a config
// that cannot run, with the same verdict every time; MemAvailable moves
// with page cache and other processes, so a config would pass in one
// minute and fail in the next, and a run that fits MemTotal but not what
// is free now can still run once other work ends (or by swapping).
func MachineMemory() (int64, string) {
	var best int64
	var src string
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if n := memTotal(b); n > 0 {
			best, src = n, "MemTotal in /proc/meminfo"
		}
	}
	for _, p := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n <= 0 { // "max": no limit
			continue
		}
		if best == 0 || n < best {
			best, src = n, "the cgroup limit "+p
		}
	}
	return best, src
}

// memTotal reads the MemTotal line of /proc/meminfo, in bytes; 0 if absent.
func memTotal(meminfo []byte) int64 {
	sc := bufio.NewScanner(bytes.NewReader(meminfo))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || n <= 0 || n > math.MaxInt64/1024 {
				return 0
			}
			return n * 1024 // kB
		}
	}
	return 0
}

// HumanBytes writes a byte count with a binary unit and two significant
// digits: "512 B", "3.7 GiB", "37 GiB"; counts beyond EiB as "1.2e+21 B".
func HumanBytes(b float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	i := 0
	for i < len(units)-1 && b >= 1024 {
		b /= 1024
		i++
	}
	switch {
	case b >= 1024:
		return fmt.Sprintf("%.2g B", b*math.Pow(1024, float64(i)))
	case b >= 10 || i == 0:
		return fmt.Sprintf("%.0f %s", b, units[i])
	}
	return fmt.Sprintf("%.1f %s", b, units[i])
}
