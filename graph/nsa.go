package graph

import (
	"fmt"
	"math"
	"runtime"
	"slices"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// NSAShape is the shape of Native Sparse Attention's cores (Yuan et al.
// 2025, "Native Sparse Attention: Hardware-Aligned and Natively Trainable
// Sparse Attention"): Batch sequences of Len tokens, Heads heads of HeadDim
// dims, each head its own key/value group; compression blocks of Block
// tokens every Stride tokens; selection blocks of SelectBlock tokens, of
// which each query keeps Selected; causal or bidirectional.
type NSAShape struct {
	Batch, Len, Heads, HeadDim int
	Block, Stride              int // l and d: compressed token i covers [i*d, i*d + l)
	SelectBlock, Selected      int // l' and n: selection block j covers [j*l', (j+1)*l')
	Causal                     bool
	// Tile is the kernels' tile: query rows per tile of both branches and
	// compressed tokens per tile of the compression branch; 0 means
	// DefaultNSATile. It changes the blocking only (the result up to
	// rounding).
	Tile int
}

// DefaultNSATile is the NSA kernels' default tile (NSAShape.Tile).
const DefaultNSATile = 128

func (s NSAShape) tile() int {
	if s.Tile > 0 {
		return s.Tile
	}
	return DefaultNSATile
}

// Compressed is the number of compressed tokens per sequence and head,
// nc = floor((Len - l)/d) + 1, 0 when Len < l.
func (s NSAShape) Compressed() int {
	if s.Len < s.Block || s.Stride < 1 {
		return 0
	}
	return (s.Len-s.Block)/s.Stride + 1
}

// Blocks is the number of selection blocks per sequence, ceil(Len/l').
func (s NSAShape) Blocks() int { return (s.Len + s.SelectBlock - 1) / s.SelectBlock }

// visible is the number of compressed tokens query t may see: causal,
// those whose block has ended (i*d + l - 1 <= t); bidirectional, all.
func (s NSAShape) visible(t int) int {
	if !s.Causal {
		return s.Compressed()
	}
	if t < s.Block-1 {
		return 0
	}
	return min((t-s.Block+1)/s.Stride+1, s.Compressed())
}

// candidates is the number of selection blocks query t chooses from:
// causal, those that start at or before t; bidirectional, all.
func (s NSAShape) candidates(t int) int {
	if !s.Causal {
		return s.Blocks()
	}
	return t/s.SelectBlock + 1
}

// Validate reports an impossible shape.
func (s NSAShape) Validate() error {
	switch {
	case s.Batch < 1 || s.Len < 1 || s.Heads < 1 || s.HeadDim < 1:
		return fmt.Errorf("nsa: sizes must be positive: %+v", s)
	case s.Block < 1 || s.Stride < 1 || s.Stride > s.Block || s.Block%s.Stride != 0:
		return fmt.Errorf("nsa: the compression stride %d must divide the compression block %d", s.Stride, s.Block)
	case s.SelectBlock < 1 || s.SelectBlock%s.Stride != 0:
		return fmt.Errorf("nsa: the selection block %d must be a positive multiple of the compression stride %d", s.SelectBlock, s.Stride)
	case s.Selected < 3:
		return fmt.Errorf("nsa: at least 3 selected blocks (1 initial and 2 local), got %d", s.Selected)
	}
	return nil
}

func (s NSAShape) attention(kLen int) AttentionShape {
	return AttentionShape{Batch: s.Batch, QLen: s.Len, KLen: kLen, Heads: s.Heads, KVHeads: s.Heads, HeadDim: s.HeadDim}
}

func (s NSAShape) name(kind string, masked bool) string {
	return fmt.Sprintf("%s(%+v,masked=%t)", kind, s, masked)
}

func (s NSAShape) noBlockErr() error {
	return fmt.Errorf("nsa: a sequence of %d tokens has no compression block of %d", s.Len, s.Block)
}

// checkMask checks an optional key mask's shape [Batch*Len].
func (s NSAShape) checkMask(name string, in []tensor.Shape, i int) error {
	if len(in) > i && !in[i].Eq(tensor.Shape{s.Batch * s.Len}) {
		return shapeErr(name, "want key mask [%d], got %v", s.Batch*s.Len, in[i])
	}
	return nil
}

// withMask appends the optional mask to children and its dims to typ.
func withMask(children G.Nodes, dims []int, mask *G.Node) (G.Nodes, []int) {
	if mask != nil {
		return append(children, mask), append(dims, 1)
	}
	return children, dims
}

// BlockUnfold gathers NSA's compression blocks of x [Batch*Len, Heads*HeadDim]
// into rows: the result is [Batch*nc*Heads, l*HeadDim] with row
// (b*nc + i)*Heads + h, column r*HeadDim + c holding x[b*Len + i*d + r,
// h*HeadDim + c], or 0 where keyMask (optional, [Batch*Len]) marks that
// position padded; a row-wise map to HeadDim columns then reshapes for
// free to [Batch*nc, Heads*HeadDim]. Its backward scatter-adds the rows
// back (overlapping blocks, d < l, add up; padded positions get none).
// Time and memory O(T l/d H dh).
func BlockUnfold(x, keyMask *G.Node, s NSAShape) (*G.Node, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	nc := s.Compressed()
	if nc == 0 {
		return nil, s.noBlockErr()
	}
	name := s.name("BlockUnfold", keyMask != nil)
	children, dims := withMask(G.Nodes{x}, []int{2}, keyMask)
	return apply(&op{
		name:  name,
		arity: len(children),
		typ:   fnType(append(dims, 2)...),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if want := (tensor.Shape{s.Batch * s.Len, s.Heads * s.HeadDim}); !in[0].Eq(want) {
				return nil, shapeErr(name, "want x %v, got %v", want, in[0])
			}
			if err := s.checkMask(name, in, 1); err != nil {
				return nil, err
			}
			return tensor.Shape{s.Batch * nc * s.Heads, s.Block * s.HeadDim}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			is32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), s.Batch*nc*s.Heads, s.Block*s.HeadDim)
			if is32 {
				blockUnfold(s, data[float32](in[0]), data[float32](out), maskData[float32](in, 1), false)
			} else {
				blockUnfold(s, data[float64](in[0]), data[float64](out), maskData[float64](in, 1), false)
			}
			return out, nil
		},
		diffWRT: []bool{true, false}[:len(children)],
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			d, err := blockFold(grad, keyMask, s)
			if keyMask != nil {
				return G.Nodes{d, nil}, err
			}
			return G.Nodes{d}, err
		},
	}, children...)
}

// blockFold is BlockUnfold's adjoint: it scatter-adds the rows of g
// [Batch*nc*Heads, l*HeadDim] into [Batch*Len, Heads*HeadDim], skipping
// padded positions.
func blockFold(g, keyMask *G.Node, s NSAShape) (*G.Node, error) {
	name := s.name("BlockFold", keyMask != nil)
	children, dims := withMask(G.Nodes{g}, []int{2}, keyMask)
	return apply(&op{
		name:  name,
		arity: len(children),
		typ:   fnType(append(dims, 2)...),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			return tensor.Shape{s.Batch * s.Len, s.Heads * s.HeadDim}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			is32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), s.Batch*s.Len, s.Heads*s.HeadDim)
			if is32 {
				blockUnfold(s, data[float32](out), data[float32](in[0]), maskData[float32](in, 1), true)
			} else {
				blockUnfold(s, data[float64](out), data[float64](in[0]), maskData[float64](in, 1), true)
			}
			return out, nil
		},
		diffWRT: []bool{true, false}[:len(children)],
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			d, err := BlockUnfold(grad, keyMask, s)
			if keyMask != nil {
				return G.Nodes{d, nil}, err
			}
			return G.Nodes{d}, err
		},
	}, children...)
}

