//go:build !amd64

package graph

// sgemmKernels lists the micro-kernels this CPU can run: the portable one.
func sgemmKernels() []*sgemmKernel { return []*sgemmKernel{goSgemmKernel} }

// tile runs the kernel on one tile (see sgemmKernel).
func (kn *sgemmKernel) tile(k int, a *float32, rs, cs int, b, c *float32, ldc int, alpha float32, add bool) {
	goTile4x8(k, a, rs, cs, b, c, ldc, alpha, add)
}
