package graph

import (
	"fmt"
	"math/rand/v2"
	"strings"

	G "gorgonia.org/gorgonia"
)

// attentionGPUCase is a GPU check of an attention core (the dense one, or
// the flash one: the tiled core with no pattern), forward and backward:
// O and L, and through loss = sum(O * rO) + sum(L * rL), with random rO
// and rL, the gradients of q, k and v, so that the backward gets both dO
// and dL. pad, if not nil, is the key mask: pad(b, j) for a padded key j
// of sequence b.
type attentionGPUCase struct {
	flash bool
	s     AttentionShape
	pad   func(b, j int) bool
	sd    float64 // the inputs' standard deviation (0: 1)
	// padScale, if not 0, multiplies the padded keys' k: their scores,
	// which the kernels compute before they drop them, then reach
	// hundreds, and a padded key's P = exp(S - L) overflows (it must
	// still get dk = dv = 0, not Inf or NaN).
	padScale float64
}

// attentionGPUCases are the checks of the attention cores' GPU path
// (graph/cuda/attention.cu): every head dim it is instantiated for (16,
// 32, 64, 128; one row a thread, or split over 2 or 4 lanes), causal and
// bidirectional, padding (a sequence with every key padded, where each
// query sees no key: O = 0, L = -Inf, bidirectional; and left padding
// under the causal mask, where the first queries see none), GQA (2 and 4
// query heads per kv head), ALiBi (a power of two of heads and not),
// QLen < KLen with the causal mask and QLen > KLen without, lengths that
// are no multiple of any tile, a scale given, and one larger case over
// many tiles (T = 1024).
func attentionGPUCases() []GPUCase {
	specs := attentionGPUSpecs()
	out := make([]GPUCase, len(specs))
	for i, c := range specs {
		out[i] = c.gpuCase()
	}
	return out
}

// attentionGPUSpecs are attentionGPUCases' shapes and masks.
func attentionGPUSpecs() []attentionGPUCase {
	trailing := func(n int) func(b, j int) bool { return func(b, j int) bool { return b == 0 && j >= n } }
	return []attentionGPUCase{
		{flash: true, s: AttentionShape{Batch: 2, QLen: 77, KLen: 77, Heads: 4, KVHeads: 2, HeadDim: 32, Causal: true}},
		{s: AttentionShape{Batch: 2, QLen: 77, KLen: 77, Heads: 4, KVHeads: 2, HeadDim: 32}},
		{s: AttentionShape{Batch: 3, QLen: 70, KLen: 70, Heads: 2, KVHeads: 1, HeadDim: 64}, pad: func(b, j int) bool {
			switch b {
			case 0:
				return j >= 57
			case 1:
				return true // every key: no query of this sequence sees any
			}
			return j%3 == 1
		}, padScale: 60},
		{flash: true, s: AttentionShape{Batch: 2, QLen: 90, KLen: 90, Heads: 2, KVHeads: 2, HeadDim: 64, Causal: true}, pad: func(b, j int) bool {
			if b == 1 {
				return j < 20 // left padding: queries 0..19 see no key
			}
			return j >= 80
		}, padScale: 60},
		{flash: true, s: AttentionShape{Batch: 2, QLen: 50, KLen: 130, Heads: 4, KVHeads: 1, HeadDim: 32, Causal: true, ALiBi: true, Scale: 0.3}},
		{s: AttentionShape{Batch: 2, QLen: 90, KLen: 45, Heads: 3, KVHeads: 1, HeadDim: 16, ALiBi: true}, pad: trailing(40)},
		{flash: true, s: AttentionShape{Batch: 2, QLen: 100, KLen: 100, Heads: 2, KVHeads: 2, HeadDim: 16}, sd: 1.5},
		{s: AttentionShape{Batch: 1, QLen: 33, KLen: 100, Heads: 2, KVHeads: 2, HeadDim: 128, Causal: true}},
		{flash: true, s: AttentionShape{Batch: 1, QLen: 70, KLen: 70, Heads: 2, KVHeads: 2, HeadDim: 128, ALiBi: true}},
		{flash: true, s: AttentionShape{Batch: 1, QLen: 200, KLen: 200, Heads: 2, KVHeads: 1, HeadDim: 64, Causal: true}},
		{flash: true, s: AttentionShape{Batch: 2, QLen: 1024, KLen: 1024, Heads: 4, KVHeads: 4, HeadDim: 32, Causal: true}},
	}
}

