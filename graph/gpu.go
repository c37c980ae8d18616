package graph

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Placement is where a graph's ops run (NewGraph).
type Placement int

const (
	OnCPU     Placement = iota // every op on the CPU
	OnGPU                      // float32 ops with a GPU path on GPU 0, products in full fp32
	OnGPUTF32                  // as OnGPU, with cuBLAS's products on TF32 tensor cores
)

// The names of the graphs whose ops run on the GPU (NewGraph).
const (
	gpuGraphName     = "attnlab:gpu"
	gpuTF32GraphName = "attnlab:gpu:tf32"
)

// NewGraph returns an empty expression graph whose ops run where p says.
// On the GPU, the ops that have a GPU path (a gpuKernel) and float32
// inputs run on GPU 0 in the CUDA build; the others, and every op of the
// default build, run on the CPU. The choice travels with the graph (its
// name), so that one CUDA binary trains on either device. OnGPUTF32 runs
// the matrix products on TF32 tensor cores (their inputs rounded to 10
// mantissa bits, the sums in fp32): faster, less exact.
func NewGraph(p Placement) *G.ExprGraph {
	switch p {
	case OnGPU:
		return G.NewGraph(G.WithGraphName(gpuGraphName))
	case OnGPUTF32:
		return G.NewGraph(G.WithGraphName(gpuTF32GraphName))
	}
	return G.NewGraph()
}

// placement is where NewGraph placed n's graph.
func placement(n *G.Node) Placement {
	switch n.Graph().Name() {
	case gpuGraphName:
		return OnGPU
	case gpuTF32GraphName:
		return OnGPUTF32
	}
	return OnCPU
}

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

// gpuLauncher starts a kernel over a grid of
// blocks of threads with shared bytes of dynamic shared memory, with its
// arguments (uintptr for device addresses, 0 for none; int32, float32 and
// float64 for scalars), queued in order on the device (the host waits only to read a
// result back). A kernel is named as in its source,
// "module.kernel" (the module is the .cu file's name under graph/cuda),
// or without "module." for graph/cuda/attnlab.cu's.
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

// copyKernel is the GPU path of Slice and View (the rows x cols elements
// of the input from offset on, copied: a device value cannot alias another
// in Gorgonia's machine) and of place (zeros, then the input copied in at
// offset).
func copyKernel(offset int, place bool) *gpuKernel {
	return &gpuKernel{launch: func(l gpuLauncher, out gpuBuf, in []gpuBuf) error {
		n := in[0].size()
		if !place {
			n = out.size()
		}
		sz, err := int32s(n, out.size(), offset)
		if err != nil {
			return err
		}
		src, dst := in[0].ptr+uintptr(4*offset), out.ptr
		if place {
			blocks, threads := elementwiseGrid(out.size())
			if err := l.Launch("zero_f32", blocks, threads, 0, out.ptr, sz[1]); err != nil {
				return err
			}
			src, dst = in[0].ptr, out.ptr+uintptr(4*offset)
		}
		blocks, threads := elementwiseGrid(n)
		return l.Launch("copy_f32", blocks, threads, 0, src, dst, sz[0])
	}}
}

