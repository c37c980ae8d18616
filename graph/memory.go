package graph

import (
	"fmt"
	"hash/fnv"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// This file holds the ops of segment recurrence (models/memory.go): a
// gradient stop for truncated backpropagation through segments, a row
// gather from several matrices that cuts sequences into segments and puts
// them back together, and Memformer's slot-attention writer.

// StopGradient returns a copy of x through which no gradient flows: the
// forward pass copies x, the backward pass treats the result as a
// constant (Gorgonia: the op's DiffWRT is false). Truncated
// backpropagation through time cuts the memory passed between segments
// with it. O(n) time and memory.
func StopGradient(x *G.Node) (*G.Node, error) {
	name := "StopGradient"
	dims := x.Shape().Dims()
	return apply(&op{
		name:  name,
		arity: 1,
		typ:   fnType(dims, dims),
		shape: func(in []tensor.Shape) (tensor.Shape, error) { return in[0].Clone(), nil },
		do: func(in []G.Value) (G.Value, error) {
			t, ok := in[0].(*tensor.Dense)
			if !ok {
				return nil, fmt.Errorf("%s: want a dense tensor, got %T", name, in[0])
			}
			return t.Clone().(*tensor.Dense), nil
		},
		diffWRT: []bool{false},
	}, x)
}

// RowRef names one row of one of GatherRows' sources.
type RowRef struct{ Src, Row int }

// GatherRows stacks rows taken from the matrices srcs (all [*, C]): row i
// of the result [len(refs), C] is row refs[i].Row of srcs[refs[i].Src]. A
// source row may be taken any number of times (a learned initial memory
// read by every sequence of a batch) or not at all. Its backward
// scatter-adds each output row's gradient into the row it came from.
// O(len(refs) C) time both ways; the output is the only allocation.
func GatherRows(srcs G.Nodes, refs []RowRef) (*G.Node, error) {
	if len(srcs) == 0 || len(refs) == 0 {
		return nil, fmt.Errorf("gather rows: %d sources and %d rows: want at least one of each", len(srcs), len(refs))
	}
	rows := make([]int, len(srcs))
	cols := srcs[0].Shape()[1]
	for i, s := range srcs {
		if s.Shape().Dims() != 2 || s.Shape()[1] != cols {
			return nil, fmt.Errorf("gather rows: source %d has shape %v, want [*,%d]", i, s.Shape(), cols)
		}
		rows[i] = s.Shape()[0]
	}
	h := fnv.New64a()
	for _, r := range refs {
		if r.Src < 0 || r.Src >= len(srcs) || r.Row < 0 || r.Row >= rows[r.Src] {
			return nil, fmt.Errorf("gather rows: row %d of source %d is out of range (sources' rows %v)", r.Row, r.Src, rows)
		}
		fmt.Fprintf(h, "%d:%d,", r.Src, r.Row)
	}
	name := fmt.Sprintf("GatherRows(%v->%d,%x)", rows, len(refs), h.Sum64())
	dims := make([]int, len(srcs)+1)
	for i := range dims {
		dims[i] = 2
	}
	diff := make([]bool, len(srcs))
	for i := range diff {
		diff[i] = true
	}
	refs = append([]RowRef(nil), refs...)
	return apply(&op{
		name:  name,
		arity: len(srcs),
		typ:   fnType(dims...),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			for i, s := range in {
				if len(s) != 2 || s[0] != rows[i] || s[1] != cols {
					return nil, shapeErr(name, "source %d: want [%d,%d], got %v", i, rows[i], cols, s)
				}
			}
			return tensor.Shape{len(refs), cols}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), len(refs), cols)
			if f32 {
				gatherRefs(in, data[float32](out), refs, cols)
			} else {
				gatherRefs(in, data[float64](out), refs, cols)
			}
			return out, nil
		},
		diffWRT: diff,
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			grads := make(G.Nodes, len(in))
			for j := range in {
				var err error
				if grads[j], err = scatterRefs(name, grad, refs, j, rows[j], cols); err != nil {
					return nil, err
				}
			}
			return grads, nil
		},
	}, srcs...)
}

func gatherRefs[T Float](in []G.Value, out []T, refs []RowRef, cols int) {
	for i, r := range refs {
		src := data[T](in[r.Src])
		copy(out[i*cols:(i+1)*cols], src[r.Row*cols:(r.Row+1)*cols])
	}
}

