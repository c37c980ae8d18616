package graph

import (
	"fmt"
	"math"

	"gorgonia.org/tensor"
)

// gpuKernel is an op's CUDA implementation, used only by the binary that
// scripts/build-cuda.sh builds (-tags cuda; graph/op_cuda.go): launch runs
// the op on the device, writing out from in through l, which starts the
// kernels of graph/cuda/attnlab.cu by name. An op with no gpuKernel has no
// GPU path. The kernels are float32 only; float64 stays on the CPU.
type gpuKernel struct {
	launch func(l gpuLauncher, out gpuBuf, in []gpuBuf) error
}

// gpuBuf is a tensor in device memory: its address, shape and dtype.
type gpuBuf struct {
	ptr   uintptr
	shape tensor.Shape
	dtype tensor.Dtype
}

func (b gpuBuf) size() int { return b.shape.TotalSize() }

// gpuLauncher starts a kernel of graph/cuda/attnlab.cu over a grid of
// blocks of threads with shared bytes of dynamic shared memory, with its
// arguments (uintptr for device addresses, 0 for none; int32 and float32
// for scalars), and waits for it.
type gpuLauncher interface {
	Launch(kernel string, blocks, threads, shared int, args ...any) error
	// Gemm is c = alpha op(a) op(b) + beta c on row-major matrices, as
	// the package's gemm, through cuBLAS.
	Gemm(tA, tB bool, m, n, k int, alpha float32, a gpuBuf, lda int, b gpuBuf, ldb int, beta float32, c gpuBuf, ldc int) error
}

// elementwiseGrid is the launch shape of one thread per element.
func elementwiseGrid(n int) (blocks, threads int) {
	threads = 256
	return (n + threads - 1) / threads, threads
}

// rowThreads is the block size of a kernel that gives each row of d
// elements one block: d rounded up to a warp, between 32 and 256.
func rowThreads(d int) int {
	return min(max((d+31)/32*32, 32), 256)
}

// int32s converts sizes to the kernels' int32, or fails.
func int32s(xs ...int) ([]int32, error) {
	out := make([]int32, len(xs))
	for i, x := range xs {
		if x > math.MaxInt32 {
			return nil, fmt.Errorf("size %d: the kernels count in int32", x)
		}
		out[i] = int32(x)
	}
	return out, nil
}

// normKernel is a GPU path of LayerNorm (centered) or RMSNorm, by part:
// "forward" (in: x, gamma[, beta]), "grad_x" (x, gamma, dy) or
// "grad_gamma" (x, dy): graph/cuda/attnlab.cu's norm_f32, norm_grad_x_f32,
// and zero_f32 then norm_grad_gamma_f32.
func normKernel(eps float64, centered bool, part string) *gpuKernel {
	c := int32(0)
	if centered {
		c = 1
	}
	return &gpuKernel{launch: func(l gpuLauncher, out gpuBuf, in []gpuBuf) error {
		n, d := in[0].shape[0], in[0].shape[1]
		sz, err := int32s(n, d)
		if err != nil {
			return err
		}
		threads := rowThreads(d)
		switch part {
		case "forward":
			var beta uintptr
			if len(in) == 3 {
				beta = in[2].ptr
			}
			return l.Launch("norm_f32", n, threads, 0, in[0].ptr, in[1].ptr, beta, out.ptr, sz[0], sz[1], float32(eps), c)
		case "grad_x":
			return l.Launch("norm_grad_x_f32", n, threads, 0, in[0].ptr, in[1].ptr, in[2].ptr, out.ptr, sz[0], sz[1], float32(eps), c)
		}
		// grad_gamma: zero, then blocks of 32 rows add their partial sums.
		blocks, zt := elementwiseGrid(d)
		if err := l.Launch("zero_f32", blocks, zt, 0, out.ptr, sz[1]); err != nil {
			return err
		}
		const rows = 32
		return l.Launch("norm_grad_gamma_f32", (n+rows-1)/rows, threads, 4*d, in[0].ptr, in[1].ptr, out.ptr, sz[0], sz[1], float32(eps), c, int32(rows))
	}}
}

// matMulKernel is MatMul's GPU path: one cuBLAS product.
func matMulKernel(tA, tB bool) *gpuKernel {
	return &gpuKernel{launch: func(l gpuLauncher, out gpuBuf, in []gpuBuf) error {
		sa, sb := in[0].shape, in[1].shape
		m, k := sa[0], sa[1]
		if tA {
			m, k = k, m
		}
		n := sb[1]
		if tB {
			n = sb[0]
		}
		return l.Gemm(tA, tB, m, n, k, 1, in[0], sa[1], in[1], sb[1], 0, out, n)
	}}
}

// linearKernel is Linear's GPU path: the bias copied into every row of
// the output, then x W accumulated onto it by cuBLAS.
var linearKernel = &gpuKernel{launch: func(l gpuLauncher, out gpuBuf, in []gpuBuf) error {
	x, w, b := in[0], in[1], in[2]
	n, i, o := x.shape[0], x.shape[1], w.shape[1]
	sz, err := int32s(n*o, o)
	if err != nil {
		return err
	}
	blocks, threads := elementwiseGrid(n * o)
	if err := l.Launch("rows_copy_f32", blocks, threads, 0, b.ptr, out.ptr, sz[0], sz[1]); err != nil {
		return err
	}
	return l.Gemm(false, false, n, o, i, 1, x, i, w, o, 1, out, o)
}}

// embeddingKernel is Embedding's GPU path (grad false: in ids, table; the
// vocabulary is the table's rows) and its gradient's (ids, dy, for a table
// of vocab rows: zeroed, then the rows added).
func embeddingKernel(vocab int, grad bool) *gpuKernel {
	return &gpuKernel{launch: func(l gpuLauncher, out gpuBuf, in []gpuBuf) error {
		ids, v := in[0], vocab
		if !grad {
			v = in[1].shape[0]
		}
		n, d := ids.shape[0], out.shape[1]
		sz, err := int32s(n, v, d, v*d)
		if err != nil {
			return err
		}
		blocks, threads := elementwiseGrid(n * d)
		if !grad {
			return l.Launch("embedding_f32", blocks, threads, 0, ids.ptr, in[1].ptr, out.ptr, sz[0], sz[1], sz[2])
		}
		zb, zt := elementwiseGrid(v * d)
		if err := l.Launch("zero_f32", zb, zt, 0, out.ptr, sz[3]); err != nil {
			return err
		}
		return l.Launch("embedding_grad_f32", blocks, threads, 0, ids.ptr, in[1].ptr, out.ptr, sz[0], sz[1], sz[2])
	}}
}

// colSumKernel is ColSum's GPU path: one thread per column.
var colSumKernel = &gpuKernel{launch: func(l gpuLauncher, out gpuBuf, in []gpuBuf) error {
	n, d := in[0].shape[0], in[0].shape[1]
	sz, err := int32s(n, d)
	if err != nil {
		return err
	}
	blocks, threads := elementwiseGrid(d)
	return l.Launch("col_sum_f32", blocks, threads, 0, in[0].ptr, out.ptr, sz[0], sz[1])
}}