// sceKernel is SoftmaxCrossEntropy's GPU path (grad false: in logits,
// targets, weights; out the scalar loss) and its gradient's (in also the
// loss's gradient g; out [N, V]). One block per row.
func sceKernel(grad bool) *gpuKernel {
	return &gpuKernel{launch: func(l gpuLauncher, out gpuBuf, in []gpuBuf) error {
		n, v := in[0].shape[0], in[0].shape[1]
		sz, err := int32s(n, v)
		if err != nil {
			return err
		}
		threads := rowThreads(v)
		if !grad {
			if err := l.Launch("zero_f32", 1, 32, 0, out.ptr, int32(1)); err != nil {
				return err
			}
			if err := l.Launch("sce_loss_rows_f32", n, threads, 0, in[0].ptr, in[1].ptr, in[2].ptr, out.ptr, sz[0], sz[1]); err != nil {
				return err
			}
			return l.Launch("sce_finish_f32", 1, 256, 0, in[2].ptr, out.ptr, sz[0])
		}
		// sum w into grad[0], rows 1.. reading it, then row 0.
		if err := l.Launch("sum_f32", 1, 256, 0, in[2].ptr, out.ptr, sz[0]); err != nil {
			return err
		}
		if n > 1 {
			if err := l.Launch("sce_grad_rows_f32", n-1, threads, 0, in[0].ptr, in[1].ptr, in[2].ptr, in[3].ptr, out.ptr, int32(1), sz[1]); err != nil {
				return err
			}
		}
		return l.Launch("sce_grad_rows_f32", 1, threads, 0, in[0].ptr, in[1].ptr, in[2].ptr, in[3].ptr, out.ptr, int32(0), sz[1])
	}}
}

// correctCountKernel is CorrectCount's GPU path: one thread per row.
var correctCountKernel = &gpuKernel{launch: func(l gpuLauncher, out gpuBuf, in []gpuBuf) error {
	n, v := in[0].shape[0], in[0].shape[1]
	sz, err := int32s(n, v)
	if err != nil {
		return err
	}
	if err := l.Launch("zero_f32", 1, 32, 0, out.ptr, int32(2)); err != nil {
		return err
	}
	blocks, threads := elementwiseGrid(n)
	return l.Launch("correct_count_f32", blocks, threads, 0, in[0].ptr, in[1].ptr, in[2].ptr, out.ptr, sz[0], sz[1])
}}

// gradSquaredNormKernel is GradSquaredNorm's GPU path over its ng
// gradients (in[1:1+ng]; in[0] the loss): each gradient's dot product with
// itself (dot_f32) added up, then NaN if the loss is not finite.
func gradSquaredNormKernel(ng int) *gpuKernel {
	return &gpuKernel{launch: func(l gpuLauncher, out gpuBuf, in []gpuBuf) error {
		if err := l.Launch("zero_f32", 1, 32, 0, out.ptr, int32(1)); err != nil {
			return err
		}
		for _, g := range in[1 : 1+ng] {
			sz, err := int32s(g.size())
			if err != nil {
				return err
			}
			blocks, threads := elementwiseGrid(g.size())
			if err := l.Launch("dot_f32", min(blocks, 1024), threads, 0, g.ptr, g.ptr, out.ptr, sz[0]); err != nil { // g . g
				return err
			}
		}
		return l.Launch("nonfinite_f32", 1, 32, 0, in[0].ptr, out.ptr)
	}}
}

// adamWKernel is AdamWStep's GPU path: one thread per element.
func adamWKernel(wd float64) *gpuKernel {
	return &gpuKernel{launch: func(l gpuLauncher, out gpuBuf, in []gpuBuf) error {
		n := in[0].size()
		sz, err := int32s(n)
		if err != nil {
			return err
		}
		if err := l.Launch("zero_f32", 1, 32, 0, out.ptr, int32(1)); err != nil {
			return err
		}
		blocks, threads := elementwiseGrid(n)
		return l.Launch("adamw_f32", blocks, threads, 0, in[0].ptr, in[1].ptr, in[2].ptr, in[3].ptr, in[4].ptr, in[5].ptr, float32(wd), sz[0])
	}}
}

// rotaryKernel is Rotary's GPU path (transpose: its gradient's): one
// thread per element, the factors computed in double as the CPU's table.
func rotaryKernel(s RotaryShape, transpose bool) *gpuKernel {
	return &gpuKernel{launch: func(l gpuLauncher, out gpuBuf, in []gpuBuf) error {
		rows := s.Batch * s.SeqLen
		sz, err := int32s(rows, s.SeqLen, s.Heads, s.HeadDim, s.RotDims, rows*s.Heads*s.HeadDim)
		if err != nil {
			return err
		}
		q, t := int32(0), int32(0)
		if s.Query {
			q = 1
		}
		if transpose {
			t = 1
		}
		blocks, threads := elementwiseGrid(rows * s.Heads * s.HeadDim)
		return l.Launch("rotary_f32", blocks, threads, 0, in[0].ptr, out.ptr, sz[0], sz[1], sz[2], sz[3], sz[4],
			s.Base, s.XPosScaleBase, float64(XPosGamma), q, t)
	}}
}

