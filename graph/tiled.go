package graph

import (
	"fmt"
	"hash/fnv"
	"math"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/graph/blockmask"
)

// TiledAttention is the block-sparse tiled attention core: the function of
// DenseAttention with the same pattern (inputs, layout, causal and padding
// masks, ALiBi, GQA grouping), computed the way FlashAttention does (Dao et
// al. 2022; loop order of Dao 2023) over only the tiles the pattern lists,
// in the manner of FlexAttention's block masks:
//
//   - Forward: for each stream of each head and each query tile Q_i, for
//     each key tile K_j the mask lists for it, S = scale Q_i K_j^T (+ ALiBi;
//     the element predicate is evaluated only in Partial tiles, the key
//     padding wherever there is one) is reduced with an online softmax: a
//     running maximum m and sum l per row and an output accumulator
//     rescaled by exp(m_old - m_new). At the end O_i = acc / l and the
//     row's logsumexp L = m + log l.
//   - Backward: with D = rowsum(dO * O) - dL, for each key tile K_j and each
//     query tile the transposed lists give, P = exp(S - L), dV_j += P^T dO_i,
//     dS = P * (dO_i V_j^T - D), dQ_i += scale dS K_j, dK_j += scale dS^T Q_i.
//     One worker owns each (sequence, key/value head), so no two write the
//     same rows.
//
// Time O(visited tiles x block^2 x d), memory O(T d) for the inputs, output
// and logsumexp plus O(block^2) per thread: nothing grows as T x T, and a
// tile the pattern skips costs nothing. A nil pattern is every key (the
// causal mask applied, tiles above the diagonal skipped) in tiles of
// DefaultFlashBlock.
func TiledAttention(q, k, v, keyMask *G.Node, s AttentionShape, p *Pattern) (*G.Node, error) {
	out, _, err := tiledAttention(q, k, v, keyMask, s, p, DefaultFlashBlock)
	return out, err
}

// TiledAttentionLSE is TiledAttention that also returns each query's
// logsumexp, lse [Batch*Heads, QLen] (row b*Heads + h), -Inf for a query
// that sees no key. Both outputs are differentiable, so attentions over
// different patterns merge exactly (MergeAttention): LongNet's dilated
// pairs, sequence-parallel shards.
func TiledAttentionLSE(q, k, v, keyMask *G.Node, s AttentionShape, p *Pattern) (out, lse *G.Node, err error) {
	return tiledAttention(q, k, v, keyMask, s, p, DefaultFlashBlock)
}

// opID is a pattern id short enough for an op name: long ones are hashed.
func opID(id string) string {
	if len(id) <= 160 {
		return id
	}
	h := fnv.New64a()
	h.Write([]byte(id))
	return fmt.Sprintf("%s...#%016x", id[:80], h.Sum64())
}

// tiledAttention runs pattern p, or without one the full (causal) pattern
// in tiles of block.
func tiledAttention(q, k, v, keyMask *G.Node, s AttentionShape, p *Pattern, block int) (out, lse *G.Node, err error) {
	if err := s.Validate(); err != nil {
		return nil, nil, err
	}
	if p != nil {
		if err := p.check(s); err != nil {
			return nil, nil, err
		}
	}
	run := p.withCausal(s, block)
	name := fmt.Sprintf("TiledAttention(%+v,scale=%g,block=%d,masked=%t,pattern=%s)", s, s.scale(), run.maxBlock(), keyMask != nil, opID(run.id()))
	var gpu *coreGPU
	// The full (causal) pattern is the GPU kernels' function (they take
	// causality from s); other patterns have no GPU path.
	if p == nil || (p.full && p.causal == s.Causal) {
		gpu = attentionGPU(s, keyMask != nil)
	}
	return applyCore(name, s, q, k, v, keyMask, tiledFuncs[float32](s, run), tiledFuncs[float64](s, run), gpu)
}

// tiledFuncs are the tiled core's kernels over the pattern run.
func tiledFuncs[T Float](s AttentionShape, run *Pattern) coreFuncs[T] {
	return coreFuncs[T]{
		forward: func(q, k, v, mask, out, lse, _ []T) { tiledForward(s, run, q, k, v, mask, out, lse) },
		backward: func(q, k, v, mask, o, lse, _, do, dlse, dq, dk, dv []T) {
			tiledBackward(s, run, q, k, v, mask, o, lse, do, dlse, dq, dk, dv)
		},
	}
}

// streamLayout is where a stream's rows live in the packed inputs: the
// first row of each and the distance between consecutive rows.
type streamLayout struct {
	q, qLd, k, kLd, v, vLd, o, oLd int
}

