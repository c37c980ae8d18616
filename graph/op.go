package graph

import (
	"fmt"
	"hash"
	"hash/fnv"
	"runtime"
	"sync"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Float is the element type of every tensor the ops compute on.
type Float interface{ ~float32 | ~float64 }

// op is one custom Gorgonia op described by functions: a name that encodes
// every parameter (Gorgonia deduplicates nodes by the op's hash and its
// children, so two ops with the same name must compute the same function),
// its type and shape rules, its forward, and, for differentiable ops, which
// inputs it differentiates and the graph of its backward.
type op struct {
	name    string
	arity   int
	typ     hm.Type
	shape   func(in []tensor.Shape) (tensor.Shape, error)
	do      func(in []G.Value) (G.Value, error)
	diffWRT []bool
	symDiff func(in G.Nodes, out, grad *G.Node) (G.Nodes, error)
	// gpu is the op's CUDA implementation, nil for none (graph/gpu.go).
	gpu *gpuKernel
}

func (o *op) Arity() int       { return o.arity }
func (o *op) Type() hm.Type    { return o.typ }
func (o *op) ReturnsPtr() bool { return false }
func (o *op) CallsExtern() bool {
	return false
}
func (o *op) OverwritesInput() int  { return -1 }
func (o *op) WriteHash(h hash.Hash) { fmt.Fprint(h, o.name) }
func (o *op) String() string        { return o.name }
func (o *op) DiffWRT(n int) []bool  { return o.diffWRT }
func (o *op) Do(in ...G.Value) (G.Value, error) {
	if len(in) != o.arity {
		return nil, fmt.Errorf("%s: got %d inputs, want %d", o.name, len(in), o.arity)
	}
	return o.do(in)
}
func (o *op) Hashcode() uint32 {
	h := fnv.New32a()
	o.WriteHash(h)
	return h.Sum32()
}

func (o *op) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	shapes := make([]tensor.Shape, len(ds))
	for i, d := range ds {
		s, ok := d.(tensor.Shape)
		if !ok {
			return nil, fmt.Errorf("%s: input %d has no shape", o.name, i)
		}
		shapes[i] = s
	}
	return o.shape(shapes)
}

// SymDiff builds the backward graph; ops without a backward are used only
// inside backward graphs and are never differentiated.
func (o *op) SymDiff(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
	if o.symDiff == nil {
		return nil, fmt.Errorf("%s is not differentiable", o.name)
	}
	return o.symDiff(in, out, grad)
}

// tensorType is the Gorgonia type of a dims-dimensional tensor of any dtype.
func tensorType(dims int) hm.Type {
	return G.TensorType{Dims: dims, Of: hm.TypeVariable('a')}
}

// fnType builds the type of an op from its inputs' and output's dims (0 = scalar).
func fnType(dims ...int) hm.Type {
	ts := make([]hm.Type, len(dims))
	for i, d := range dims {
		if d == 0 {
			ts[i] = hm.TypeVariable('a')
		} else {
			ts[i] = tensorType(d)
		}
	}
	return hm.NewFnType(ts...)
}

// apply applies o to children, wrapping errors with the op's name.
func apply(o *op, children ...*G.Node) (*G.Node, error) {
	n, err := G.ApplyOp(gpuOp(o, children), children...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.name, err)
	}
	return n, nil
}

// newTensor allocates a zeroed tensor of dtype dt.
func newTensor(dt tensor.Dtype, shape ...int) *tensor.Dense {
	return tensor.New(tensor.Of(dt), tensor.WithShape(shape...))
}

// dtypeOf returns the dtype of a value.
func dtypeOf(v G.Value) tensor.Dtype { return v.Dtype() }

// data returns the backing slice of a tensor value.
func data[T Float](v G.Value) []T { return v.Data().([]T) }

// scalar returns a scalar value (or one-element tensor) as float64.
func scalar(v G.Value) (float64, error) {
	switch x := v.Data().(type) {
	case float32:
		return float64(x), nil
	case float64:
		return x, nil
	case []float32:
		if len(x) == 1 {
			return float64(x[0]), nil
		}
	case []float64:
		if len(x) == 1 {
			return x[0], nil
		}
	}
	return 0, fmt.Errorf("want a scalar, got %v", v.Shape())
}

// newScalar makes a scalar value of dtype dt.
func newScalar(dt tensor.Dtype, x float64) (G.Value, error) {
	switch dt {
	case tensor.Float32:
		return G.NewF32(float32(x)), nil
	case tensor.Float64:
		return G.NewF64(x), nil
	}
	return nil, fmt.Errorf("unsupported dtype %v", dt)
}

// isFloat32 reports whether v holds float32 data; the ops support float32 and
// float64 and dispatch on this.
func checkDtype(name string, vs ...G.Value) (bool, error) {
	dt := vs[0].Dtype()
	for _, v := range vs[1:] {
		if v.Dtype() != dt {
			return false, fmt.Errorf("%s: mixed dtypes %v and %v", name, dt, v.Dtype())
		}
	}
	switch dt {
	case tensor.Float32:
		return true, nil
	case tensor.Float64:
		return false, nil
	}
	return false, fmt.Errorf("%s: unsupported dtype %v (want float32 or float64)", name, dt)
}

// parallelFor runs fn over [0, n) split into contiguous chunks, one goroutine
// per chunk, when the work (n x costPerItem) is large enough to pay for the
// goroutines. Every index is handled by exactly one call, so results do not
// depend on the number of threads.
func parallelFor(n, costPerItem int, fn func(lo, hi int)) {
	parallelForOn(runtime.GOMAXPROCS(0), n, costPerItem, fn)
}

// parallelForOn is parallelFor on at most workers goroutines.
func parallelForOn(workers, n, costPerItem int, fn func(lo, hi int)) {
	if workers > n {
		workers = n
	}
	if workers <= 1 || n*costPerItem < 1<<15 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			fn(lo, hi)
		}(lo, hi)
	}
	wg.Wait()
}

func shapeErr(name string, format string, args ...any) error {
	return fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...))
}
