//go:build cuda

package graph

import (
	"fmt"
	"math/rand/v2"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// GPUCase is one check of an op's GPU path for trainer gpucheck (package
// gpu): Build makes a graph from fresh float32 inputs and returns the nodes
// to read back and their references, computed in float64 on the CPU from
// the same inputs.
type GPUCase struct {
	Name, Shape string
	Build       func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error)
}

// GPUCases are the checks of the graph package's GPU ops, forward and
// backward.
func GPUCases() []GPUCase {
	return []GPUCase{
		activationCase(GELU, gelu, geluGrad),
		activationCase(ReLU, relu, reluGrad),
		normCase(true, 257, 96),
		normCase(false, 257, 96),
		normCase(true, 64, 1000),
	}
}

// normCase checks LayerNorm (centered) or RMSNorm of x [n, d] and, through
// loss = sum(y * r), the gradients of x, gamma and beta against the CPU
// kernels in float64 (layerNormForward, normGradX, normGradGamma, colSum).
func normCase(centered bool, n, d int) GPUCase {
	name := "RMSNorm"
	if centered {
		name = "LayerNorm"
	}
	const eps = 1e-5
	return GPUCase{Name: name + " and its gradients", Shape: fmt.Sprintf("%dx%d", n, d), Build: func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
		xv, rv := randF32(rng, n*d, 3), randF32(rng, n*d, 1)
		for i := range xv { // rows with their own offsets: the mean matters
			xv[i] += float32(i / d % 7)
		}
		gv, bv := randF32(rng, d, 1), randF32(rng, d, 1)
		x := inputF32(g, "x", append([]float32(nil), xv...), n, d)
		r := inputF32(g, "r", append([]float32(nil), rv...), n, d)
		gamma := inputF32(g, "gamma", append([]float32(nil), gv...), d)
		wrt := G.Nodes{x, gamma}
		var y *G.Node
		var err error
		if centered {
			beta := inputF32(g, "beta", append([]float32(nil), bv...), d)
			wrt = append(wrt, beta)
			y, err = LayerNorm(x, gamma, beta, eps)
		} else {
			y, err = RMSNorm(x, gamma, eps)
		}
		if err != nil {
			return nil, nil, err
		}
		grads, err := weightedSumGrads(y, r, wrt...)
		if err != nil {
			return nil, nil, err
		}
		x64, r64, g64, b64 := f64(xv), f64(rv), f64(gv), f64(bv)
		wantY := make([]float64, n*d)
		if centered {
			layerNormForward(x64, g64, b64, wantY, n, d, eps)
		} else {
			rmsNormForward(x64, g64, wantY, n, d, eps)
		}
		wantDX, wantDG, wantDB := make([]float64, n*d), make([]float64, d), make([]float64, d)
		normGradX(x64, g64, r64, wantDX, n, d, centered, eps)
		normGradGamma(x64, r64, wantDG, n, d, centered, eps)
		colSum(r64, wantDB, n, d)
		outs, refs := []*G.Node{y, grads[0], grads[1]}, [][]float64{wantY, wantDX, wantDG}
		if centered {
			outs, refs = append(outs, grads[2]), append(refs, wantDB)
		}
		return outs, refs, nil
	}}
}

// weightedSumGrads builds loss = sum(y * r) and its gradients with respect
// to wrt: the backward of y's op gets the random output gradient r.
func weightedSumGrads(y, r *G.Node, wrt ...*G.Node) (G.Nodes, error) {
	yr, err := G.HadamardProd(y, r)
	if err != nil {
		return nil, err
	}
	loss, err := G.Sum(yr)
	if err != nil {
		return nil, err
	}
	return G.Grad(loss, wrt...)
}

func f64(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

// randF32 is n draws of N(0, sd^2) in float32.
func randF32(rng *rand.Rand, n int, sd float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(sd * rng.NormFloat64())
	}
	return x
}

func inputF32(g *G.ExprGraph, name string, x []float32, shape ...int) *G.Node {
	return G.NewTensor(g, tensor.Float32, len(shape), G.WithShape(shape...), G.WithName(name),
		G.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(x))))
}

// activationCase checks y = a(x) and, through loss = sum(y * r) with r
// random, dx = r a'(x).
func activationCase(a Activation, f, df func(float64) float64) GPUCase {
	const rows, cols = 300, 257
	return GPUCase{Name: "Activate(" + string(a) + ") and its gradient", Shape: "300x257", Build: func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
		xv, rv := randF32(rng, rows*cols, 2), randF32(rng, rows*cols, 1)
		x := inputF32(g, "x", append([]float32(nil), xv...), rows, cols)
		r := inputF32(g, "r", append([]float32(nil), rv...), rows, cols)
		y, err := Activate(x, a)
		if err != nil {
			return nil, nil, err
		}
		grads, err := weightedSumGrads(y, r, x)
		if err != nil {
			return nil, nil, err
		}
		wantY, wantDX := make([]float64, len(xv)), make([]float64, len(xv))
		for i, v := range xv {
			wantY[i] = f(float64(v))
			wantDX[i] = float64(rv[i]) * df(float64(v))
		}
		return []*G.Node{y, grads[0]}, [][]float64{wantY, wantDX}, nil
	}}
}