func layoutOf(s AttentionShape, st Stream, b, h int) streamLayout {
	dq, dk := s.Heads*s.HeadDim, s.KVHeads*s.HeadDim
	dv := s.VDim()
	ov, kv := s.Heads*dv, s.KVHeads*dv
	kh := h / (s.Heads / s.KVHeads)
	r := st.Stride
	return streamLayout{
		q: b*s.QLen*dq + h*s.HeadDim + st.Offset*dq, qLd: r * dq,
		k: b*s.KLen*dk + kh*s.HeadDim + st.Offset*dk, kLd: r * dk,
		v: b*s.KLen*kv + kh*dv + st.Offset*kv, vLd: r * kv,
		o: b*s.QLen*ov + h*dv + st.Offset*ov, oLd: r * ov,
	}
}

// tileMasker applies one stream's masks and score modifier to a tile of
// raw scores: the element predicate in Partial tiles, the key padding
// (pad, the sequence's key mask from the stream's first key, every
// stride-th entry) and the ALiBi bias by the distance in the original
// positions. A mask described by rows and columns (Interval, KeyVisible)
// costs O(block) predicate calls per tile, not O(block^2): each row's
// interval bounds its span (the kernels exponentiate only there and zero
// the rest), and the hidden columns are found once per tile, as runs.
type tileMasker[T Float] struct {
	visible    func(q, k int) bool
	interval   func(q int) (lo, hi int) // the mask's Interval, nil if it has none
	keyVisible func(k int) bool         // the mask's KeyVisible, nil if it has none
	described  bool                     // interval and keyVisible say what visible says
	hidden     *[][2]int                // scratch: the runs of columns keyVisible hides in the tile
	spans      *[]int32                 // scratch: apply's result
	pad        []T
	stride     int
	shift      int // KLen - QLen
	slope      float64
}

func newTileMasker[T Float](s AttentionShape, st Stream, mask []T, b int, slope float64) tileMasker[T] {
	m := st.Mask
	t := tileMasker[T]{visible: m.Visible, interval: m.Interval, keyVisible: m.KeyVisible, described: m.Interval != nil || m.KeyVisible != nil,
		hidden: new([][2]int), spans: new([]int32), stride: st.Stride, shift: s.KLen - s.QLen + s.posShift, slope: slope}
	if mask != nil {
		t.pad = mask[b*s.KLen+st.Offset : (b+1)*s.KLen]
	}
	return t
}

// vecWidth is the float32 vector width of math32.go's loops: spans are
// widened to its multiples so that no scalar tail is left.
const vecWidth = 16

// visibleCols is the columns [lo, hi) of a tile (key j0 first, nj keys)
// that query q may see at all: its Interval in a Partial tile of a mask
// that has one, else every column. lo >= hi: none.
func (t tileMasker[T]) visibleCols(kind blockmask.Kind, q, j0, nj int) (lo, hi int) {
	if kind != blockmask.Partial || t.interval == nil {
		return 0, nj
	}
	lo, hi = t.interval(q)
	return min(max(lo-j0, 0), nj), min(max(hi-j0, 0), nj)
}

// apply masks the tile's scores (ni rows from query i0, nj columns from key
// j0) and adds the ALiBi bias. It returns each row's span, lo and hi at
// 2r and 2r+1: the columns the kernels reduce and exponentiate (the rest of
// the row they zero), which are the row's visible columns widened to
// multiples of vecWidth within the tile, the widening set to -Inf here, or
// none (lo == hi). A nil result means every row's span is the whole row.
func (t tileMasker[T]) apply(kind blockmask.Kind, i0, ni, j0, nj int, st []T) []int32 {
	partial := kind == blockmask.Partial
	rows := partial && t.interval != nil
	columns := partial && t.keyVisible != nil
	elements := partial && !t.described
	if !rows && !columns && !elements && t.pad == nil && t.slope == 0 {
		return nil
	}
	runs := (*t.hidden)[:0]
	if columns {
		for c := 0; c < nj; c++ {
			if t.keyVisible(j0 + c) {
				continue
			}
			if n := len(runs); n > 0 && runs[n-1][1] == c {
				runs[n-1][1]++
			} else {
				runs = append(runs, [2]int{c, c + 1})
			}
		}
		*t.hidden = runs
	}
	var spans []int32
	if rows {
		spans = (*t.spans)[:0]
	}
	inf := T(math.Inf(-1))
	fill := func(row []T) {
		for c := range row {
			row[c] = inf
		}
	}
	for r := 0; r < ni; r++ {
		qi := i0 + r
		row := st[r*nj : (r+1)*nj]
		a, b := t.visibleCols(kind, qi, j0, nj)
		if rows {
			lo, hi := 0, 0
			if a < b {
				lo, hi = a&^(vecWidth-1), min(roundUp(b, vecWidth), nj)
				fill(row[lo:a])
				fill(row[b:hi])
			}
			spans = append(spans, int32(lo), int32(hi))
		}
		if a >= b {
			continue
		}
		for _, run := range runs {
			if x, y := max(run[0], a), min(run[1], b); x < y {
				fill(row[x:y])
			}
		}
		if !elements && t.pad == nil && t.slope == 0 {
			continue
		}
		for c := a; c < b; c++ {
			kj := j0 + c
			if elements && !t.visible(qi, kj) || t.pad != nil && t.pad[t.stride*kj] == 0 {
				row[c] = inf
				continue
			}
			if t.slope != 0 {
				d := t.stride*(qi-kj) + t.shift
				if d < 0 {
					d = -d
				}
				row[c] -= T(t.slope * float64(d))
			}
		}
	}
	if rows {
		*t.spans = spans
	}
	return spans
}

