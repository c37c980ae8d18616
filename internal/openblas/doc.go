// Package openblas links the OpenBLAS library into binaries built with the
// openblas tag. gonum's netlib bindings leave the CBLAS library to the
// builder (CGO_LDFLAGS); this package names it in a #cgo directive, so the
// plain `go build -tags openblas ./cmd/trainer` links. It is a package of
// its own because a package that uses cgo may not hold Go assembly, and
// package graph does. Without the tag it is empty.
package openblas
