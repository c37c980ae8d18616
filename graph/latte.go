package graph

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// LatteShape describes Latte's inputs: Batch sequences of SeqLen positions,
// Heads heads of Latents latent states and ValueDim value dimensions each,
// causal or not, the causal scan in chunks of Chunk positions.
type LatteShape struct {
	Batch, SeqLen, Heads, Latents, ValueDim int
	Causal                                  bool
	Chunk                                   int
}

func (s LatteShape) validate() error {
	if s.Batch < 1 || s.SeqLen < 1 || s.Heads < 1 || s.Latents < 1 || s.ValueDim < 1 || s.Chunk < 1 {
		return fmt.Errorf("latte: sizes must be positive: %+v", s)
	}
	return nil
}

// Linear is the linear attention Latte reduces to: the query features
// alpha / D and the key features E are the latent weights themselves
// (FeatureIdentity), and carry their own normalization (NormNone).
func (s LatteShape) Linear() LinearShape {
	return LinearShape{Batch: s.Batch, SeqLen: s.SeqLen, Heads: s.Heads, HeadDim: s.Latents, ValueDim: s.ValueDim,
		Causal: s.Causal, Feature: FeatureIdentity, Chunk: s.Chunk, Norm: NormNone}
}

// Latte is latent attention (Dolga et al. 2024, "Latte: Latent Attention
// for Linear Time Transformers") over q, k [Batch*SeqLen, Heads*Latents]
// and v [Batch*SeqLen, Heads*ValueDim], with key mask keyMask
// [Batch*SeqLen] (nil: none). Per sequence and head, with L latent states,
//
//	y_t = sum_l p(l | x_t) sum_{s in V(t)} p(s | l, t) v_s,
//	p(l | x_t) = alpha_tl = softmax_l(q_tl),
//	p(s | l, t) = exp(k_sl) / sum_{s' in V(t)} exp(k_s'l),
//
// V(t) the unpadded positions s <= t (causal) or all unpadded positions
// (bidirectional); a row t whose V(t) is empty outputs 0. The weights w_ts =
// sum_l alpha_tl p(s | l, t) of each row sum to 1: a mixture of L softmaxes
// over time, never formed. With E_sl = exp(k_sl - c_l) on the unpadded s
// and D_tl = sum_{s in V(t)} E_sl (a prefix sum over time when causal, a
// total when not),
//
//	y_t = sum_s (sum_l (alpha_tl / D_tl) E_sl) v_s,
//
// unnormalized linear attention with query features alpha / D and key
// features E (LatteFeatures, then LinearAttention: a chunked scan when
// causal, two global sums when not). Time O(T L (Chunk + dv)) and memory
// O(T L + T dv) per head, plus the scan's chunk scratch; no T x T.
//
// The stabilizer c_l is the largest k_sl over the sequence's unpadded
// positions, per sequence, head and latent (SeqMax), and is held constant:
// it multiplies E_sl and D_tl by the same exp(-c_l) for every t, so y does
// not depend on it and the gradient that treats it as a constant is the
// exact gradient of y. Its limit: c_l is the maximum over the whole
// sequence, not the running maximum over s <= t that the paper's causal
// scan keeps, so in float32 a causal row whose visible keys all lie about
// 88 or more below a later key's maximum underflows D_tl to 0 (or to a
// subnormal), and its output becomes Inf or NaN: nothing clamps it.
// float64 has room to about 708.
func Latte(q, k, v, keyMask *G.Node, s LatteShape) (*G.Node, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	if want := (tensor.Shape{s.Batch * s.SeqLen, s.Heads * s.ValueDim}); !v.Shape().Eq(want) {
		return nil, fmt.Errorf("latte: want v %v, got %v", want, v.Shape())
	}
	qt, e, err := LatteFeatures(q, k, keyMask, s)
	if err != nil {
		return nil, err
	}
	return LinearAttention(qt, e, v, keyMask, s.Linear())
}

