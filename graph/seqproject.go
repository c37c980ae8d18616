package graph

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// SeqProject projects each sequence of x [Batch*SeqLen, D] along its
// positions with e [K, SeqLen]: y_b = e (m_b * x_b), [Batch*K, D], with m
// the key mask [Batch*SeqLen] (nil: none) zeroing padded rows first.
// Linformer's projection of keys and values (Wang et al. 2020). The
// gradients are dx_b = m_b * (e^T dy_b) and de = sum_b dy_b (m_b * x_b)^T.
// O(Batch K SeqLen D) time.
func SeqProject(e, x, mask *G.Node, batch, seqLen int) (*G.Node, error) {
	masked := mask != nil
	name := fmt.Sprintf("SeqProject(%d,%d,masked=%t)", batch, seqLen, masked)
	children := G.Nodes{e, x}
	typ := fnType(2, 2, 2)
	diff := []bool{true, true}
	if masked {
		children = append(children, mask)
		typ = fnType(2, 2, 1, 2)
		diff = append(diff, false)
	}
	shape := func(in []tensor.Shape) (tensor.Shape, error) {
		if len(in[0]) != 2 || len(in[1]) != 2 || in[0][1] != seqLen || in[1][0] != batch*seqLen {
			return nil, shapeErr(name, "want e [K %d] and x [%d D], got %v and %v", seqLen, batch*seqLen, in[0], in[1])
		}
		if masked && !in[2].Eq(tensor.Shape{batch * seqLen}) {
			return nil, shapeErr(name, "want mask [%d], got %v", batch*seqLen, in[2])
		}
		return tensor.Shape{batch * in[0][0], in[1][1]}, nil
	}
	return apply(&op{
		name:  name,
		arity: len(children),
		typ:   typ,
		shape: shape,
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			k, d := in[0].Shape()[0], in[1].Shape()[1]
			out := newTensor(in[0].Dtype(), batch*k, d)
			if f32 {
				seqProject(data[float32](in[0]), data[float32](in[1]), maskData[float32](in, 2), data[float32](out), batch, seqLen, k, d)
			} else {
				seqProject(data[float64](in[0]), data[float64](in[1]), maskData[float64](in, 2), data[float64](out), batch, seqLen, k, d)
			}
			return out, nil
		},
		diffWRT: diff,
		symDiff: func(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
			args := append(append(G.Nodes{}, in...), grad)
			k, d := in[0].Shape()[0], in[1].Shape()[1]
			gtyp := fnType(2, 2, 2, 1)
			if masked {
				gtyp = fnType(2, 2, 1, 2, 1)
			}
			packed, err := apply(&op{
				name:  "Grad" + name,
				arity: len(args),
				typ:   gtyp,
				shape: func([]tensor.Shape) (tensor.Shape, error) { return tensor.Shape{k*seqLen + batch*seqLen*d}, nil },
				do: func(vals []G.Value) (G.Value, error) {
					f32, err := checkDtype(name, vals...)
					if err != nil {
						return nil, err
					}
					g := newTensor(vals[0].Dtype(), k*seqLen+batch*seqLen*d)
					dy := vals[len(vals)-1]
					if f32 {
						o := data[float32](g)
						seqProjectGrad(data[float32](vals[0]), data[float32](vals[1]), maskData[float32](vals[:len(vals)-1], 2), data[float32](dy), o[:k*seqLen], o[k*seqLen:], batch, seqLen, k, d)
					} else {
						o := data[float64](g)
						seqProjectGrad(data[float64](vals[0]), data[float64](vals[1]), maskData[float64](vals[:len(vals)-1], 2), data[float64](dy), o[:k*seqLen], o[k*seqLen:], batch, seqLen, k, d)
					}
					return g, nil
				},
			}, args...)
			if err != nil {
				return nil, err
			}
			grads, err := Views(packed, [2]int{k, seqLen}, [2]int{batch * seqLen, d})
			if err != nil {
				return nil, err
			}
			if masked {
				grads = append(grads, nil)
			}
			return grads, nil
		},
	}, children...)
}

// maskedRows is x_b with its padded rows zeroed (x_b itself without a mask).
func maskedRows[T Float](x, mask []T, b, seqLen, d int) []T {
	xb := x[b*seqLen*d : (b+1)*seqLen*d]
	if mask == nil {
		return xb
	}
	out := make([]T, len(xb))
	for t := 0; t < seqLen; t++ {
		if mask[b*seqLen+t] != 0 {
			copy(out[t*d:(t+1)*d], xb[t*d:(t+1)*d])
		}
	}
	return out
}

func seqProject[T Float](e, x, mask, y []T, batch, seqLen, k, d int) {
	for b := 0; b < batch; b++ {
		gemm(false, false, k, d, seqLen, 1, e, seqLen, maskedRows(x, mask, b, seqLen, d), d, 0, y[b*k*d:], d)
	}
}

func seqProjectGrad[T Float](e, x, mask, dy, de, dx []T, batch, seqLen, k, d int) {
	clear(de)
	for b := 0; b < batch; b++ {
		dyb := dy[b*k*d:]
		gemm(false, true, k, seqLen, d, 1, dyb, d, maskedRows(x, mask, b, seqLen, d), d, 1, de, seqLen)
		dxb := dx[b*seqLen*d : (b+1)*seqLen*d]
		gemm(true, false, seqLen, d, k, 1, e, seqLen, dyb, d, 0, dxb, d)
		if mask != nil {
			for t := 0; t < seqLen; t++ {
				if mask[b*seqLen+t] == 0 {
					clear(dxb[t*d : (t+1)*d])
				}
			}
		}
	}
}
