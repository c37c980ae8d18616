package graph

import "golang.org/x/sys/cpu"

// Go assembly micro-kernels (sgemm_amd64.s): an 8 x 32 tile in 16 AVX-512
// registers and a 6 x 16 tile in 12 AVX2 registers, both with FMA.

//go:noescape
func tile8x32AVX512(k int, a *float32, rs, cs int, b, c *float32, ldc int, alpha float32, add bool)

//go:noescape
func tile6x16AVX2(k int, a *float32, rs, cs int, b, c *float32, ldc int, alpha float32, add bool)

var (
	avx512SgemmKernel = &sgemmKernel{name: "avx512", id: avx512Kernel, mr: 8, nr: 32}
	avx2SgemmKernel   = &sgemmKernel{name: "avx2", id: avx2Kernel, mr: 6, nr: 16}
)

// tile runs the kernel on one tile (see sgemmKernel).
func (kn *sgemmKernel) tile(k int, a *float32, rs, cs int, b, c *float32, ldc int, alpha float32, add bool) {
	switch kn.id {
	case avx512Kernel:
		tile8x32AVX512(k, a, rs, cs, b, c, ldc, alpha, add)
	case avx2Kernel:
		tile6x16AVX2(k, a, rs, cs, b, c, ldc, alpha, add)
	default:
		goTile4x8(k, a, rs, cs, b, c, ldc, alpha, add)
	}
}

// sgemmKernels lists the micro-kernels this CPU can run, fastest first.
func sgemmKernels() []*sgemmKernel {
	var ks []*sgemmKernel
	if cpu.X86.HasAVX512F {
		ks = append(ks, avx512SgemmKernel)
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ks = append(ks, avx2SgemmKernel)
	}
	return append(ks, goSgemmKernel)
}
