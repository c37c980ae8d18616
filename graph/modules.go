package graph

// Ops for the block add-on modules (layers/modules.go: se, cbam,
// range_conv): statistics over the positions of each sequence (a running,
// causal form and a whole-sequence form) under a key-padding mask, a
// depthwise convolution over positions at arbitrary offsets, the maximum
// over channels, and gating of rows by a per-row scalar. Gorgonia has none
// of them with a masked or causal form, so each has a hand-written backward
// (checked by finite differences and against slow references in
// modules_test.go).
//
// Layout: x is [batch*seqLen, C], sequence b's position t in row
// b*seqLen + t; mask, when not nil, is [batch*seqLen] with 1 for real
// positions and 0 for padding.

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// kernelOp builds an op whose output has shape outShape(input shapes),
// computed by k32 or k64 (by dtype) from the inputs' data into the zeroed
// output. diff and symDiff are as for op; nil for the ops of backward graphs.
func kernelOp(name string, typ []int, outShape func(in []tensor.Shape) (tensor.Shape, error),
	k32 func(in [][]float32, out []float32), k64 func(in [][]float64, out []float64),
	diff []bool, symDiff func(in G.Nodes, out, grad *G.Node) (G.Nodes, error)) *op {
	return &op{
		name:  name,
		arity: len(typ) - 1,
		typ:   fnType(typ...),
		shape: outShape,
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			shapes := make([]tensor.Shape, len(in))
			for i, v := range in {
				shapes[i] = v.Shape()
			}
			s, err := outShape(shapes)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), s...)
			if f32 {
				k32(valuesOf[float32](in), data[float32](out))
			} else {
				k64(valuesOf[float64](in), data[float64](out))
			}
			return out, nil
		},
		diffWRT: diff,
		symDiff: symDiff,
	}
}

func valuesOf[T Float](in []G.Value) [][]T {
	out := make([][]T, len(in))
	for i, v := range in {
		out[i] = data[T](v)
	}
	return out
}

// modWithMask appends mask to children (and a 1-D input to the type) when it
// is not nil.
func modWithMask(children G.Nodes, typ []int, mask *G.Node) (G.Nodes, []int) {
	if mask == nil {
		return children, typ
	}
	out := typ[len(typ)-1]
	return append(children, mask), append(append(typ[:len(typ)-1:len(typ)-1], 1), out)
}

// maskAt returns the mask slice of the kernel inputs (nil if absent).
func maskAt[T Float](in [][]T, i int) []T {
	if len(in) <= i {
		return nil
	}
	return in[i]
}

func isReal[T Float](mask []T, i int) bool { return mask == nil || mask[i] != 0 }

func checkRows(name string, s tensor.Shape, rows int) error {
	if len(s) != 2 || s[0] != rows {
		return shapeErr(name, "want x [%d,C], got %v", rows, s)
	}
	return nil
}

func checkMaskShape(name string, in []tensor.Shape, i, rows int) error {
	if len(in) > i && (len(in[i]) != 1 || in[i][0] != rows) {
		return shapeErr(name, "want mask [%d], got %v", rows, in[i])
	}
	return nil
}

// PrefixMean is the mean over positions of each sequence of x
// [batch*seqLen, C], as a [batch*seqLen, C] tensor:
//
//	causal:         y[b,t] = (1 / n_bt) sum_{s <= t, m[b,s] = 1} x[b,s],  n_bt = #{s <= t real}
//	bidirectional:  y[b,t] = (1 / n_b)  sum_{s real} x[b,s]              (the same row for every t)
//
// A row with no real position to average (n = 0) is 0. Backward:
// dx[b,s] = [s real] sum_{t >= s} dy[b,t] / n_bt (causal), or
// [s real] sum_t dy[b,t] / n_b. The mask gets no gradient. O(batch seqLen C)
// both ways.
func PrefixMean(x, mask *G.Node, batch, seqLen int, causal bool) (*G.Node, error) {
	return prefixStat(x, mask, batch, seqLen, causal, false)
}

