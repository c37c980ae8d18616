package graph

import (
	"fmt"
	"math"
	"math/rand/v2"

	G "gorgonia.org/gorgonia"
)

// GorgoniaGPUCases are checks of Gorgonia's own CUDA ops, which the models
// use beside the package's (matrix products through cuBLAS, same-shape
// elementwise arithmetic, elementwise functions), and of a small chain of
// them with its gradients; in the shape of GPUCases, run by trainer
// gpucheck and, on the CPU, by TestGPUCasesOnTheCPU.
func GorgoniaGPUCases() []GPUCase {
	matmul := func(m, k, n int) GPUCase {
		return GPUCase{Name: "matmul (cuBLAS)", Shape: fmt.Sprintf("%dx%d . %dx%d", m, k, k, n), Build: func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
			av, bv := gaussF32(rng, m*k, 1), gaussF32(rng, k*n, 1)
			out, err := G.Mul(inputF32(g, "a", av, m, k), inputF32(g, "b", bv, k, n))
			return []*G.Node{out}, [][]float64{dense64{m, k, f64(av)}.mul(dense64{k, n, f64(bv)}).v}, err
		}}
	}
	const rows, cols = 300, 257
	binary := func(name string, op func(a, b *G.Node) (*G.Node, error), f func(x, y float64) float64) GPUCase {
		return GPUCase{Name: name, Shape: "300x257", Build: func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
			av, bv := gaussF32(rng, rows*cols, 1), gaussF32(rng, rows*cols, 1)
			want := make([]float64, len(av))
			for i := range want {
				want[i] = f(float64(av[i]), float64(bv[i]))
			}
			out, err := op(inputF32(g, "a", av, rows, cols), inputF32(g, "b", bv, rows, cols))
			return []*G.Node{out}, [][]float64{want}, err
		}}
	}
	unary := func(name string, op func(a *G.Node) (*G.Node, error), f func(x float64) float64) GPUCase {
		return binary(name, func(a, _ *G.Node) (*G.Node, error) { return op(a) }, func(x, _ float64) float64 { return f(x) })
	}
	return []GPUCase{
		matmul(257, 129, 65),
		matmul(1024, 1024, 1024),
		binary("add", func(a, b *G.Node) (*G.Node, error) { return G.Add(a, b) }, func(x, y float64) float64 { return x + y }),
		binary("sub", func(a, b *G.Node) (*G.Node, error) { return G.Sub(a, b) }, func(x, y float64) float64 { return x - y }),
		binary("hadamard product", func(a, b *G.Node) (*G.Node, error) { return G.HadamardProd(a, b) }, func(x, y float64) float64 { return x * y }),
		unary("tanh", G.Tanh, math.Tanh),
		unary("exp", G.Exp, math.Exp),
		unary("sigmoid", G.Sigmoid, func(x float64) float64 { return 1 / (1 + math.Exp(-x)) }),
		{Name: "tanh(a b + c) and its gradients", Shape: "64x48 . 48x80", Build: chainWithGrad},
	}
}

// chainWithGrad checks y = tanh(a b + c), loss = sum(y), and the gradients
// da = (1 - y^2) b^T, db = a^T (1 - y^2), dc = 1 - y^2: cuBLAS products in
// both directions, elementwise ops, the reduction and the copies between.
func chainWithGrad(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
	const m, k, n = 64, 48, 80
	av, bv, cv := gaussF32(rng, m*k, 1), gaussF32(rng, k*n, 1), gaussF32(rng, m*n, 1)
	an, bn, cn := inputF32(g, "a", av, m, k), inputF32(g, "b", bv, k, n), inputF32(g, "c", cv, m, n)
	ab, err := G.Mul(an, bn)
	if err != nil {
		return nil, nil, err
	}
	s, err := G.Add(ab, cn)
	if err != nil {
		return nil, nil, err
	}
	y, err := G.Tanh(s)
	if err != nil {
		return nil, nil, err
	}
	loss, err := G.Sum(y)
	if err != nil {
		return nil, nil, err
	}
	grads, err := G.Grad(loss, an, bn, cn)
	if err != nil {
		return nil, nil, err
	}
	A, B := dense64{m, k, f64(av)}, dense64{k, n, f64(bv)}
	Y := A.mul(B)
	GY := dense64{m, n, make([]float64, m*n)} // 1 - y^2
	for i := range Y.v {
		Y.v[i] = math.Tanh(Y.v[i] + float64(cv[i]))
		GY.v[i] = 1 - Y.v[i]*Y.v[i]
	}
	return []*G.Node{y, grads[0], grads[1], grads[2]}, [][]float64{Y.v, GY.mul(B.t()).v, A.t().mul(GY).v, GY.v}, nil
}
