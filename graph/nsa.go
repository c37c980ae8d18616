package graph

import (
	"cmp"
	"fmt"
	"math"
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
// -Inf. lse is [Batch*Heads, Len]. Time O(T nc dh) forward and backward,
// no memory besides the outputs (the backward recomputes the scores).
func CompressedAttentionLSE(q, kc, vc, cmask *G.Node, s NSAShape) (out, lse *G.Node, err error) {
	if err := s.Validate(); err != nil {
		return nil, nil, err
	}
	nc := s.Compressed()
	if nc == 0 {
		return nil, nil, s.noBlockErr()
	}
	return applyCore(s.name("CompressedAttention", cmask != nil), s.attention(nc), q, kc, vc, cmask, compressedFuncs[float32](s), compressedFuncs[float64](s))
}

func compressedFuncs[T Float](s NSAShape) coreFuncs[T] {
	return coreFuncs[T]{
		forward: func(q, k, v, cm, out, lse, _ []T) { compressedForward(s, q, k, v, cm, out, lse, nil) },
		backward: func(q, k, v, cm, _, lse, _, do, dlse, dq, dk, dv []T) {
			compressedBackward(s, q, k, v, cm, lse, do, dlse, dq, dk, dv)
		},
	}
}

// cmpScores fills p[:m] with query row qi's probabilities over the first m
// compressed tokens of kc (offset kOff, row stride ld; cm, if not nil, the
// sequence's compressed mask: a masked token gets 0) and returns their
// logsumexp, -Inf (p all 0) when every one is masked.
func cmpScores[T Float](qi, kc, cm []T, kOff, ld, dh, m int, scale float64, p []float64) float64 {
	mx := math.Inf(-1)
	for i := 0; i < m; i++ {
		if cm != nil && cm[i] == 0 {
			p[i] = math.Inf(-1)
			continue
		}
		p[i] = scale * float64(dot(qi, kc[kOff+i*ld:][:dh]))
		mx = max(mx, p[i])
	}
	if math.IsInf(mx, -1) {
		clear(p[:m])
		return mx
	}
	sum := 0.0
	for i := 0; i < m; i++ {
		p[i] = math.Exp(p[i] - mx)
		sum += p[i]
	}
	for i := 0; i < m; i++ {
		p[i] /= sum
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

// compressedForward fills out and lse, or (vc nil) the dense weights
// [Batch*Heads*Len, nc] instead.
func compressedForward[T Float](s NSAShape, q, kc, vc, cm, out, lse, weights []T) {
	nc, dh := s.Compressed(), s.HeadDim
	ld := s.Heads * dh
	scale := 1 / math.Sqrt(float64(dh))
	clear(out)
	clear(weights)
	parallelFor(s.Batch*s.Heads, s.Len*nc*dh*2, func(lo, hi int) {
		p := make([]float64, nc)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/s.Heads, bh%s.Heads
			kOff := b*nc*ld + h*dh
			for t := 0; t < s.Len; t++ {
				row := bh*s.Len + t
				m := s.visible(t)
				qi := q[(b*s.Len+t)*ld+h*dh:][:dh]
				L := math.Inf(-1)
				if m > 0 {
					L = cmpScores(qi, kc, seqMask(cm, b, nc), kOff, ld, dh, m, scale, p)
				}
				if vc == nil {
					for i := 0; i < m; i++ {
						weights[row*nc+i] = T(p[i])
					}
					continue
				}
				lse[row] = T(L)
				if math.IsInf(L, -1) {
					continue
				}
				o := out[(b*s.Len+t)*ld+h*dh:][:dh]
				for i := 0; i < m; i++ {
					vi := vc[kOff+i*ld:][:dh]
					w := T(p[i])
					for c := range o {
						o[c] += w * vi[c]
					}
				}
			}
		}
	})
}

func compressedBackward[T Float](s NSAShape, q, kc, vc, cm, lse, do, dlse, dq, dkc, dvc []T) {
	nc, dh := s.Compressed(), s.HeadDim
	ld := s.Heads * dh
	scale := 1 / math.Sqrt(float64(dh))
	clear(dq)
	clear(dkc)
	clear(dvc)
	// One worker per (sequence, head): it owns that head's dkc and dvc rows.
	parallelFor(s.Batch*s.Heads, s.Len*nc*dh*4, func(lo, hi int) {
		p := make([]float64, nc)
		dp := make([]float64, nc)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/s.Heads, bh%s.Heads
			kOff := b*nc*ld + h*dh
			cmb := seqMask(cm, b, nc)
			for t := 0; t < s.Len; t++ {
				row := bh*s.Len + t
				m := s.visible(t)
				L := float64(lse[row])
				if m == 0 || math.IsInf(L, -1) {
					continue
				}
				qOff := (b*s.Len+t)*ld + h*dh
				qi, doi, dqi := q[qOff:][:dh], do[qOff:][:dh], dq[qOff:][:dh]
				d := -float64(dlse[row])
				for i := 0; i < m; i++ {
					p[i], dp[i] = 0, 0
					if cmb != nil && cmb[i] == 0 {
						continue
					}
					p[i] = math.Exp(scale*float64(dot(qi, kc[kOff+i*ld:][:dh])) - L)
					dp[i] = float64(dot(doi, vc[kOff+i*ld:][:dh]))
					d += p[i] * dp[i]
				}
				for i := 0; i < m; i++ {
					if p[i] == 0 {
						continue
					}
					g := T(scale * p[i] * (dp[i] - d))
					ki, dki, dvi := kc[kOff+i*ld:][:dh], dkc[kOff+i*ld:][:dh], dvc[kOff+i*ld:][:dh]
					pw := T(p[i])
					for c := 0; c < dh; c++ {
						dqi[c] += g * ki[c]
						dki[c] += g * qi[c]
						dvi[c] += pw * doi[c]
					}
				}
			}
		}
	})
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
// lse is [Batch*Heads, Len]. Time O(T nc dh) for the importance and
// O(T n l' dh) for the attention, forward and backward; memory O(T n).
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
					o[nOut:nOut+nLSE], o[nOut+nLSE:], do[:nOut], do[nOut:nOut+nLSE], d[:n], d[n:2*n], d[2*n:])
			} else {
				d, o, do := data[float64](out), data[float64](pk), data[float64](dpk)
				selectedBackward(s, data[float64](in[0]), data[float64](in[1]), data[float64](in[2]), maskData[float64](in[:arity-2], 3),
					o[nOut:nOut+nLSE], o[nOut+nLSE:], do[:nOut], do[nOut:nOut+nLSE], d[:n], d[n:2*n], d[2*n:])
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
	clear(imp)
	for i := 0; i < m; i++ {
		lo, hi := i*s.Stride/s.SelectBlock, (i*s.Stride+s.Block-1)/s.SelectBlock
		for j := lo; j <= hi; j++ {
			imp[j] += p[i]
		}
	}
	// Forced blocks rank above every other: importance +Inf.
	imp[0] = math.Inf(1)
	imp[t/s.SelectBlock] = math.Inf(1)
	if t >= s.SelectBlock {
		imp[(t-s.SelectBlock)/s.SelectBlock] = math.Inf(1)
	}
	cand = cand[:nb]
	for j := range cand {
		cand[j] = j
	}
	slices.SortStableFunc(cand, func(a, b int) int { return cmp.Compare(imp[b], imp[a]) })
	kept := cand[:min(nb, s.Selected)]
	slices.Sort(kept)
	for x := range ix {
		ix[x] = -1
	}
	copy(ix, kept)
}