// LatteFeatures returns Latte's query and key features for LinearAttention
// with s.Linear() (see Latte): qt = alpha / D, 0 on rows that see no
// unpadded key, and e = E, 0 on padded positions, both [Batch*SeqLen,
// Heads*Latents]. Their linear-attention weights
// (LinearAttentionWeights(qt, e, keyMask, s.Linear())) are Latte's w_ts.
func LatteFeatures(q, k, keyMask *G.Node, s LatteShape) (qt, e *G.Node, err error) {
	if err := s.validate(); err != nil {
		return nil, nil, err
	}
	want := tensor.Shape{s.Batch * s.SeqLen, s.Heads * s.Latents}
	if !q.Shape().Eq(want) || !k.Shape().Eq(want) {
		return nil, nil, fmt.Errorf("latte: want q and k %v, got %v and %v", want, q.Shape(), k.Shape())
	}
	alpha, err := GroupSoftmax(q, s.Latents)
	if err != nil {
		return nil, nil, err
	}
	c, err := SeqMax(k, keyMask, s.Batch, s.SeqLen)
	if err != nil {
		return nil, nil, err
	}
	if e, err = ShiftedExp(k, c, keyMask, s.Batch, s.SeqLen); err != nil {
		return nil, nil, err
	}
	d, err := PrefixSum(e, s.Batch, s.SeqLen, s.Causal)
	if err != nil {
		return nil, nil, err
	}
	if qt, err = SeenDiv(alpha, d, keyMask, s.Batch, s.SeqLen, s.Causal); err != nil {
		return nil, nil, err
	}
	return qt, e, nil
}

// keepRow reports whether row r is a real token under mask (nil: every row).
func keepRow[E Float](mask []E, r int) bool { return mask == nil || mask[r] != 0 }

// GroupSoftmax is a softmax over each group of group consecutive columns of
// x [N, C] (C a multiple of group): per head, a softmax over its latents
// when the heads are packed in columns. Backward: dx = y * (g - sum_group(y
// g)) within each group.
func GroupSoftmax(x *G.Node, group int) (*G.Node, error) {
	name := fmt.Sprintf("GroupSoftmax(group=%d)", group)
	if group < 1 {
		return nil, fmt.Errorf("%s: the group must be positive", name)
	}
	return apply(&op{
		name:  name,
		arity: 1,
		typ:   fnType(2, 2),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if len(in[0]) != 2 || in[0][1]%group != 0 {
				return nil, shapeErr(name, "want a matrix whose columns are a multiple of %d, got %v", group, in[0])
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
				groupSoftmax(data[float32](in[0]), data[float32](out), group)
			} else {
				groupSoftmax(data[float64](in[0]), data[float64](out), group)
			}
			return out, nil
		},
		diffWRT: []bool{true},
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			gname := "Grad" + name
			dx, err := apply(&op{
				name:  gname,
				arity: 2,
				typ:   fnType(2, 2, 2),
				shape: func(in []tensor.Shape) (tensor.Shape, error) { return in[0].Clone(), nil },
				do: func(in []G.Value) (G.Value, error) {
					f32, err := checkDtype(gname, in...)
					if err != nil {
						return nil, err
					}
					dx := newTensor(in[0].Dtype(), in[0].Shape()...)
					if f32 {
						groupSoftmaxGrad(data[float32](in[0]), data[float32](in[1]), data[float32](dx), group)
					} else {
						groupSoftmaxGrad(data[float64](in[0]), data[float64](in[1]), data[float64](dx), group)
					}
					return dx, nil
				},
			}, out, grad)
			return G.Nodes{dx}, err
		},
	}, x)
}

func groupSoftmax[E Float](x, y []E, group int) {
	copy(y, x)
	parallelFor(len(y)/group, 20*group, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			row := y[i*group : (i+1)*group]
			sum := expShiftSum(row, rowMax(row, math.Inf(-1)))
			scaleRow(row, E(1/sum))
		}
	})
}

func groupSoftmaxGrad[E Float](y, g, dx []E, group int) {
	parallelFor(len(y)/group, 4*group, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			yr, gr := y[i*group:(i+1)*group], g[i*group:(i+1)*group]
			var yg float64
			for j := range yr {
				yg += float64(yr[j]) * float64(gr[j])
			}
			for j := range yr {
				dx[i*group+j] = yr[j] * (gr[j] - E(yg))
			}
		}
	})
}

