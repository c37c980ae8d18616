//go:build !openblas

package graph

const blasName = "gonum (pure Go)"

// useGoSgemm routes float32 matrix multiplies to sgemm.go's kernels instead
// of gonum's Sgemm, which is 8-9x below OpenBLAS.
const useGoSgemm = true
