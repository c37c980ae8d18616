package graph

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// AttentionWeights returns the attention probabilities that Attention and
// FlashAttention apply to the values for the same q, k, keyMask and shape:
// P [Batch*Heads*QLen, KLen], row (b*Heads + h)*QLen + i holding
// softmax(scale * q_{b,i,h} . k_{b,j,kv(h)} + mask + ALiBi) over keys j, with
// the same scale, causal mask, key-padding mask, ALiBi slopes and GQA
// grouping as the cores, under pattern p (nil: none) as DenseAttention
// applies it (it shares their code: maskTile, hidePattern, softmaxRow).
// Masked keys get weight 0, and a query that sees no key gets a row of
// zeros, so that P V is exactly the cores' output.
//
// It exists to inspect a model (trainer attnmap) and is never part of a
// training graph: it materializes every QLen x KLen map, and it has no
// gradient (the node is not differentiable).
func AttentionWeights(q, k, keyMask *G.Node, s AttentionShape, p *Pattern) (*G.Node, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if p != nil {
		if err := p.check(s); err != nil {
			return nil, err
		}
	}
	masked := keyMask != nil
	name := fmt.Sprintf("AttentionWeights(%+v,scale=%g,masked=%t,pattern=%s)", s, s.scale(), masked, opID(p.id()))
	children := G.Nodes{q, k}
	typ := fnType(2, 2, 2)
	if masked {
		children = append(children, keyMask)
		typ = fnType(2, 2, 1, 2)
	}
	return apply(&op{
		name:  name,
		arity: len(children),
		typ:   typ,
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			wantQ := tensor.Shape{s.Batch * s.QLen, s.Heads * s.HeadDim}
			wantK := tensor.Shape{s.Batch * s.KLen, s.KVHeads * s.HeadDim}
			if !in[0].Eq(wantQ) || !in[1].Eq(wantK) {
				return nil, shapeErr(name, "want q %v and k %v; got %v, %v", wantQ, wantK, in[0], in[1])
			}
			if masked && !in[2].Eq(tensor.Shape{s.Batch * s.KLen}) {
				return nil, shapeErr(name, "want key mask [%d], got %v", s.Batch*s.KLen, in[2])
			}
			return tensor.Shape{s.Batch * s.Heads * s.QLen, s.KLen}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), s.Batch*s.Heads*s.QLen, s.KLen)
			if f32 {
				attentionWeights(s, p, data[float32](in[0]), data[float32](in[1]), maskData[float32](in, 2), data[float32](out))
			} else {
				attentionWeights(s, p, data[float64](in[0]), data[float64](in[1]), maskData[float64](in, 2), data[float64](out))
			}
			return out, nil
		},
	}, children...)
}

func attentionWeights[T Float](s AttentionShape, pat *Pattern, q, k, mask, out []T) {
	slopes := s.slopes()
	n := s.QLen * s.KLen
	parallelFor(s.Batch*s.Heads, n*s.HeadDim, func(lo, hi int) {
		for bh := lo; bh < hi; bh++ {
			probabilities(s, slopes, pat, q, k, mask, bh/s.Heads, bh%s.Heads, out[bh*n:(bh+1)*n], nil)
		}
	})
}
