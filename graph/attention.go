package graph

import (
	"fmt"
	"math"
	"runtime"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// AttentionShape describes the inputs of an attention core: Batch sequences
// of QLen queries and KLen keys, Heads query heads and KVHeads key/value heads
// (KVHeads divides Heads; query head h reads key/value head h / (Heads /
// KVHeads)); queries and keys have HeadDim dimensions per head, values and
// outputs ValueDim.
type AttentionShape struct {
	Batch, QLen, KLen int
	Heads, KVHeads    int
	HeadDim           int
	ValueDim          int     // 0 means HeadDim
	Causal            bool    // key j is visible to query i only when j <= i + KLen - QLen
	ALiBi             bool    // add -slope_h * |i + KLen - QLen - j| to the scores (Press et al. 2022)
	Scale             float64 // multiplies the scores; 0 means 1/sqrt(HeadDim)
	// posShift moves the queries' positions against the keys' beyond
	// KLen - QLen, for ALiBi's distances in the tiled kernels: a
	// sequence-parallel pair's query chunk starts posShift positions
	// further along (seqpar.go). 0 everywhere else.
	posShift int
	// threads bounds the goroutines of the tiled kernels' parallel loops
	// (0: GOMAXPROCS): a sequence-parallel worker runs its pairs on its
	// share of the threads.
	threads int
}

// threadCount is the goroutines the tiled kernels may use.
func (s AttentionShape) threadCount() int {
	if s.threads > 0 {
		return s.threads
	}
	return runtime.GOMAXPROCS(0)
}

// VDim is the value and output dimension per head.
func (s AttentionShape) VDim() int {
	if s.ValueDim != 0 {
		return s.ValueDim
	}
	return s.HeadDim
}

// ALiBiSlopes are the per-head slopes of Press et al. 2022: the geometric
// sequence 2^(-8/n), 2^(-16/n), ... for n heads when n is a power of two;
// otherwise the sequence for the largest power of two p < n, followed by
// every other slope of the sequence for 2p until there are n.
func ALiBiSlopes(n int) []float64 {
	pow2 := func(n int) []float64 {
		out := make([]float64, n)
		for i := range out {
			out[i] = math.Pow(2, -8*float64(i+1)/float64(n))
		}
		return out
	}
	p := 1
	for p*2 <= n {
		p *= 2
	}
	out := pow2(p)
	if p < n {
		extra := pow2(2 * p)
		for i := 0; len(out) < n; i += 2 {
			out = append(out, extra[i])
		}
	}
	return out
}

func (s AttentionShape) slopes() []float64 {
	if !s.ALiBi {
		return nil
	}
	return ALiBiSlopes(s.Heads)
}

func (s AttentionShape) scale() float64 {
	if s.Scale != 0 {
		return s.Scale
	}
	return 1 / math.Sqrt(float64(s.HeadDim))
}

// Validate reports an impossible shape.
func (s AttentionShape) Validate() error {
	switch {
	case s.Batch < 1 || s.QLen < 1 || s.KLen < 1 || s.Heads < 1 || s.KVHeads < 1 || s.HeadDim < 1 || s.ValueDim < 0:
		return fmt.Errorf("attention: sizes must be positive: %+v", s)
	case s.Heads%s.KVHeads != 0:
		return fmt.Errorf("attention: %d query heads cannot be grouped over %d key/value heads", s.Heads, s.KVHeads)
	case s.Causal && s.KLen < s.QLen:
		return fmt.Errorf("attention: causal attention needs at least as many keys (%d) as queries (%d)", s.KLen, s.QLen)
	}
	return nil
}

// Attention is scaled dot-product attention (Vaswani et al. 2017) over
// q [Batch*QLen, Heads*HeadDim] and k, v [Batch*KLen, KVHeads*HeadDim]: per
// sequence b and head h, O = softmax(scale * Q K^T + mask) V, written to
// the same layout as q. keyMask, if not nil, is [Batch*KLen] with 1 for a real
// key and 0 for padding; padded keys get zero weight. A query that sees no key
// at all outputs zeros.
//
// This is the standard, materializing form: each (sequence, head) computes its
// full QLen x KLen score matrix, O(T^2 d) time and O(T^2) memory per head in
// flight (one per thread; the probabilities are not kept for backward, which
// recomputes them). The backward, with P the probabilities and
// D_i = dO_i . O_i, is dV = P^T dO, dS = P * (dO V^T - D), dQ = scale dS K,
// dK = scale dS^T Q.
func Attention(q, k, v, keyMask *G.Node, s AttentionShape) (*G.Node, error) {
	out, _, err := denseAttention(q, k, v, keyMask, s, nil)
	return out, err
}

// DenseAttention is Attention restricted to a pattern (nil: none): every
// score is computed, and those the pattern's predicates hide (evaluated at
// each element, never through the tile lists) get zero weight, on top of
// the causal and padding masks. It is the oracle TiledAttention is tested
// against for every pattern; O(T^2 d) time and O(T^2) memory per head in
// flight, whatever the pattern.
func DenseAttention(q, k, v, keyMask *G.Node, s AttentionShape, p *Pattern) (*G.Node, error) {
	out, _, err := denseAttention(q, k, v, keyMask, s, p)
	return out, err
}

// DenseAttentionLSE is DenseAttention that also returns each query's
// logsumexp, [Batch*Heads, QLen] (-Inf for a query that sees no key), as
// TiledAttentionLSE does.
func DenseAttentionLSE(q, k, v, keyMask *G.Node, s AttentionShape, p *Pattern) (out, lse *G.Node, err error) {
	return denseAttention(q, k, v, keyMask, s, p)
}

func denseAttention(q, k, v, keyMask *G.Node, s AttentionShape, p *Pattern) (out, lse *G.Node, err error) {
	if err := s.Validate(); err != nil {
		return nil, nil, err
	}
	if p != nil {
		if err := p.check(s); err != nil {
			return nil, nil, err
		}
	}
	masked := keyMask != nil
	name := fmt.Sprintf("Attention(%+v,scale=%g,masked=%t)", s, s.scale(), masked)
	if p != nil {
		name = fmt.Sprintf("Attention(%+v,scale=%g,masked=%t,pattern=%s)", s, s.scale(), masked, opID(p.id()))
	}
	var gpu *coreGPU
	if p == nil { // a pattern has no GPU path
		gpu = attentionGPU(s, masked)
	}
	return applyCore(name, s, q, k, v, keyMask, denseFuncs[float32](s, p), denseFuncs[float64](s, p), gpu)
}

// denseFuncs are the dense core's kernels (its backward recomputes the
// probabilities and needs no logsumexp).
func denseFuncs[T Float](s AttentionShape, p *Pattern) coreFuncs[T] {
	return coreFuncs[T]{
		forward: func(q, k, v, mask, out, lse, _ []T) { attentionForward(s, p, q, k, v, mask, out, lse) },
		backward: func(q, k, v, mask, o, _, _, do, dlse, dq, dk, dv []T) {
			attentionBackward(s, p, q, k, v, mask, o, do, dlse, dq, dk, dv)
		},
	}
}

// gradSizes are the element counts of dq, dk and dv.
func (s AttentionShape) gradSizes() (nq, nk, nv int) {
	return s.Batch * s.QLen * s.Heads * s.HeadDim, s.Batch * s.KLen * s.KVHeads * s.HeadDim, s.Batch * s.KLen * s.KVHeads * s.VDim()
}

// unpackGrads splits the packed dq|dk|dv of a backward op into views; the
// key mask, if any, gets no gradient.
func (s AttentionShape) unpackGrads(packed *G.Node, masked bool) (G.Nodes, error) {
	grads, err := Views(packed, [2]int{s.Batch * s.QLen, s.Heads * s.HeadDim},
		[2]int{s.Batch * s.KLen, s.KVHeads * s.HeadDim}, [2]int{s.Batch * s.KLen, s.KVHeads * s.VDim()})
	if err != nil {
		return nil, err
	}
	if masked {
		grads = append(grads, nil)
	}
	return grads, nil
}

func (s AttentionShape) checkShapes(in []tensor.Shape) error {
	wantQ := tensor.Shape{s.Batch * s.QLen, s.Heads * s.HeadDim}
	wantK := tensor.Shape{s.Batch * s.KLen, s.KVHeads * s.HeadDim}
	wantV := tensor.Shape{s.Batch * s.KLen, s.KVHeads * s.VDim()}
	if !in[0].Eq(wantQ) || !in[1].Eq(wantK) || !in[2].Eq(wantV) {
		return fmt.Errorf("want q %v, k %v and v %v; got %v, %v, %v", wantQ, wantK, wantV, in[0], in[1], in[2])
	}
	if len(in) > 3 && !in[3].Eq(tensor.Shape{s.Batch * s.KLen}) {
		return fmt.Errorf("want key mask [%d], got %v", s.Batch*s.KLen, in[3])
	}
	return nil
}

func maskData[T Float](in []G.Value, i int) []T {
	if len(in) <= i {
		return nil
	}
	return data[T](in[i])
}

// maskTile applies the causal and key-padding masks and the ALiBi bias to
// the tile st of raw scores of sequence b (queries i0..i0+ni, keys j0..j0+nj,
// leading dimension ld): a score the query may not see becomes -Inf. slope
// is the head's ALiBi slope, 0 for none.
func maskTile[T Float](s AttentionShape, slope float64, mask []T, b, i0, ni, j0, nj int, st []T, ld int) {
	shift := s.KLen - s.QLen
	if slope == 0 && mask == nil && (!s.Causal || j0+nj-1 <= i0+shift) {
		return // every score of the tile is visible and unbiased
	}
	var km []T
	if mask != nil {
		km = mask[b*s.KLen+j0 : b*s.KLen+j0+nj]
	}
	inf := T(math.Inf(-1))
	for r := 0; r < ni; r++ {
		row := st[r*ld : r*ld+nj]
		pos := i0 + r + shift // the query's position among the keys
		for c := range row {
			j := j0 + c
			if (s.Causal && j > pos) || (km != nil && km[c] == 0) {
				row[c] = inf
				continue
			}
			if slope != 0 {
				d := pos - j
				if d < 0 {
					d = -d
				}
				row[c] -= T(slope * float64(d))
			}
		}
	}
}

// denseCausalBlock is the number of query rows the dense core multiplies at
// a time: with a causal mask, rows i0..i0+63 see only the first
// visibleKeys(i0+64) keys, so the score and gradient products skip the
// upper-right blocks (at T=256, 62.5% of the full products).
const denseCausalBlock = 64

// visibleKeys is how many leading keys the first `rows` queries can see: all
// of them without a causal mask, else up to the last row's position.
func (s AttentionShape) visibleKeys(rows int) int {
	if !s.Causal {
		return s.KLen
	}
	return min(max(rows+s.KLen-s.QLen, 0), s.KLen)
}

// probabilities fills p [QLen, KLen] with the attention weights of sequence b
// and query head h under pattern pat (nil: none), and lse, if not nil, with
// each row's logsumexp. Scores the causal mask hides are not computed (see
// denseCausalBlock); the masking below sets every such entry.
func probabilities[T Float](s AttentionShape, slopes []float64, pat *Pattern, q, k, mask []T, b, h int, p, lse []T) {
	dq, dk := s.Heads*s.HeadDim, s.KVHeads*s.HeadDim
	kh := h / (s.Heads / s.KVHeads)
	qOff := b*s.QLen*dq + h*s.HeadDim
	kOff := b*s.KLen*dk + kh*s.HeadDim
	for i0 := 0; i0 < s.QLen; i0 += denseCausalBlock {
		ni := min(denseCausalBlock, s.QLen-i0)
		gemm(false, true, ni, s.visibleKeys(i0+ni), s.HeadDim, T(s.scale()), q[qOff+i0*dq:], dq, k[kOff:], dk, 0, p[i0*s.KLen:], s.KLen)
	}
	slope := 0.0
	if slopes != nil {
		slope = slopes[h]
	}
	setLSE := func(i int, v float64) {
		if lse != nil {
			lse[i] = T(v)
		}
	}
	if s.Causal && slope == 0 && mask == nil && pat == nil {
		// Only the keys up to the query's position take part: the softmax
		// runs over that prefix and the rest of the row is 0, with no
		// masking pass and no exponentials of -Inf.
		// The prefix is padded with -Inf to a multiple of 16 so that the
		// vector loops (math32.go) cover it without a scalar tail.
		shift := s.KLen - s.QLen
		inf := T(math.Inf(-1))
		for i := 0; i < s.QLen; i++ {
			row := p[i*s.KLen : (i+1)*s.KLen]
			n := min(max(i+shift+1, 0), s.KLen)
			padded := min(roundUp(n, 16), s.KLen)
			for j := n; j < padded; j++ {
				row[j] = inf
			}
			setLSE(i, softmaxRow(row[:padded]))
			clear(row[padded:])
		}
		return
	}
	maskTile(s, slope, mask, b, 0, s.QLen, 0, s.KLen, p, s.KLen)
	if pat != nil {
		hidePattern(s, pat, h, p)
	}
	for i := 0; i < s.QLen; i++ {
		setLSE(i, softmaxRow(p[i*s.KLen:(i+1)*s.KLen]))
	}
}

// hidePattern applies the pattern to p [QLen, KLen] (head h): a score no
// stream shows is set to -Inf, and one that c > 1 streams show (both query
// and key in the stream, its predicate true) gets log c added, so that the
// softmax counts the key c times (overlapping streams: see Stream). It
// evaluates the predicates at every element.
func hidePattern[T Float](s AttentionShape, pat *Pattern, h int, p []T) {
	count := make([]int32, s.QLen*s.KLen)
	for _, st := range pat.Streams(h) {
		nq, nk := st.gathered(s.QLen), st.gathered(s.KLen)
		for i := 0; i < nq; i++ {
			row := count[(st.Offset+st.Stride*i)*s.KLen:]
			for j := 0; j < nk; j++ {
				if st.Mask.Visible(i, j) {
					row[st.Offset+st.Stride*j]++
				}
			}
		}
	}
	inf := T(math.Inf(-1))
	for x, c := range count {
		switch {
		case c == 0:
			p[x] = inf
		case c > 1:
			p[x] += T(math.Log(float64(c)))
		}
	}
}

// softmaxRow replaces row by its softmax and returns the row's logsumexp;
// -Inf entries get weight 0, and a row of only -Inf becomes zeros (and
// logsumexp -Inf). A NaN entry makes the whole row NaN. For
// float32 the maximum and the exponentials are computed in float32 (rowMax,
// expShiftSum), the sum in float64.
func softmaxRow[T Float](row []T) float64 {
	mx := rowMax(row, math.Inf(-1))
	if math.IsInf(mx, -1) {
		clear(row)
		return mx
	}
	sum := expShiftSum(row, mx)
	scaleRow(row, T(1/sum))
	return mx + math.Log(sum)
}

func attentionForward[T Float](s AttentionShape, pat *Pattern, q, k, v, mask, out, lse []T) {
	dv := s.VDim()
	ov, kv := s.Heads*dv, s.KVHeads*dv
	slopes := s.slopes()
	parallelFor(s.Batch*s.Heads, s.QLen*s.KLen*(s.HeadDim+dv), func(lo, hi int) {
		p := make([]T, s.QLen*s.KLen)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/s.Heads, bh%s.Heads
			kh := h / (s.Heads / s.KVHeads)
			probabilities(s, slopes, pat, q, k, mask, b, h, p, lse[bh*s.QLen:(bh+1)*s.QLen])
			for i0 := 0; i0 < s.QLen; i0 += denseCausalBlock {
				ni := min(denseCausalBlock, s.QLen-i0)
				gemm(false, false, ni, dv, s.visibleKeys(i0+ni), 1, p[i0*s.KLen:], s.KLen, v[b*s.KLen*kv+kh*dv:], kv,
					0, out[b*s.QLen*ov+i0*ov+h*dv:], ov)
			}
		}
	})
}

