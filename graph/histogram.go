package graph

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// DefaultHistogramBins is the number of bins of histogram attention when
// none is given.
const DefaultHistogramBins = 8

// HistogramShape is the shape of a histogram attention core: a
// bidirectional self-attention shape (QLen == KLen; padding masks, ALiBi,
// GQA grouping as in Attention), the number of bins and how sorted ranks
// are dealt into them.
type HistogramShape struct {
	AttentionShape
	// Bins is B, the number of bins the sorted positions are split into;
	// 1 is Attention. Bins > KLen leaves some bins empty.
	Bins int
	// Interleaved deals rank r into bin r mod B (Histoformer's
	// frequency-wise reshape, FHR); false cuts the sorted order into B
	// contiguous runs, rank r into bin floor(r B / T) (the bin-wise
	// reshape, BHR).
	Interleaved bool
}

// Validate reports an impossible shape.
func (s HistogramShape) Validate() error {
	if err := s.AttentionShape.Validate(); err != nil {
		return err
	}
	switch {
	case s.Bins < 1:
		return fmt.Errorf("histogram attention: bins must be positive, got %d", s.Bins)
	case s.Causal:
		return fmt.Errorf("histogram attention: cannot be causal (its bins come from ranks over the whole sequence)")
	case s.QLen != s.KLen:
		return fmt.Errorf("histogram attention: self-attention only, want as many queries as keys, got %d and %d", s.QLen, s.KLen)
	}
	return nil
}

func (s HistogramShape) name(kind string, masked bool) string {
	return fmt.Sprintf("%s(%+v,scale=%g,bins=%d,interleaved=%t,masked=%t)", kind, s.AttentionShape, s.scale(), s.Bins, s.Interleaved, masked)
}

// HistogramBinSizes returns the number of positions (padded ones
// included) each of the B bins of a sequence of T positions receives:
// contiguous, ceil((b+1)T/B) - ceil(bT/B); interleaved, the ranks r < T
// with r mod B = b.
func HistogramBinSizes(T, B int, interleaved bool) []int {
	starts := histogramStarts(T, B, interleaved)
	sizes := make([]int, B)
	for b := range sizes {
		sizes[b] = starts[b+1] - starts[b]
	}
	return sizes
}

// HistogramScores is the number of scores histogram attention computes
// (forward): per sequence and query head, the sum over bins of m_b^2.
func HistogramScores(s HistogramShape) int64 {
	var n int64
	for _, m := range HistogramBinSizes(s.KLen, s.Bins, s.Interleaved) {
		n += int64(m * m)
	}
	return n * int64(s.Batch*s.Heads)
}

// histogramStarts are the offsets of the bins in the bin-grouped order,
// B+1 of them.
func histogramStarts(T, B int, interleaved bool) []int {
	starts := make([]int, B+1)
	for b := 0; b <= B; b++ {
		if interleaved {
			if b < B {
				starts[b+1] = starts[b] + max(0, (T-b+B-1)/B) // ranks b, b+B, ... below T
			}
		} else {
			starts[b] = (b*T + B - 1) / B // ceil(b T / B): the first rank r with floor(r B / T) = b
		}
	}
	return starts
}

// histogramGroup fills members, grouped by bin at the offsets starts,
// from the sorted order (order[r] is the position of rank r).
func histogramGroup[T Float](order []T, B int, interleaved bool, starts []int, members []int) {
	for r, p := range order {
		if interleaved {
			members[starts[r%B]+r/B] = int(p)
		} else {
			members[r] = int(p)
		}
	}
}

// HistogramAttention is the dynamic-range histogram self-attention of
// Histoformer (Sun et al. 2024, "Restoring Images in Adverse Weather
// Conditions via Histogram Transformer") over a token sequence: q
// [Batch*T, Heads*HeadDim] and k, v [Batch*T, KVHeads*HeadDim] in
// Attention's layout. Per sequence and key/value head, the positions are
// sorted by their intensity, the first coordinate of their key,
//
//	s_i = k_i[0],  order by (s_i, i), padded positions last (s_i = +Inf),
//	r(i) = the rank of i,  bin(i) = floor(r(i) B / T)  (contiguous)
//	                          or  r(i) mod B           (Interleaved)
//
// and each query attends to the unpadded keys of its own bin,
//
//	s_ij = scale q_i . k_j (- slope_h |i - j| with ALiBi, on the original
//	       positions),  j in V(i) = {j unpadded : bin(j) = bin(i)}
//	out_i = sum_{j in V(i)} softmax_{V(i)}(s_ij) v_j
//
// (a query whose bin holds no unpadded key outputs 0, logsumexp -Inf).
// Query heads of a GQA group share their key/value head's bins. The
// order is not differentiated: the intensities get gradient only through
// the scores they take part in. With Bins 1 it is Attention.
//
// Forward, per (sequence, key/value head): the sort, O(T log T); then per
// bin of m positions the bin's q, k, v rows are gathered into contiguous
// buffers, the m x m scores and the m x dv output computed by GEMM and the
// output rows scattered back. The op keeps, besides the output and each
// row's logsumexp, the sorted order (T values per sequence and key/value
// head, in the dtype of the inputs, so float32 takes at most 2^24
// positions). Backward, per bin, with P recomputed from q, k and the
// logsumexp: dP = dO V^T, dS = P (dP - rowsum(P dP) + dL), dQ = scale dS K,
// dK = scale dS^T Q, dV = P^T dO, one worker per (sequence, key/value
// head), so the scatter of dK and dV is race-free. Time O(T log T + T m d)
// with m about T/B, forward and backward; memory O(T) kept plus
// O(m^2 + m d) scratch per worker, never T x T.
func HistogramAttention(q, k, v, keyMask *G.Node, s HistogramShape) (*G.Node, error) {
	out, _, err := HistogramAttentionLSE(q, k, v, keyMask, s)
	return out, err
}

