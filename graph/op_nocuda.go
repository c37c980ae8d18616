//go:build !cuda

package graph

import G "gorgonia.org/gorgonia"

// gpuOp is o itself: this build has no GPU path.
func gpuOp(o *op, _ G.Nodes) G.Op { return o }
