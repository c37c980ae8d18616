package graph

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// DefaultTopK is the number of keys each query keeps in top-k attention
// when none is given.
const DefaultTopK = 32

// TopKShape is the shape of a top-k attention core: the attention shape
// (layout, causal and padding masks, ALiBi, GQA grouping as in Attention),
// the number of keys each query keeps, and the tile its scores are computed
// in.
type TopKShape struct {
	AttentionShape
	// TopK is the number of keys each query keeps; a query that sees fewer
	// keeps all it sees, so TopK >= KLen is Attention.
	TopK int
	// Block is the number of queries and of keys of a score tile; 0 is
	// DefaultFlashBlock.
	Block int
}

// kept is the number of index slots each query row stores.
func (s TopKShape) kept() int { return min(s.TopK, s.KLen) }

func (s TopKShape) block() int {
	if s.Block == 0 {
		return DefaultFlashBlock
	}
	return s.Block
}

// Validate reports an impossible shape.
func (s TopKShape) Validate() error {
	if err := s.AttentionShape.Validate(); err != nil {
		return err
	}
	if s.TopK < 1 {
		return fmt.Errorf("top-k attention: k must be positive, got %d", s.TopK)
	}
	if s.Block < 0 {
		return fmt.Errorf("top-k attention: block must not be negative, got %d", s.Block)
	}
	return nil
}

func (s TopKShape) name(kind string, masked bool) string {
	return fmt.Sprintf("%s(%+v,scale=%g,k=%d,block=%d,masked=%t)", kind, s.AttentionShape, s.scale(), s.TopK, s.block(), masked)
}

// TopKAttention is top-k attention (Gupta et al. 2021, "Memory-efficient
// Transformers via Top-k Attention") over q [Batch*QLen, Heads*HeadDim] and
// k, v [Batch*KLen, KVHeads*HeadDim] in Attention's layout: each query keeps
// the TopK keys of largest score among those it sees,
//
//	s_ij = scale q_i . k_j (+ ALiBi),  S_i = the TopK visible j of largest s_ij
//	out_i = sum_{j in S_i} softmax_{S_i}(s_ij) v_j
//
// where visible means unpadded and, when causal, j <= i + KLen - QLen; a
// query that sees at most TopK keys keeps them all, and one that sees none
// outputs 0. Equal scores are broken by the lower key index. The selection
// is not differentiated.
//
// Forward: per sequence, head and tile of Block queries, the scores are
// computed against each key tile by GEMM (causal: tiles above the diagonal
// skipped) into a Block x Block buffer, and each row keeps its best TopK
// (index, score) pairs in a min-heap; then the softmax over the kept scores
// and the weighted sum of the gathered values. The op keeps, besides the
// output, each row's logsumexp and kept indices (O(T k)). Backward, with P
// the kept weights recomputed from q, k and the indices: dP_ij = dO_i . v_j,
// dS = P (dP - rowsum(P dP)), dq_i = scale sum_j dS_ij k_j, dk_j += scale
// dS_ij q_i, dv_j += P_ij dO_i, one worker per (sequence, key/value head)
// so the scatter-adds are race-free.
//
// Time O(T^2 d) for the scores (every score is needed to choose; none is
// kept) plus O(T^2 log k) for the selection at worst and O(T k d) for the
// rest, forward and backward; memory O(T k) for the indices plus
// O(Block^2 + Block k) per thread, never T x T. Indices are stored in the
// dtype of the inputs, so float32 takes at most 2^24 keys.
func TopKAttention(q, k, v, keyMask *G.Node, s TopKShape) (*G.Node, error) {
	out, _, err := TopKAttentionLSE(q, k, v, keyMask, s)
	return out, err
}

// TopKAttentionLSE is TopKAttention that also returns each query's
// logsumexp over its kept keys, lse [Batch*Heads, QLen] (row b*Heads + h),
// -Inf for a query that sees no key; both outputs are differentiable.
func TopKAttentionLSE(q, k, v, keyMask *G.Node, s TopKShape) (out, lse *G.Node, err error) {
	if err := s.Validate(); err != nil {
		return nil, nil, err
	}
	name := s.name("TopKAttention", keyMask != nil)
	if q.Dtype() == tensor.Float32 && s.KLen > 1<<24 {
		return nil, nil, fmt.Errorf("%s: float32 holds key indices up to 2^24, got %d keys", name, s.KLen)
	}
	return applyCore(name, s.AttentionShape, q, k, v, keyMask, topKFuncs[float32](s), topKFuncs[float64](s), nil)
}

// topKFuncs are the top-k core's kernels: the forward saves each row's
// kept key indices after O and L, the backward reads them.
func topKFuncs[T Float](s TopKShape) coreFuncs[T] {
	return coreFuncs[T]{
		saved: s.Batch * s.Heads * s.QLen * s.kept(),
		forward: func(q, k, v, mask, out, lse, idx []T) {
			topKForward(s, q, k, v, mask, out, lse, idx, nil)
		},
		backward: func(q, k, v, _, _, lse, idx, do, dlse, dq, dk, dv []T) {
			topKBackward(s, q, k, v, lse, idx, do, dlse, dq, dk, dv)
		},
	}
}