// rowSpan is row r's span from apply's result.
func rowSpan(spans []int32, r, nj int) (lo, hi int) {
	if spans == nil {
		return 0, nj
	}
	return int(spans[2*r]), int(spans[2*r+1])
}

// work is the multiply-adds of the pattern's visited tiles per query head,
// for parallelFor.
func (p *Pattern) work(s AttentionShape) int {
	n := 0
	for h := 0; h < s.Heads; h++ {
		for _, st := range p.Streams(h) {
			n += st.Mask.Tiles() * st.Mask.Block * st.Mask.Block
		}
	}
	return max(n/s.Heads, 1) * (s.HeadDim + s.VDim())
}

func tiledForward[T Float](s AttentionShape, p *Pattern, q, k, v, mask, out, lse []T) {
	dv := s.VDim()
	scale := T(s.scale())
	slopes := s.slopes()
	rows, cols := p.tileBounds()
	// out arrives zeroed (coreFuncs): rows outside every stream stay 0.
	parallelForOn(s.threadCount(), s.Batch*s.Heads, p.work(s), func(lo, hi int) {
		st := make([]T, rows*cols)
		acc := make([]T, rows*dv)
		m := make([]float64, rows)
		l := make([]float64, rows)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/s.Heads, bh%s.Heads
			slope := 0.0
			if slopes != nil {
				slope = slopes[h]
			}
			rowLSE := lse[bh*s.QLen : (bh+1)*s.QLen]
			for i := range rowLSE {
				rowLSE[i] = T(math.Inf(-1))
			}
			for _, stream := range p.Streams(h) {
				mk := stream.Mask
				at := layoutOf(s, stream, b, h)
				tm := newTileMasker(s, stream, mask, b, slope)
				for qt := 0; qt < mk.QueryTiles(); qt++ {
					i0 := qt * mk.Block
					ni := min(mk.Block, mk.Q-i0)
					for r := 0; r < ni; r++ {
						m[r], l[r] = math.Inf(-1), 0
					}
					clear(acc[:ni*dv])
					tiles, kinds := mk.Row(qt)
					for x, kt := range tiles {
						j0 := int(kt) * mk.Block
						nj := min(mk.Block, mk.K-j0)
						gemm(false, true, ni, nj, s.HeadDim, scale, q[at.q+i0*at.qLd:], at.qLd, k[at.k+j0*at.kLd:], at.kLd, 0, st, nj)
						spans := tm.apply(kinds[x], i0, ni, j0, nj, st)
						for r := 0; r < ni; r++ {
							row := st[r*nj : (r+1)*nj]
							lo, hi := rowSpan(spans, r, nj)
							if lo >= hi {
								clear(row)
								continue
							}
							mx := rowMax(row[lo:hi], m[r])
							if math.IsInf(mx, -1) { // nothing visible yet
								clear(row)
								continue
							}
							sum := expShiftSum(row[lo:hi], mx)
							clear(row[:lo])
							clear(row[hi:])
							if alpha := math.Exp(m[r] - mx); alpha != 1 {
								a := acc[r*dv : (r+1)*dv]
								for c := range a {
									a[c] *= T(alpha)
								}
								l[r] *= alpha
							}
							l[r] += sum
							m[r] = mx
						}
						gemm(false, false, ni, dv, nj, 1, st, nj, v[at.v+j0*at.vLd:], at.vLd, 1, acc, dv)
					}
					for r := 0; r < ni; r++ {
						if l[r] == 0 { // the query sees no key: output 0, logsumexp -Inf
							continue
						}
						o := out[at.o+(i0+r)*at.oLd : at.o+(i0+r)*at.oLd+dv]
						a := acc[r*dv : (r+1)*dv]
						pos := stream.Offset + stream.Stride*(i0+r)
						lse := m[r] + math.Log(l[r])
						prev := float64(rowLSE[pos])
						if math.IsInf(prev, -1) { // the row's first stream
							inv := T(1 / l[r])
							for c := range o {
								o[c] = a[c] * inv
							}
							rowLSE[pos] = T(lse)
							continue
						}
						// An earlier stream of this head showed the query keys
						// too: merge through the logsumexps (MergeAttention's
						// formula), the softmax over both streams' keys.
						both := max(prev, lse) + math.Log1p(math.Exp(-math.Abs(prev-lse)))
						wPrev, wNew := T(math.Exp(prev-both)), T(math.Exp(lse-both)/l[r])
						for c := range o {
							o[c] = o[c]*wPrev + a[c]*wNew
						}
						rowLSE[pos] = T(both)
					}
				}
			}
		}
	})
}