// PrefixMax is PrefixMean with the maximum for the mean: the running
// maximum over the real positions s <= t (causal) or the maximum over the
// sequence's real positions (bidirectional), 0 where there is none. Its
// gradient goes to the position of the maximum, the earliest one on ties:
// dx[b,s,c] = sum of dy[b,t,c] over the rows t whose maximum in channel c
// is at s.
func PrefixMax(x, mask *G.Node, batch, seqLen int, causal bool) (*G.Node, error) {
	return prefixStat(x, mask, batch, seqLen, causal, true)
}

func prefixStat(x, mask *G.Node, batch, seqLen int, causal, isMax bool) (*G.Node, error) {
	if batch < 1 || seqLen < 1 {
		return nil, fmt.Errorf("prefix statistic: sizes must be positive: batch %d, seqLen %d", batch, seqLen)
	}
	stat := "Mean"
	if isMax {
		stat = "Max"
	}
	rows := batch * seqLen
	name := fmt.Sprintf("Prefix%s(B=%d,T=%d,causal=%t,masked=%t)", stat, batch, seqLen, causal, mask != nil)
	children, typ := modWithMask(G.Nodes{x}, []int{2, 2}, mask)
	shape := func(in []tensor.Shape) (tensor.Shape, error) {
		if err := checkRows(name, in[0], rows); err != nil {
			return nil, err
		}
		if err := checkMaskShape(name, in, 1, rows); err != nil {
			return nil, err
		}
		return in[0].Clone(), nil
	}
	fwd := func(kernel32 func(x, m, y []float32, c int), kernel64 func(x, m, y []float64, c int)) (func([][]float32, []float32), func([][]float64, []float64)) {
		return func(in [][]float32, out []float32) { kernel32(in[0], maskAt(in, 1), out, len(in[0])/rows) },
			func(in [][]float64, out []float64) { kernel64(in[0], maskAt(in, 1), out, len(in[0])/rows) }
	}
	var k32 func([][]float32, []float32)
	var k64 func([][]float64, []float64)
	if isMax {
		k32, k64 = fwd(func(x, m, y []float32, c int) { prefixMax(x, m, y, gradPair[float32]{}, batch, seqLen, c, causal) },
			func(x, m, y []float64, c int) { prefixMax(x, m, y, gradPair[float64]{}, batch, seqLen, c, causal) })
	} else {
		k32, k64 = fwd(func(x, m, y []float32, c int) { prefixMean(x, m, y, batch, seqLen, c, causal, false) },
			func(x, m, y []float64, c int) { prefixMean(x, m, y, batch, seqLen, c, causal, false) })
	}
	diff := []bool{true, false}[:len(children)]
	return apply(kernelOp(name, typ, shape, k32, k64, diff, func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
		gname := "Grad" + name
		var dx *G.Node
		var err error
		if isMax {
			// inputs x, dy[, mask]: the argmax is recomputed from x
			args, gtyp := modWithMask(G.Nodes{in[0], grad}, []int{2, 2, 2}, maskOf(in, 1))
			dx, err = apply(kernelOp(gname, gtyp, func(s []tensor.Shape) (tensor.Shape, error) { return s[0].Clone(), nil },
				func(in [][]float32, out []float32) {
					prefixMax(in[0], maskAt(in, 2), nil, gradPair[float32]{in[1], out}, batch, seqLen, len(in[0])/rows, causal)
				},
				func(in [][]float64, out []float64) {
					prefixMax(in[0], maskAt(in, 2), nil, gradPair[float64]{in[1], out}, batch, seqLen, len(in[0])/rows, causal)
				}, nil, nil), args...)
		} else {
			args, gtyp := modWithMask(G.Nodes{grad}, []int{2, 2}, maskOf(in, 1))
			dx, err = apply(kernelOp(gname, gtyp, func(s []tensor.Shape) (tensor.Shape, error) { return s[0].Clone(), nil },
				func(in [][]float32, out []float32) {
					prefixMean(out, maskAt(in, 1), in[0], batch, seqLen, len(in[0])/rows, causal, true)
				},
				func(in [][]float64, out []float64) {
					prefixMean(out, maskAt(in, 1), in[0], batch, seqLen, len(in[0])/rows, causal, true)
				}, nil, nil), args...)
		}
		if err != nil {
			return nil, err
		}
		return append(G.Nodes{dx}, make(G.Nodes, len(in)-1)...), nil
	}), children...)
}

