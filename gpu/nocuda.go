//go:build !cuda

package gpu

import (
	"errors"

	G "gorgonia.org/gorgonia"
)

// ErrNoCUDA is Check's error in a binary built without -tags cuda.
var ErrNoCUDA = errors.New("this trainer was built without CUDA support: build bin/trainer-cuda with scripts/build-cuda.sh and run it on a machine with an NVIDIA GPU")

// Available reports whether this binary has the CUDA path.
func Available() bool { return false }

// Check returns ErrNoCUDA: this binary has no GPU code.
func Check(seed uint64) (Report, error) { return Report{}, ErrNoCUDA }

// CheckGraph returns ErrNoCUDA: this binary runs nothing on a GPU.
func CheckGraph(g *G.ExprGraph) error { return ErrNoCUDA }