// TopKWeights returns the weights TopKAttention applies to the values for
// the same q, k, keyMask and shape, as a dense map [Batch*Heads*QLen, KLen]
// (row (b*Heads + h)*QLen + i): the softmax over each query's kept keys,
// 0 elsewhere, a row of zeros for a query that sees no key. Like
// AttentionWeights it is for inspecting a model (trainer attnmap), has no
// gradient, and materializes every map.
func TopKWeights(q, k, keyMask *G.Node, s TopKShape) (*G.Node, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	nLSE := s.Batch * s.Heads * s.QLen
	return weightsOp(s.name("TopKWeights", keyMask != nil), s.AttentionShape, q, k, keyMask,
		func(q, k, mask, out []float32) {
			topKForward(s, q, k, nil, mask, nil, make([]float32, nLSE), make([]float32, nLSE*s.kept()), out)
		},
		func(q, k, mask, out []float64) {
			topKForward(s, q, k, nil, mask, nil, make([]float64, nLSE), make([]float64, nLSE*s.kept()), out)
		})
}

// keptKey is one entry of a query row's selection.
type keptKey struct {
	s float64
	j int32
}

// worse orders the heap: the lower score, and of equal scores the higher
// index, is worse (ties go to the lower index).
func (a keptKey) worse(b keptKey) bool { return a.s < b.s || a.s == b.s && a.j > b.j }

// keyHeap is a min-heap under worse of at most cap(h) entries: its root
// is the worst kept key.
type keyHeap []keptKey

// offer keeps x if the heap has room or x is better than its worst.
func (h *keyHeap) offer(x keptKey) {
	a := *h
	if len(a) < cap(a) {
		a = append(a, x)
		for i := len(a) - 1; i > 0; { // sift up
			p := (i - 1) / 2
			if !a[i].worse(a[p]) {
				break
			}
			a[i], a[p] = a[p], a[i]
			i = p
		}
		*h = a
		return
	}
	if !a[0].worse(x) {
		return
	}
	a[0] = x
	for i, n := 0, len(a); ; { // sift down
		m, l, r := i, 2*i+1, 2*i+2
		if l < n && a[l].worse(a[m]) {
			m = l
		}
		if r < n && a[r].worse(a[m]) {
			m = r
		}
		if m == i {
			break
		}
		a[i], a[m] = a[m], a[i]
		i = m
	}
}

// topKForward fills, for every query row r = (b*Heads + h)*QLen + i, lse[r]
// and the kept indices idx[r*kept:(r+1)*kept] (ascending, -1 for unused
// slots) and, when v is not nil, the output rows; when weights is not nil
// it scatters the kept softmax weights into the dense map weights.
func topKForward[T Float](s TopKShape, q, k, v, mask, out, lse, idx, weights []T) {
	dq, dk := s.Heads*s.HeadDim, s.KVHeads*s.HeadDim
	dv := s.VDim()
	ov, kv := s.Heads*dv, s.KVHeads*dv
	group := s.Heads / s.KVHeads
	nk := s.kept()
	block := s.block()
	scale := T(s.scale())
	slopes := s.slopes()
	shift := s.KLen - s.QLen
	if out != nil {
		clear(out)
	}
	parallelFor(s.Batch*s.Heads, s.QLen*s.KLen*s.HeadDim, func(lo, hi int) {
		st := make([]T, block*block)
		heaps := make([]keyHeap, block)
		for r := range heaps {
			heaps[r] = make(keyHeap, 0, nk)
		}
		p := make([]float64, nk)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/s.Heads, bh%s.Heads
			kh := h / group
			slope := 0.0
			if slopes != nil {
				slope = slopes[h]
			}
			qOff := b*s.QLen*dq + h*s.HeadDim
			kOff := b*s.KLen*dk + kh*s.HeadDim
			vOff := b*s.KLen*kv + kh*dv
			for i0 := 0; i0 < s.QLen; i0 += block {
				ni := min(block, s.QLen-i0)
				for r := 0; r < ni; r++ {
					heaps[r] = heaps[r][:0]
				}
				keys := s.KLen
				if s.Causal {
					keys = min(max(i0+ni+shift, 0), s.KLen)
				}
				for j0 := 0; j0 < keys; j0 += block {
					nj := min(block, keys-j0)
					gemm(false, true, ni, nj, s.HeadDim, scale, q[qOff+i0*dq:], dq, k[kOff+j0*dk:], dk, 0, st, nj)
					maskTile(s.AttentionShape, slope, mask, b, i0, ni, j0, nj, st, nj)
					for r := 0; r < ni; r++ {
						hp := &heaps[r]
						for c, x := range st[r*nj : (r+1)*nj] {
							if math.IsInf(float64(x), -1) {
								continue
							}
							hp.offer(keptKey{float64(x), int32(j0 + c)})
						}
					}
				}
				for r := 0; r < ni; r++ {
					row := bh*s.QLen + i0 + r
					sel := heaps[r]
					slices.SortFunc(sel, func(a, b keptKey) int { return cmp.Compare(a.j, b.j) })
					ix := idx[row*nk : (row+1)*nk]
					for x := range ix {
						ix[x] = -1
					}
					if len(sel) == 0 { // the query sees no key: output 0, logsumexp -Inf
						lse[row] = T(math.Inf(-1))
						continue
					}
					mx := math.Inf(-1)
					for _, e := range sel {
						mx = max(mx, e.s)
					}
					sum := 0.0
					for x, e := range sel {
						p[x] = math.Exp(e.s - mx)
						sum += p[x]
					}
					lse[row] = T(mx + math.Log(sum))
					var o []T
					if v != nil {
						o = out[b*s.QLen*ov+(i0+r)*ov+h*dv:][:dv]
					}
					for x, e := range sel {
						ix[x] = T(e.j)
						w := p[x] / sum
						if weights != nil {
							weights[row*s.KLen+int(e.j)] = T(w)
						}
						if o != nil {
							vj := v[vOff+int(e.j)*kv:][:dv]
							for c := range o {
								o[c] += T(w) * vj[c]
							}
						}
					}
				}
			}
		}
	})
}