// selectedKeys calls fn(x, j) for the x-th key j query t sees in the kept
// blocks ix: unpadded (mb: the sequence's key mask, nil for none) and,
// causal, j <= t.
func selectedKeys[T Float](s NSAShape, t int, ix []int, mb []T, fn func(x, j int)) {
	x := 0
	end := s.Len
	if s.Causal {
		end = t + 1
	}
	for _, blk := range ix {
		if blk < 0 {
			break
		}
		for j := blk * s.SelectBlock; j < min((blk+1)*s.SelectBlock, end); j++ {
			if mb != nil && mb[j] == 0 {
				continue
			}
			fn(x, j)
			x++
		}
	}
}

// selectedForward fills out, lse and the kept blocks idx; with k nil only
// idx (SelectedBlocks); with v nil idx and the dense weights
// [Batch*Heads*Len, Len] (SelectedWeights).
func selectedForward[T Float](s NSAShape, q, k, v, kc, mask, out, lse, idx, weights []T) {
	nc, dh, n := s.Compressed(), s.HeadDim, s.Selected
	ld := s.Heads * dh
	scale := 1 / math.Sqrt(float64(dh))
	nb := s.Blocks()
	var cm []T
	if kc != nil && mask != nil {
		cm = make([]T, s.Batch*nc)
		compressedMask(s, mask, cm)
	}
	clear(out)
	clear(weights)
	parallelFor(s.Batch*s.Heads, s.Len*(nc+n*s.SelectBlock)*dh*2, func(lo, hi int) {
		p := make([]float64, max(nc, 1))
		imp := make([]float64, nb)
		cand := make([]int, nb)
		ix := make([]int, n)
		sc := make([]float64, n*s.SelectBlock)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/s.Heads, bh%s.Heads
			mb := seqMask(mask, b, s.Len)
			for t := 0; t < s.Len; t++ {
				row := bh*s.Len + t
				qOff := (b*s.Len+t)*ld + h*dh
				qi := q[qOff:][:dh]
				m := 0
				if kc != nil {
					if m = s.visible(t); m > 0 {
						cmpScores(qi, kc, seqMask(cm, b, nc), b*nc*ld+h*dh, ld, dh, m, scale, p)
					}
				}
				s.selectBlocks(t, p, m, imp, cand, ix)
				for x, j := range ix {
					idx[row*n+x] = T(j)
				}
				if k == nil {
					continue // SelectedBlocks: the selection only
				}
				mx := math.Inf(-1)
				cnt := 0
				selectedKeys(s, t, ix, mb, func(x, j int) {
					sc[x] = scale * float64(dot(qi, k[(b*s.Len+j)*ld+h*dh:][:dh]))
					mx = max(mx, sc[x])
					cnt = x + 1
				})
				if cnt == 0 { // no key to see: output 0, logsumexp -Inf
					if lse != nil {
						lse[row] = T(math.Inf(-1))
					}
					continue
				}
				sum := 0.0
				for x := 0; x < cnt; x++ {
					sc[x] = math.Exp(sc[x] - mx)
					sum += sc[x]
				}
				if v == nil {
					selectedKeys(s, t, ix, mb, func(x, j int) { weights[row*s.Len+j] = T(sc[x] / sum) })
					continue
				}
				lse[row] = T(mx + math.Log(sum))
				o := out[qOff:][:dh]
				selectedKeys(s, t, ix, mb, func(x, j int) {
					w := T(sc[x] / sum)
					vj := v[(b*s.Len+j)*ld+h*dh:][:dh]
					for c := range o {
						o[c] += w * vj[c]
					}
				})
			}
		}
	})
}

