package graph

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// ConcatHeads joins, head by head, a [N, heads*da] and b into
// [N, heads*(da+db)]: head h of the result is [a_h ; b_h] for b
// [N, heads*db], or [a_h ; b] for every h when sharedB (b [N, db]; its
// gradient then sums over the heads). It builds MLA's queries and keys from a content part and a
// decoupled RoPE part shared by the heads. O(N heads (da+db)) time.
func ConcatHeads(a, b *G.Node, heads int, sharedB bool) (*G.Node, error) {
	if heads < 1 || a.Shape().Dims() != 2 || b.Shape().Dims() != 2 {
		return nil, fmt.Errorf("concat heads: want two matrices and heads >= 1, got %v, %v, %d", a.Shape(), b.Shape(), heads)
	}
	n, wa, wb := a.Shape()[0], a.Shape()[1], b.Shape()[1]
	if wa%heads != 0 {
		return nil, fmt.Errorf("concat heads: %d columns do not split into %d heads", wa, heads)
	}
	da := wa / heads
	hb, db := heads, wb/heads
	if sharedB {
		hb, db = 1, wb
	}
	if hb*db != wb || b.Shape()[0] != n {
		return nil, fmt.Errorf("concat heads: cannot join %v and %v over %d heads", a.Shape(), b.Shape(), heads)
	}
	return apply(concatHeadsOp(heads, da, hb, db), a, b)
}

func concatHeadsOp(heads, da, hb, db int) *op {
	name := fmt.Sprintf("ConcatHeads(%d,%d,%d,%d)", heads, da, hb, db)
	w := heads * (da + db)
	return &op{
		name:  name,
		arity: 2,
		typ:   fnType(2, 2, 2),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if in[0][1] != heads*da || in[1][1] != hb*db || in[0][0] != in[1][0] {
				return nil, shapeErr(name, "got %v and %v", in[0], in[1])
			}
			return tensor.Shape{in[0][0], w}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			n := in[0].Shape()[0]
			out := newTensor(in[0].Dtype(), n, w)
			if f32 {
				concatHeads(n, heads, da, hb, db, data[float32](in[0]), data[float32](in[1]), data[float32](out))
			} else {
				concatHeads(n, heads, da, hb, db, data[float64](in[0]), data[float64](in[1]), data[float64](out))
			}
			return out, nil
		},
		diffWRT: []bool{true, true},
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			n := in[0].Shape()[0]
			packed, err := apply(splitHeadsOp(n, heads, da, hb, db), grad)
			if err != nil {
				return nil, err
			}
			ga, err := View(packed, 0, n, heads*da)
			if err != nil {
				return nil, err
			}
			gb, err := View(packed, n*heads*da, n, hb*db)
			if err != nil {
				return nil, err
			}
			return G.Nodes{ga, gb}, nil
		},
		gpu: headsKernel("concat_heads_f32", heads, da, hb, db),
	}
}

func concatHeads[T Float](n, heads, da, hb, db int, a, b, out []T) {
	w := heads * (da + db)
	for r := 0; r < n; r++ {
		for h := 0; h < heads; h++ {
			o := out[r*w+h*(da+db):]
			copy(o[:da], a[r*heads*da+h*da:r*heads*da+(h+1)*da])
			bh := h
			if hb == 1 {
				bh = 0
			}
			copy(o[da:da+db], b[r*hb*db+bh*db:r*hb*db+(bh+1)*db])
		}
	}
}

// splitHeadsOp is ConcatHeads's backward: it splits g [N, heads*(da+db)]
// into ga [N, heads*da] and gb [N, hb*db] (summed over heads when hb = 1),
// packed one after the other.
func splitHeadsOp(n, heads, da, hb, db int) *op {
	name := fmt.Sprintf("SplitHeads(%d,%d,%d,%d,%d)", n, heads, da, hb, db)
	size := n*heads*da + n*hb*db
	return &op{
		name:  name,
		arity: 1,
		typ:   fnType(2, 1),
		shape: func(in []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{size}, nil },
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), size)
			if f32 {
				d := data[float32](out)
				splitHeads(n, heads, da, hb, db, data[float32](in[0]), d[:n*heads*da], d[n*heads*da:])
			} else {
				d := data[float64](out)
				splitHeads(n, heads, da, hb, db, data[float64](in[0]), d[:n*heads*da], d[n*heads*da:])
			}
			return out, nil
		},
		gpu: headsKernel("split_heads_f32", heads, da, hb, db),
	}
}

func splitHeads[T Float](n, heads, da, hb, db int, g, ga, gb []T) {
	w := heads * (da + db)
	for r := 0; r < n; r++ {
		for h := 0; h < heads; h++ {
			src := g[r*w+h*(da+db):]
			copy(ga[r*heads*da+h*da:], src[:da])
			bh := h
			if hb == 1 {
				bh = 0
			}
			dst := gb[r*hb*db+bh*db : r*hb*db+(bh+1)*db]
			for c := range dst {
				dst[c] += src[da+c]
			}
		}
	}
}

// Combine returns alpha a + beta b for same-shaped a and b in one pass (no
// scalar-times-tensor copies); its gradients are alpha g and beta g.
func Combine(a, b *G.Node, alpha, beta float64) (*G.Node, error) {
	name := fmt.Sprintf("Combine(%g,%g)", alpha, beta)
	return apply(&op{
		name:  name,
		arity: 2,
		typ:   fnType(2, 2, 2),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if !in[0].Eq(in[1]) {
				return nil, shapeErr(name, "shapes differ: %v and %v", in[0], in[1])
			}
			return in[0].Clone(), nil
		},
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), in[0].Shape()...)
			if f32 {
				axpby(float32(alpha), float32(beta), data[float32](in[0]), data[float32](in[1]), data[float32](out))
			} else {
				axpby(alpha, beta, data[float64](in[0]), data[float64](in[1]), data[float64](out))
			}
			return out, nil
		},
		diffWRT: []bool{true, true},
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			ga, err := Combine(grad, grad, alpha, 0)
			if err != nil {
				return nil, err
			}
			gb, err := Combine(grad, grad, 0, beta)
			if err != nil {
				return nil, err
			}
			return G.Nodes{ga, gb}, nil
		},
		gpu: combineKernel(alpha, beta),
	}, a, b)
}

func axpby[T Float](alpha, beta T, a, b, out []T) {
	for i := range out {
		out[i] = alpha*a[i] + beta*b[i]
	}
}
