package graph

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// MergeAttention combines n attentions of the same queries through their
// logsumexps (TiledAttentionLSE): per sequence, head and query,
//
//	out = sum_i exp(lse_i - lse) out_i,   lse = log sum_i exp(lse_i)
//
// each out_i [Batch*QLen, Heads*VDim] weighted by its share of the total
// softmax denominator. Over disjoint key sets this is exactly attention
// over their union (how partial results of a split key range merge); over
// overlapping ones it is LongNet's mixing of its (segment, dilation) pairs
// (Ding et al. 2023). An attention with lse_i = -Inf (the query saw no key
// there) gets weight 0; a query with every lse_i = -Inf outputs 0. The
// gradients, with w_i = exp(lse_i - lse), are d out_i = w_i d out and
// d lse_i = w_i (d out . out_i - d out . out). O(n T d) time.
func MergeAttention(outs, lses []*G.Node, s AttentionShape) (*G.Node, error) {
	n := len(outs)
	if n == 0 || len(lses) != n {
		return nil, fmt.Errorf("merge attention: %d outputs and %d logsumexps; want the same number, at least 1", len(outs), len(lses))
	}
	if n == 1 {
		return outs[0], nil
	}
	name := fmt.Sprintf("MergeAttention(%d,%+v)", n, s)
	wantO := tensor.Shape{s.Batch * s.QLen, s.Heads * s.VDim()}
	wantL := tensor.Shape{s.Batch * s.Heads, s.QLen}
	dims := make([]int, 2*n+1)
	for i := range dims {
		dims[i] = 2
	}
	children := append(append(G.Nodes{}, outs...), lses...)
	return apply(&op{
		name:  name,
		arity: 2 * n,
		typ:   fnType(dims...),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			for i := range n {
				if !in[i].Eq(wantO) || !in[n+i].Eq(wantL) {
					return nil, shapeErr(name, "attention %d: want output %v and logsumexp %v, got %v and %v", i, wantO, wantL, in[i], in[n+i])
				}
			}
			return wantO, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), wantO...)
			if f32 {
				mergeForward(s, values[float32](in), data[float32](out))
			} else {
				mergeForward(s, values[float64](in), data[float64](out))
			}
			return out, nil
		},
		diffWRT: trues(2 * n),
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			args := append(append(G.Nodes{}, in...), out, grad)
			packed, err := apply(mergeGradOp(s, n, name), args...)
			if err != nil {
				return nil, err
			}
			shapes := make([][2]int, 2*n) // the n d outs, then the n d lses
			for i := range n {
				shapes[i], shapes[n+i] = [2]int{wantO[0], wantO[1]}, [2]int{wantL[0], wantL[1]}
			}
			return Views(packed, shapes...)
		},
	}, children...)
}

func trues(n int) []bool {
	b := make([]bool, n)
	for i := range b {
		b[i] = true
	}
	return b
}

func values[T Float](in []G.Value) [][]T {
	out := make([][]T, len(in))
	for i, v := range in {
		out[i] = data[T](v)
	}
	return out
}

// mergeWeights fills w with the weights w_i of query i of sequence b under
// head h; all zero when no attention saw a key.
func mergeWeights[T Float](s AttentionShape, lses [][]T, b, h, i int, w []float64) {
	at := (b*s.Heads+h)*s.QLen + i
	mx := math.Inf(-1)
	for _, l := range lses {
		mx = math.Max(mx, float64(l[at]))
	}
	if math.IsInf(mx, -1) {
		clear(w)
		return
	}
	sum := 0.0
	for j, l := range lses {
		w[j] = math.Exp(float64(l[at]) - mx)
		sum += w[j]
	}
	for j := range w {
		w[j] /= sum
	}
}

// mergeForward: in holds the n outputs, then the n logsumexps.
func mergeForward[T Float](s AttentionShape, in [][]T, out []T) {
	n := len(in) / 2
	outs, lses := in[:n], in[n:]
	dv := s.VDim()
	w := make([]float64, n)
	for b := 0; b < s.Batch; b++ {
		for i := 0; i < s.QLen; i++ {
			for h := 0; h < s.Heads; h++ {
				mergeWeights(s, lses, b, h, i, w)
				at := (b*s.QLen+i)*s.Heads*dv + h*dv
				o := out[at : at+dv]
				clear(o)
				for j, x := range outs {
					if w[j] == 0 {
						continue
					}
					for c := range o {
						o[c] += T(w[j]) * x[at+c]
					}
				}
			}
		}
	}
}

// mergeGradOp maps (outs..., lses..., out, d out) to d outs | d lses.
func mergeGradOp(s AttentionShape, n int, fwdName string) *op {
	name := "Grad" + fwdName
	dims := make([]int, 2*n+3)
	for i := range dims {
		dims[i] = 2
	}
	dims[len(dims)-1] = 1
	nO, nL := s.Batch*s.QLen*s.Heads*s.VDim(), s.Batch*s.Heads*s.QLen
	return &op{
		name:  name,
		arity: 2*n + 2,
		typ:   fnType(dims...),
		shape: func([]tensor.Shape) (tensor.Shape, error) { return tensor.Shape{n * (nO + nL)}, nil },
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), n*(nO+nL))
			if f32 {
				mergeBackward(s, values[float32](in), data[float32](out))
			} else {
				mergeBackward(s, values[float64](in), data[float64](out))
			}
			return out, nil
		},
	}
}

func mergeBackward[T Float](s AttentionShape, in [][]T, grads []T) {
	n := (len(in) - 2) / 2
	outs, lses, out, dout := in[:n], in[n:2*n], in[2*n], in[2*n+1]
	dv := s.VDim()
	nO := len(out)
	w := make([]float64, n)
	clear(grads)
	for b := 0; b < s.Batch; b++ {
		for i := 0; i < s.QLen; i++ {
			for h := 0; h < s.Heads; h++ {
				mergeWeights(s, lses, b, h, i, w)
				at := (b*s.QLen+i)*s.Heads*dv + h*dv
				lat := (b*s.Heads+h)*s.QLen + i
				g := dout[at : at+dv]
				base := float64(dot(g, out[at:at+dv]))
				for j, x := range outs {
					if w[j] == 0 {
						continue
					}
					do := grads[j*nO+at : j*nO+at+dv]
					for c := range do {
						do[c] = T(w[j]) * g[c]
					}
					grads[n*nO+j*len(lses[j])+lat] = T(w[j] * (float64(dot(g, x[at:at+dv])) - base))
				}
			}
		}
	}
}