// HistogramAttentionLSE is HistogramAttention that also returns each
// query's logsumexp over its bin's keys, lse [Batch*Heads, T] (row
// b*Heads + h), -Inf for a query whose bin has no unpadded key; both
// outputs are differentiable.
func HistogramAttentionLSE(q, k, v, keyMask *G.Node, s HistogramShape) (out, lse *G.Node, err error) {
	if err := s.Validate(); err != nil {
		return nil, nil, err
	}
	name := s.name("HistogramAttention", keyMask != nil)
	if q.Dtype() == tensor.Float32 && s.KLen > 1<<24 {
		return nil, nil, fmt.Errorf("%s: float32 holds positions up to 2^24, got %d", name, s.KLen)
	}
	return applyCore(name, s.AttentionShape, q, k, v, keyMask, histogramFuncs[float32](s), histogramFuncs[float64](s), nil)
}

// histogramFuncs are the histogram core's kernels: the forward saves the
// sorted order of each (sequence, key/value head) after O and L, the
// backward reads it.
func histogramFuncs[T Float](s HistogramShape) coreFuncs[T] {
	return coreFuncs[T]{
		saved: s.Batch * s.KVHeads * s.KLen,
		forward: func(q, k, v, mask, out, lse, order []T) {
			histogramForward(s, q, k, v, mask, out, lse, order, nil)
		},
		backward: func(q, k, v, mask, _, lse, order, do, dlse, dq, dk, dv []T) {
			histogramBackward(s, q, k, v, mask, lse, order, do, dlse, dq, dk, dv)
		},
	}
}

// HistogramWeights returns the weights HistogramAttention applies to the
// values for the same q, k, keyMask and shape, as a dense map
// [Batch*Heads*T, T] (row (b*Heads + h)*T + i): the softmax over the
// unpadded keys of each query's bin, 0 elsewhere, a row of zeros for a
// query whose bin has none. Like AttentionWeights it is for inspecting a
// model (trainer attnmap), has no gradient, and materializes every map.
func HistogramWeights(q, k, keyMask *G.Node, s HistogramShape) (*G.Node, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	nLSE := s.Batch * s.Heads * s.QLen
	nOrder := s.Batch * s.KVHeads * s.KLen
	return weightsOp(s.name("HistogramWeights", keyMask != nil), s.AttentionShape, q, k, keyMask,
		func(q, k, mask, out []float32) {
			histogramForward(s, q, k, nil, mask, nil, make([]float32, nLSE), make([]float32, nOrder), out)
		},
		func(q, k, mask, out []float64) {
			histogramForward(s, q, k, nil, mask, nil, make([]float64, nLSE), make([]float64, nOrder), out)
		})
}

// histogramSort writes the sorted order of sequence b, key/value head kh
// into order (T values): positions by (intensity, position), padded ones
// last; idx is scratch of T ints.
func histogramSort[T Float](s HistogramShape, k, mask []T, b, kh int, idx []int, order []T) {
	dk := s.KVHeads * s.HeadDim
	n := s.KLen
	inten := func(i int) float64 {
		if mask != nil && mask[b*n+i] == 0 {
			return math.Inf(1)
		}
		return float64(k[(b*n+i)*dk+kh*s.HeadDim])
	}
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(x, y int) int {
		if c := cmp.Compare(inten(x), inten(y)); c != 0 {
			return c
		}
		return x - y
	})
	for r, i := range idx {
		order[r] = T(i)
	}
}

// histogramScratch is one worker's buffers, sized for the largest bin.
type histogramScratch[T Float] struct {
	members                []int
	qb, kb, vb, ob, dob    []T
	dqb, dkb, dvb, st, dst []T
	idx                    []int
}

