package graph

import (
	"gonum.org/v1/gonum/blas"
	G "gorgonia.org/gorgonia"
)

// BLAS returns the BLAS implementation the ops use: Gorgonia's current one,
// which is gonum's pure-Go implementation unless the binary was built with
// the openblas tag (see blas_openblas.go).
func BLAS() G.BLAS { return G.WhichBLAS() }

// BLASName says which BLAS this binary uses, for logs and summaries.
func BLASName() string {
	if useGoSgemm {
		return blasName + ", float32 GEMM: attnlab " + bestSgemmKernel.name + " kernel"
	}
	return blasName
}

// BLAS says which BLAS a graph placed at p multiplies matrices with, for
// logs and summaries: cuBLAS on the GPU, BLASName on the CPU.
func (p Placement) BLAS() string {
	switch p {
	case OnGPU:
		return "cuBLAS, fp32"
	case OnGPUTF32:
		return "cuBLAS, TF32 tensor cores"
	}
	return BLASName()
}

// gemm computes C = alpha * op(A) * op(B) + beta * C for row-major matrices,
// op(A) m x k, op(B) k x n, C m x n with leading dimensions lda, ldb, ldc.
func gemm[T Float](tA, tB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	ta, tb := blas.NoTrans, blas.NoTrans
	if tA {
		ta = blas.Trans
	}
	if tB {
		tb = blas.Trans
	}
	impl := BLAS()
	switch any(alpha).(type) {
	case float32:
		if useGoSgemm {
			sgemm(tA, tB, m, n, k, float32(alpha), any(a).([]float32), lda, any(b).([]float32), ldb, float32(beta), any(c).([]float32), ldc)
			return
		}
		impl.Sgemm(ta, tb, m, n, k, float32(alpha), any(a).([]float32), lda, any(b).([]float32), ldb, float32(beta), any(c).([]float32), ldc)
	case float64:
		impl.Dgemm(ta, tb, m, n, k, float64(alpha), any(a).([]float64), lda, any(b).([]float64), ldb, float64(beta), any(c).([]float64), ldc)
	}
}
