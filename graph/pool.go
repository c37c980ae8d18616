package graph

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Pooling says how an encoder turns a sequence of vectors into one.
type Pooling string

// The poolings an encoder classifier may use.
const (
	// MeanPool averages the vectors of the real (non-padding) positions.
	MeanPool Pooling = "mean"
	// FirstPool takes the vector at position 0 (the CLS token).
	FirstPool Pooling = "cls"
)

// Pool maps x [B*T, D] (B sequences of T positions) to [B, D] by pooling over
// positions; keyMask [B*T] is 1 for real tokens and 0 for padding, and mean
// pooling averages over the real ones only. A sequence with no real token
// pools to zero.
func Pool(x, keyMask *G.Node, batch, seqLen int, mode Pooling) (*G.Node, error) {
	if mode != MeanPool && mode != FirstPool {
		return nil, fmt.Errorf("unknown pooling %q (known: mean, cls)", mode)
	}
	name := fmt.Sprintf("Pool(%s,B=%d,T=%d)", mode, batch, seqLen)
	return apply(&op{
		name:  name,
		arity: 2,
		typ:   fnType(2, 1, 2),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if len(in[0]) != 2 || in[0][0] != batch*seqLen || len(in[1]) != 1 || in[1][0] != batch*seqLen {
				return nil, shapeErr(name, "want x [%d,D] and mask [%d], got %v and %v", batch*seqLen, batch*seqLen, in[0], in[1])
			}
			return tensor.Shape{batch, in[0][1]}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			d := in[0].Shape()[1]
			out := newTensor(in[0].Dtype(), batch, d)
			if f32 {
				pool(data[float32](in[0]), data[float32](in[1]), data[float32](out), batch, seqLen, d, mode, false)
			} else {
				pool(data[float64](in[0]), data[float64](in[1]), data[float64](out), batch, seqLen, d, mode, false)
			}
			return out, nil
		},
		diffWRT: []bool{true, false},
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			gname := "PoolGrad" + name[len("Pool"):]
			dx, err := apply(&op{
				name:  gname,
				arity: 2,
				typ:   fnType(1, 2, 2),
				shape: func(in []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{batch * seqLen, in[1][1]}, nil },
				do: func(in []G.Value) (G.Value, error) {
					f32, err := checkDtype(gname, in...)
					if err != nil {
						return nil, err
					}
					d := in[1].Shape()[1]
					out := newTensor(in[1].Dtype(), batch*seqLen, d)
					if f32 {
						pool(out.Data().([]float32), data[float32](in[0]), data[float32](in[1]), batch, seqLen, d, mode, true)
					} else {
						pool(out.Data().([]float64), data[float64](in[0]), data[float64](in[1]), batch, seqLen, d, mode, true)
					}
					return out, nil
				},
			}, in[1], grad)
			return G.Nodes{dx, nil}, err
		},
	}, x, keyMask)
}

// pool computes y = pool(x) or, with backward, x = d pool / dx applied to y
// (x is then the output).
func pool[T Float](x, mask, y []T, b, t, d int, mode Pooling, backward bool) {
	for s := 0; s < b; s++ {
		out := y[s*d : (s+1)*d]
		if mode == FirstPool {
			row := x[s*t*d : s*t*d+d]
			if backward {
				copy(row, out)
			} else {
				copy(out, row)
			}
			continue
		}
		var n T
		for p := 0; p < t; p++ {
			n += mask[s*t+p]
		}
		if n == 0 {
			continue
		}
		for p := 0; p < t; p++ {
			m := mask[s*t+p]
			if m == 0 {
				continue
			}
			row := x[(s*t+p)*d : (s*t+p+1)*d]
			for j := range row {
				if backward {
					row[j] = out[j] * m / n
				} else {
					out[j] += row[j] * m / n
				}
			}
		}
	}
}
