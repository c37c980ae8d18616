package graph

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Activation names an elementwise nonlinearity.
type Activation string

// The activations the FFN may use.
const (
	// GELU is the exact form x * Phi(x) = x/2 * (1 + erf(x/sqrt 2))
	// (Hendrycks and Gimpel 2016), as PyTorch's default nn.GELU, not the tanh
	// approximation.
	GELU Activation = "gelu"
	// ReLU is max(x, 0).
	ReLU Activation = "relu"
)

// Activate applies the activation a elementwise.
func Activate(x *G.Node, a Activation) (*G.Node, error) {
	if _, _, err := activationFuncs(a, false); err != nil {
		return nil, err
	}
	name := fmt.Sprintf("Activate(%s)", a)
	return apply(&op{
		name:  name,
		arity: 1,
		typ:   fnType(2, 2),
		shape: func(in []tensor.Shape) (tensor.Shape, error) { return in[0].Clone(), nil },
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), in[0].Shape()...)
			f, _, _ := activationFuncs(a, f32)
			if f32 {
				mapUnary(data[float32](in[0]), data[float32](out), f)
			} else {
				mapUnary(data[float64](in[0]), data[float64](out), f)
			}
			return out, nil
		},
		diffWRT: []bool{true},
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			dx, err := activationGrad(in[0], grad, a)
			return G.Nodes{dx}, err
		},
	}, x)
}

// activationGrad returns dy * a'(x).
func activationGrad(x, dy *G.Node, a Activation) (*G.Node, error) {
	name := fmt.Sprintf("ActivateGrad(%s)", a)
	return apply(&op{
		name:  name,
		arity: 2,
		typ:   fnType(2, 2, 2),
		shape: func(in []tensor.Shape) (tensor.Shape, error) { return in[0].Clone(), nil },
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), in[0].Shape()...)
			_, df, _ := activationFuncs(a, f32)
			if f32 {
				mapGrad(data[float32](in[0]), data[float32](in[1]), data[float32](out), df)
			} else {
				mapGrad(data[float64](in[0]), data[float64](in[1]), data[float64](out), df)
			}
			return out, nil
		},
	}, x, dy)
}

// activationFuncs returns the function and its derivative; for float32 data
// GELU uses an erf accurate to 1.5e-7 (below float32's resolution) that
// shares one exponential between erf and the density.
func activationFuncs(a Activation, f32 bool) (f, df func(float64) float64, err error) {
	switch a {
	case GELU:
		if f32 {
			return geluFast, geluGradFast, nil
		}
		return gelu, geluGrad, nil
	case ReLU:
		return relu, reluGrad, nil
	}
	return nil, nil, fmt.Errorf("unknown activation %q (known: gelu, relu)", a)
}

func gelu(x float64) float64 { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) }

// geluGrad is Phi(x) + x * phi(x).
func geluGrad(x float64) float64 {
	return 0.5*(1+math.Erf(x/math.Sqrt2)) + x*math.Exp(-0.5*x*x)/math.Sqrt(2*math.Pi)
}

func relu(x float64) float64 { return math.Max(x, 0) }

func reluGrad(x float64) float64 {
	if x > 0 {
		return 1
	}
	return 0
}

func mapUnary[T Float](x, y []T, f func(float64) float64) {
	parallelFor(len(x), 20, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			y[i] = T(f(float64(x[i])))
		}
	})
}

func mapGrad[T Float](x, dy, dx []T, df func(float64) float64) {
	parallelFor(len(x), 30, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			dx[i] = dy[i] * T(df(float64(x[i])))
		}
	})
}

// erfPoly returns erf(|x|) given e = exp(-x*x), by Abramowitz and Stegun
// 7.1.26 (absolute error below 1.5e-7).
func erfPoly(ax, e float64) float64 {
	t := 1 / (1 + 0.3275911*ax)
	return 1 - t*(0.254829592+t*(-0.284496736+t*(1.421413741+t*(-1.453152027+t*1.061405429))))*e
}

func geluFast(x float64) float64 {
	u := x / math.Sqrt2
	erf := math.Copysign(erfPoly(math.Abs(u), math.Exp(-u*u)), u)
	return 0.5 * x * (1 + erf)
}

func geluGradFast(x float64) float64 {
	u := x / math.Sqrt2
	e := math.Exp(-u * u)
	erf := math.Copysign(erfPoly(math.Abs(u), e), u)
	return 0.5*(1+erf) + x*e/math.Sqrt(2*math.Pi)
}
