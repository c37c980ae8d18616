//go:build cuda

package gpu

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/graph"
)

// Available reports whether this binary has the CUDA path.
func Available() bool { return true }

// relLimit is the parity bound of issue 16: a float32 GPU op within 1e-5
// relative of the float64 CPU op (no TF32).
const relLimit = 1e-5

// checks are every case gpucheck runs: Gorgonia's own CUDA ops, then the
// graph package's.
func checks() []graph.GPUCase {
	return append(graph.GorgoniaGPUCases(), graph.GPUCases()...)
}

// run builds c's graph with fresh inputs, runs it twice on new inputs
// each time (a result left over from the previous run must not pass) and
// returns the worst relative error.
func run(c graph.GPUCase, rng *rand.Rand) (float64, error) {
	worst := 0.0
	for rep := 0; rep < 2; rep++ {
		g := G.NewGraph()
		outs, refs, err := c.Build(g, rng)
		if err != nil {
			return 0, err
		}
		vals := make([]G.Value, len(outs))
		for i, o := range outs {
			G.Read(o, &vals[i]) // a CPU op: the compiler copies o back to the host
		}
		vm := G.NewTapeMachine(g)
		err = vm.RunAll()
		vm.Close()
		if err != nil {
			return 0, err
		}
		for i, v := range vals {
			if v == nil {
				return 0, fmt.Errorf("output %d was not read back", i)
			}
			got, ok := v.Data().([]float32)
			if !ok {
				return 0, fmt.Errorf("output %d is %T, not float32", i, v.Data())
			}
			worst = max(worst, graph.GPURelErr(got, refs[i]))
		}
	}
	return worst, nil
}

// timeMatMul times n x n x n float32 products through the tape machine,
// inputs bound on the host (so each run uploads both operands: the copies
// are in the time).
func timeMatMul(rng *rand.Rand, n, runs int) (Timing, error) {
	g := G.NewGraph()
	operand := func(name string) *G.Node {
		v := make([]float32, n*n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return G.NewMatrix(g, tensor.Float32, G.WithShape(n, n), G.WithName(name), G.WithValue(tensor.New(tensor.WithShape(n, n), tensor.WithBacking(v))))
	}
	out, err := G.Mul(operand("a"), operand("b"))
	if err != nil {
		return Timing{}, err
	}
	var v G.Value
	G.Read(out, &v)
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	times := make([]float64, 0, runs)
	for i := 0; i < runs+2; i++ {
		start := time.Now()
		if err := vm.RunAll(); err != nil {
			return Timing{}, err
		}
		if i >= 2 { // two warm-up runs
			times = append(times, float64(time.Since(start).Microseconds())/1000)
		}
		vm.Reset()
	}
	slices.Sort(times)
	med := times[len(times)/2]
	return Timing{Name: fmt.Sprintf("matmul %dx%dx%d float32, host inputs uploaded each run", n, n, n), MedianMS: med,
		TFLOPS: 2 * float64(n) * float64(n) * float64(n) / (med / 1000) / 1e12, Runs: runs}, nil
}

// CheckGraph refuses a graph with an op that has no GPU path, naming
// them: device cuda never falls back to the CPU silently.
func CheckGraph(g *G.ExprGraph) error {
	seen := map[string]bool{}
	var missing []string
	for _, n := range g.AllNodes() {
		op := n.Op()
		if op == nil { // inputs and parameters
			continue
		}
		if _, ok := op.(G.CUDADoer); ok {
			continue
		}
		name := op.String()
		if i := strings.IndexAny(name, "(["); i > 0 {
			name = name[:i]
		}
		if !seen[name] {
			seen[name] = true
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	return fmt.Errorf("no GPU path yet for %d of the model's ops: %s (issue 16; train on the CPU: device cpu)", len(missing), strings.Join(missing, ", "))
}

// deviceName reads the first GPU's model from the driver's proc files.
func deviceName() string {
	files, _ := filepath.Glob("/proc/driver/nvidia/gpus/*/information")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if name, ok := strings.CutPrefix(line, "Model:"); ok {
				return strings.TrimSpace(name)
			}
		}
	}
	return "GPU 0 (model not read)"
}

// Check runs every case and the timings on GPU 0.
func Check(seed uint64) (Report, error) {
	// Gorgonia's CUDA machine must be created and run on one OS thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	rng := rand.New(rand.NewPCG(seed, 16))
	rep := Report{Device: deviceName()}
	for _, c := range checks() {
		cs := Case{Name: c.Name, Shape: c.Shape, Limit: relLimit}
		e, err := run(c, rng)
		if err != nil {
			cs.Error = err.Error()
		} else {
			cs.RelErr, cs.Pass = e, e <= relLimit
		}
		rep.Cases = append(rep.Cases, cs)
	}
	t, err := timeMatMul(rng, 4096, 10)
	if err != nil {
		return rep, fmt.Errorf("timing: %w", err)
	}
	rep.Timings = append(rep.Timings, t)
	return rep, nil
}
