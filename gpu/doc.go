// Package gpu is attnlab's CUDA path (issue 16), compiled only into the
// binary scripts/build-cuda.sh builds (-tags cuda, Gorgonia's CUDA backend
// with the project's patches): the checks of the GPU ops against the CPU
// that `trainer gpucheck` runs (with timings of a matrix product and of the
// flash op), CheckGraph, which refuses a graph with an op that has no GPU
// path (naming it), and the calls that keep the training step's values on
// the GPU (KeepOnDevice, CopyToHost, CopyToDevice, Copies). It is a package
// of its own because everything in it needs cgo, the CUDA driver and
// cuBLAS, which the default build and CI have not; without the tag every
// call reports that the binary has no GPU support (ErrNoCUDA).
//
// The ops themselves are the graph package's (graph/gpu.go, their kernels
// in graph/cuda; graph.GPUCases are their checks) and Gorgonia's own CUDA
// ops. The exact family's models have a kernel for every op, except the
// attention of mla and reuse (value and head dims differ); the kernels
// passed gpucheck on the lent H200, except those added after it ran (see
// the README's GPU section). Training with --device cuda does not work yet
// past its first step.
package gpu

import "errors"

// ErrNoCUDA is what this package's calls return in a binary built without
// -tags cuda.
var ErrNoCUDA = errors.New("this trainer was built without CUDA support: build bin/trainer-cuda with scripts/build-cuda.sh and run it on a machine with an NVIDIA GPU")

// Case is one check: an op on the GPU against the same op in float64 on
// the CPU, over fresh random inputs.
type Case struct {
	Name   string  `json:"name"`
	Shape  string  `json:"shape"`
	RelErr float64 `json:"rel_err"` // ||gpu - cpu|| / ||cpu||
	Limit  float64 `json:"limit"`
	Pass   bool    `json:"pass"`
	Error  string  `json:"error,omitempty"`
}

// Timing is one timed GPU computation: the median of its runs.
type Timing struct {
	Name     string  `json:"name"`
	MedianMS float64 `json:"median_ms"`
	TFLOPS   float64 `json:"tflops,omitempty"`
	Runs     int     `json:"runs"`
	Error    string  `json:"error,omitempty"` // the timing could not run
}

// Report is what Check found: the device, each case and the timings.
type Report struct {
	Device  string   `json:"device"`
	Cases   []Case   `json:"cases"`
	Timings []Timing `json:"timings"`
}