// blockUnfold copies x into the unfolded u, or (fold) adds u back into x,
// skipping the positions mask (nil: none) marks padded.
func blockUnfold[T Float](s NSAShape, x, u, mask []T, fold bool) {
	nc, dh := s.Compressed(), s.HeadDim
	dx := s.Heads * dh
	for b := 0; b < s.Batch; b++ {
		for i := 0; i < nc; i++ {
			for r := 0; r < s.Block; r++ {
				pos := b*s.Len + i*s.Stride + r
				if mask != nil && mask[pos] == 0 {
					continue
				}
				for h := 0; h < s.Heads; h++ {
					xr := x[pos*dx+h*dh:][:dh]
					ur := u[((b*nc+i)*s.Heads+h)*s.Block*dh+r*dh:][:dh]
					if fold {
						for c := range xr {
							xr[c] += ur[c]
						}
					} else {
						copy(ur, xr)
					}
				}
			}
		}
	}
}

// compressedMask fills cm [Batch*nc] with 1 for each compressed token
// whose block holds a real (unpadded) key of mask [Batch*Len], 0 otherwise.
func compressedMask[T Float](s NSAShape, mask, cm []T) {
	nc := s.Compressed()
	for b := 0; b < s.Batch; b++ {
		for i := 0; i < nc; i++ {
			cm[b*nc+i] = 0
			for r := 0; r < s.Block; r++ {
				if mask[b*s.Len+i*s.Stride+r] != 0 {
					cm[b*nc+i] = 1
					break
				}
			}
		}
	}
}

// CompressedMask maps a key mask [Batch*Len] to the compressed tokens'
// mask [Batch*nc]: 1 iff the token's block holds a real key. No gradient.
func CompressedMask(keyMask *G.Node, s NSAShape) (*G.Node, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	nc := s.Compressed()
	if nc == 0 {
		return nil, s.noBlockErr()
	}
	name := s.name("CompressedMask", true)
	return apply(&op{
		name:  name,
		arity: 1,
		typ:   fnType(1, 1),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if err := s.checkMask(name, in, 0); err != nil {
				return nil, err
			}
			return tensor.Shape{s.Batch * nc}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			out := newTensor(in[0].Dtype(), s.Batch*nc)
			if in[0].Dtype() == tensor.Float32 {
				compressedMask(s, data[float32](in[0]), data[float32](out))
			} else {
				compressedMask(s, data[float64](in[0]), data[float64](out))
			}
			return out, nil
		},
	}, keyMask)
}

// CompressedAttentionLSE is NSA's compression branch over q [Batch*Len,
// Heads*HeadDim] and the compressed keys and values kc, vc [Batch*nc,
// Heads*HeadDim]: causal, query t sees compressed token i iff its block
// has ended, i*d + l - 1 <= t; bidirectional, every token; in both only
// tokens whose block holds a real key (cmask [Batch*nc], CompressedMask;
// nil: every token),
//
//	o_t = sum_{i visible} softmax_i(q_t . kc_i / sqrt(dh)) vc_i
//
// and a query that sees none (causal: t < l - 1) outputs 0 with logsumexp
// -Inf. lse is [Batch*Heads, Len]. The kernels are FlashAttention's
// (tiledForward/tiledBackward) with the compressed tokens as keys: query
// tiles of Tile rows against tiles of Tile compressed tokens through gemm,
// up to the last token the tile's last row sees, each row masked beyond
// its own visible count, an online softmax forward; the backward
// recomputes P = exp(S - L) tile by tile. Time O(T nc dh) forward and
// backward; memory O(Tile^2) per worker besides the outputs (and O(workers
// nc dh) key-gradient buffers when the backward splits a head's queries,
// see headSplit).
func CompressedAttentionLSE(q, kc, vc, cmask *G.Node, s NSAShape) (out, lse *G.Node, err error) {
	if err := s.Validate(); err != nil {
		return nil, nil, err
	}
	nc := s.Compressed()
	if nc == 0 {
		return nil, nil, s.noBlockErr()
	}
	return applyCore(s.name("CompressedAttention", cmask != nil), s.attention(nc), q, kc, vc, cmask, compressedFuncs[float32](s), compressedFuncs[float64](s), nil)
}

func compressedFuncs[T Float](s NSAShape) coreFuncs[T] {
	return coreFuncs[T]{
		forward: func(q, k, v, cm, out, lse, _ []T) { compressedForward(s, q, k, v, cm, out, lse) },
		backward: func(q, k, v, cm, o, lse, _, do, dlse, dq, dk, dv []T) {
			compressedBackward(s, q, k, v, cm, o, lse, do, dlse, dq, dk, dv)
		},
	}
}

// cmpProbs turns the raw scaled scores sc[:m] of one query over its first
// m compressed tokens into probabilities p[:m] (cm, if not nil, the
// sequence's compressed mask: a masked token gets 0) and returns their
// logsumexp, -Inf (p all 0) when every one is masked. It overwrites sc.
func cmpProbs[T Float](sc, cm []T, p []float64) float64 {
	if cm != nil {
		for i := range sc {
			if cm[i] == 0 {
				sc[i] = T(math.Inf(-1))
			}
		}
	}
	mx := rowMax(sc, math.Inf(-1))
	if math.IsInf(mx, -1) {
		clear(p[:len(sc)])
		return mx
	}
	sum := expShiftSum(sc, mx)
	for i, x := range sc {
		p[i] = float64(x) / sum
	}
	return mx + math.Log(sum)
}

// seqMask is sequence b's part of a mask of n entries per sequence (nil
// stays nil).
func seqMask[T Float](mask []T, b, n int) []T {
	if mask == nil {
		return nil
	}
	return mask[b*n : (b+1)*n]
}

// maskCmpTile sets to -Inf the entries of the raw score tile st [ni, nj]
// (query rows i0.., compressed tokens j0..) that a row may not see: causal,
// tokens from its visible count on; and tokens cmb (the sequence's
// compressed mask, nil: none) marks empty.
func maskCmpTile[T Float](s NSAShape, st, cmb []T, i0, ni, j0, nj int) {
	inf := T(math.Inf(-1))
	for r := 0; r < ni; r++ {
		row := st[r*nj : (r+1)*nj]
		vis := min(max(s.visible(i0+r)-j0, 0), nj)
		for c := vis; c < nj; c++ {
			row[c] = inf
		}
		if cmb != nil {
			for c, x := range cmb[j0 : j0+vis] {
				if x == 0 {
					row[c] = inf
				}
			}
		}
	}
}