func attentionBackward[T Float](s AttentionShape, pat *Pattern, q, k, v, mask, o, do, dlse, dqOut, dkOut, dvOut []T) {
	dq, dk := s.Heads*s.HeadDim, s.KVHeads*s.HeadDim
	dv := s.VDim()
	ov, kv := s.Heads*dv, s.KVHeads*dv
	group := s.Heads / s.KVHeads
	scale := T(s.scale())
	slopes := s.slopes()
	// One worker per (sequence, key/value head): the query heads of a group
	// add into the same dK and dV, in a fixed order.
	parallelFor(s.Batch*s.KVHeads, group*s.QLen*s.KLen*(s.HeadDim+dv)*2, func(lo, hi int) {
		p := make([]T, s.QLen*s.KLen)
		dp := make([]T, s.QLen*s.KLen)
		for bk := lo; bk < hi; bk++ {
			b, kh := bk/s.KVHeads, bk%s.KVHeads
			kOff := b*s.KLen*dk + kh*s.HeadDim
			vOff := b*s.KLen*kv + kh*dv
			for h := kh * group; h < (kh+1)*group; h++ {
				qOff := b*s.QLen*dq + h*s.HeadDim
				oOff := b*s.QLen*ov + h*dv
				probabilities(s, slopes, pat, q, k, mask, b, h, p, nil)
				rowDL := dlse[(b*s.Heads+h)*s.QLen : (b*s.Heads+h+1)*s.QLen]
				for i0 := 0; i0 < s.QLen; i0 += denseCausalBlock {
					ni := min(denseCausalBlock, s.QLen-i0)
					nk := s.visibleKeys(i0 + ni)
					pb, dpb := p[i0*s.KLen:], dp[i0*s.KLen:]
					qb, ob := qOff+i0*dq, oOff+i0*ov
					// dV += P^T dO
					gemm(true, false, nk, dv, ni, 1, pb, s.KLen, do[ob:], ov, 1, dvOut[vOff:], kv)
					// dP = dO V^T
					gemm(false, true, ni, nk, dv, 1, do[ob:], ov, v[vOff:], kv, 0, dpb, s.KLen)
					// dS = P * (dP - D), D_i = dO_i . O_i - dL_i
					for r := 0; r < ni; r++ {
						d := dot(o[ob+r*ov:ob+r*ov+dv], do[ob+r*ov:ob+r*ov+dv]) - rowDL[i0+r]
						pr, dpr := pb[r*s.KLen:r*s.KLen+nk], dpb[r*s.KLen:r*s.KLen+nk]
						for j := range pr {
							dpr[j] = pr[j] * (dpr[j] - d)
						}
					}
					// dQ = scale dS K ; dK += scale dS^T Q
					gemm(false, false, ni, s.HeadDim, nk, scale, dpb, s.KLen, k[kOff:], dk, 0, dqOut[qb:], dq)
					gemm(true, false, nk, s.HeadDim, ni, scale, dpb, s.KLen, q[qb:], dq, 1, dkOut[kOff:], dk)
				}
			}
		}
	})
}

