//go:build cuda

package gpu

import (
	"fmt"
	"math"
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

// matrix is a row-major float32 matrix and its float64 copy.
type matrix struct {
	r, c int
	f32  []float32
}

func randMatrix(rng *rand.Rand, r, c int) matrix {
	m := matrix{r: r, c: c, f32: make([]float32, r*c)}
	for i := range m.f32 {
		m.f32[i] = float32(rng.NormFloat64())
	}
	return m
}

func (m matrix) at(i, j int) float64 { return float64(m.f32[i*m.c+j]) }

// refMatMul is a b in float64.
func refMatMul(a, b matrix) []float64 {
	out := make([]float64, a.r*b.c)
	for i := 0; i < a.r; i++ {
		for p := 0; p < a.c; p++ {
			x := a.at(i, p)
			row := out[i*b.c : (i+1)*b.c]
			for j := range row {
				row[j] += x * b.at(p, j)
			}
		}
	}
	return out
}

// check is one case: build makes the graph from fresh inputs and returns
// the nodes to read and their float64 references.
type check struct {
	name, shape string
	build       func(g *G.ExprGraph, rng *rand.Rand) (outs []*G.Node, refs [][]float64, err error)
}

func input(g *G.ExprGraph, name string, m matrix) *G.Node {
	return G.NewMatrix(g, tensor.Float32, G.WithShape(m.r, m.c), G.WithName(name),
		G.WithValue(tensor.New(tensor.WithShape(m.r, m.c), tensor.WithBacking(slices.Clone(m.f32)))))
}

func elementwise(a, b matrix, f func(x, y float64) float64) []float64 {
	out := make([]float64, len(a.f32))
	for i := range out {
		out[i] = f(float64(a.f32[i]), float64(b.f32[i]))
	}
	return out
}

func checks() []check {
	matmul := func(m, k, n int) check {
		return check{"matmul (cuBLAS)", fmt.Sprintf("%dx%d . %dx%d", m, k, k, n), func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
			a, b := randMatrix(rng, m, k), randMatrix(rng, k, n)
			out, err := G.Mul(input(g, "a", a), input(g, "b", b))
			return []*G.Node{out}, [][]float64{refMatMul(a, b)}, err
		}}
	}
	binary := func(name string, op func(a, b *G.Node) (*G.Node, error), f func(x, y float64) float64) check {
		return check{name, "300x257", func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
			a, b := randMatrix(rng, 300, 257), randMatrix(rng, 300, 257)
			out, err := op(input(g, "a", a), input(g, "b", b))
			return []*G.Node{out}, [][]float64{elementwise(a, b, f)}, err
		}}
	}
	unary := func(name string, op func(a *G.Node) (*G.Node, error), f func(x float64) float64) check {
		return check{name, "300x257", func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
			a := randMatrix(rng, 300, 257)
			out, err := op(input(g, "a", a))
			return []*G.Node{out}, [][]float64{elementwise(a, a, func(x, _ float64) float64 { return f(x) })}, err
		}}
	}
	return []check{
		matmul(257, 129, 65),
		matmul(1024, 1024, 1024),
		binary("add", func(a, b *G.Node) (*G.Node, error) { return G.Add(a, b) }, func(x, y float64) float64 { return x + y }),
		binary("sub", func(a, b *G.Node) (*G.Node, error) { return G.Sub(a, b) }, func(x, y float64) float64 { return x - y }),
		binary("hadamard product", func(a, b *G.Node) (*G.Node, error) { return G.HadamardProd(a, b) }, func(x, y float64) float64 { return x * y }),
		unary("tanh", G.Tanh, math.Tanh),
		unary("exp", G.Exp, math.Exp),
		unary("sigmoid", G.Sigmoid, func(x float64) float64 { return 1 / (1 + math.Exp(-x)) }),
		{"tanh(a b + c) and its gradients", "64x48 . 48x80", chainWithGrad},
	}
}

// graphChecks are the graph package's GPU ops (graph.GPUCases).
func graphChecks() []check {
	var cs []check
	for _, c := range graph.GPUCases() {
		cs = append(cs, check{name: c.Name, shape: c.Shape, build: c.Build})
	}
	return cs
}

// chainWithGrad checks y = tanh(a b + c), loss = sum(y), and the gradients
// da = (1 - y^2) b^T, db = a^T (1 - y^2), dc = 1 - y^2: cuBLAS products in
// both directions, elementwise ops, the reduction and the copies between.
func chainWithGrad(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
	const m, k, n = 64, 48, 80
	a, b, c := randMatrix(rng, m, k), randMatrix(rng, k, n), randMatrix(rng, m, n)
	an, bn, cn := input(g, "a", a), input(g, "b", b), input(g, "c", c)
	ab, err := G.Mul(an, bn)
	if err != nil {
		return nil, nil, err
	}
	s, err := G.Add(ab, cn)
	if err != nil {
		return nil, nil, err
	}
	y, err := G.Tanh(s)
	if err != nil {
		return nil, nil, err
	}
	loss, err := G.Sum(y)
	if err != nil {
		return nil, nil, err
	}
	grads, err := G.Grad(loss, an, bn, cn)
	if err != nil {
		return nil, nil, err
	}
	ref := refMatMul(a, b)
	gy := make([]float64, m*n) // 1 - y^2
	for i := range ref {
		t := math.Tanh(ref[i] + float64(c.f32[i]))
		ref[i] = t
		gy[i] = 1 - t*t
	}
	da := make([]float64, m*k)
	db := make([]float64, k*n)
	for i := 0; i < m; i++ {
		for p := 0; p < k; p++ {
			for j := 0; j < n; j++ {
				da[i*k+p] += gy[i*n+j] * b.at(p, j)
				db[p*n+j] += a.at(i, p) * gy[i*n+j]
			}
		}
	}
	return []*G.Node{y, grads[0], grads[1], grads[2]}, [][]float64{ref, da, db, gy}, nil
}

// run builds c's graph with fresh inputs, runs it twice on new inputs
// each time (a result left over from the previous run must not pass) and
// returns the worst relative error.
func run(c check, rng *rand.Rand) (float64, error) {
	worst := 0.0
	for rep := 0; rep < 2; rep++ {
		g := G.NewGraph()
		outs, refs, err := c.build(g, rng)
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
	a, b := randMatrix(rng, n, n), randMatrix(rng, n, n)
	out, err := G.Mul(input(g, "a", a), input(g, "b", b))
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
	for _, c := range append(checks(), graphChecks()...) {
		cs := Case{Name: c.name, Shape: c.shape, Limit: relLimit}
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
