//go:build !amd64

package graph

// sgemmKernels lists the micro-kernels this CPU can run: the portable one.
func sgemmKernels() []*sgemmKernel { return []*sgemmKernel{goSgemmKernel} }