func selectedBackward[T Float](s NSAShape, q, k, v, mask, lse, idx, do, dlse, dq, dk, dv []T) {
	dh, n := s.HeadDim, s.Selected
	ld := s.Heads * dh
	scale := 1 / math.Sqrt(float64(dh))
	clear(dq)
	clear(dk)
	clear(dv)
	// One worker per (sequence, head): it owns that head's dk and dv rows.
	parallelFor(s.Batch*s.Heads, s.Len*n*s.SelectBlock*dh*4, func(lo, hi int) {
		p := make([]float64, n*s.SelectBlock)
		dp := make([]float64, n*s.SelectBlock)
		ix := make([]int, n)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/s.Heads, bh%s.Heads
			mb := seqMask(mask, b, s.Len)
			for t := 0; t < s.Len; t++ {
				row := bh*s.Len + t
				L := float64(lse[row])
				if math.IsInf(L, -1) {
					continue // the query sees no key
				}
				for x := range ix {
					ix[x] = int(idx[row*n+x])
				}
				qOff := (b*s.Len+t)*ld + h*dh
				qi, doi, dqi := q[qOff:][:dh], do[qOff:][:dh], dq[qOff:][:dh]
				d := -float64(dlse[row])
				selectedKeys(s, t, ix, mb, func(x, j int) {
					p[x] = math.Exp(scale*float64(dot(qi, k[(b*s.Len+j)*ld+h*dh:][:dh])) - L)
					dp[x] = float64(dot(doi, v[(b*s.Len+j)*ld+h*dh:][:dh]))
					d += p[x] * dp[x]
				})
				selectedKeys(s, t, ix, mb, func(x, j int) {
					g := T(scale * p[x] * (dp[x] - d))
					off := (b*s.Len+j)*ld + h*dh
					kj, dkj, dvj := k[off:][:dh], dk[off:][:dh], dv[off:][:dh]
					pw := T(p[x])
					for c := 0; c < dh; c++ {
						dqi[c] += g * kj[c]
						dkj[c] += g * qi[c]
						dvj[c] += pw * doi[c]
					}
				})
			}
		}
	})
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
			compressedForward(s, data[float32](in[0]), data[float32](in[1]), nil, maskData[float32](in, 2), nil, nil, data[float32](out))
		} else {
			compressedForward(s, data[float64](in[0]), data[float64](in[1]), nil, maskData[float64](in, 2), nil, nil, data[float64](out))
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