// scatterRefs is the gradient of GatherRows for source src: the rows of
// grad that came from it, added into a [rows, cols] zero matrix.
func scatterRefs(fwd string, grad *G.Node, refs []RowRef, src, rows, cols int) (*G.Node, error) {
	name := fmt.Sprintf("Grad%d%s", src, fwd)
	return apply(&op{
		name:  name,
		arity: 1,
		typ:   fnType(2, 2),
		shape: func(in []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{rows, cols}, nil },
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), rows, cols)
			if f32 {
				scatterRefRows(data[float32](in[0]), data[float32](out), refs, src, cols)
			} else {
				scatterRefRows(data[float64](in[0]), data[float64](out), refs, src, cols)
			}
			return out, nil
		},
	}, grad)
}

func scatterRefRows[T Float](dy, out []T, refs []RowRef, src, cols int) {
	for i, r := range refs {
		if r.Src != src {
			continue
		}
		o, d := out[r.Row*cols:(r.Row+1)*cols], dy[i*cols:(i+1)*cols]
		for c := range o {
			o[c] += d[c]
		}
	}
}

// SlotWrite is Memformer's memory writer (Wu et al. 2020, "Memformer: A
// Memory-Augmented Transformer for Sequence Modeling", section 3.3.2,
// memory slot attention): each of the slots memory slots of a sequence
// attends over itself and the seqLen outputs of the segment just read,
// and only over those:
//
//	s_i0 = q_i . ks_i / sqrt(C)          (the slot's own key)
//	s_ij = q_i . k_j / sqrt(C)           (j = 1..seqLen, the segment's keys)
//	a_i  = softmax(s_i0, s_i1, ..., s_iL)
//	m'_i = a_i0 m_i + sum_j a_ij v_j
//
// with q, ks, m [batch*slots, C] (the slots' queries, own keys and
// contents) and k, v [batch*seqLen, C]. The slot's own value is its
// content unprojected, so a slot that attends only to itself keeps its
// content exactly, and m'_i stays in the convex hull of m_i and the
// segment's values (the paper's biased normalization and forgetting bias,
// which bound it there, are left out). O(batch slots seqLen C) time both
// ways, O(batch slots seqLen) memory for the probabilities.
func SlotWrite(q, ks, m, k, v *G.Node, batch, slots, seqLen int) (*G.Node, error) {
	name := fmt.Sprintf("SlotWrite(B=%d,K=%d,L=%d)", batch, slots, seqLen)
	if batch < 1 || slots < 1 || seqLen < 1 {
		return nil, fmt.Errorf("%s: sizes must be positive", name)
	}
	c := m.Shape()[1]
	want := []int{batch * slots, batch * slots, batch * slots, batch * seqLen, batch * seqLen}
	check := func(in []tensor.Shape) error {
		for i, s := range in[:5] {
			if len(s) != 2 || s[0] != want[i] || s[1] != c {
				return shapeErr(name, "input %d: want [%d,%d], got %v", i, want[i], c, s)
			}
		}
		return nil
	}
	return apply(&op{
		name:  name,
		arity: 5,
		typ:   fnType(2, 2, 2, 2, 2, 2),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if err := check(in); err != nil {
				return nil, err
			}
			return tensor.Shape{batch * slots, c}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), batch*slots, c)
			if f32 {
				slotWrite(vals[float32](in), data[float32](out), nil, batch, slots, seqLen, c)
			} else {
				slotWrite(vals[float64](in), data[float64](out), nil, batch, slots, seqLen, c)
			}
			return out, nil
		},
		diffWRT: []bool{true, true, true, true, true},
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			nk, nl := batch*slots*c, batch*seqLen*c
			gname := "Grad" + name
			packed, err := apply(&op{
				name:  gname,
				arity: 6,
				typ:   fnType(2, 2, 2, 2, 2, 2, 1),
				shape: func(in []tensor.Shape) (tensor.Shape, error) {
					if err := check(in); err != nil {
						return nil, err
					}
					return tensor.Shape{3*nk + 2*nl}, nil
				},
				do: func(in []G.Value) (G.Value, error) {
					f32, err := checkDtype(gname, in...)
					if err != nil {
						return nil, err
					}
					out := newTensor(in[0].Dtype(), 3*nk+2*nl)
					if f32 {
						slotWrite(vals[float32](in[:5]), nil, &slotGrad[float32]{dy: data[float32](in[5]), out: data[float32](out)}, batch, slots, seqLen, c)
					} else {
						slotWrite(vals[float64](in[:5]), nil, &slotGrad[float64]{dy: data[float64](in[5]), out: data[float64](out)}, batch, slots, seqLen, c)
					}
					return out, nil
				},
			}, in[0], in[1], in[2], in[3], in[4], grad)
			if err != nil {
				return nil, err
			}
			bk, bl := [2]int{batch * slots, c}, [2]int{batch * seqLen, c}
			return Views(packed, bk, bk, bk, bl, bl)
		},
	}, q, ks, m, k, v)
}

