package graph

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The ops of a training step that runs whole on the GPU (train's device
// cuda): the squared gradient norm, the AdamW update in place and the
// batch's correct count are nodes of the graph, so that the parameters,
// gradients and moments never leave the device and the host reads back
// three small values per step. They have CPU implementations too, with the
// same arithmetic as the package's CPU optimizer path (train.AdamW), so the
// whole device step is tested on the CPU.

// AdamWHyper is the per-step input of AdamWStep, a float tensor of
// AdamWHyperLen values: the learning rate, beta1, beta2, epsilon, the bias
// corrections 1 - beta1^t and 1 - beta2^t of step t, and the gradient-norm
// clip (0: none).
const AdamWHyperLen = 7

// AdamWHyper returns the AdamWStep input for step t (counting from 1).
func AdamWHyper(lr, beta1, beta2, eps, clip float64, t int) []float64 {
	return []float64{lr, beta1, beta2, eps, 1 - math.Pow(beta1, float64(t)), 1 - math.Pow(beta2, float64(t)), clip}
}

// GradSquaredNorm returns [1]: the sum of the squares of every element of
// grads, or NaN when the scalar loss is not finite (so that AdamWStep
// makes no update on a step the trainer rejects). after lists nodes that
// must be computed before the result (and so before any update that reads
// it): the other readers of the parameters, which an update in place would
// otherwise race; their values are not used. No gradient.
func GradSquaredNorm(loss *G.Node, grads, after G.Nodes) (*G.Node, error) {
	const name = "GradSquaredNorm"
	children := append(append(G.Nodes{loss}, grads...), after...)
	dims := make([]int, len(children)+1)
	for i, c := range children {
		dims[i] = max(c.Dims(), 1)
		if c.IsScalar() {
			dims[i] = 0
		}
	}
	dims[len(children)] = 1
	ng := len(grads)
	return apply(&op{
		name:  fmt.Sprintf("%s(%d,%d)", name, ng, len(after)),
		arity: len(children),
		typ:   fnType(dims...),
		shape: func(in []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{1}, nil },
		do: func(in []G.Value) (G.Value, error) {
			loss, err := scalar(in[0])
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			var ss float64
			for _, g := range in[1 : 1+ng] {
				for _, x := range Float64s(g) {
					ss += x * x
				}
			}
			if math.IsNaN(loss) || math.IsInf(loss, 0) {
				ss = math.NaN()
			}
			out := newTensor(in[1].Dtype(), 1)
			setFloat(out, 0, ss)
			return out, nil
		},
		gpu: gradSquaredNormKernel(ng),
	}, children...)
}

// AdamWStep updates the parameter w in place by one AdamW step
// (Loshchilov & Hutter 2019) from its gradient g, with the moments m and v
// (updated in place too), the squared global gradient norm sqnorm [1]
// (GradSquaredNorm: the gradient is scaled by clip / norm above the clip;
// no update when it is not finite) and the step's hyper-parameters hyper
// [AdamWHyperLen] (AdamWHyper); decay applies the weight decay wd (to
// matrices, as train.AdamW). The result, [1] zero, is there to be
// computed: the op is run for its effect. Its name carries w's, as
// Gorgonia merges nodes by op name.
func AdamWStep(w, g, m, v, sqnorm, hyper *G.Node, wd float64) (*G.Node, error) {
	name := fmt.Sprintf("AdamWStep(%s,wd=%g)", w.Name(), wd)
	d := w.Dims()
	return apply(&op{
		name:  name,
		arity: 6,
		typ:   fnType(d, d, d, d, 1, 1, 1),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			for _, s := range in[1:4] {
				if !s.Eq(in[0]) {
					return nil, shapeErr(name, "parameter %v, gradient and moments %v %v %v", in[0], in[1], in[2], in[3])
				}
			}
			if in[4].TotalSize() != 1 || in[5].TotalSize() != AdamWHyperLen {
				return nil, shapeErr(name, "want sqnorm [1] and hyper [%d], got %v, %v", AdamWHyperLen, in[4], in[5])
			}
			return tensor.Shape{1}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			is32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			h := Float64s(in[5])
			sq := Float64s(in[4])[0]
			if !math.IsNaN(sq) && !math.IsInf(sq, 0) {
				if is32 {
					adamwStep(data[float32](in[0]), data[float32](in[1]), data[float32](in[2]), data[float32](in[3]), sq, h, wd)
				} else {
					adamwStep(data[float64](in[0]), data[float64](in[1]), data[float64](in[2]), data[float64](in[3]), sq, h, wd)
				}
			}
			return newTensor(in[0].Dtype(), 1), nil
		},
		gpu: adamWKernel(wd),
	}, w, g, m, v, sqnorm, hyper)
}

// adamwStep is the CPU AdamWStep, in float64 arithmetic as train.adamw.
func adamwStep[T Float](w, g, m, v []T, sqnorm float64, h []float64, wd float64) {
	lr, b1, b2, eps, c1, c2, clip := h[0], h[1], h[2], h[3], h[4], h[5], h[6]
	scale := 1.0
	if norm := math.Sqrt(sqnorm); clip > 0 && norm > clip {
		scale = clip / norm
	}
	for j := range w {
		gj := float64(g[j]) * scale
		mj := b1*float64(m[j]) + (1-b1)*gj
		vj := b2*float64(v[j]) + (1-b2)*gj*gj
		m[j], v[j] = T(mj), T(vj)
		x := float64(w[j])
		w[j] = T(x - lr*(wd*x+(mj/c1)/(math.Sqrt(vj/c2)+eps)))
	}
}

// CorrectCount returns [2]: the number of scored positions (weight
// non-zero) whose highest logit (ties: the lowest class) is the target, and
// the number scored, as Accuracy, from logits [N, V], targets and weights
// [N]. No gradient.
func CorrectCount(logits, targets, weights *G.Node) (*G.Node, error) {
	const name = "CorrectCount"
	return apply(&op{
		name:  name,
		arity: 3,
		typ:   fnType(2, 1, 1, 1),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if len(in[0]) != 2 || in[1].TotalSize() != in[0][0] || in[2].TotalSize() != in[0][0] {
				return nil, shapeErr(name, "want logits [N,V], targets [N], weights [N]; got %v, %v, %v", in[0], in[1], in[2])
			}
			return tensor.Shape{2}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			c, n, err := Accuracy(in[0], Float64s(in[1]), Float64s(in[2]))
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), 2)
			setFloat(out, 0, float64(c))
			setFloat(out, 1, float64(n))
			return out, nil
		},
		gpu: correctCountKernel,
	}, logits, targets, weights)
}

// setFloat sets element i of a float tensor.
func setFloat(t *tensor.Dense, i int, x float64) {
	switch d := t.Data().(type) {
	case []float32:
		d[i] = float32(x)
	case []float64:
		d[i] = x
	}
}
