// Package graph holds what the models need from Gorgonia and Gorgonia lacks:
// custom ops with their own forward and backward (layer and RMS norms, GELU,
// the embedding lookup, the fused linear layer, the attention cores with causal
// and key-padding masks, softmax cross-entropy over scored positions), the
// block-sparse patterns the attention cores consume (pattern.go, over the
// masks of package blockmask: the dense core evaluates a pattern at every
// score and is the oracle; the tiled core, tiled.go, visits only the tiles
// it lists and returns each row's logsumexp, which merge.go merges), the
// parameter store that training and evaluation graphs share, the choice of
// BLAS, the float32 matrix multiply (sgemm.go, with Go-assembly
// micro-kernels), AVX-512 loops for the softmax, GELU, norm statistics and
// AdamW (vec_amd64.s), and the finite-difference gradient checker every op,
// layer and attention variant is tested with.
//
// Every tensor a model uses is two-dimensional, [rows, features] with rows =
// batch x positions, so that no op needs a reshape or a transpose between
// layers. Ops compute in the dtype of their inputs (float32 or float64).
package graph