// compressedForward fills out and lse: for each (sequence, head, query
// tile), the compressed-token tiles up to the last one the tile's last row
// sees, through gemm with an online softmax (tiledForward's recurrence),
// out's rows serving as the accumulator. Items are independent (each owns
// its output rows), so they run in parallel.
func compressedForward[T Float](s NSAShape, q, kc, vc, cm, out, lse []T) {
	nc, dh, tile := s.Compressed(), s.HeadDim, s.tile()
	ld := s.Heads * dh
	scale := T(1 / math.Sqrt(float64(dh)))
	nt := (s.Len + tile - 1) / tile
	clear(out)
	parallelFor(s.Batch*s.Heads*nt, tile*nc*dh, func(lo, hi int) {
		st := make([]T, tile*tile)
		m := make([]float64, tile)
		l := make([]float64, tile)
		for it := lo; it < hi; it++ {
			bh, qt := it/nt, it%nt
			b, h := bh/s.Heads, bh%s.Heads
			i0 := qt * tile
			ni := min(tile, s.Len-i0)
			qOff, kOff := (b*s.Len+i0)*ld+h*dh, b*nc*ld+h*dh
			cmb := seqMask(cm, b, nc)
			for r := 0; r < ni; r++ {
				m[r], l[r] = math.Inf(-1), 0
			}
			last := s.visible(i0 + ni - 1) // visible counts grow with t
			for j0 := 0; j0 < last; j0 += tile {
				nj := min(tile, last-j0)
				gemm(false, true, ni, nj, dh, scale, q[qOff:], ld, kc[kOff+j0*ld:], ld, 0, st, nj)
				maskCmpTile(s, st, cmb, i0, ni, j0, nj)
				for r := 0; r < ni; r++ {
					row := st[r*nj : (r+1)*nj]
					mx := rowMax(row, m[r])
					if math.IsInf(mx, -1) { // nothing visible yet
						clear(row)
						continue
					}
					sum := expShiftSum(row, mx)
					if alpha := math.Exp(m[r] - mx); alpha != 1 {
						o := out[qOff+r*ld:][:dh]
						for c := range o {
							o[c] *= T(alpha)
						}
						l[r] *= alpha
					}
					l[r] += sum
					m[r] = mx
				}
				gemm(false, false, ni, dh, nj, 1, st, nj, vc[kOff+j0*ld:], ld, 1, out[qOff:], ld)
			}
			rowLSE := lse[bh*s.Len+i0:][:ni]
			for r := 0; r < ni; r++ {
				if l[r] == 0 { // the query sees no token: output 0, logsumexp -Inf
					rowLSE[r] = T(math.Inf(-1))
					continue
				}
				o := out[qOff+r*ld:][:dh]
				inv := T(1 / l[r])
				for c := range o {
					o[c] *= inv
				}
				rowLSE[r] = T(m[r] + math.Log(l[r]))
			}
		}
	})
}

// compressedWeights fills the dense weights [Batch*Heads*Len, nc] of the
// compression branch (CompressedWeights), row by row.
func compressedWeights[T Float](s NSAShape, q, kc, cm, weights []T) {
	nc, dh := s.Compressed(), s.HeadDim
	ld := s.Heads * dh
	scale := 1 / math.Sqrt(float64(dh))
	clear(weights)
	sc := make([]T, nc)
	p := make([]float64, nc)
	for bh := 0; bh < s.Batch*s.Heads; bh++ {
		b, h := bh/s.Heads, bh%s.Heads
		for t := 0; t < s.Len; t++ {
			m := s.visible(t)
			qi := q[(b*s.Len+t)*ld+h*dh:][:dh]
			for i := 0; i < m; i++ {
				sc[i] = T(scale * float64(dot(qi, kc[(b*nc+i)*ld+h*dh:][:dh])))
			}
			cmpProbs(sc[:m], seqMask(cm, b, nc), p)
			for i := 0; i < m; i++ {
				weights[(bh*s.Len+t)*nc+i] = T(p[i])
			}
		}
	}
}

// headSplit divides a backward over (sequence, head) pairs into items: a
// pair's query tiles in segs segments, segs > 1 only when there are fewer
// pairs than workers (GOMAXPROCS). An item owns its query rows (dq); with
// one segment it owns its pair's key rows too, otherwise it adds its key
// gradients into its own buffers of kRows x dh each, which reduce then sums
// into the pair's rows: memory O(workers kRows dh) only in that case.
type headSplit[T Float] struct {
	pairs, segs, tiles, kRows, dh int
	bufK, bufV                    []T
}

func newHeadSplit[T Float](pairs, tiles, kRows, dh int) *headSplit[T] {
	hs := &headSplit[T]{pairs: pairs, segs: 1, tiles: tiles, kRows: kRows, dh: dh}
	if w := runtime.GOMAXPROCS(0); w > pairs && tiles > 1 {
		hs.segs = min((w+pairs-1)/pairs, tiles)
	}
	if hs.segs > 1 {
		hs.bufK = make([]T, pairs*hs.segs*kRows*dh)
		hs.bufV = make([]T, pairs*hs.segs*kRows*dh)
	}
	return hs
}

// items is the number of work items, pairs x segs.
func (hs *headSplit[T]) items() int { return hs.pairs * hs.segs }

// item is item it's pair, its query tiles [t0, t1), and where its key
// gradients go: dk and dv from row offset off with row stride ld (the
// outputs' own, given) or the item's buffers.
func (hs *headSplit[T]) item(it int, dk, dv []T, off, ld int) (bh, t0, t1 int, dkT, dvT []T, offT, ldT int) {
	bh, seg := it/hs.segs, it%hs.segs
	t0, t1 = seg*hs.tiles/hs.segs, (seg+1)*hs.tiles/hs.segs
	if hs.segs == 1 {
		return bh, t0, t1, dk, dv, off, ld
	}
	n := hs.kRows * hs.dh
	return bh, t0, t1, hs.bufK[it*n : (it+1)*n], hs.bufV[it*n : (it+1)*n], 0, hs.dh
}

// reduce adds the items' buffers into dk and dv, pair bh's key row r at
// keyOff(bh) + r*ld.
func (hs *headSplit[T]) reduce(dk, dv []T, ld int, keyOff func(bh int) int) {
	if hs.segs == 1 {
		return
	}
	n := hs.kRows * hs.dh
	parallelFor(hs.pairs, hs.segs*n*2, func(lo, hi int) {
		for bh := lo; bh < hi; bh++ {
			for seg := 0; seg < hs.segs; seg++ {
				it := bh*hs.segs + seg
				bk, bv := hs.bufK[it*n:(it+1)*n], hs.bufV[it*n:(it+1)*n]
				for r := 0; r < hs.kRows; r++ {
					off := keyOff(bh) + r*ld
					dst, src := dk[off:off+hs.dh], bk[r*hs.dh:(r+1)*hs.dh]
					for c := range dst {
						dst[c] += src[c]
					}
					dst, src = dv[off:off+hs.dh], bv[r*hs.dh:(r+1)*hs.dh]
					for c := range dst {
						dst[c] += src[c]
					}
				}
			}
		}
	})
}

