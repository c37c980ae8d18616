//go:build openblas

package graph

import (
	"gonum.org/v1/netlib/blas/netlib"
	G "gorgonia.org/gorgonia"
)

// With the openblas build tag, Gorgonia and every op here use OpenBLAS through
// gonum's netlib bindings (cgo; Debian: apt-get install libopenblas-dev; build
// with CGO_LDFLAGS=-lopenblas). See scripts/build-openblas.sh.
const blasName = "openblas (netlib)"

// useGoSgemm: OpenBLAS does every matrix multiply.
const useGoSgemm = false

func init() { G.Use(netlib.Implementation{}) }
