package graph

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Embedding returns the rows of table [V, D] picked by ids [N]: row i of the
// result is table[ids[i]]. Token ids travel in tensors of the model's dtype
// (exact for ids below 2^24 in float32); an id outside [0, V) is an error.
// The backward scatters dy into a [V, D] gradient; ids get none.
func Embedding(ids, table *G.Node) (*G.Node, error) {
	const name = "Embedding"
	return apply(&op{
		name:  name,
		arity: 2,
		typ:   fnType(1, 2, 2),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if len(in[0]) != 1 || len(in[1]) != 2 {
				return nil, shapeErr(name, "want ids [N] and table [V,D], got %v and %v", in[0], in[1])
			}
			return tensor.Shape{in[0][0], in[1][1]}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			st := in[1].Shape()
			out := newTensor(in[1].Dtype(), in[0].Shape()[0], st[1])
			if f32 {
				err = gatherRows(data[float32](in[0]), data[float32](in[1]), data[float32](out), st[0], st[1])
			} else {
				err = gatherRows(data[float64](in[0]), data[float64](in[1]), data[float64](out), st[0], st[1])
			}
			return out, err
		},
		diffWRT: []bool{false, true},
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			dt, err := embeddingGrad(in[0], grad, in[1].Shape()[0])
			return G.Nodes{nil, dt}, err
		},
		gpu: embeddingKernel(0, false),
	}, ids, table)
}

func embeddingGrad(ids, dy *G.Node, vocab int) (*G.Node, error) {
	name := fmt.Sprintf("EmbeddingGrad(V=%d)", vocab)
	return apply(&op{
		name:  name,
		arity: 2,
		typ:   fnType(1, 2, 2),
		shape: func(in []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{vocab, in[1][1]}, nil },
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			d := in[1].Shape()[1]
			out := newTensor(in[1].Dtype(), vocab, d)
			if f32 {
				scatterAddRows(data[float32](in[0]), data[float32](in[1]), data[float32](out), d)
			} else {
				scatterAddRows(data[float64](in[0]), data[float64](in[1]), data[float64](out), d)
			}
			return out, nil
		},
		gpu: embeddingKernel(vocab, true),
	}, ids, dy)
}

func gatherRows[T Float](ids, table, out []T, v, d int) error {
	for i, f := range ids {
		id := int(f)
		if float64(id) != float64(f) || id < 0 || id >= v {
			return fmt.Errorf("Embedding: id %v at position %d is outside [0, %d)", f, i, v)
		}
		copy(out[i*d:(i+1)*d], table[id*d:(id+1)*d])
	}
	return nil
}

func scatterAddRows[T Float](ids, dy, out []T, d int) {
	for i, f := range ids {
		id := int(f)
		dst, src := out[id*d:(id+1)*d], dy[i*d:(i+1)*d]
		for j, v := range src {
			dst[j] += v
		}
	}
}