// combineKernel is Combine's GPU path: one thread per element.
func combineKernel(alpha, beta float64) *gpuKernel {
	return &gpuKernel{launch: func(l gpuLauncher, out gpuBuf, in []gpuBuf) error {
		sz, err := int32s(out.size())
		if err != nil {
			return err
		}
		blocks, threads := elementwiseGrid(out.size())
		return l.Launch("combine_f32", blocks, threads, 0, in[0].ptr, in[1].ptr, out.ptr, float32(alpha), float32(beta), sz[0])
	}}
}

// headsKernel is the GPU path of ConcatHeads (kernel concat_heads_f32, in
// a and b) and of its backward (split_heads_f32, in g): one thread per
// output element; n is the rows of the first input.
func headsKernel(kernel string, heads, da, hb, db int) *gpuKernel {
	return &gpuKernel{launch: func(l gpuLauncher, out gpuBuf, in []gpuBuf) error {
		n := in[0].shape[0]
		sz, err := int32s(n, heads, da, hb, db, out.size())
		if err != nil {
			return err
		}
		blocks, threads := elementwiseGrid(out.size())
		args := []any{in[0].ptr}
		if len(in) == 2 {
			args = append(args, in[1].ptr)
		}
		args = append(args, out.ptr, sz[0], sz[1], sz[2], sz[3], sz[4])
		return l.Launch(kernel, blocks, threads, 0, args...)
	}}
}

// mohMaxHeads is the most heads graph/cuda/attnlab.cu's MoH kernels route
// (MOH_MAX_HEADS); more have no GPU path.
const mohMaxHeads = 64

// mohKernel is the GPU path of MoHGates (kernel moh_gates_f32, in the
// logits) and of its gradient (moh_gates_grad_f32, in the logits and the
// gates' gradient): one thread per token, the routing in double as the CPU.
func mohKernel(m mohRouting, kernel string) *gpuKernel {
	if m.heads > mohMaxHeads {
		return nil
	}
	return &gpuKernel{launch: func(l gpuLauncher, out gpuBuf, in []gpuBuf) error {
		n := in[0].shape[0]
		soft := int32(0)
		if m.softmax {
			soft = 1
		}
		sz, err := int32s(n, m.width(), m.heads, m.shared, m.topK)
		if err != nil {
			return err
		}
		blocks, threads := elementwiseGrid(n)
		args := []any{in[0].ptr}
		if len(in) == 2 {
			args = append(args, in[1].ptr)
		}
		args = append(args, out.ptr, sz[0], sz[1], sz[2], sz[3], sz[4], soft)
		return l.Launch(kernel, blocks, threads, 0, args...)
	}}
}

// headsProductKernel is the GPU path of ScaleHeads (scale_heads_f32: in o
// [N, heads*d] and g [N, heads]) and of its gates' gradient (head_dots_f32:
// in a and b [N, heads*d]): one thread per output element.
func headsProductKernel(kernel string, heads int) *gpuKernel {
	return &gpuKernel{launch: func(l gpuLauncher, out gpuBuf, in []gpuBuf) error {
		n, w := in[0].shape[0], in[0].shape[1]
		sz, err := int32s(n, heads, w/heads, out.size())
		if err != nil {
			return err
		}
		blocks, threads := elementwiseGrid(out.size())
		return l.Launch(kernel, blocks, threads, 0, in[0].ptr, in[1].ptr, out.ptr, sz[0], sz[1], sz[2])
	}}
}