func newHistogramScratch[T Float](s HistogramShape, m int, backward bool) *histogramScratch[T] {
	d, dv := s.HeadDim, s.VDim()
	w := &histogramScratch[T]{
		members: make([]int, s.KLen), idx: make([]int, s.KLen),
		qb: make([]T, m*d), kb: make([]T, m*d), vb: make([]T, m*dv), ob: make([]T, m*dv), st: make([]T, m*m),
	}
	if backward {
		w.dob, w.dqb, w.dkb, w.dvb, w.dst = make([]T, m*dv), make([]T, m*d), make([]T, m*d), make([]T, m*dv), make([]T, m*m)
	}
	return w
}

// histogramScores fills st [m, m] with the bin's masked scores for query
// head h: scale q.k, -Inf for a padded key, minus the ALiBi bias on the
// original positions.
func histogramScores[T Float](s HistogramShape, mask []T, b int, slope float64, mem []int, qb, kb, st []T) {
	m := len(mem)
	gemm(false, true, m, m, s.HeadDim, T(s.scale()), qb, s.HeadDim, kb, s.HeadDim, 0, st, m)
	if mask == nil && slope == 0 {
		return
	}
	inf := T(math.Inf(-1))
	for c, j := range mem {
		if mask != nil && mask[b*s.KLen+j] == 0 {
			for r := 0; r < m; r++ {
				st[r*m+c] = inf
			}
			continue
		}
		if slope != 0 {
			for r, i := range mem {
				st[r*m+c] -= T(slope * math.Abs(float64(i-j)))
			}
		}
	}
}

// histogramForward fills, for every query row r = (b*Heads + h)*T + i,
// lse[r], the sorted orders and, when v is not nil, the output rows; when
// weights is not nil it scatters each row's softmax into the dense map.
func histogramForward[T Float](s HistogramShape, q, k, v, mask, out, lse, order, weights []T) {
	dq, dk := s.Heads*s.HeadDim, s.KVHeads*s.HeadDim
	dv := s.VDim()
	ov, kv := s.Heads*dv, s.KVHeads*dv
	group := s.Heads / s.KVHeads
	n := s.KLen
	slopes := s.slopes()
	starts := histogramStarts(n, s.Bins, s.Interleaved)
	mMax := 0
	for b := 0; b < s.Bins; b++ {
		mMax = max(mMax, starts[b+1]-starts[b])
	}
	parallelFor(s.Batch*s.KVHeads, group*n*(mMax+1)*(s.HeadDim+dv), func(lo, hi int) {
		w := newHistogramScratch[T](s, mMax, false)
		for bk := lo; bk < hi; bk++ {
			b, kh := bk/s.KVHeads, bk%s.KVHeads
			ord := order[bk*n : (bk+1)*n]
			histogramSort(s, k, mask, b, kh, w.idx, ord)
			histogramGroup(ord, s.Bins, s.Interleaved, starts, w.members)
			for bin := 0; bin < s.Bins; bin++ {
				mem := w.members[starts[bin]:starts[bin+1]]
				m := len(mem)
				if m == 0 {
					continue
				}
				for r, j := range mem {
					copy(w.kb[r*s.HeadDim:][:s.HeadDim], k[(b*n+j)*dk+kh*s.HeadDim:][:s.HeadDim])
					if v != nil {
						copy(w.vb[r*dv:][:dv], v[(b*n+j)*kv+kh*dv:][:dv])
					}
				}
				for h := kh * group; h < (kh+1)*group; h++ {
					slope := 0.0
					if slopes != nil {
						slope = slopes[h]
					}
					for r, i := range mem {
						copy(w.qb[r*s.HeadDim:][:s.HeadDim], q[(b*n+i)*dq+h*s.HeadDim:][:s.HeadDim])
					}
					st := w.st[:m*m]
					histogramScores(s, mask, b, slope, mem, w.qb, w.kb, st)
					for r, i := range mem {
						row := (b*s.Heads+h)*n + i
						sr := st[r*m : (r+1)*m]
						mx := math.Inf(-1)
						for _, x := range sr {
							mx = max(mx, float64(x))
						}
						if math.IsInf(mx, -1) { // no unpadded key in the bin
							lse[row] = T(math.Inf(-1))
							clear(sr)
							continue
						}
						sum := 0.0
						for c, x := range sr {
							e := math.Exp(float64(x) - mx)
							sr[c] = T(e)
							sum += e
						}
						lse[row] = T(mx + math.Log(sum))
						for c := range sr {
							sr[c] = T(float64(sr[c]) / sum)
						}
						if weights != nil {
							for c, j := range mem {
								weights[row*n+j] = sr[c]
							}
						}
					}
					if v == nil {
						continue
					}
					gemm(false, false, m, dv, m, 1, st, m, w.vb, dv, 0, w.ob, dv)
					for r, i := range mem {
						copy(out[(b*n+i)*ov+h*dv:][:dv], w.ob[r*dv:][:dv])
					}
				}
			}
		}
	})
}

