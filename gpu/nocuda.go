//go:build !cuda

package gpu

import G "gorgonia.org/gorgonia"

// Available reports whether this binary has the CUDA path.
func Available() bool { return false }

// Check returns ErrNoCUDA: this binary has no GPU code.
func Check(seed uint64) (Report, error) { return Report{}, ErrNoCUDA }

// CheckGraph returns ErrNoCUDA: this binary runs nothing on a GPU.
func CheckGraph(g *G.ExprGraph) error { return ErrNoCUDA }