func vals[T Float](in []G.Value) [][]T {
	out := make([][]T, len(in))
	for i, v := range in {
		out[i] = data[T](v)
	}
	return out
}

// slotGrad asks slotWrite for the backward pass: dy is the output's
// gradient, out receives dq|dks|dm|dk|dv.
type slotGrad[T Float] struct{ dy, out []T }

// slotWrite computes SlotWrite's output into y, or, with g set, its
// gradients into g.out.
func slotWrite[T Float](in [][]T, y []T, g *slotGrad[T], batch, slots, seqLen, c int) {
	q, ks, m, k, v := in[0], in[1], in[2], in[3], in[4]
	scale := 1 / math.Sqrt(float64(c))
	a := make([]float64, seqLen+1)
	da := make([]float64, seqLen+1)
	var dq, dks, dm, dk, dv []T
	if g != nil {
		nk, nl := batch*slots*c, batch*seqLen*c
		dq, dks, dm, dk, dv = g.out[:nk], g.out[nk:2*nk], g.out[2*nk:3*nk], g.out[3*nk:3*nk+nl], g.out[3*nk+nl:]
	}
	row := func(x []T, r int) []T { return x[r*c : (r+1)*c] }
	for b := 0; b < batch; b++ {
		for i := 0; i < slots; i++ {
			si := b*slots + i
			qi := row(q, si)
			a[0] = float64(dot(qi, row(ks, si))) * scale
			mx := a[0]
			for j := 0; j < seqLen; j++ {
				a[j+1] = float64(dot(qi, row(k, b*seqLen+j))) * scale
				mx = math.Max(mx, a[j+1])
			}
			var sum float64
			for j := range a {
				a[j] = math.Exp(a[j] - mx)
				sum += a[j]
			}
			for j := range a {
				a[j] /= sum
			}
			if g == nil {
				yi := row(y, si)
				for x, mv := range row(m, si) {
					yi[x] = T(a[0]) * mv
				}
				for j := 0; j < seqLen; j++ {
					aj := T(a[j+1])
					for x, vv := range row(v, b*seqLen+j) {
						yi[x] += aj * vv
					}
				}
				continue
			}
			dyi := row(g.dy, si)
			da[0] = float64(dot(dyi, row(m, si)))
			dot0 := a[0] * da[0]
			for j := 0; j < seqLen; j++ {
				da[j+1] = float64(dot(dyi, row(v, b*seqLen+j)))
				dot0 += a[j+1] * da[j+1]
			}
			// ds = a (da - sum a da); the scores' gradient, scaled.
			for j := range da {
				da[j] = a[j] * (da[j] - dot0) * scale
			}
			dqi, dksi, dmi := row(dq, si), row(dks, si), row(dm, si)
			ksi := row(ks, si)
			for x := range dqi {
				dqi[x] += T(da[0]) * ksi[x]
				dksi[x] += T(da[0]) * qi[x]
				dmi[x] += T(a[0]) * dyi[x]
			}
			for j := 0; j < seqLen; j++ {
				r := b*seqLen + j
				kj, dkj, dvj := row(k, r), row(dk, r), row(dv, r)
				dj, aj := T(da[j+1]), T(a[j+1])
				for x := range dqi {
					dqi[x] += dj * kj[x]
					dkj[x] += dj * qi[x]
					dvj[x] += aj * dyi[x]
				}
			}
		}
	}
}
