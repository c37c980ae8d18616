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
	if _, _, err := activationFuncs(a); err != nil {
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
			if f32 && a == GELU {
				gelu32Slice(data[float32](in[0]), data[float32](out))
			} else if f32 {
				f, _, _ := activationFuncs32(a)
				mapUnary(data[float32](in[0]), data[float32](out), f)
			} else {
				f, _, _ := activationFuncs(a)
				mapUnary(data[float64](in[0]), data[float64](out), f)
			}
			return out, nil
		},
		diffWRT: []bool{true},
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			dx, err := activationGrad(in[0], grad, a)
			return G.Nodes{dx}, err
		},
		gpu: activationKernel(a, false),
	}, x)
}

// activationKernel is the GPU path of Activate (grad false: y = a(x)) and
// of its gradient (dx = dy a'(x)): graph/cuda/attnlab.cu's gelu_f32,
// gelu_grad_f32, relu_f32, relu_grad_f32, one thread per element.
func activationKernel(a Activation, grad bool) *gpuKernel {
	kernel := string(a)
	if grad {
		kernel += "_grad"
	}
	kernel += "_f32"
	return &gpuKernel{launch: func(l gpuLauncher, out gpuBuf, in []gpuBuf) error {
		n := out.size()
		sz, err := int32s(n)
		if err != nil {
			return err
		}
		args := make([]any, 0, len(in)+2)
		for _, b := range in {
			args = append(args, b.ptr)
		}
		args = append(args, out.ptr, sz[0])
		blocks, threads := elementwiseGrid(n)
		return l.Launch(kernel, blocks, threads, 0, args...)
	}}
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
			if f32 && a == GELU {
				geluGrad32Slice(data[float32](in[0]), data[float32](in[1]), data[float32](out))
			} else if f32 {
				_, df, _ := activationFuncs32(a)
				mapGrad(data[float32](in[0]), data[float32](in[1]), data[float32](out), df)
			} else {
				_, df, _ := activationFuncs(a)
				mapGrad(data[float64](in[0]), data[float64](in[1]), data[float64](out), df)
			}
			return out, nil
		},
		gpu: activationKernel(a, true),
	}, x, dy)
}

// activationFuncs returns the function and its derivative for float64 data.
func activationFuncs(a Activation) (f, df func(float64) float64, err error) {
	switch a {
	case GELU:
		return gelu, geluGrad, nil
	case ReLU:
		return relu, reluGrad, nil
	}
	return nil, nil, fmt.Errorf("unknown activation %q (known: gelu, relu)", a)
}

// activationFuncs32 returns the function and its derivative for float32
// data, computed in float32: GELU by erf32 and exp32 (math32.go), absolute
// error about 1e-7, which shares one exponential between the distribution
// function and the density in the derivative.
func activationFuncs32(a Activation) (f, df func(float32) float32, err error) {
	switch a {
	case GELU:
		return gelu32, geluGrad32, nil
	case ReLU:
		return relu32, reluGrad32, nil
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

// relu32 is relu for float32: max(x, 0), NaN for NaN, +0 for -0.
func relu32(x float32) float32 {
	if x > 0 || x != x {
		return x
	}
	return 0
}

func reluGrad32(x float32) float32 {
	if x > 0 {
		return 1
	}
	return 0
}

func mapUnary[T Float](x, y []T, f func(T) T) {
	parallelFor(len(x), 20, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			y[i] = f(x[i])
		}
	})
}

func mapGrad[T Float](x, dy, dx []T, df func(T) T) {
	parallelFor(len(x), 30, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			dx[i] = dy[i] * df(x[i])
		}
	})
}

// gelu32Slice sets y = GELU(x) elementwise: AVX-512 for whole 16-element
// blocks where the CPU has it (vec_amd64.s), gelu32 for the rest.
func gelu32Slice(x, y []float32) {
	parallelFor(len(x), 20, func(lo, hi int) {
		if n := (hi - lo) &^ 15; hasAVX512 && n > 0 {
			geluAVX512(&x[lo], &y[lo], n)
			lo += n
		}
		for i := lo; i < hi; i++ {
			y[i] = gelu32(x[i])
		}
	})
}

// geluGrad32Slice sets dx = dy GELU'(x) elementwise, as gelu32Slice does.
func geluGrad32Slice(x, dy, dx []float32) {
	parallelFor(len(x), 30, func(lo, hi int) {
		if n := (hi - lo) &^ 15; hasAVX512 && n > 0 {
			geluGradAVX512(&x[lo], &dy[lo], &dx[lo], n)
			lo += n
		}
		for i := lo; i < hi; i++ {
			dx[i] = dy[i] * geluGrad32(x[i])
		}
	})
}

// geluFast and geluGradFast are the float32 GELU and its derivative (gelu32,
// geluGrad32) at float64 arguments, for comparison with gelu and geluGrad.
func geluFast(x float64) float64 { return float64(gelu32(float32(x))) }

func geluGradFast(x float64) float64 { return float64(geluGrad32(float32(x))) }
