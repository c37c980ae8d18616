// Package gpu is attnlab's CUDA path (issue 16), compiled only into the
// binary scripts/build-cuda.sh builds (-tags cuda, Gorgonia's CUDA backend
// with the project's patches): checks of the GPU ops against the CPU, run
// by `trainer gpucheck` on a machine with an NVIDIA GPU. It is a package of
// its own because everything in it needs cgo, the CUDA driver and cuBLAS,
// which the default build and CI have not; without the tag it reports that
// the binary has no GPU support.
//
// What runs on the GPU today: Gorgonia's own CUDA ops (matrix products
// through cuBLAS, same-shape elementwise arithmetic, elementwise unary
// functions), checked on the lent H200, and the graph package's ops that
// have a kernel (graph/gpu.go; graph.GPUCases are their checks), written
// but not yet run on a GPU. The other model ops still run on the CPU, so
// `--device cuda` for training does not exist yet.
package gpu

import "errors"

// ErrNoCUDA is what Check and CheckGraph return in a binary built without
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