func dot[T Float](a, b []T) T {
	var s T
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// Views splits the flat vector packed into consecutive matrices of the
// given shapes ({rows, cols} each, from offset 0 on), as View does: the
// several gradients one backward op computes together.
func Views(packed *G.Node, shapes ...[2]int) (G.Nodes, error) {
	out := make(G.Nodes, len(shapes))
	offset := 0
	for i, sh := range shapes {
		var err error
		if out[i], err = View(packed, offset, sh[0], sh[1]); err != nil {
			return nil, err
		}
		offset += sh[0] * sh[1]
	}
	return out, nil
}

// View returns the rows x cols matrix stored in the flat vector packed from
// offset on, sharing its memory. It unpacks the several gradients one
// backward op computes together; it is not differentiable (see Slice).
func View(packed *G.Node, offset, rows, cols int) (*G.Node, error) {
	name := fmt.Sprintf("View(%d,%dx%d)", offset, rows, cols)
	return apply(&op{
		name:  name,
		arity: 1,
		typ:   fnType(1, 2),
		shape: viewShape(name, offset, rows, cols),
		do:    viewDo(name, offset, rows, cols),
		gpu:   copyKernel(offset, false),
	}, packed)
}

func viewShape(name string, offset, rows, cols int) func([]tensor.Shape) (tensor.Shape, error) {
	return func(in []tensor.Shape) (tensor.Shape, error) {
		if len(in[0]) != 1 || in[0][0] < offset+rows*cols {
			return nil, shapeErr(name, "packed vector %v too short", in[0])
		}
		return tensor.Shape{rows, cols}, nil
	}
}

func viewDo(name string, offset, rows, cols int) func([]G.Value) (G.Value, error) {
	return func(in []G.Value) (G.Value, error) {
		var backing any
		switch d := in[0].Data().(type) {
		case []float32:
			backing = d[offset : offset+rows*cols]
		case []float64:
			backing = d[offset : offset+rows*cols]
		default:
			return nil, fmt.Errorf("%s: unsupported dtype %v", name, in[0].Dtype())
		}
		return tensor.New(tensor.WithShape(rows, cols), tensor.WithBacking(backing)), nil
	}
}