func maskOf(in G.Nodes, i int) *G.Node {
	if len(in) > i {
		return in[i]
	}
	return nil
}

type gradPair[T Float] struct{ dy, dx []T }

// prefixMean computes y = PrefixMean(x) or, with backward, writes into x the
// gradient with respect to x given dy in y.
func prefixMean[T Float](x, mask, y []T, batch, seqLen, c int, causal, backward bool) {
	parallelFor(batch, seqLen*c, func(lo, hi int) {
		acc := make([]T, c)
		for b := lo; b < hi; b++ {
			clear(acc)
			base := b * seqLen
			row := func(buf []T, t int) []T { return buf[(base+t)*c : (base+t+1)*c] }
			if !causal {
				n := 0
				for t := 0; t < seqLen; t++ {
					if isReal(mask, base+t) {
						n++
					}
				}
				if n == 0 {
					continue
				}
				inv := 1 / T(n)
				src, dst := x, y
				if backward {
					src, dst = y, x
				}
				for t := 0; t < seqLen; t++ {
					if backward || isReal(mask, base+t) {
						for j, v := range row(src, t) {
							acc[j] += v
						}
					}
				}
				for t := 0; t < seqLen; t++ {
					if !backward || isReal(mask, base+t) {
						out := row(dst, t)
						for j := range out {
							out[j] = acc[j] * inv
						}
					}
				}
				continue
			}
			if !backward {
				n := 0
				for t := 0; t < seqLen; t++ {
					if isReal(mask, base+t) {
						n++
						for j, v := range row(x, t) {
							acc[j] += v
						}
					}
					if n == 0 {
						continue
					}
					inv := 1 / T(n)
					dst := row(y, t)
					for j := range dst {
						dst[j] = acc[j] * inv
					}
				}
				continue
			}
			// backward: n_t forward, then suffix sums of dy_t / n_t
			counts := make([]int, seqLen)
			n := 0
			for t := 0; t < seqLen; t++ {
				if isReal(mask, base+t) {
					n++
				}
				counts[t] = n
			}
			for t := seqLen - 1; t >= 0; t-- {
				if counts[t] > 0 {
					inv := 1 / T(counts[t])
					for j, v := range row(y, t) {
						acc[j] += v * inv
					}
				}
				if isReal(mask, base+t) {
					copy(row(x, t), acc)
				}
			}
		}
	})
}

// prefixMax computes y = PrefixMax(x) when g.dx is nil, or else adds into
// g.dx the gradient given g.dy. The maximum is over the real positions
// s <= t (causal) or all real positions; the first of equal maxima wins.
func prefixMax[T Float](x, mask, y []T, g gradPair[T], batch, seqLen, c int, causal bool) {
	parallelFor(batch, seqLen*c, func(lo, hi int) {
		for b := lo; b < hi; b++ {
			base := b * seqLen
			for j := 0; j < c; j++ {
				arg := -1 // row of the running maximum
				if !causal {
					for t := 0; t < seqLen; t++ {
						if isReal(mask, base+t) && (arg < 0 || x[(base+t)*c+j] > x[arg*c+j]) {
							arg = base + t
						}
					}
				}
				for t := 0; t < seqLen; t++ {
					r := base + t
					if causal && isReal(mask, r) && (arg < 0 || x[r*c+j] > x[arg*c+j]) {
						arg = r
					}
					if arg < 0 {
						continue
					}
					if g.dx == nil {
						y[r*c+j] = x[arg*c+j]
					} else {
						g.dx[arg*c+j] += g.dy[r*c+j]
					}
				}
			}
		}
	})
}

