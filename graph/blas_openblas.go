//go:build openblas

package graph

import (
	"gonum.org/v1/netlib/blas/netlib"
	G "gorgonia.org/gorgonia"

	_ "github.com/attnlab/attnlab/internal/openblas" // links -lopenblas
)

// With the openblas build tag, Gorgonia and every op here use OpenBLAS through
// gonum's netlib bindings (cgo; Debian: apt-get install libopenblas-dev; the
// link flag is in package internal/openblas, so `go build -tags openblas` needs no
// CGO_LDFLAGS). See scripts/build-openblas.sh.
const blasName = "openblas (netlib)"

// useGoSgemm: float32 multiplies go to sgemm.go's assembly kernels where the
// CPU has them: BenchmarkSgemm measures them at or above OpenBLAS 0.3.21 on
// the model's shapes (no cgo call per multiply, and the flash cores make
// thousands of small ones per step). OpenBLAS does the float64 ones, and the
// float32 ones on CPUs without AVX2.
var useGoSgemm = bestSgemmKernel != goSgemmKernel

func init() { G.Use(netlib.Implementation{}) }
