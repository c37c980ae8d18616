//go:build !openblas

package graph

const blasName = "gonum (pure Go)"

// useGoSgemm routes float32 matrix multiplies to sgemm.go's assembly kernels
// where the CPU has them (AVX2 or AVX-512); gonum's Sgemm is 8-9x below
// OpenBLAS. Elsewhere gonum stays: the portable Go kernel measured slower
// than gonum's Sgemm on amd64 (BenchmarkSgemm: 6 against 10 GFLOP/s).
var useGoSgemm = bestSgemmKernel != goSgemmKernel