// PrefixSum sums x [Batch*SeqLen, C] over time within each sequence:
// causal, row t holds sum_{s <= t} x_s (a cumulative sum); bidirectional,
// every row holds the sequence's total sum_s x_s. Its backward is its
// transpose: the reverse cumulative sum sum_{s >= t} g_s when causal, the
// total again when not. Sums accumulate in float64.
func PrefixSum(x *G.Node, batch, seqLen int, causal bool) (*G.Node, error) {
	return prefixSum(x, batch, seqLen, causal, false)
}

// prefixSum is PrefixSum, or with reverse (causal only) the suffix sum
// sum_{s >= t} x_s, each the other's backward.
func prefixSum(x *G.Node, batch, seqLen int, causal, reverse bool) (*G.Node, error) {
	kind := "total"
	switch {
	case causal && reverse:
		kind = "suffix"
	case causal:
		kind = "prefix"
	}
	name := fmt.Sprintf("PrefixSum(batch=%d,T=%d,%s)", batch, seqLen, kind)
	if batch < 1 || seqLen < 1 {
		return nil, fmt.Errorf("%s: sizes must be positive", name)
	}
	return apply(&op{
		name:  name,
		arity: 1,
		typ:   fnType(2, 2),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if len(in[0]) != 2 || in[0][0] != batch*seqLen {
				return nil, shapeErr(name, "want [%d C], got %v", batch*seqLen, in[0])
			}
			return in[0].Clone(), nil
		},
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), in[0].Shape()...)
			cols := in[0].Shape()[1]
			if f32 {
				prefixSumRun(data[float32](in[0]), data[float32](out), batch, seqLen, cols, kind)
			} else {
				prefixSumRun(data[float64](in[0]), data[float64](out), batch, seqLen, cols, kind)
			}
			return out, nil
		},
		diffWRT: []bool{true},
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			dx, err := prefixSum(grad, batch, seqLen, causal, !reverse)
			return G.Nodes{dx}, err
		},
	}, x)
}

func prefixSumRun[E Float](x, y []E, batch, T, C int, kind string) {
	parallelFor(batch, T*C, func(lo, hi int) {
		acc := make([]float64, C)
		for b := lo; b < hi; b++ {
			clear(acc)
			add := func(t int) {
				for c, v := range x[(b*T+t)*C : (b*T+t+1)*C] {
					acc[c] += float64(v)
				}
			}
			put := func(t int) {
				row := y[(b*T+t)*C : (b*T+t+1)*C]
				for c := range row {
					row[c] = E(acc[c])
				}
			}
			switch kind {
			case "prefix":
				for t := 0; t < T; t++ {
					add(t)
					put(t)
				}
			case "suffix":
				for t := T - 1; t >= 0; t-- {
					add(t)
					put(t)
				}
			default:
				for t := 0; t < T; t++ {
					add(t)
				}
				for t := 0; t < T; t++ {
					put(t)
				}
			}
		}
	})
}

// SeqMax is the largest element of each column of x [Batch*SeqLen, C] over
// each sequence's unpadded rows (keyMask [Batch*SeqLen], nil: every row),
// [Batch, C]; 0 for a sequence without one. It is a stabilizer (see
// ShiftedExp) and has no gradient: gradients do not flow through it.
func SeqMax(x, keyMask *G.Node, batch, seqLen int) (*G.Node, error) {
	masked := keyMask != nil
	name := fmt.Sprintf("SeqMax(batch=%d,T=%d,masked=%t)", batch, seqLen, masked)
	if batch < 1 || seqLen < 1 {
		return nil, fmt.Errorf("%s: sizes must be positive", name)
	}
	children, typ, diff := G.Nodes{x}, fnType(2, 2), []bool{false}
	if masked {
		children, typ, diff = append(children, keyMask), fnType(2, 1, 2), []bool{false, false}
	}
	return apply(&op{
		name:  name,
		arity: len(children),
		typ:   typ,
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if len(in[0]) != 2 || in[0][0] != batch*seqLen || (masked && !in[1].Eq(tensor.Shape{batch * seqLen})) {
				return nil, shapeErr(name, "want x [%d C] and a key mask [%d], got %v", batch*seqLen, batch*seqLen, in)
			}
			return tensor.Shape{batch, in[0][1]}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			cols := in[0].Shape()[1]
			out := newTensor(in[0].Dtype(), batch, cols)
			if f32 {
				seqMax(data[float32](in[0]), maskData[float32](in, 1), data[float32](out), batch, seqLen, cols)
			} else {
				seqMax(data[float64](in[0]), maskData[float64](in, 1), data[float64](out), batch, seqLen, cols)
			}
			return out, nil
		},
		diffWRT: diff,
	}, children...)
}

