//go:build cuda

package graph

import (
	"fmt"
	"os"
	"strings"
	"unsafe"

	"gonum.org/v1/gonum/blas"
	"gorgonia.org/cu"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// syncEachKernel (ATTNLAB_CUDA_SYNC=1 in the environment) waits for each
// kernel and checks it, so that a kernel that fails is named; otherwise
// kernels are queued and an error shows at the next wait. Read once.
var syncEachKernel = os.Getenv("ATTNLAB_CUDA_SYNC") != ""

// gpuModule is the name graph/cuda/attnlab.cu's PTX is registered under
// (graph/ptx_cuda.go); its kernels are looked up as gpuModule.kernel.
const gpuModule = "attnlab"

// gpuOp is o as a Gorgonia CUDA op when it has a GPU implementation, its
// graph is on the GPU (NewGraph) and its inputs are float32 (the kernels' only dtype; float64 graphs, the
// gradient checks', stay on the CPU): Gorgonia's compiler then places its
// node on GPU 0 and hands CUDADo device values.
func gpuOp(o *op, children G.Nodes) G.Op {
	if o.gpu == nil || len(children) == 0 {
		return o
	}
	p := placement(children[0])
	if p == OnCPU {
		return o
	}
	for _, c := range children {
		if c.Dtype() != tensor.Float32 {
			return o
		}
	}
	return cudaOp{o, p == OnGPUTF32}
}

// cudaOp is an op that runs on the GPU through its gpuKernel; with tf32
// its matrix products run on TF32 tensor cores.
type cudaOp struct {
	*op
	tf32 bool
}

func (o cudaOp) CallsExtern() bool { return true }

// ReturnsPtr is true so that Gorgonia's compiler allocates the output on
// the device before the op runs (an alloc instruction: the prealloc of
// CUDADo); with OverwritesInput -1 it is always a new register.
func (o cudaOp) ReturnsPtr() bool { return true }

// CUDADo runs the op's kernels on device dev, writing into prealloc, the
// output register the machine allocated on the device.
func (o cudaOp) CUDADo(extern G.External, dev G.Device, prealloc G.Value, inputs ...G.Value) (G.Value, error) {
	if len(inputs) != o.arity {
		return nil, fmt.Errorf("%s: got %d inputs, want %d", o.name, len(inputs), o.arity)
	}
	if prealloc == nil {
		return nil, fmt.Errorf("%s: no device memory for the output", o.name)
	}
	machine, ok := extern.(G.CUDAMachine)
	if !ok {
		return nil, fmt.Errorf("%s: not run by a CUDA machine", o.name)
	}
	in := make([]gpuBuf, len(inputs))
	for i, v := range inputs {
		if v.Dtype() != tensor.Float32 {
			return nil, fmt.Errorf("%s: input %d is %v: the GPU kernels are float32 only", o.name, i, v.Dtype())
		}
		in[i] = gpuBuf{ptr: v.Uintptr(), shape: v.Shape(), dtype: v.Dtype()}
	}
	out := gpuBuf{ptr: prealloc.Uintptr(), shape: prealloc.Shape(), dtype: prealloc.Dtype()}
	l := cudaLauncher{machine: machine, dev: int(dev), tf32: o.tf32}
	if err := o.gpu.launch(l, out, in); err != nil {
		return nil, fmt.Errorf("%s: %w", o.name, err)
	}
	return prealloc, nil
}

// cudaLauncher launches attnlab's kernels on one device of a CUDA machine.
type cudaLauncher struct {
	machine G.CUDAMachine
	dev     int
	tf32    bool // Gemm on TF32 tensor cores
}

func (l cudaLauncher) Launch(kernel string, blocks, threads, shared int, args ...any) error {
	eng := &l.machine.Engines()[l.dev]
	name := kernel
	if !strings.Contains(kernel, ".") { // attnlab.cu's, by default
		name = gpuModule + "." + kernel
	}
	fn, ok := eng.Functions()[name]
	if !ok {
		return fmt.Errorf("CUDA kernel %s not loaded", name)
	}
	// Each kernel parameter is passed as a pointer to its value.
	params := make([]unsafe.Pointer, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case uintptr:
			p := cu.DevicePtr(v)
			params[i] = unsafe.Pointer(&p)
		case int32:
			params[i] = unsafe.Pointer(&v)
		case float32:
			params[i] = unsafe.Pointer(&v)
		case float64:
			params[i] = unsafe.Pointer(&v)
		default:
			return fmt.Errorf("kernel %s: argument %d has type %T", name, i, a)
		}
	}
	// Queued on the context's stream, in order with the engine's copies
	// and cuBLAS calls (the same stream); the parameters are copied when
	// queued. No synchronization: the host waits only where it reads a
	// result back (a device-to-host copy).
	ctx := l.machine.Contexts()[l.dev]
	ctx.LaunchKernel(fn, blocks, 1, 1, threads, 1, 1, shared, cu.NoStream, params)
	if syncEachKernel { // debugging: the failing kernel by name
		ctx.Synchronize()
		if err := eng.DoWork(); err != nil {
			return fmt.Errorf("kernel %s (%d blocks of %d threads, %d bytes shared): %w", name, blocks, threads, shared, err)
		}
	}
	return ctx.Errors()
}

// deviceFloats is the device memory of b as a []float32 for cuBLAS's Go
// binding, which only passes its address on (nothing on the host reads it).
func deviceFloats(b gpuBuf) []float32 {
	return unsafe.Slice((*float32)(unsafe.Pointer(b.ptr)), b.size())
}

// Gemm computes the row-major c = alpha op(a) op(b) + beta c as cuBLAS's
// column-major c^T = alpha op(b)^T op(a)^T + beta c^T (a row-major matrix
// is its transpose in column-major order, with the same leading dimension),
// on the engine's cuBLAS handle and context, after the kernels queued
// before it (same stream).
func (l cudaLauncher) Gemm(tA, tB bool, m, n, k int, alpha float32, a gpuBuf, lda int, b gpuBuf, ldb int, beta float32, c gpuBuf, ldc int) error {
	trans := func(t bool) blas.Transpose {
		if t {
			return blas.Trans
		}
		return blas.NoTrans
	}
	eng := &l.machine.Engines()[l.dev]
	handle := eng.BLASContext()
	ctx := l.machine.Contexts()[l.dev]
	if err := eng.DoWork(); err != nil { // what the engine has queued is submitted first
		return err
	}
	A, B, C := deviceFloats(a), deviceFloats(b), deviceFloats(c)
	err := ctx.Do(func() error {
		// the handle is the engine's, shared by every op: each product
		// sets the math mode it wants (a host-side setting, no sync)
		if err := handle.SetTF32(l.tf32); err != nil {
			return err
		}
		handle.Sgemm(trans(tB), trans(tA), n, m, k, alpha, B, ldb, A, lda, beta, C, ldc)
		return handle.Err()
	})
	if err != nil {
		return fmt.Errorf("cuBLAS Sgemm: %w", err)
	}
	return ctx.Errors()
}