// histogramBackward maps the forward's logsumexps and sorted orders and
// the gradients of its output and logsumexp to dq, dk and dv.
func histogramBackward[T Float](s HistogramShape, q, k, v, mask, lse, order, do, dlse, dqOut, dkOut, dvOut []T) {
	dq, dk := s.Heads*s.HeadDim, s.KVHeads*s.HeadDim
	dv := s.VDim()
	ov, kv := s.Heads*dv, s.KVHeads*dv
	group := s.Heads / s.KVHeads
	n := s.KLen
	scale := T(s.scale())
	slopes := s.slopes()
	starts := histogramStarts(n, s.Bins, s.Interleaved)
	mMax := 0
	for b := 0; b < s.Bins; b++ {
		mMax = max(mMax, starts[b+1]-starts[b])
	}
	clear(dqOut)
	clear(dkOut)
	clear(dvOut)
	// One worker per (sequence, key/value head): it owns the dK and dV rows
	// of that head and the dQ rows of the query heads of its group.
	parallelFor(s.Batch*s.KVHeads, 3*group*n*(mMax+1)*(s.HeadDim+dv), func(lo, hi int) {
		w := newHistogramScratch[T](s, mMax, true)
		for bk := lo; bk < hi; bk++ {
			b, kh := bk/s.KVHeads, bk%s.KVHeads
			histogramGroup(order[bk*n:(bk+1)*n], s.Bins, s.Interleaved, starts, w.members)
			for bin := 0; bin < s.Bins; bin++ {
				mem := w.members[starts[bin]:starts[bin+1]]
				m := len(mem)
				if m == 0 {
					continue
				}
				for r, j := range mem {
					copy(w.kb[r*s.HeadDim:][:s.HeadDim], k[(b*n+j)*dk+kh*s.HeadDim:][:s.HeadDim])
					copy(w.vb[r*dv:][:dv], v[(b*n+j)*kv+kh*dv:][:dv])
				}
				dkb, dvb := w.dkb[:m*s.HeadDim], w.dvb[:m*dv]
				clear(dkb)
				clear(dvb)
				for h := kh * group; h < (kh+1)*group; h++ {
					slope := 0.0
					if slopes != nil {
						slope = slopes[h]
					}
					for r, i := range mem {
						copy(w.qb[r*s.HeadDim:][:s.HeadDim], q[(b*n+i)*dq+h*s.HeadDim:][:s.HeadDim])
						copy(w.dob[r*dv:][:dv], do[(b*n+i)*ov+h*dv:][:dv])
					}
					st, dst := w.st[:m*m], w.dst[:m*m]
					histogramScores(s, mask, b, slope, mem, w.qb, w.kb, st)
					// P_ij = exp(s_ij - L_i); dP = dO V^T
					gemm(false, true, m, m, dv, 1, w.dob, dv, w.vb, dv, 0, dst, m)
					for r, i := range mem {
						row := (b*s.Heads+h)*n + i
						sr, dr := st[r*m:(r+1)*m], dst[r*m:(r+1)*m]
						L := float64(lse[row])
						if math.IsInf(L, -1) { // the query sees no key
							clear(sr)
							clear(dr)
							continue
						}
						d := -float64(dlse[row]) // D_i = sum_j P dP - dL_i
						for c, x := range sr {
							p := math.Exp(float64(x) - L)
							sr[c] = T(p)
							d += p * float64(dr[c])
						}
						for c := range dr {
							dr[c] = T(float64(sr[c]) * (float64(dr[c]) - d)) // dS
						}
					}
					// dQ = scale dS K, dK += scale dS^T Q, dV += P^T dO
					gemm(false, false, m, s.HeadDim, m, scale, dst, m, w.kb, s.HeadDim, 0, w.dqb, s.HeadDim)
					gemm(true, false, m, s.HeadDim, m, scale, dst, m, w.qb, s.HeadDim, 1, dkb, s.HeadDim)
					gemm(true, false, m, dv, m, 1, st, m, w.dob, dv, 1, dvb, dv)
					for r, i := range mem {
						copy(dqOut[(b*n+i)*dq+h*s.HeadDim:][:s.HeadDim], w.dqb[r*s.HeadDim:][:s.HeadDim])
					}
				}
				for r, j := range mem {
					copy(dkOut[(b*n+j)*dk+kh*s.HeadDim:][:s.HeadDim], dkb[r*s.HeadDim:][:s.HeadDim])
					copy(dvOut[(b*n+j)*kv+kh*dv:][:dv], dvb[r*dv:][:dv])
				}
			}
		}
	})
}