func seqMax[E Float](x, mask, out []E, batch, T, C int) {
	for b := 0; b < batch; b++ {
		m := out[b*C : (b+1)*C]
		seen := false
		for t := 0; t < T; t++ {
			r := b*T + t
			if !keepRow(mask, r) {
				continue
			}
			for c, v := range x[r*C : (r+1)*C] {
				if !seen || v > m[c] || v != v {
					m[c] = v
				}
			}
			seen = true
		}
	}
}

// ShiftedExp is E = exp(x - shift_b) on the unpadded rows of x
// [Batch*SeqLen, C] and 0 on the padded ones (keyMask [Batch*SeqLen], nil:
// none), with shift [Batch, C] one row per sequence (SeqMax of x, for
// stability). It differentiates x only: dx = g * E; shift is taken as a
// constant (for Latte exactly right: see Latte).
func ShiftedExp(x, shift, keyMask *G.Node, batch, seqLen int) (*G.Node, error) {
	masked := keyMask != nil
	name := fmt.Sprintf("ShiftedExp(batch=%d,T=%d,masked=%t)", batch, seqLen, masked)
	if batch < 1 || seqLen < 1 {
		return nil, fmt.Errorf("%s: sizes must be positive", name)
	}
	children, typ, diff := G.Nodes{x, shift}, fnType(2, 2, 2), []bool{true, false}
	if masked {
		children, typ, diff = append(children, keyMask), fnType(2, 2, 1, 2), []bool{true, false, false}
	}
	return apply(&op{
		name:  name,
		arity: len(children),
		typ:   typ,
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if len(in[0]) != 2 || in[0][0] != batch*seqLen || !in[1].Eq(tensor.Shape{batch, in[0][1]}) ||
				(masked && !in[2].Eq(tensor.Shape{batch * seqLen})) {
				return nil, shapeErr(name, "want x [%d C], shift [%d C] and a key mask [%d], got %v", batch*seqLen, batch, batch*seqLen, in)
			}
			return in[0].Clone(), nil
		},
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			cols := in[0].Shape()[1]
			out := newTensor(in[0].Dtype(), in[0].Shape()...)
			if f32 {
				shiftedExp(data[float32](in[0]), data[float32](in[1]), maskData[float32](in, 2), data[float32](out), batch, seqLen, cols)
			} else {
				shiftedExp(data[float64](in[0]), data[float64](in[1]), maskData[float64](in, 2), data[float64](out), batch, seqLen, cols)
			}
			return out, nil
		},
		diffWRT: diff,
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			dx, err := G.HadamardProd(out, grad) // d exp(x - c) / dx = exp(x - c); 0 on padded rows
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			grads := G.Nodes{dx, nil}
			if masked {
				grads = append(grads, nil)
			}
			return grads, nil
		},
	}, children...)
}

func shiftedExp[E Float](x, shift, mask, out []E, batch, T, C int) {
	parallelFor(batch*T, 20*C, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			if !keepRow(mask, r) {
				continue // stays 0, whatever exp(x - shift) would be
			}
			c0 := shift[(r/T)*C : (r/T+1)*C]
			row := out[r*C : (r+1)*C]
			for c, v := range x[r*C : (r+1)*C] {
				row[c] = E(math.Exp(float64(v) - float64(c0[c])))
			}
		}
	})
}

