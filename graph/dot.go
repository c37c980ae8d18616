package graph

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Dot returns the scalar sum_i x_i r_i of two tensors of one shape, with
// the gradient g r for x (r gets none): a loss that weighs every element
// of x by a fixed random r, so that the backward of what made x is
// checked or timed on every element. O(n) time.
func Dot(x, r *G.Node) (*G.Node, error) {
	const name = "Dot"
	d := max(x.Dims(), 1)
	return apply(&op{
		name:  name,
		arity: 2,
		typ:   fnType(d, d, 0),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if !in[0].Eq(in[1]) {
				return nil, shapeErr(name, "shapes %v and %v differ", in[0], in[1])
			}
			return tensor.ScalarShape(), nil
		},
		do: func(in []G.Value) (G.Value, error) {
			if _, err := checkDtype(name, in...); err != nil {
				return nil, err
			}
			var s float64
			xs, rs := Float64s(in[0]), Float64s(in[1])
			for i := range xs {
				s += xs[i] * rs[i]
			}
			return newScalar(in[0].Dtype(), s)
		},
		diffWRT: []bool{true, false},
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			dx, err := apply(dotGradOp(d), in[1], grad)
			return G.Nodes{dx, nil}, err
		},
		gpu: dotKernel,
	}, x, r)
}

// dotGradOp maps (r, g) to g r, r of d dimensions.
func dotGradOp(d int) *op {
	const name = "DotGrad"
	return &op{
		name:  name,
		arity: 2,
		typ:   fnType(d, 0, d),
		shape: func(in []tensor.Shape) (tensor.Shape, error) { return in[0].Clone(), nil },
		do: func(in []G.Value) (G.Value, error) {
			g, err := scalar(in[1])
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			out := newTensor(in[0].Dtype(), in[0].Shape()...)
			switch r := in[0].Data().(type) {
			case []float32:
				o := data[float32](out)
				for i, x := range r {
					o[i] = x * float32(g)
				}
			case []float64:
				o := data[float64](out)
				for i, x := range r {
					o[i] = x * g
				}
			}
			return out, nil
		},
		gpu: dotGradKernel,
	}
}

// dotKernel is Dot's GPU path: a grid-stride dot product added atomically.
var dotKernel = &gpuKernel{launch: func(l gpuLauncher, out gpuBuf, in []gpuBuf) error {
	sz, err := int32s(in[0].size())
	if err != nil {
		return err
	}
	if err := l.Launch("zero_f32", 1, 32, 0, out.ptr, int32(1)); err != nil {
		return err
	}
	blocks, threads := elementwiseGrid(in[0].size())
	return l.Launch("dot_f32", min(blocks, 1024), threads, 0, in[0].ptr, in[1].ptr, out.ptr, sz[0])
}}

// dotGradKernel is DotGrad's GPU path: one thread per element.
var dotGradKernel = &gpuKernel{launch: func(l gpuLauncher, out gpuBuf, in []gpuBuf) error {
	sz, err := int32s(in[0].size())
	if err != nil {
		return err
	}
	blocks, threads := elementwiseGrid(in[0].size())
	return l.Launch("scale_by_f32", blocks, threads, 0, in[0].ptr, in[1].ptr, out.ptr, sz[0])
}}