func (c attentionGPUCase) gpuCase() GPUCase {
	s := c.s
	name := "Attention (dense core) and its gradients, O and L"
	if c.flash {
		name = "FlashAttention (tiled core) and its gradients, O and L"
	}
	var flags []string
	if s.Causal {
		flags = append(flags, "causal")
	}
	if s.ALiBi {
		flags = append(flags, "alibi")
	}
	if s.Scale != 0 {
		flags = append(flags, fmt.Sprintf("scale %g", s.Scale))
	}
	if c.pad != nil {
		flags = append(flags, "padded")
	}
	shape := fmt.Sprintf("B%d Q%d K%d H%d/%d d%d %s", s.Batch, s.QLen, s.KLen, s.Heads, s.KVHeads, s.HeadDim, strings.Join(flags, " "))
	return GPUCase{Name: name, Shape: strings.TrimSpace(shape), Build: c.build}
}

func (c attentionGPUCase) build(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
	s := c.s
	sd := c.sd
	if sd == 0 {
		sd = 1
	}
	dv := s.VDim()
	nOut, nLSE := s.Batch*s.QLen*s.Heads*dv, s.Batch*s.Heads*s.QLen
	qv := gaussF32(rng, s.Batch*s.QLen*s.Heads*s.HeadDim, sd)
	kv := gaussF32(rng, s.Batch*s.KLen*s.KVHeads*s.HeadDim, sd)
	vv := gaussF32(rng, s.Batch*s.KLen*s.KVHeads*dv, 1)
	rO, rL := gaussF32(rng, nOut, 1), gaussF32(rng, nLSE, 1)
	var mv []float32
	if c.pad != nil {
		mv = make([]float32, s.Batch*s.KLen)
		for b := 0; b < s.Batch; b++ {
			for j := 0; j < s.KLen; j++ {
				row := kv[(b*s.KLen+j)*s.KVHeads*s.HeadDim : (b*s.KLen+j+1)*s.KVHeads*s.HeadDim]
				switch {
				case !c.pad(b, j):
					mv[b*s.KLen+j] = 1
				case c.padScale != 0:
					for x := range row {
						row[x] *= float32(c.padScale)
					}
				}
			}
		}
	}
	clone := func(x []float32) []float32 { return append([]float32(nil), x...) }
	q := inputF32(g, "q", clone(qv), s.Batch*s.QLen, s.Heads*s.HeadDim)
	k := inputF32(g, "k", clone(kv), s.Batch*s.KLen, s.KVHeads*s.HeadDim)
	v := inputF32(g, "v", clone(vv), s.Batch*s.KLen, s.KVHeads*dv)
	var mask *G.Node
	if mv != nil {
		mask = inputF32(g, "mask", clone(mv), s.Batch*s.KLen)
	}
	core := DenseAttentionLSE
	if c.flash {
		core = TiledAttentionLSE
	}
	o, lse, err := core(q, k, v, mask, s, nil)
	if err != nil {
		return nil, nil, err
	}
	// loss = sum(O rO) + sum(L rL). With a query that sees no key, L is
	// -Inf there and the loss is not finite, but its gradient is still rL.
	wo, err := G.HadamardProd(o, inputF32(g, "rO", clone(rO), s.Batch*s.QLen, s.Heads*dv))
	if err != nil {
		return nil, nil, err
	}
	wl, err := G.HadamardProd(lse, inputF32(g, "rL", clone(rL), s.Batch*s.Heads, s.QLen))
	if err != nil {
		return nil, nil, err
	}
	so, err := G.Sum(wo)
	if err != nil {
		return nil, nil, err
	}
	sl, err := G.Sum(wl)
	if err != nil {
		return nil, nil, err
	}
	loss, err := G.Add(so, sl)
	if err != nil {
		return nil, nil, err
	}
	grads, err := G.Grad(loss, q, k, v)
	if err != nil {
		return nil, nil, err
	}

	// The reference: the same core's CPU kernels in float64 (the op's own
	// forward and backward, which the gradient checks test against finite
	// differences), on the same inputs, with dO = rO and dL = rL.
	fns := denseFuncs[float64](s, nil)
	if c.flash {
		fns = tiledFuncs[float64](s, FullPattern(s, DefaultFlashBlock))
	}
	var m64 []float64
	if mv != nil {
		m64 = f64(mv)
	}
	q64, k64, v64 := f64(qv), f64(kv), f64(vv)
	wantO, wantL := make([]float64, nOut), make([]float64, nLSE)
	fns.forward(q64, k64, v64, m64, wantO, wantL, nil)
	nq, nk, nv := s.gradSizes()
	wantDQ, wantDK, wantDV := make([]float64, nq), make([]float64, nk), make([]float64, nv)
	fns.backward(q64, k64, v64, m64, wantO, wantL, nil, f64(rO), f64(rL), wantDQ, wantDK, wantDV)
	return []*G.Node{o, lse, grads[0], grads[1], grads[2]}, [][]float64{wantO, wantL, wantDQ, wantDK, wantDV}, nil
}
