package graph

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// MatMul returns op(a) x op(b) for 2-D a and b, where op transposes when tA
// (tB) is set. Unlike Gorgonia's Mul it reads transposed operands in place
// instead of materializing a transpose.
func MatMul(a, b *G.Node, tA, tB bool) (*G.Node, error) {
	return apply(matMulOp(tA, tB), a, b)
}

func matMulOp(tA, tB bool) *op {
	name := fmt.Sprintf("MatMul(tA=%t,tB=%t)", tA, tB)
	dims := func(s tensor.Shape, t bool) (int, int) {
		if t {
			return s[1], s[0]
		}
		return s[0], s[1]
	}
	return &op{
		name:  name,
		arity: 2,
		typ:   fnType(2, 2, 2),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if len(in[0]) != 2 || len(in[1]) != 2 {
				return nil, shapeErr(name, "want matrices, got %v and %v", in[0], in[1])
			}
			m, k := dims(in[0], tA)
			k2, n := dims(in[1], tB)
			if k != k2 {
				return nil, shapeErr(name, "inner dimensions differ: %v and %v", in[0], in[1])
			}
			return tensor.Shape{m, n}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			sa, sb := in[0].Shape(), in[1].Shape()
			m, k := dims(sa, tA)
			_, n := dims(sb, tB)
			out := newTensor(in[0].Dtype(), m, n)
			if f32 {
				gemm(tA, tB, m, n, k, 1, data[float32](in[0]), sa[1], data[float32](in[1]), sb[1], 0, data[float32](out), n)
			} else {
				gemm(tA, tB, m, n, k, 1, data[float64](in[0]), sa[1], data[float64](in[1]), sb[1], 0, data[float64](out), n)
			}
			return out, nil
		},
		diffWRT: []bool{true, true},
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			a, b := in[0], in[1]
			var da, db *G.Node
			var err error
			switch {
			case !tA && !tB: // C = A B
				da, err = MatMul(grad, b, false, true)
				if err == nil {
					db, err = MatMul(a, grad, true, false)
				}
			case !tA && tB: // C = A B^T
				da, err = MatMul(grad, b, false, false)
				if err == nil {
					db, err = MatMul(grad, a, true, false)
				}
			case tA && !tB: // C = A^T B
				da, err = MatMul(b, grad, false, true)
				if err == nil {
					db, err = MatMul(a, grad, false, false)
				}
			default: // C = A^T B^T
				da, err = MatMul(b, grad, true, true)
				if err == nil {
					db, err = MatMul(grad, a, true, true)
				}
			}
			return G.Nodes{da, db}, err
		},
		gpu: matMulKernel(tA, tB),
	}
}

// Linear returns x W + b for x [N, I], W [I, O] and b [O] (b may be nil),
// in one pass: the bias is written first and the product accumulated onto it.
func Linear(x, w, b *G.Node) (*G.Node, error) {
	if b == nil {
		return MatMul(x, w, false, false)
	}
	return apply(linearOp(), x, w, b)
}

func linearOp() *op {
	const name = "Linear"
	return &op{
		name:  name,
		arity: 3,
		typ:   fnType(2, 2, 1, 2),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			x, w, b := in[0], in[1], in[2]
			if len(x) != 2 || len(w) != 2 || len(b) != 1 || x[1] != w[0] || b[0] != w[1] {
				return nil, shapeErr(name, "want x [N,I], W [I,O], b [O]; got %v, %v, %v", x, w, b)
			}
			return tensor.Shape{x[0], w[1]}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			sx, sw := in[0].Shape(), in[1].Shape()
			n, i, o := sx[0], sx[1], sw[1]
			out := newTensor(in[0].Dtype(), n, o)
			if f32 {
				linearForward(data[float32](in[0]), data[float32](in[1]), data[float32](in[2]), data[float32](out), n, i, o)
			} else {
				linearForward(data[float64](in[0]), data[float64](in[1]), data[float64](in[2]), data[float64](out), n, i, o)
			}
			return out, nil
		},
		diffWRT: []bool{true, true, true},
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			dx, err := MatMul(grad, in[1], false, true)
			if err != nil {
				return nil, err
			}
			dw, err := MatMul(in[0], grad, true, false)
			if err != nil {
				return nil, err
			}
			db, err := ColSum(grad)
			return G.Nodes{dx, dw, db}, err
		},
		gpu: linearKernel,
	}
}

func linearForward[T Float](x, w, b, y []T, n, i, o int) {
	for r := 0; r < n; r++ {
		copy(y[r*o:(r+1)*o], b)
	}
	gemm(false, false, n, o, i, 1, x, i, w, o, 1, y, o)
}

// ColSum returns the sums of the columns of a [N, D] matrix, a [D] vector:
// the gradient of a bias broadcast over rows.
func ColSum(a *G.Node) (*G.Node, error) {
	const name = "ColSum"
	return apply(&op{
		name:  name,
		arity: 1,
		typ:   fnType(2, 1),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if len(in[0]) != 2 {
				return nil, shapeErr(name, "want a matrix, got %v", in[0])
			}
			return tensor.Shape{in[0][1]}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			s := in[0].Shape()
			out := newTensor(in[0].Dtype(), s[1])
			if f32 {
				colSum(data[float32](in[0]), data[float32](out), s[0], s[1])
			} else {
				colSum(data[float64](in[0]), data[float64](out), s[0], s[1])
			}
			return out, nil
		},
		gpu: colSumKernel,
	}, a)
}

func colSum[T Float](a, out []T, n, d int) {
	if o, ok := any(out).([]float32); ok && (hasAVX512 && d >= 16 || hasAVX2 && d >= 8) {
		a32, v := any(a).([]float32), d&^15
		add := addToAVX512
		if !hasAVX512 {
			v, add = d&^7, addToAVX2
		}
		for r := 0; r < n; r++ {
			add(&o[0], &a32[r*d], v)
			for j := v; j < d; j++ {
				o[j] += a32[r*d+j]
			}
		}
		return
	}
	for r := 0; r < n; r++ {
		row := a[r*d : (r+1)*d]
		for j, v := range row {
			out[j] += v
		}
	}
}