// compressedBackward: work items of headSplit (a (sequence, head) pair, or
// a run of its query tiles with private key-gradient buffers when there
// are fewer pairs than workers); query tile by query tile and compressed
// tile by tile as in the forward, P = exp(S - L), D = rowsum(dO * O) - dL,
// dV += P^T dO, dS = P * (dO V^T - D), dQ += scale dS K, dK += scale dS^T Q.
func compressedBackward[T Float](s NSAShape, q, kc, vc, cm, o, lse, do, dlse, dq, dkc, dvc []T) {
	nc, dh, tile := s.Compressed(), s.HeadDim, s.tile()
	ld := s.Heads * dh
	scale := T(1 / math.Sqrt(float64(dh)))
	clear(dq)
	clear(dkc)
	clear(dvc)
	nt := (s.Len + tile - 1) / tile
	hs := newHeadSplit[T](s.Batch*s.Heads, nt, nc, dh)
	keyOff := func(bh int) int { return bh/s.Heads*nc*ld + bh%s.Heads*dh }
	parallelFor(hs.items(), s.Len*nc*dh*4/hs.segs, func(lo, hi int) {
		pt := make([]T, tile*tile)
		dp := make([]T, tile*tile)
		dsum := make([]T, tile)
		for it := lo; it < hi; it++ {
			bh, t0, t1, dkT, dvT, tOff, tld := hs.item(it, dkc, dvc, keyOff(it/hs.segs), ld)
			b, h := bh/s.Heads, bh%s.Heads
			kOff := keyOff(bh)
			cmb := seqMask(cm, b, nc)
			for i0 := t0 * tile; i0 < min(t1*tile, s.Len); i0 += tile {
				ni := min(tile, s.Len-i0)
				last := s.visible(i0 + ni - 1)
				if last == 0 {
					continue
				}
				qOff := (b*s.Len+i0)*ld + h*dh
				rowLSE, rowDL := lse[bh*s.Len+i0:][:ni], dlse[bh*s.Len+i0:][:ni]
				for r := 0; r < ni; r++ {
					off := qOff + r*ld
					dsum[r] = dot(o[off:off+dh], do[off:off+dh]) - rowDL[r]
				}
				for j0 := 0; j0 < last; j0 += tile {
					nj := min(tile, last-j0)
					gemm(false, true, ni, nj, dh, scale, q[qOff:], ld, kc[kOff+j0*ld:], ld, 0, pt, nj)
					maskCmpTile(s, pt, cmb, i0, ni, j0, nj)
					for r := 0; r < ni; r++ {
						row := pt[r*nj : (r+1)*nj]
						if L := float64(rowLSE[r]); math.IsInf(L, -1) {
							clear(row) // the query sees no token
						} else {
							expShift(row, L)
						}
					}
					gemm(true, false, nj, dh, ni, 1, pt, nj, do[qOff:], ld, 1, dvT[tOff+j0*tld:], tld)
					gemm(false, true, ni, nj, dh, 1, do[qOff:], ld, vc[kOff+j0*ld:], ld, 0, dp, nj)
					for r := 0; r < ni; r++ {
						d := dsum[r]
						for c := r * nj; c < (r+1)*nj; c++ {
							dp[c] = pt[c] * (dp[c] - d)
						}
					}
					gemm(false, false, ni, dh, nj, scale, dp, nj, kc[kOff+j0*ld:], ld, 1, dq[qOff:], ld)
					gemm(true, false, nj, dh, ni, scale, dp, nj, q[qOff:], ld, 1, dkT[tOff+j0*tld:], tld)
				}
			}
		}
	})
	hs.reduce(dkc, dvc, ld, keyOff)
}

// SelectedAttentionLSE is NSA's selection branch over q, k, v [Batch*Len,
// Heads*HeadDim] (the selection branch's keys and values), the compressed
// keys kc [Batch*nc, Heads*HeadDim] (nil when the sequence has no
// compression block) and the key mask [Batch*Len] (nil: none). Per query t
// and head, with p_cmp(t, i) the compression branch's softmax (recomputed
// here from q and kc, over the tokens CompressedAttentionLSE lets t see),
//
//	p_slc(t, j) = sum of p_cmp(t, i) over the i with [i*d, i*d+l)
//	              overlapping block j = [j*l', (j+1)*l')
//	I_t = the Selected candidate blocks that come first by (forced, p_slc
//	      descending, j ascending); candidates: causal j*l' <= t,
//	      bidirectional every block; forced: j = 0, t/l' and (t-l')/l'
//	o_t = sum_{j' in blocks I_t, unpadded, (causal) j' <= t}
//	          softmax(q_t . k_j' / sqrt(dh)) v_j'
//
// (0 and logsumexp -Inf for a query whose blocks hold no key it may see).
// The selection is not differentiated and kc gets no gradient from this
// op; the kept block indices (O(T n) per head, -1 for unused slots) are
// saved for the backward, which recomputes the n l' scores per query.
// lse is [Batch*Heads, Len]. Kernels: per query tile of Tile rows, p_cmp
// by one gemm against the compressed tokens; then, for each block in the
// union of the rows' kept blocks, one gemm of the rows that keep it
// (gathered) against the block's l' keys, so that every score computed is
// a kept one (no masked waste beyond causality and padding inside a
// block); the backward likewise per block (dS by gemm, dQ scattered back,
// dK and dV by gemm). Time O(T nc dh) for the importance and O(T n l' dh)
// for the attention, forward and backward; memory O(T n) block indices,
// O(T H dh) transposed copies of k (and v, backward) so that a block is a
// row-packed gemm operand, O(Tile (n l' + nc + dh)) per worker, and
// O(workers T dh) key-gradient buffers only when the backward splits a
// head's queries (headSplit).
func SelectedAttentionLSE(q, k, v, kc, keyMask *G.Node, s NSAShape) (out, lse *G.Node, err error) {
	if err := s.Validate(); err != nil {
		return nil, nil, err
	}
	nc := s.Compressed()
	if (kc == nil) != (nc == 0) {
		return nil, nil, fmt.Errorf("nsa: a sequence of %d tokens has %d compressed tokens; the compressed keys must be given iff it has some", s.Len, nc)
	}
	if q.Dtype() == tensor.Float32 && s.Blocks() > 1<<24 {
		return nil, nil, fmt.Errorf("nsa: float32 holds block indices up to 2^24, got %d blocks", s.Blocks())
	}
	masked := keyMask != nil
	name := s.name("SelectedAttention", masked)
	as := s.attention(s.Len)
	children := G.Nodes{q, k, v}
	dims := []int{2, 2, 2}
	diff := []bool{true, true, true}
	if kc != nil {
		children, dims, diff = append(children, kc), append(dims, 2), append(diff, false)
	}
	iMask := len(children)
	if masked {
		children, dims, diff = append(children, keyMask), append(dims, 1), append(diff, false)
	}
	nOut := s.Batch * s.Len * s.Heads * s.HeadDim
	nLSE := s.Batch * s.Heads * s.Len
	nAll := nOut + nLSE + nLSE*s.Selected
	packed, err := apply(&op{
		name:  name,
		arity: len(children),
		typ:   fnType(append(dims, 1)...),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if err := as.checkShapes(in[:3]); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			if kc != nil && !in[3].Eq(tensor.Shape{s.Batch * nc, s.Heads * s.HeadDim}) {
				return nil, shapeErr(name, "want compressed keys [%d %d], got %v", s.Batch*nc, s.Heads*s.HeadDim, in[3])
			}
			if err := s.checkMask(name, in, iMask); err != nil {
				return nil, err
			}
			return tensor.Shape{nAll}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			is32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), nAll)
			var kcv G.Value
			if kc != nil {
				kcv = in[3]
			}
			if is32 {
				d := data[float32](out)
				selectedForward(s, data[float32](in[0]), data[float32](in[1]), data[float32](in[2]), optData[float32](kcv), maskData[float32](in, iMask),
					d[:nOut], d[nOut:nOut+nLSE], d[nOut+nLSE:], nil)
			} else {
				d := data[float64](out)
				selectedForward(s, data[float64](in[0]), data[float64](in[1]), data[float64](in[2]), optData[float64](kcv), maskData[float64](in, iMask),
					d[:nOut], d[nOut:nOut+nLSE], d[nOut+nLSE:], nil)
			}
			return out, nil
		},
		diffWRT: diff,
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			args := append(G.Nodes{}, in[:3]...)
			if masked {
				args = append(args, keyMask)
			}
			args = append(args, out, grad)
			packedGrad, err := apply(selectedGradOp(s, name, masked, nOut, nLSE), args...)
			if err != nil {
				return nil, err
			}
			grads, err := as.unpackGrads(packedGrad, false)
			if err != nil {
				return nil, err
			}
			for range in[3:] {
				grads = append(grads, nil)
			}
			return grads, nil
		},
	}, children...)
	if err != nil {
		return nil, nil, err
	}
	if out, err = Slice(packed, 0, s.Batch*s.Len, s.Heads*s.HeadDim); err != nil {
		return nil, nil, err
	}
	if lse, err = Slice(packed, nOut, s.Batch*s.Heads, s.Len); err != nil {
		return nil, nil, err
	}
	return out, lse, nil
}

