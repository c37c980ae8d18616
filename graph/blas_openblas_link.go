//go:build openblas

package graph

// gonum's netlib bindings leave the CBLAS library to the builder
// (CGO_LDFLAGS); naming OpenBLAS here lets the plain
// `go build -tags openblas ./cmd/trainer` link.

// #cgo LDFLAGS: -lopenblas
import "C"