// topKBackward maps the forward's logsumexp and indices and the gradients
// of its output and logsumexp to dq, dk and dv.
func topKBackward[T Float](s TopKShape, q, k, v, lse, idx, do, dlse, dqOut, dkOut, dvOut []T) {
	dq, dk := s.Heads*s.HeadDim, s.KVHeads*s.HeadDim
	dv := s.VDim()
	ov, kv := s.Heads*dv, s.KVHeads*dv
	group := s.Heads / s.KVHeads
	nk := s.kept()
	scale := s.scale()
	slopes := s.slopes()
	shift := s.KLen - s.QLen
	clear(dqOut)
	clear(dkOut)
	clear(dvOut)
	// One worker per (sequence, key/value head): it owns the dK and dV rows
	// of that head and the dQ rows of the query heads of its group.
	parallelFor(s.Batch*s.KVHeads, group*s.QLen*nk*(2*s.HeadDim+2*dv), func(lo, hi int) {
		p := make([]float64, nk)
		ds := make([]float64, nk)
		for bk := lo; bk < hi; bk++ {
			b, kh := bk/s.KVHeads, bk%s.KVHeads
			kOff := b*s.KLen*dk + kh*s.HeadDim
			vOff := b*s.KLen*kv + kh*dv
			for h := kh * group; h < (kh+1)*group; h++ {
				slope := 0.0
				if slopes != nil {
					slope = slopes[h]
				}
				bh := b*s.Heads + h
				for i := 0; i < s.QLen; i++ {
					row := bh*s.QLen + i
					L := float64(lse[row])
					if math.IsInf(L, -1) {
						continue // the query sees no key
					}
					ix := idx[row*nk : (row+1)*nk]
					n := 0
					for n < nk && ix[n] >= 0 {
						n++
					}
					qi := q[b*s.QLen*dq+i*dq+h*s.HeadDim:][:s.HeadDim]
					doi := do[b*s.QLen*ov+i*ov+h*dv:][:dv]
					// P_ij = exp(s_ij - L), dP_ij = dO_i . v_j, D = sum_j P dP - dL
					d := -float64(dlse[row])
					for x, jf := range ix[:n] {
						j := int(jf)
						sc := scale * float64(dot(qi, k[kOff+j*dk:][:s.HeadDim]))
						if slope != 0 {
							sc -= slope * math.Abs(float64(i+shift-j))
						}
						p[x] = math.Exp(sc - L)
						ds[x] = float64(dot(doi, v[vOff+j*kv:][:dv]))
						d += p[x] * ds[x]
					}
					dqi := dqOut[b*s.QLen*dq+i*dq+h*s.HeadDim:][:s.HeadDim]
					for x, jf := range ix[:n] {
						j := int(jf)
						g := T(scale * p[x] * (ds[x] - d)) // scale dS_ij
						kj := k[kOff+j*dk:][:s.HeadDim]
						dkj := dkOut[kOff+j*dk:][:s.HeadDim]
						for c := range dqi {
							dqi[c] += g * kj[c]
							dkj[c] += g * qi[c]
						}
						pw := T(p[x])
						dvj := dvOut[vOff+j*kv:][:dv]
						for c := range dvj {
							dvj[c] += pw * doi[c]
						}
					}
				}
			}
		}
	})
}