// optData is the data of an optional value (nil for none).
func optData[T Float](v G.Value) []T {
	if v == nil {
		return nil
	}
	return data[T](v)
}

// selectedGradOp maps (q, k, v, [mask,] packed O|L|blocks, its gradient)
// to dq|dk|dv.
func selectedGradOp(s NSAShape, fwdName string, masked bool, nOut, nLSE int) *op {
	name := "Grad" + fwdName
	n := s.Batch * s.Len * s.Heads * s.HeadDim
	arity, typ := 5, fnType(2, 2, 2, 1, 1, 1)
	if masked {
		arity, typ = 6, fnType(2, 2, 2, 1, 1, 1, 1)
	}
	return &op{
		name:  name,
		arity: arity,
		typ:   typ,
		shape: func(in []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{3 * n}, nil },
		do: func(in []G.Value) (G.Value, error) {
			is32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), 3*n)
			pk, dpk := in[arity-2], in[arity-1]
			if is32 {
				d, o, do := data[float32](out), data[float32](pk), data[float32](dpk)
				selectedBackward(s, data[float32](in[0]), data[float32](in[1]), data[float32](in[2]), maskData[float32](in[:arity-2], 3),
					o[:nOut], o[nOut:nOut+nLSE], o[nOut+nLSE:], do[:nOut], do[nOut:nOut+nLSE], d[:n], d[n:2*n], d[2*n:])
			} else {
				d, o, do := data[float64](out), data[float64](pk), data[float64](dpk)
				selectedBackward(s, data[float64](in[0]), data[float64](in[1]), data[float64](in[2]), maskData[float64](in[:arity-2], 3),
					o[:nOut], o[nOut:nOut+nLSE], o[nOut+nLSE:], do[:nOut], do[nOut:nOut+nLSE], d[:n], d[n:2*n], d[2*n:])
			}
			return out, nil
		},
	}
}

// selectBlocks writes query t's kept selection blocks, ascending, into ix
// (-1 for unused slots) from the compression probabilities p[:m]; imp and
// cand are scratch of Blocks() entries.
func (s NSAShape) selectBlocks(t int, p []float64, m int, imp []float64, cand []int, ix []int) {
	nb := s.candidates(t)
	// Compressed token i overlaps block j iff j l'/d - l/d < i < (j+1) l'/d
	// (l and l' are multiples of d): a run of i per block, summed in
	// increasing i.
	clear(imp[:nb])
	per, span := s.SelectBlock/s.Stride, s.Block/s.Stride
	for j := 0; j < nb; j++ {
		lo, hi := max(j*per-span+1, 0), min((j+1)*per, m)
		if lo >= m {
			break
		}
		sum := 0.0
		for _, x := range p[lo:hi] {
			sum += x
		}
		imp[j] = sum
	}
	// Forced blocks rank above every other: importance +Inf.
	imp[0] = math.Inf(1)
	imp[t/s.SelectBlock] = math.Inf(1)
	if t >= s.SelectBlock {
		imp[(t-s.SelectBlock)/s.SelectBlock] = math.Inf(1)
	}
	// The first n by (importance descending, j ascending), by insertion:
	// kept stays in that order, and a candidate enters only if it beats
	// the last kept one (a tie goes to the lower j, already kept).
	n := min(nb, s.Selected)
	kept := cand[:0]
	for j := 0; j < nb; j++ {
		if len(kept) == n {
			if !(imp[j] > imp[kept[n-1]]) {
				continue
			}
			kept[n-1] = j
		} else {
			kept = append(kept, j)
		}
		for x := len(kept) - 1; x > 0 && imp[kept[x-1]] < imp[j]; x-- {
			kept[x], kept[x-1] = kept[x-1], kept[x]
		}
	}
	slices.Sort(kept)
	for x := range ix {
		ix[x] = -1
	}
	copy(ix, kept)
}

// blockUnion groups a query tile's kept blocks: used lists the blocks kept
// by at least one row, ascending, and the entries start[u]..start[u+1] of
// rows and slots are the (row, slot of the row's kept list) pairs that keep
// used[u], rows ascending. cnt and pos are per-block scratch.
type blockUnion struct {
	used, start, rows, slots, cnt, pos []int
}

func newBlockUnion(blocks, pairs int) *blockUnion {
	return &blockUnion{start: make([]int, 0, pairs+1), rows: make([]int, pairs), slots: make([]int, pairs),
		cnt: make([]int, blocks), pos: make([]int, blocks)}
}

// build groups ix [ni, n] (each row's kept blocks, ascending, -1 after).
func (u *blockUnion) build(ix []int, ni, n int) {
	u.used = u.used[:0]
	for r := 0; r < ni; r++ {
		for _, j := range ix[r*n : (r+1)*n] {
			if j < 0 {
				break
			}
			if u.cnt[j] == 0 {
				u.used = append(u.used, j)
			}
			u.cnt[j]++
		}
	}
	slices.Sort(u.used)
	u.start = u.start[:0]
	at := 0
	for _, j := range u.used {
		u.start = append(u.start, at)
		u.pos[j] = at
		at += u.cnt[j]
		u.cnt[j] = 0
	}
	u.start = append(u.start, at)
	for r := 0; r < ni; r++ {
		for x, j := range ix[r*n : (r+1)*n] {
			if j < 0 {
				break
			}
			u.rows[u.pos[j]], u.slots[u.pos[j]] = r, x
			u.pos[j]++
		}
	}
}

// group is the x-th used block and its (row, slot) pairs.
func (u *blockUnion) group(x int) (j int, rows, slots []int) {
	return u.used[x], u.rows[u.start[x]:u.start[x+1]], u.slots[u.start[x]:u.start[x+1]]
}

// gatherTileRows copies rows rs of src (row r at off + r*ld, dh wide) into dst
// [len(rs), dh].
func gatherTileRows[T Float](dst, src []T, off, ld, dh int, rs []int) {
	for g, r := range rs {
		copy(dst[g*dh:(g+1)*dh], src[off+r*ld:][:dh])
	}
}

// keyEnd is how many of block j's keys (from j0, nj of them) query t may
// see by causality.
func (s NSAShape) keyEnd(t, j0, nj int) int {
	if s.Causal {
		return min(nj, max(t-j0+1, 0))
	}
	return nj
}

