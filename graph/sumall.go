package graph

import (
	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// SumAll returns the sum of every element of x, a scalar (accumulated in
// float64). Its gradient is the upstream scalar in every element, written
// directly: Gorgonia's Sum gets there by broadcasting through Repeat,
// which costs as much as a small layer's elementwise work (the attention
// bench's loss is a sum of the layer's output).
func SumAll(x *G.Node) (*G.Node, error) {
	const name = "SumAll"
	return apply(&op{
		name:  name,
		arity: 1,
		typ:   hm.NewFnType(tensorType(x.Dims()), hm.TypeVariable('a')),
		shape: func(in []tensor.Shape) (tensor.Shape, error) { return tensor.ScalarShape(), nil },
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			var s float64
			if f32 {
				for _, v := range data[float32](in[0]) {
					s += float64(v)
				}
			} else {
				for _, v := range data[float64](in[0]) {
					s += v
				}
			}
			return newScalar(in[0].Dtype(), s)
		},
		diffWRT: []bool{true},
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			d, err := apply(fillLikeOp(in[0].Dims()), in[0], grad)
			return G.Nodes{d}, err
		},
	}, x)
}

// fillLikeOp is a tensor of its first input's shape with its second
// input's scalar value in every element (SumAll's gradient).
func fillLikeOp(dims int) *op {
	const name = "FillLike"
	return &op{
		name:  name,
		arity: 2,
		typ:   hm.NewFnType(tensorType(dims), hm.TypeVariable('a'), tensorType(dims)),
		shape: func(in []tensor.Shape) (tensor.Shape, error) { return in[0].Clone(), nil },
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			g, err := scalar(in[1])
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), in[0].Shape()...)
			if f32 {
				fillWith(data[float32](out), float32(g))
			} else {
				fillWith(data[float64](out), g)
			}
			return out, nil
		},
		diffWRT: []bool{false, false},
	}
}

func fillWith[T Float](x []T, v T) {
	for i := range x {
		x[i] = v
	}
}
