//go:build !cuda

package gpu

import G "gorgonia.org/gorgonia"

// Available reports whether this binary has the CUDA path.
func Available() bool { return false }

// Check returns ErrNoCUDA: this binary has no GPU code.
func Check(seed uint64) (Report, error) { return Report{}, ErrNoCUDA }

// CheckGraph returns ErrNoCUDA: this binary runs nothing on a GPU.
func CheckGraph(g *G.ExprGraph) error { return ErrNoCUDA }

// KeepOnDevice returns ErrNoCUDA: nothing is kept on a GPU.
func KeepOnDevice(nodes ...*G.Node) error { return ErrNoCUDA }

// CopyToHost returns ErrNoCUDA.
func CopyToHost(vm G.VM) error { return ErrNoCUDA }

// CopyToDevice returns ErrNoCUDA.
func CopyToDevice(vm G.VM) error { return ErrNoCUDA }

// Copies returns ErrNoCUDA.
func Copies(vm G.VM) (toDevice, toHost []string, err error) { return nil, nil, ErrNoCUDA }