// selectTile computes the kept blocks of query rows i0..i0+ni of sequence b,
// head h into ix [ni, n]: the compressed scores of the tile by one gemm
// against the compressed tokens its last row sees (pc scratch [ni, nc]),
// each row's softmax over its own visible tokens, then selectBlocks.
func selectTile[T Float](s NSAShape, q, kc, cm []T, b, h, i0, ni int, pc []T, p, imp []float64, cand, ix []int) {
	nc, dh, n := s.Compressed(), s.HeadDim, s.Selected
	ld := s.Heads * dh
	last := 0
	if kc != nil {
		last = s.visible(i0 + ni - 1)
	}
	if last > 0 {
		gemm(false, true, ni, last, dh, T(1/math.Sqrt(float64(dh))), q[(b*s.Len+i0)*ld+h*dh:], ld, kc[b*nc*ld+h*dh:], ld, 0, pc, last)
	}
	cmb := seqMask(cm, b, nc)
	for r := 0; r < ni; r++ {
		m := 0
		if last > 0 {
			m = s.visible(i0 + r)
			cmpProbs(pc[r*last:][:m], cmb, p)
		}
		s.selectBlocks(i0+r, p, m, imp, cand, ix[r*n:(r+1)*n])
	}
}

// headsT is x [Batch*Len, Heads*HeadDim] transposed per (sequence, head):
// pair bh = b*Heads + h is [HeadDim, Len] from bh*HeadDim*Len, so that a
// block of keys is a non-transposed gemm operand (which packs by rows).
// O(T H dh) memory and time.
func headsT[T Float](s NSAShape, x []T) []T {
	dh, ld := s.HeadDim, s.Heads*s.HeadDim
	out := make([]T, len(x))
	parallelFor(s.Batch*s.Heads, s.Len*dh, func(lo, hi int) {
		for bh := lo; bh < hi; bh++ {
			b, h := bh/s.Heads, bh%s.Heads
			dst := out[bh*dh*s.Len : (bh+1)*dh*s.Len]
			for t := 0; t < s.Len; t++ {
				for c, v := range x[(b*s.Len+t)*ld+h*dh:][:dh] {
					dst[c*s.Len+t] = v
				}
			}
		}
	})
	return out
}

// selectedForward fills out, lse and the kept blocks idx; with k nil only
// idx (SelectedBlocks); with v nil idx and the dense weights
// [Batch*Heads*Len, Len] (SelectedWeights). Per (sequence, head, query
// tile): the tile's selection (selectTile), then for each block of the
// union of its rows' kept blocks one gemm of the rows that keep it
// (gathered) against the block's keys, the scores written into each row's
// slots of sc [tile, n l'] (-Inf where masked or unused); a softmax per
// row over its slots; and per block one gemm of the gathered weights by
// the block's values, added to the rows' outputs. Items own their output
// rows, so they run in parallel.
func selectedForward[T Float](s NSAShape, q, k, v, kc, mask, out, lse, idx, weights []T) {
	nc, dh, n, lb, tile := s.Compressed(), s.HeadDim, s.Selected, s.SelectBlock, s.tile()
	ld := s.Heads * dh
	scale := T(1 / math.Sqrt(float64(dh)))
	nb := s.Blocks()
	nt := (s.Len + tile - 1) / tile
	W := n * lb
	var cm []T
	if kc != nil && mask != nil {
		cm = make([]T, s.Batch*nc)
		compressedMask(s, mask, cm)
	}
	clear(out)
	clear(weights)
	var kT []T
	if k != nil {
		kT = headsT(s, k)
	}
	parallelFor(s.Batch*s.Heads*nt, tile*(nc+W)*dh*2, func(lo, hi int) {
		pc := make([]T, tile*max(nc, 1))
		p := make([]float64, max(nc, 1))
		imp := make([]float64, nb)
		cand := make([]int, nb)
		ix := make([]int, tile*n)
		var u *blockUnion
		var sc, qg, sg, og []T
		var sum []float64
		if k != nil {
			u = newBlockUnion(nb, tile*n)
			sc, qg, sg, og = make([]T, tile*W), make([]T, tile*dh), make([]T, tile*lb), make([]T, tile*dh)
			sum = make([]float64, tile)
		}
		inf := T(math.Inf(-1))
		for it := lo; it < hi; it++ {
			bh, qt := it/nt, it%nt
			b, h := bh/s.Heads, bh%s.Heads
			i0 := qt * tile
			ni := min(tile, s.Len-i0)
			selectTile(s, q, kc, cm, b, h, i0, ni, pc, p, imp, cand, ix)
			for r := 0; r < ni; r++ {
				for x, j := range ix[r*n : (r+1)*n] {
					idx[(bh*s.Len+i0+r)*n+x] = T(j)
				}
			}
			if k == nil {
				continue // SelectedBlocks: the selection only
			}
			qOff, kOff := (b*s.Len+i0)*ld+h*dh, b*s.Len*ld+h*dh
			kTOff := bh * dh * s.Len
			mb := seqMask(mask, b, s.Len)
			u.build(ix, ni, n)
			for x := range sc[:ni*W] {
				sc[x] = inf
			}
			for x := range u.used { // S = scale Q_rows K_j^T into the rows' slots
				j, rs, xs := u.group(x)
				j0 := j * lb
				nj := min(lb, s.Len-j0)
				gatherTileRows(qg, q, qOff, ld, dh, rs)
				gemm(false, false, len(rs), nj, dh, scale, qg, dh, kT[kTOff+j0:], s.Len, 0, sg, nj)
				for g, r := range rs {
					end := s.keyEnd(i0+r, j0, nj)
					dst, src := sc[r*W+xs[g]*lb:][:end], sg[g*nj:][:end]
					if mb == nil {
						copy(dst, src)
						continue
					}
					for c, x := range src {
						if mb[j0+c] != 0 {
							dst[c] = x
						}
					}
				}
			}
			for r := 0; r < ni; r++ { // softmax over the row's used slots
				used := 0
				for used < n && ix[r*n+used] >= 0 {
					used++
				}
				row := sc[r*W : r*W+used*lb]
				mx := rowMax(row, math.Inf(-1))
				if math.IsInf(mx, -1) { // no key to see: output 0, logsumexp -Inf
					clear(row)
					sum[r] = 0
					if lse != nil {
						lse[bh*s.Len+i0+r] = inf
					}
					continue
				}
				sum[r] = expShiftSum(row, mx)
				if lse != nil {
					lse[bh*s.Len+i0+r] = T(mx + math.Log(sum[r]))
				}
				if v == nil { // SelectedWeights
					wr := weights[(bh*s.Len+i0+r)*s.Len:][:s.Len]
					for x, j := range ix[r*n : r*n+used] {
						for c := range min(lb, s.Len-j*lb) {
							wr[j*lb+c] = T(float64(row[x*lb+c]) / sum[r])
						}
					}
				}
			}
			if v == nil {
				continue
			}
			for x := range u.used { // O_rows += P_rows V_j
				j, rs, xs := u.group(x)
				j0 := j * lb
				nj := min(lb, s.Len-j0)
				for g, r := range rs {
					copy(sg[g*nj:(g+1)*nj], sc[r*W+xs[g]*lb:][:nj])
				}
				gemm(false, false, len(rs), dh, nj, 1, sg, nj, v[kOff+j0*ld:], ld, 0, og, dh)
				for g, r := range rs {
					o, src := out[qOff+r*ld:][:dh], og[g*dh:(g+1)*dh]
					for c := range o {
						o[c] += src[c]
					}
				}
			}
			for r := 0; r < ni; r++ {
				if sum[r] == 0 {
					continue
				}
				o := out[qOff+r*ld:][:dh]
				inv := T(1 / sum[r])
				for c := range o {
					o[c] *= inv
				}
			}
		}
	})
}

