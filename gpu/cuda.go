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

// tf32RelLimit bounds the TF32 cases (graph.GPUCase.TF32), whose products
// round their inputs to 10 mantissa bits (2^-11 relative each): they must
// be within it, and further from the float64 op than relLimit.
const tf32RelLimit = 1e-2

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
		p := graph.OnGPU
		if c.TF32 {
			p = graph.OnGPUTF32
		}
		g := graph.NewGraph(p)
		outs, refs, err := c.Build(g, rng)
		if err != nil {
			return 0, err
		}
		vals := make([]G.Value, len(outs))
		for i, o := range outs {
			if graph.IsInPlace(o) { // updated in place on the device
				if err := G.KeepOnDevice(o); err != nil {
					return 0, err
				}
				continue
			}
			G.Read(o, &vals[i]) // a CPU op: the compiler copies o back to the host
		}
		vm := G.NewTapeMachine(g)
		err = vm.RunAll()
		if err == nil {
			err = G.CopyResidentToHost(vm)
		}
		vm.Close()
		if err != nil {
			return 0, err
		}
		for i, o := range outs {
			if graph.IsInPlace(o) {
				vals[i] = o.Value()
			}
		}
		for i, v := range vals {
			if v == nil {
				return 0, fmt.Errorf("output %d was not read back", i)
			}
			got, err := graph.GPUFloats(v)
			if err != nil {
				return 0, fmt.Errorf("output %d: %w", i, err)
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
		// A constant (the gradient's seed 1) is copied to the device where
		// it is read; a Read ("print") copies a value back to the host.
		// Both are the small per-step traffic, not a computation.
		if name == "print" || strings.HasPrefix(name, "const ") {
			continue
		}
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
	return fmt.Errorf("no GPU path yet for %d of the model's ops: %s (the GPU runs standard, flash, mqa, gqa, gpa and moh attention, head dims 16, 32, 64 or 128; train on the CPU: device cpu)", len(missing), strings.Join(missing, ", "))
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
		if c.TF32 {
			cs.Limit = tf32RelLimit
		}
		e, err := run(c, rng)
		switch {
		case err != nil:
			cs.Error = err.Error()
		case c.TF32 && e <= relLimit:
			cs.RelErr, cs.Error = e, fmt.Sprintf("error %.2g is fp32's: the products did not run in TF32", e)
		default:
			cs.RelErr, cs.Pass = e, e <= cs.Limit
		}
		rep.Cases = append(rep.Cases, cs)
	}
	t, err := timeMatMul(rng, 4096, 10)
	if err != nil {
		t = Timing{Name: "matmul 4096^3", Error: err.Error()}
	}
	rep.Timings = append(rep.Timings, t)
	ft, err := timeFlash(rng, 16384, 4, 32, 10)
	if err != nil {
		ft = []Timing{{Name: "flash T=16384", Error: err.Error()}}
	}
	rep.Timings = append(rep.Timings, ft...)
	return rep, nil
}

// KeepOnDevice marks input nodes (parameters, optimizer moments) to stay
// on GPU 0 across runs of the machine made next (Gorgonia patched:
// third_party/gorgonia-cuda.patch, vm_resident_cuda.go).
func KeepOnDevice(nodes ...*G.Node) error { return G.KeepOnDevice(nodes...) }

// CopyToHost copies the device values of vm's kept nodes into their host
// values.
func CopyToHost(vm G.VM) error { return G.CopyResidentToHost(vm) }

// CopyToDevice copies the host values of vm's kept nodes into their device
// values.
func CopyToDevice(vm G.VM) error { return G.CopyResidentToDevice(vm) }

// Copies names the nodes whose values one run of vm's program copies to
// the device and to the host, one name per copy.
func Copies(vm G.VM) (toDevice, toHost []string, err error) { return G.DeviceCopies(vm) }

// timeFlash times the flash op (graph.FlashAttention, its default tile)
// on batch 1, heads of headDim, causal, at length t: the forward alone
// and forward+backward (the gradients of q, k and v through the loss
// Dot(O, r)), everything kept on the GPU, the loss read back to end each
// run. TFLOP/s count 4 T^2 d H x 0.5 (causal) per forward and 3.5 times
// that per forward+backward, as PyTorch's SDPA figures in
// shared/notes/gpu.md.
func timeFlash(rng *rand.Rand, t, heads, headDim, runs int) ([]Timing, error) {
	var out []Timing
	for _, backward := range []bool{false, true} {
		g := graph.NewGraph(graph.OnGPU)
		s := graph.AttentionShape{Batch: 1, QLen: t, KLen: t, Heads: heads, KVHeads: heads, HeadDim: headDim, Causal: true}
		in := func(name string) *G.Node {
			v := make([]float32, t*heads*headDim)
			for i := range v {
				v[i] = float32(rng.NormFloat64())
			}
			return G.NewMatrix(g, tensor.Float32, G.WithShape(t, heads*headDim), G.WithName(name), G.WithValue(tensor.New(tensor.WithShape(t, heads*headDim), tensor.WithBacking(v))))
		}
		q, k, v, r := in("q"), in("k"), in("v"), in("r")
		o, err := graph.FlashAttention(q, k, v, nil, s, graph.DefaultFlashBlock)
		if err != nil {
			return nil, err
		}
		loss, err := graph.Dot(o, r)
		if err != nil {
			return nil, err
		}
		if backward {
			if _, err := G.Grad(loss, q, k, v); err != nil {
				return nil, err
			}
		}
		if err := G.KeepOnDevice(q, k, v, r); err != nil {
			return nil, err
		}
		if err := CheckGraph(g); err != nil {
			return nil, err
		}
		var lv G.Value
		G.Read(loss, &lv)
		vm := G.NewTapeMachine(g)
		var times []float64
		for i := 0; i < runs+1; i++ { // the first run uploads and warms up
			t0 := time.Now()
			err := vm.RunAll()
			dt := time.Since(t0)
			vm.Reset()
			if err != nil {
				vm.Close()
				return nil, err
			}
			if i > 0 {
				times = append(times, float64(dt.Microseconds())/1000)
			}
		}
		vm.Close()
		slices.Sort(times)
		med := times[len(times)/2]
		flops := 4 * float64(t) * float64(t) * float64(headDim*heads) * 0.5
		name := fmt.Sprintf("flash forward, T=%d, batch 1, %d heads of %d, causal", t, heads, headDim)
		if backward {
			flops *= 3.5
			name = fmt.Sprintf("flash forward+backward, T=%d, batch 1, %d heads of %d, causal", t, heads, headDim)
		}
		out = append(out, Timing{Name: name, MedianMS: med, TFLOPS: flops / (med / 1000) / 1e12, Runs: runs})
	}
	return out, nil
}
