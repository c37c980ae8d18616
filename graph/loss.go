package graph

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// SoftmaxCrossEntropy returns the mean cross-entropy of logits [N, V] against
// the class ids targets [N], over the positions whose weight [N] is non-zero:
// sum_i w_i (logsumexp(z_i) - z_i[t_i]) / sum_i w_i. A weight of 0 is the loss
// mask: that position is not scored and gets no gradient. The softmax is
// computed with the row maximum subtracted. If no position is scored the
// loss is 0.
func SoftmaxCrossEntropy(logits, targets, weights *G.Node) (*G.Node, error) {
	const name = "SoftmaxCrossEntropy"
	return apply(&op{
		name:  name,
		arity: 3,
		typ:   fnType(2, 1, 1, 0),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if len(in[0]) != 2 || len(in[1]) != 1 || len(in[2]) != 1 || in[1][0] != in[0][0] || in[2][0] != in[0][0] {
				return nil, shapeErr(name, "want logits [N,V], targets [N], weights [N]; got %v, %v, %v", in[0], in[1], in[2])
			}
			return tensor.ScalarShape(), nil
		},
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			s := in[0].Shape()
			var loss float64
			if f32 {
				loss, err = crossEntropy(data[float32](in[0]), data[float32](in[1]), data[float32](in[2]), nil, s[0], s[1], 0)
			} else {
				loss, err = crossEntropy(data[float64](in[0]), data[float64](in[1]), data[float64](in[2]), nil, s[0], s[1], 0)
			}
			if err != nil {
				return nil, err
			}
			return newScalar(in[0].Dtype(), loss)
		},
		diffWRT: []bool{true, false, false},
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			d, err := apply(softmaxCrossEntropyGradOp(), in[0], in[1], in[2], grad)
			return G.Nodes{d, nil, nil}, err
		},
		gpu: sceKernel(false),
	}, logits, targets, weights)
}

func softmaxCrossEntropyGradOp() *op {
	const name = "SoftmaxCrossEntropyGrad"
	return &op{
		name:  name,
		arity: 4,
		typ:   fnType(2, 1, 1, 0, 2),
		shape: func(in []tensor.Shape) (tensor.Shape, error) { return in[0].Clone(), nil },
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in[:3]...)
			if err != nil {
				return nil, err
			}
			g, err := scalar(in[3])
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			s := in[0].Shape()
			out := newTensor(in[0].Dtype(), s...)
			if f32 {
				_, err = crossEntropy(data[float32](in[0]), data[float32](in[1]), data[float32](in[2]), data[float32](out), s[0], s[1], g)
			} else {
				_, err = crossEntropy(data[float64](in[0]), data[float64](in[1]), data[float64](in[2]), data[float64](out), s[0], s[1], g)
			}
			return out, err
		},
		gpu: sceKernel(true),
	}
}

// crossEntropy returns the weighted mean loss; when grad is non-nil it also
// writes g * d(loss)/d(logits) into it.
func crossEntropy[T Float](logits, targets, weights, grad []T, n, v int, g float64) (float64, error) {
	var wsum float64
	for _, w := range weights {
		wsum += float64(w)
	}
	if wsum == 0 {
		return 0, nil
	}
	var loss float64
	for i := 0; i < n; i++ {
		w := float64(weights[i])
		if w == 0 {
			continue
		}
		t := int(targets[i])
		if t < 0 || t >= v || float64(t) != float64(targets[i]) {
			return 0, fmt.Errorf("SoftmaxCrossEntropy: target %v at row %d is outside [0, %d)", targets[i], i, v)
		}
		row := logits[i*v : (i+1)*v]
		mx := rowMax(row, math.Inf(-1))
		se := expShiftTotal(row, mx)
		lse := mx + math.Log(se)
		loss += w * (lse - float64(row[t]))
		if grad != nil {
			scale := g * w / wsum
			out := grad[i*v : (i+1)*v]
			softmaxGrad(row, out, lse, scale)
			out[t] -= T(scale)
		}
	}
	return loss / wsum, nil
}

// Accuracy counts the scored positions (weight non-zero) whose highest logit
// is the target; ties go to the lowest class id. It returns the number correct
// and the number scored.
func Accuracy(logits G.Value, targets, weights []float64) (correct, scored int, err error) {
	s := logits.Shape()
	if len(s) != 2 || s[0] != len(targets) || len(weights) != len(targets) {
		return 0, 0, fmt.Errorf("Accuracy: logits %v for %d targets", s, len(targets))
	}
	switch z := logits.Data().(type) {
	case []float32:
		correct, scored = accuracy(z, targets, weights, s[1])
	case []float64:
		correct, scored = accuracy(z, targets, weights, s[1])
	default:
		return 0, 0, fmt.Errorf("Accuracy: unsupported dtype %v", logits.Dtype())
	}
	return correct, scored, nil
}

func accuracy[T Float](z []T, targets, weights []float64, v int) (correct, scored int) {
	for i, t := range targets {
		if weights[i] == 0 {
			continue
		}
		scored++
		row := z[i*v : (i+1)*v]
		best := 0
		for j, x := range row {
			if x > row[best] {
				best = j
			}
		}
		if best == int(t) {
			correct++
		}
	}
	return correct, scored
}

// expShiftTotal returns the sum of exp(z - m) over row, in float64; for
// float32 the exponentials are computed in float32 (exp32).
func expShiftTotal[T Float](row []T, m float64) float64 {
	var se float64
	if r, ok := any(row).([]float32); ok {
		m32 := float32(m)
		for _, z := range r {
			se += float64(exp32(z - m32))
		}
		return se
	}
	for _, z := range row {
		se += math.Exp(float64(z) - m)
	}
	return se
}

// softmaxGrad writes scale * exp(z - lse) for each z of row to out; for
// float32 the exponentials are computed in float32 (exp32) of z - lse
// rounded to float32.
func softmaxGrad[T Float](row, out []T, lse, scale float64) {
	if r, ok := any(row).([]float32); ok {
		o := any(out).([]float32)
		s32 := float32(scale)
		for j, z := range r {
			o[j] = s32 * exp32(float32(float64(z)-lse))
		}
		return
	}
	for j, z := range row {
		out[j] = T(scale * math.Exp(float64(z)-lse))
	}
}