// selectedBackward: work items of headSplit as in compressedBackward;
// query tile by query tile, the union of the saved kept
// blocks grouped as in the forward, and per block (for the rows that keep
// it, gathered) P = exp(S - L), dV_j += P^T dO, dS = P * (dO V_j^T - D)
// with D = rowsum(dO * O) - dL, dQ += scale dS K_j (scattered back),
// dK_j += scale dS^T Q.
func selectedBackward[T Float](s NSAShape, q, k, v, mask, o, lse, idx, do, dlse, dq, dk, dv []T) {
	dh, n, lb, tile := s.HeadDim, s.Selected, s.SelectBlock, s.tile()
	ld := s.Heads * dh
	scale := T(1 / math.Sqrt(float64(dh)))
	clear(dq)
	clear(dk)
	clear(dv)
	nt := (s.Len + tile - 1) / tile
	hs := newHeadSplit[T](s.Batch*s.Heads, nt, s.Len, dh)
	kT, vT := headsT(s, k), headsT(s, v)
	keyOff := func(bh int) int { return bh/s.Heads*s.Len*ld + bh%s.Heads*dh }
	parallelFor(hs.items(), s.Len*n*lb*dh*4/hs.segs, func(lo, hi int) {
		u := newBlockUnion(s.Blocks(), tile*n)
		ix := make([]int, tile*n)
		qg, dog, tmp := make([]T, tile*dh), make([]T, tile*dh), make([]T, tile*dh)
		pt, dp := make([]T, tile*lb), make([]T, tile*lb)
		dsum := make([]T, tile)
		inf := T(math.Inf(-1))
		for it := lo; it < hi; it++ {
			bh, t0, t1, dkT, dvT, tOff, tld := hs.item(it, dk, dv, keyOff(it/hs.segs), ld)
			b, h := bh/s.Heads, bh%s.Heads
			kOff, kTOff := keyOff(bh), bh*dh*s.Len
			mb := seqMask(mask, b, s.Len)
			for i0 := t0 * tile; i0 < min(t1*tile, s.Len); i0 += tile {
				ni := min(tile, s.Len-i0)
				qOff := (b*s.Len+i0)*ld + h*dh
				for r := 0; r < ni; r++ {
					row := bh*s.Len + i0 + r
					for x := range n {
						ix[r*n+x] = int(idx[row*n+x])
					}
					if math.IsInf(float64(lse[row]), -1) { // the query sees no key
						ix[r*n] = -1
					}
					off := qOff + r*ld
					dsum[r] = dot(o[off:off+dh], do[off:off+dh]) - dlse[row]
				}
				u.build(ix, ni, n)
				for x := range u.used {
					j, rs, _ := u.group(x)
					j0 := j * lb
					nj := min(lb, s.Len-j0)
					c := len(rs)
					gatherTileRows(qg, q, qOff, ld, dh, rs)
					gatherTileRows(dog, do, qOff, ld, dh, rs)
					gemm(false, false, c, nj, dh, scale, qg, dh, kT[kTOff+j0:], s.Len, 0, pt, nj)
					for g, r := range rs { // P = exp(S - L), 0 where masked
						row := pt[g*nj : (g+1)*nj]
						L := float64(lse[bh*s.Len+i0+r])
						end := s.keyEnd(i0+r, j0, nj)
						if mb != nil {
							for c := range row[:end] {
								if mb[j0+c] == 0 {
									row[c] = inf
								}
							}
						}
						expShift(row[:end], L)
						clear(row[end:])
					}
					gemm(true, false, nj, dh, c, 1, pt, nj, dog, dh, 1, dvT[tOff+j0*tld:], tld)
					gemm(false, false, c, nj, dh, 1, dog, dh, vT[kTOff+j0:], s.Len, 0, dp, nj)
					for g, r := range rs {
						d := dsum[r]
						for x := g * nj; x < (g+1)*nj; x++ {
							dp[x] = pt[x] * (dp[x] - d)
						}
					}
					gemm(false, false, c, dh, nj, scale, dp, nj, k[kOff+j0*ld:], ld, 0, tmp, dh)
					for g, r := range rs {
						dst, src := dq[qOff+r*ld:][:dh], tmp[g*dh:(g+1)*dh]
						for x := range dst {
							dst[x] += src[x]
						}
					}
					gemm(true, false, nj, dh, c, scale, dp, nj, qg, dh, 1, dkT[tOff+j0*tld:], tld)
				}
			}
		}
	})
	hs.reduce(dk, dv, ld, keyOff)
}

// SelectedBlocks returns the selection blocks SelectedAttentionLSE keeps
// for q, kc (nil: no compressed tokens) and keyMask (nil: none),
// [Batch*Heads*Len, Selected] (row (b*Heads + h)*Len + t), ascending, -1
// for unused slots; no gradient. For inspecting a model and for tests.
func SelectedBlocks(q, kc, keyMask *G.Node, s NSAShape) (*G.Node, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	rows := s.Batch * s.Heads * s.Len
	children := G.Nodes{q}
	if kc != nil {
		children = append(children, kc)
	}
	children, _ = withMask(children, nil, keyMask)
	return nsaWeightsOp(s.name("SelectedBlocks", keyMask != nil), rows, s.Selected, children, func(in []G.Value, out G.Value) {
		var kcv, mv G.Value
		if kc != nil {
			kcv = in[1]
		}
		if keyMask != nil {
			mv = in[len(in)-1]
		}
		if out.Dtype() == tensor.Float32 {
			selectedForward(s, data[float32](in[0]), nil, nil, optData[float32](kcv), optData[float32](mv), nil, nil, data[float32](out), nil)
		} else {
			selectedForward(s, data[float64](in[0]), nil, nil, optData[float64](kcv), optData[float64](mv), nil, nil, data[float64](out), nil)
		}
	})
}

// CompressedWeights returns the compression branch's weights for q, kc and
// cmask (as CompressedAttentionLSE takes them) as a dense map
// [Batch*Heads*Len, nc] (row (b*Heads + h)*Len + t): the softmax over the
// compressed tokens query t sees, a row of zeros for one that sees none.
// No gradient; it materializes every map (trainer attnmap).
func CompressedWeights(q, kc, cmask *G.Node, s NSAShape) (*G.Node, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	nc := s.Compressed()
	if nc == 0 {
		return nil, s.noBlockErr()
	}
	rows := s.Batch * s.Heads * s.Len
	children, _ := withMask(G.Nodes{q, kc}, nil, cmask)
	return nsaWeightsOp(s.name("CompressedWeights", cmask != nil), rows, nc, children, func(in []G.Value, out G.Value) {
		if out.Dtype() == tensor.Float32 {
			compressedWeights(s, data[float32](in[0]), data[float32](in[1]), maskData[float32](in, 2), data[float32](out))
		} else {
			compressedWeights(s, data[float64](in[0]), data[float64](in[1]), maskData[float64](in, 2), data[float64](out))
		}
	})
}