func tiledBackward[T Float](s AttentionShape, p *Pattern, q, k, v, mask, o, lse, do, dlse, dqOut, dkOut, dvOut []T) {
	dv := s.VDim()
	group := s.Heads / s.KVHeads
	scale := T(s.scale())
	slopes := s.slopes()
	rows, cols := p.tileBounds()
	// dq, dk and dv arrive zeroed (coreFuncs); the tiles add into them.
	// One worker per (sequence, key/value head): it owns the dK and dV rows
	// of that head and the dQ rows of the query heads of its group.
	parallelForOn(s.threadCount(), s.Batch*s.KVHeads, group*p.work(s)*2, func(lo, hi int) {
		pt := make([]T, rows*cols)
		dp := make([]T, rows*cols)
		dsum := make([]T, s.QLen)
		for bk := lo; bk < hi; bk++ {
			b, kh := bk/s.KVHeads, bk%s.KVHeads
			for h := kh * group; h < (kh+1)*group; h++ {
				slope := 0.0
				if slopes != nil {
					slope = slopes[h]
				}
				bh := b*s.Heads + h
				rowLSE, rowDL := lse[bh*s.QLen:(bh+1)*s.QLen], dlse[bh*s.QLen:(bh+1)*s.QLen]
				for _, stream := range p.Streams(h) {
					mk := stream.Mask
					at := layoutOf(s, stream, b, h)
					tm := newTileMasker(s, stream, mask, b, slope)
					lseOf := func(i int) float64 { return float64(rowLSE[stream.Offset+stream.Stride*i]) }
					for i := 0; i < mk.Q; i++ { // D_i = dO_i . O_i - dL_i
						row := at.o + i*at.oLd
						dsum[i] = dot(o[row:row+dv], do[row:row+dv]) - rowDL[stream.Offset+stream.Stride*i]
					}
					for kt := 0; kt < mk.KeyTiles(); kt++ {
						j0 := kt * mk.Block
						nj := min(mk.Block, mk.K-j0)
						qtiles, kinds := mk.Col(kt)
						for x, qt := range qtiles {
							i0 := int(qt) * mk.Block
							ni := min(mk.Block, mk.Q-i0)
							gemm(false, true, ni, nj, s.HeadDim, scale, q[at.q+i0*at.qLd:], at.qLd, k[at.k+j0*at.kLd:], at.kLd, 0, pt, nj)
							spans := tm.apply(kinds[x], i0, ni, j0, nj, pt)
							for r := 0; r < ni; r++ { // P = exp(S - L)
								row := pt[r*nj : (r+1)*nj]
								lo, hi := rowSpan(spans, r, nj)
								if L := lseOf(i0 + r); math.IsInf(L, -1) || lo >= hi {
									clear(row) // the query sees no key here
								} else {
									expShift(row[lo:hi], L)
									clear(row[:lo])
									clear(row[hi:])
								}
							}
							doI := do[at.o+i0*at.oLd:]
							// dV_j += P^T dO_i ; dP = dO_i V_j^T
							gemm(true, false, nj, dv, ni, 1, pt, nj, doI, at.oLd, 1, dvOut[at.v+j0*at.vLd:], at.vLd)
							gemm(false, true, ni, nj, dv, 1, doI, at.oLd, v[at.v+j0*at.vLd:], at.vLd, 0, dp, nj)
							// dS = P * (dP - D)
							for r := 0; r < ni; r++ {
								d := dsum[i0+r]
								for c := r * nj; c < (r+1)*nj; c++ {
									dp[c] = pt[c] * (dp[c] - d)
								}
							}
							// dQ_i += scale dS K_j ; dK_j += scale dS^T Q_i
							gemm(false, false, ni, s.HeadDim, nj, scale, dp, nj, k[at.k+j0*at.kLd:], at.kLd, 1, dqOut[at.q+i0*at.qLd:], at.qLd)
							gemm(true, false, nj, s.HeadDim, ni, scale, dp, nj, q[at.q+i0*at.qLd:], at.qLd, 1, dkOut[at.k+j0*at.kLd:], at.kLd)
						}
					}
				}
			}
		}
	})
}