// SeenDiv is a / d elementwise, a and d [Batch*SeqLen, C], on the rows
// that see at least one unpadded key (keyMask [Batch*SeqLen], nil: none
// padded; causal: at or before the row, else anywhere in its sequence),
// and 0 on the rows that see none. On a row that sees a key, d = 0 gives
// Inf or NaN: nothing clamps it. Backward, on the rows that see a key: da
// = g / d, dd = -g a / d^2; 0 on the others.
func SeenDiv(a, d, keyMask *G.Node, batch, seqLen int, causal bool) (*G.Node, error) {
	masked := keyMask != nil
	name := fmt.Sprintf("SeenDiv(batch=%d,T=%d,causal=%t,masked=%t)", batch, seqLen, causal, masked)
	if batch < 1 || seqLen < 1 {
		return nil, fmt.Errorf("%s: sizes must be positive", name)
	}
	children, typ, diff := G.Nodes{a, d}, fnType(2, 2, 2), []bool{true, true}
	if masked {
		children, typ, diff = append(children, keyMask), fnType(2, 2, 1, 2), []bool{true, true, false}
	}
	shape := func(in []tensor.Shape) (tensor.Shape, error) {
		if len(in[0]) != 2 || in[0][0] != batch*seqLen || !in[1].Eq(in[0]) || (masked && !in[2].Eq(tensor.Shape{batch * seqLen})) {
			return nil, shapeErr(name, "want a and d [%d C] and a key mask [%d], got %v", batch*seqLen, batch*seqLen, in)
		}
		return in[0].Clone(), nil
	}
	run := func(opName string, in []G.Value, grad G.Value) (G.Value, error) {
		f32, err := checkDtype(opName, in...)
		if err != nil {
			return nil, err
		}
		sh := in[0].Shape()
		n := 1
		if grad != nil {
			n = 2
		}
		out := newTensor(in[0].Dtype(), n*sh[0]*sh[1])
		if f32 {
			seenDiv(in, data[float32](out), grad, batch, seqLen, sh[1], causal)
		} else {
			seenDiv(in, data[float64](out), grad, batch, seqLen, sh[1], causal)
		}
		if grad == nil {
			out.Reshape(sh...)
		}
		return out, nil
	}
	return apply(&op{
		name:    name,
		arity:   len(children),
		typ:     typ,
		shape:   shape,
		do:      func(in []G.Value) (G.Value, error) { return run(name, in, nil) },
		diffWRT: diff,
		symDiff: func(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
			gname := "Grad" + name
			rows, cols := batch*seqLen, in[0].Shape()[1]
			gt := fnType(2, 2, 2, 1)
			if masked {
				gt = fnType(2, 2, 1, 2, 1)
			}
			packed, err := apply(&op{
				name:  gname,
				arity: len(in) + 1,
				typ:   gt,
				shape: func([]tensor.Shape) (tensor.Shape, error) { return tensor.Shape{2 * rows * cols}, nil },
				do: func(vals []G.Value) (G.Value, error) {
					return run(gname, vals[:len(vals)-1], vals[len(vals)-1])
				},
			}, append(append(G.Nodes{}, in...), grad)...)
			if err != nil {
				return nil, err
			}
			grads, err := Views(packed, [2]int{rows, cols}, [2]int{rows, cols})
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

// seenDiv writes a / d into out (grad nil), or da | dd (grad the output's
// gradient), on the rows that see a key.
func seenDiv[E Float](in []G.Value, out []E, grad G.Value, batch, T, C int, causal bool) {
	a, d, mask := data[E](in[0]), data[E](in[1]), maskData[E](in, 2)
	var g []E
	if grad != nil {
		g = data[E](grad)
	}
	rows := batch * T
	parallelFor(batch, T*C*4, func(lo, hi int) {
		for b := lo; b < hi; b++ {
			seen := false
			if !causal {
				for t := 0; t < T && !seen; t++ {
					seen = keepRow(mask, b*T+t)
				}
			}
			for t := 0; t < T; t++ {
				r := b*T + t
				if causal && keepRow(mask, r) {
					seen = true
				}
				if !seen {
					continue // outputs and gradients stay 0
				}
				for i := r * C; i < (r+1)*C; i++ {
					if g == nil {
						out[i] = a[i] / d[i]
						continue
					}
					out[i] = g[i] / d[i]
					out[rows*C+i] = -g[i] * a[i] / (d[i] * d[i])
				}
			}
		}
	})
}