// SelectedWeights returns the weights SelectedAttentionLSE applies to the
// selection branch's values for q, k, kc and keyMask as a dense map
// [Batch*Heads*Len, Len]: the softmax over the keys each query sees in its
// kept blocks, 0 elsewhere. No gradient; it materializes every map.
func SelectedWeights(q, k, kc, keyMask *G.Node, s NSAShape) (*G.Node, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	rows := s.Batch * s.Heads * s.Len
	children := G.Nodes{q, k}
	if kc != nil {
		children = append(children, kc)
	}
	children, _ = withMask(children, nil, keyMask)
	return nsaWeightsOp(s.name("SelectedWeights", keyMask != nil), rows, s.Len, children, func(in []G.Value, out G.Value) {
		var kcv, mv G.Value
		if kc != nil {
			kcv = in[2]
		}
		if keyMask != nil {
			mv = in[len(in)-1]
		}
		if out.Dtype() == tensor.Float32 {
			selectedForward(s, data[float32](in[0]), data[float32](in[1]), nil, optData[float32](kcv), optData[float32](mv), nil, nil,
				make([]float32, rows*s.Selected), data[float32](out))
		} else {
			selectedForward(s, data[float64](in[0]), data[float64](in[1]), nil, optData[float64](kcv), optData[float64](mv), nil, nil,
				make([]float64, rows*s.Selected), data[float64](out))
		}
	})
}

// nsaWeightsOp is an op without gradient: fill writes the [rows, cols]
// result from the inputs.
func nsaWeightsOp(name string, rows, cols int, children G.Nodes, fill func(in []G.Value, out G.Value)) (*G.Node, error) {
	dims := make([]int, 0, len(children)+1)
	for _, c := range children {
		dims = append(dims, c.Shape().Dims())
	}
	dims = append(dims, 2)
	return apply(&op{
		name:  name,
		arity: len(children),
		typ:   fnType(dims...),
		shape: func([]tensor.Shape) (tensor.Shape, error) { return tensor.Shape{rows, cols}, nil },
		do: func(in []G.Value) (G.Value, error) {
			if _, err := checkDtype(name, in...); err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), rows, cols)
			fill(in, out)
			return out, nil
		},
	}, children...)
}

// GatedSum is NSA's gated combination of branch outputs os[b] [N,
// Heads*HeadDim] with gates g [N, len(os)*Heads] (column b*Heads + h is the
// gate of branch b, head h): out[n, h*HeadDim + c] = sum_b g[n, b*Heads + h]
// os[b][n, h*HeadDim + c]. A nil branch output is zero (its gates get zero
// gradient): a branch with nothing to attend to, such as the compression
// branch of a sequence shorter than one block. O(N Heads HeadDim len(os)).
func GatedSum(g *G.Node, os []*G.Node, heads, headDim int) (*G.Node, error) {
	nb := len(os)
	var present []int
	children := G.Nodes{g}
	for b, o := range os {
		if o != nil {
			present = append(present, b)
			children = append(children, o)
		}
	}
	if len(present) == 0 || heads < 1 || headDim < 1 {
		return nil, fmt.Errorf("gated sum: want branches and positive sizes, got %d branches (%d given), %d heads of %d", nb, len(present), heads, headDim)
	}
	name := fmt.Sprintf("GatedSum(%d,%v,%d,%d)", nb, present, heads, headDim)
	np := len(present)
	typs := make([]int, np+2)
	for i := range typs {
		typs[i] = 2
	}
	return apply(&op{
		name:  name,
		arity: np + 1,
		typ:   fnType(typs...),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if len(in[0]) != 2 || in[0][1] != nb*heads {
				return nil, shapeErr(name, "want gates [N %d], got %v", nb*heads, in[0])
			}
			want := tensor.Shape{in[0][0], heads * headDim}
			for _, sh := range in[1:] {
				if !sh.Eq(want) {
					return nil, shapeErr(name, "want branch outputs %v, got %v", want, sh)
				}
			}
			return want, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			is32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			rows := in[0].Shape()[0]
			out := newTensor(in[0].Dtype(), rows, heads*headDim)
			if is32 {
				gatedSum(rows, heads, headDim, nb, present, values[float32](in), data[float32](out))
			} else {
				gatedSum(rows, heads, headDim, nb, present, values[float64](in), data[float64](out))
			}
			return out, nil
		},
		diffWRT: trues(np + 1),
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			rows := in[0].Shape()[0]
			gname := "Grad" + name
			n := rows*nb*heads + np*rows*heads*headDim
			packed, err := apply(&op{
				name:  gname,
				arity: np + 2,
				typ:   fnType(append(typs, 1)...),
				shape: func([]tensor.Shape) (tensor.Shape, error) { return tensor.Shape{n}, nil },
				do: func(in []G.Value) (G.Value, error) {
					is32, err := checkDtype(gname, in...)
					if err != nil {
						return nil, err
					}
					out := newTensor(in[0].Dtype(), n)
					if is32 {
						gatedSumGrad(rows, heads, headDim, nb, present, values[float32](in), data[float32](out))
					} else {
						gatedSumGrad(rows, heads, headDim, nb, present, values[float64](in), data[float64](out))
					}
					return out, nil
				},
			}, append(append(G.Nodes{}, in...), grad)...)
			if err != nil {
				return nil, err
			}
			shapes := [][2]int{{rows, nb * heads}}
			for range present {
				shapes = append(shapes, [2]int{rows, heads * headDim})
			}
			return Views(packed, shapes...)
		},
	}, children...)
}

// gatedSum: in = g, then the present branches' outputs (branch present[x]).
func gatedSum[T Float](rows, heads, dh, nb int, present []int, in [][]T, out []T) {
	g, os := in[0], in[1:]
	clear(out)
	for r := 0; r < rows; r++ {
		for x, o := range os {
			b := present[x]
			for h := 0; h < heads; h++ {
				w := g[r*nb*heads+b*heads+h]
				src := o[r*heads*dh+h*dh:][:dh]
				dst := out[r*heads*dh+h*dh:][:dh]
				for c := range dst {
					dst[c] += w * src[c]
				}
			}
		}
	}
}

// gatedSumGrad: in = g, the present outputs, dout; out = dg | do of each
// present branch (an absent branch's gates get 0).
func gatedSumGrad[T Float](rows, heads, dh, nb int, present []int, in [][]T, out []T) {
	g, os, dout := in[0], in[1:len(in)-1], in[len(in)-1]
	dg := out[:rows*nb*heads]
	clear(dg)
	for r := 0; r < rows; r++ {
		dr := dout[r*heads*dh:][:heads*dh]
		for x, o := range os {
			b := present[x]
			dob := out[rows*nb*heads+x*rows*heads*dh:][:rows*heads*dh]
			for h := 0; h < heads; h++ {
				w := g[r*nb*heads+b*heads+h]
				src := o[r*heads*dh+h*dh:][:dh]
				dsrc := dob[r*heads*dh+h*dh:][:dh]
				dd := dr[h*dh : (h+1)*dh]
				var acc T
				for c := range dd {
					acc += dd[c] * src[c]
					dsrc[c] = w * dd[c]
				}
				dg[r*nb*heads+b*heads+h] = acc
			}
		}
	}
}