// SeqConv is a depthwise convolution over the positions of each sequence of
// x [batch*seqLen, C] with taps at the given position offsets and weights
// w [len(offsets), C]:
//
//	y[b,t,c] = sum_j w[j,c] x[b, t + offsets[j], c]
//
// where a position outside [0, seqLen) or padded (mask 0) contributes 0.
// Negative offsets only make it causal. Backward:
// dx[b,s,c] = [s real] sum_j w[j,c] dy[b, s - offsets[j], c] and
// dw[j,c] = sum_{b,t} dy[b,t,c] x[b, t + offsets[j], c] over in-range real
// sources. O(batch seqLen C len(offsets)) both ways.
func SeqConv(x, w, mask *G.Node, batch, seqLen int, offsets []int) (*G.Node, error) {
	if batch < 1 || seqLen < 1 || len(offsets) == 0 {
		return nil, fmt.Errorf("sequence convolution: sizes must be positive: batch %d, seqLen %d, %d taps", batch, seqLen, len(offsets))
	}
	rows := batch * seqLen
	name := fmt.Sprintf("SeqConv(B=%d,T=%d,offsets=%v,masked=%t)", batch, seqLen, offsets, mask != nil)
	children, typ := modWithMask(G.Nodes{x, w}, []int{2, 2, 2}, mask)
	shape := func(in []tensor.Shape) (tensor.Shape, error) {
		if err := checkRows(name, in[0], rows); err != nil {
			return nil, err
		}
		if len(in[1]) != 2 || in[1][0] != len(offsets) || in[1][1] != in[0][1] {
			return nil, shapeErr(name, "want w [%d,%d], got %v", len(offsets), in[0][1], in[1])
		}
		if err := checkMaskShape(name, in, 2, rows); err != nil {
			return nil, err
		}
		return in[0].Clone(), nil
	}
	conv := kernelOp(name, typ, shape,
		func(in [][]float32, out []float32) {
			seqConv(in[0], in[1], maskAt(in, 2), out, nil, nil, batch, seqLen, offsets)
		},
		func(in [][]float64, out []float64) {
			seqConv(in[0], in[1], maskAt(in, 2), out, nil, nil, batch, seqLen, offsets)
		},
		[]bool{true, true, false}[:len(children)],
		func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			args, gtyp := modWithMask(G.Nodes{in[0], in[1], grad}, []int{2, 2, 2, 2}, maskOf(in, 2))
			dx, err := apply(kernelOp("GradX"+name, gtyp, func(s []tensor.Shape) (tensor.Shape, error) { return s[0].Clone(), nil },
				func(in [][]float32, out []float32) {
					seqConv(nil, in[1], maskAt(in, 3), in[2], out, nil, batch, seqLen, offsets)
				},
				func(in [][]float64, out []float64) {
					seqConv(nil, in[1], maskAt(in, 3), in[2], out, nil, batch, seqLen, offsets)
				}, nil, nil), args...)
			if err != nil {
				return nil, err
			}
			dw, err := apply(kernelOp("GradW"+name, gtyp, func(s []tensor.Shape) (tensor.Shape, error) { return s[1].Clone(), nil },
				func(in [][]float32, out []float32) {
					seqConv(in[0], nil, maskAt(in, 3), in[2], nil, out, batch, seqLen, offsets)
				},
				func(in [][]float64, out []float64) {
					seqConv(in[0], nil, maskAt(in, 3), in[2], nil, out, batch, seqLen, offsets)
				}, nil, nil), args...)
			if err != nil {
				return nil, err
			}
			return append(G.Nodes{dx, dw}, make(G.Nodes, len(in)-2)...), nil
		})
	return apply(conv, children...)
}

// seqConv computes, with dx and dw nil, y = SeqConv(x, w); with dx not nil
// it adds into dx the input gradient given dy in y, with dw not nil the
// weight gradient.
func seqConv[T Float](x, w, mask, y, dx, dw []T, batch, seqLen int, offsets []int) {
	c := len(y) / (batch * seqLen)
	each := func(b int, dw []T) {
		for t := 0; t < seqLen; t++ {
			out := y[(b*seqLen+t)*c : (b*seqLen+t+1)*c]
			for j, off := range offsets {
				s := t + off
				if s < 0 || s >= seqLen || !isReal(mask, b*seqLen+s) {
					continue
				}
				src := (b*seqLen + s) * c
				switch {
				case dw != nil:
					wj, xs := dw[j*c:(j+1)*c], x[src:src+c]
					for k, v := range out {
						wj[k] += v * xs[k]
					}
				case dx != nil:
					wj, ds := w[j*c:(j+1)*c], dx[src:src+c]
					for k, v := range out {
						ds[k] += wj[k] * v
					}
				default:
					wj, xs := w[j*c:(j+1)*c], x[src:src+c]
					for k := range out {
						out[k] += wj[k] * xs[k]
					}
				}
			}
		}
	}
	if dw != nil { // every sequence adds into the same weights: one pass
		for b := 0; b < batch; b++ {
			each(b, dw)
		}
		return
	}
	parallelFor(batch, seqLen*c*len(offsets), func(lo, hi int) {
		for b := lo; b < hi; b++ {
			each(b, nil)
		}
	})
}

