package graph

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// coreFuncs are an attention core's kernels for one dtype: the forward
// fills the output, each row's logsumexp and the saved values the backward
// needs besides them (top-k's kept indices; most cores save none); the
// backward maps the inputs, the forward's O, L and saved values and the
// gradients of O and L to dq, dk and dv. Saved values get no gradient.
// applyCore hands both kernels freshly allocated, zeroed outputs (out,
// lse, saved; dq, dk, dv), so a kernel need not clear what it leaves 0.
type coreFuncs[T Float] struct {
	saved    int // elements saved after O and L
	forward  func(q, k, v, mask, out, lse, saved []T)
	backward func(q, k, v, mask, o, lse, saved, do, dlse, dq, dk, dv []T)
}

// applyCore builds an attention core op over q, k, v and the optional key
// mask: its output packs O [Batch*QLen, Heads*VDim], the logsumexp
// [Batch*Heads, QLen] and the kernels' saved values into one vector, so that the backward op (named
// "Grad" + name) reads both from the forward's result rather than hidden
// state and takes the gradients of both; O and L are returned as copies
// (see Slice). The dense and the tiled cores differ only in their kernels.
// gpu is the core's CUDA path (nil: none; only cores that save nothing
// beyond O and L have one).
func applyCore(name string, s AttentionShape, q, k, v, keyMask *G.Node, f32 coreFuncs[float32], f64 coreFuncs[float64], gpu *coreGPU) (out, lse *G.Node, err error) {
	masked := keyMask != nil
	children := G.Nodes{q, k, v}
	typ := fnType(2, 2, 2, 1)
	diff := []bool{true, true, true}
	if masked {
		children = append(children, keyMask)
		typ = fnType(2, 2, 2, 1, 1)
		diff = append(diff, false)
	}
	nOut := s.Batch * s.QLen * s.Heads * s.VDim()
	nLSE := s.Batch * s.Heads * s.QLen
	nAll := nOut + nLSE + f64.saved
	if f64.saved > 0 {
		gpu = nil
	}
	packed, err := apply(&op{
		name:  name,
		arity: len(children),
		typ:   typ,
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if err := s.checkShapes(in); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			return tensor.Shape{nAll}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			is32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), nAll)
			if is32 {
				d := data[float32](out)
				f32.forward(data[float32](in[0]), data[float32](in[1]), data[float32](in[2]), maskData[float32](in, 3), d[:nOut], d[nOut:nOut+nLSE], d[nOut+nLSE:])
			} else {
				d := data[float64](out)
				f64.forward(data[float64](in[0]), data[float64](in[1]), data[float64](in[2]), maskData[float64](in, 3), d[:nOut], d[nOut:nOut+nLSE], d[nOut+nLSE:])
			}
			return out, nil
		},
		diffWRT: diff,
		gpu:     gpu.forwardKernel(),
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			args := append(append(G.Nodes{}, in...), out, grad)
			packedGrad, err := apply(coreGradOp(name, s, masked, nOut, nLSE, f32, f64, gpu.backwardKernel()), args...)
			if err != nil {
				return nil, err
			}
			return s.unpackGrads(packedGrad, masked)
		},
	}, children...)
	if err != nil {
		return nil, nil, err
	}
	if out, err = Slice(packed, 0, s.Batch*s.QLen, s.Heads*s.VDim()); err != nil {
		return nil, nil, err
	}
	if lse, err = Slice(packed, nOut, s.Batch*s.Heads, s.QLen); err != nil {
		return nil, nil, err
	}
	return out, lse, nil
}

// coreGradOp maps (q, k, v, [mask,] packed O|L|saved, its gradient) to
// dq|dk|dv; gpu is its CUDA path (nil: none).
func coreGradOp(fwdName string, s AttentionShape, masked bool, nOut, nLSE int, f32 coreFuncs[float32], f64 coreFuncs[float64], gpu *gpuKernel) *op {
	name := "Grad" + fwdName
	typ := fnType(2, 2, 2, 1, 1, 1)
	arity := 5
	if masked {
		typ = fnType(2, 2, 2, 1, 1, 1, 1)
		arity = 6
	}
	nq, nk, nv := s.gradSizes()
	return &op{
		name:  name,
		arity: arity,
		typ:   typ,
		shape: func(in []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{nq + nk + nv}, nil },
		gpu:   gpu,
		do: func(in []G.Value) (G.Value, error) {
			is32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), nq+nk+nv)
			pk, dpk := in[arity-2], in[arity-1]
			if is32 {
				d, o, do := data[float32](out), data[float32](pk), data[float32](dpk)
				f32.backward(data[float32](in[0]), data[float32](in[1]), data[float32](in[2]), maskData[float32](in[:arity-2], 3),
					o[:nOut], o[nOut:nOut+nLSE], o[nOut+nLSE:], do[:nOut], do[nOut:nOut+nLSE], d[:nq], d[nq:nq+nk], d[nq+nk:])
			} else {
				d, o, do := data[float64](out), data[float64](pk), data[float64](dpk)
				f64.backward(data[float64](in[0]), data[float64](in[1]), data[float64](in[2]), maskData[float64](in[:arity-2], 3),
					o[:nOut], o[nOut:nOut+nLSE], o[nOut+nLSE:], do[:nOut], do[nOut:nOut+nLSE], d[:nq], d[nq:nq+nk], d[nq+nk:])
			}
			return out, nil
		},
	}
}

// weightsOp builds the map op of a content-based core (TopKWeights,
// RoutingWeights, HistogramWeights): from q [Batch*QLen, Heads*HeadDim],
// k [Batch*KLen, KVHeads*HeadDim] and the optional key mask
// [Batch*KLen] to the dense weights [Batch*Heads*QLen, KLen], which
// fill32 or fill64 (by the inputs' dtype) writes into the zeroed out. No
// gradient: the maps are for inspecting a model.
func weightsOp(name string, s AttentionShape, q, k, keyMask *G.Node, fill32 func(q, k, mask, out []float32), fill64 func(q, k, mask, out []float64)) (*G.Node, error) {
	masked := keyMask != nil
	children := G.Nodes{q, k}
	typ := fnType(2, 2, 2)
	if masked {
		children = append(children, keyMask)
		typ = fnType(2, 2, 1, 2)
	}
	rows := s.Batch * s.Heads * s.QLen
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
			return tensor.Shape{rows, s.KLen}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			is32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), rows, s.KLen)
			if is32 {
				fill32(data[float32](in[0]), data[float32](in[1]), maskData[float32](in, 2), data[float32](out))
			} else {
				fill64(data[float64](in[0]), data[float64](in[1]), maskData[float64](in, 2), data[float64](out))
			}
			return out, nil
		},
	}, children...)
}