// RowMax is the maximum over the columns of each row of x [N, C], as [N].
// Its gradient goes to the first column holding the maximum.
func RowMax(x *G.Node) (*G.Node, error) {
	name := "RowMax"
	shape := func(in []tensor.Shape) (tensor.Shape, error) {
		if len(in[0]) != 2 {
			return nil, shapeErr(name, "want x [N,C], got %v", in[0])
		}
		return tensor.Shape{in[0][0]}, nil
	}
	return apply(kernelOp(name, []int{2, 1}, shape,
		func(in [][]float32, out []float32) { rowMaxArg(in[0], out, nil, nil) },
		func(in [][]float64, out []float64) { rowMaxArg(in[0], out, nil, nil) },
		[]bool{true},
		func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			dx, err := apply(kernelOp("RowMaxGrad", []int{2, 1, 2}, func(s []tensor.Shape) (tensor.Shape, error) { return s[0].Clone(), nil },
				func(in [][]float32, out []float32) { rowMaxArg(in[0], nil, in[1], out) },
				func(in [][]float64, out []float64) { rowMaxArg(in[0], nil, in[1], out) }, nil, nil), in[0], grad)
			return G.Nodes{dx}, err
		}), x)
}

func rowMaxArg[T Float](x, y, dy, dx []T) {
	n := len(y)
	if dx != nil {
		n = len(dy)
	}
	c := len(x) / n
	for i := 0; i < n; i++ {
		row := x[i*c : (i+1)*c]
		arg := 0
		for j, v := range row {
			if v > row[arg] {
				arg = j
			}
		}
		if dx != nil {
			dx[i*c+arg] = dy[i]
		} else {
			y[i] = row[arg]
		}
	}
}

// RowScale gates the rows of y [N, C] by g [N]: out[n,c] = y[n,c] g[n]
// (a broadcast product that materialises nothing). Backward:
// dy = RowScale(dout, g), dg[n] = sum_c dout[n,c] y[n,c].
func RowScale(y, g *G.Node) (*G.Node, error) {
	name := "RowScale"
	shape := func(in []tensor.Shape) (tensor.Shape, error) {
		if len(in[0]) != 2 || len(in[1]) != 1 || in[1][0] != in[0][0] {
			return nil, shapeErr(name, "want y [N,C] and g [N], got %v and %v", in[0], in[1])
		}
		return in[0].Clone(), nil
	}
	return apply(kernelOp(name, []int{2, 1, 2}, shape,
		func(in [][]float32, out []float32) { rowScale(in[0], in[1], out) },
		func(in [][]float64, out []float64) { rowScale(in[0], in[1], out) },
		[]bool{true, true},
		func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			dy, err := RowScale(grad, in[1])
			if err != nil {
				return nil, err
			}
			dg, err := apply(kernelOp("RowDot", []int{2, 2, 1}, func(s []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{s[0][0]}, nil },
				func(in [][]float32, out []float32) { rowDot(in[0], in[1], out) },
				func(in [][]float64, out []float64) { rowDot(in[0], in[1], out) }, nil, nil), grad, in[0])
			if err != nil {
				return nil, err
			}
			return G.Nodes{dy, dg}, nil
		}), y, g)
}

func rowScale[T Float](y, g, out []T) {
	c := len(y) / len(g)
	for i, s := range g {
		for j := i * c; j < (i+1)*c; j++ {
			out[j] = y[j] * s
		}
	}
}

func rowDot[T Float](a, b, out []T) {
	c := len(a) / len(out)
	for i := range out {
		var s T
		for j := i * c; j < (i+1)*c; j++ {
			s += a[j] * b[j]
		}
		out[i] = s
	}
}
