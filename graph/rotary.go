package graph

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// RotaryShape describes the input of Rotary: Batch sequences of SeqLen
// positions, Heads heads of HeadDim dimensions, of which the first RotDims
// (even) are rotated in pairs (2i, 2i+1) with frequency Base^(-2i/RotDims).
// XPosScaleBase > 0 adds xPos's decay (Query says which side it is on).
type RotaryShape struct {
	Batch, SeqLen  int
	Heads, HeadDim int
	RotDims        int
	Base           float64
	XPosScaleBase  float64 // 0: plain RoPE
	Query          bool    // xPos scales queries by zeta^n and keys by zeta^-n
}

// Validate reports an impossible shape.
func (s RotaryShape) Validate() error {
	switch {
	case s.Batch < 1 || s.SeqLen < 1 || s.Heads < 1 || s.HeadDim < 1:
		return fmt.Errorf("rotary: sizes must be positive: %+v", s)
	case s.RotDims < 2 || s.RotDims%2 != 0 || s.RotDims > s.HeadDim:
		return fmt.Errorf("rotary: rotated dims must be even, at least 2 and at most the head dim %d, got %d", s.HeadDim, s.RotDims)
	case s.Base <= 1:
		return fmt.Errorf("rotary: base must be > 1, got %g", s.Base)
	case s.XPosScaleBase < 0:
		return fmt.Errorf("rotary: xpos scale base must be >= 0, got %g", s.XPosScaleBase)
	}
	return nil
}

// XPosGamma is xPos's gamma: pair i decays with zeta_i = (2i/RotDims +
// gamma) / (1 + gamma) per XPosScaleBase positions.
const XPosGamma = 0.4

// factors returns, for position n and pair i, the cosine and sine of the
// rotation angle n * theta_i scaled by the pair's xPos factor (1 for RoPE).
func (s RotaryShape) factors() (cos, sin []float64) {
	pairs := s.RotDims / 2
	cos, sin = make([]float64, s.SeqLen*pairs), make([]float64, s.SeqLen*pairs)
	for n := 0; n < s.SeqLen; n++ {
		for i := 0; i < pairs; i++ {
			theta := math.Pow(s.Base, -2*float64(i)/float64(s.RotDims))
			scale := 1.0
			if s.XPosScaleBase > 0 {
				zeta := (2*float64(i)/float64(s.RotDims) + XPosGamma) / (1 + XPosGamma)
				// Centred on the middle of the sequence, as in the paper's
				// code, so the factors stay near 1; scores depend on n - m
				// only, so the centre cancels.
				power := (float64(n) - float64(s.SeqLen/2)) / s.XPosScaleBase
				if !s.Query {
					power = -power
				}
				scale = math.Pow(zeta, power)
			}
			cos[n*pairs+i] = scale * math.Cos(float64(n)*theta)
			sin[n*pairs+i] = scale * math.Sin(float64(n)*theta)
		}
	}
	return cos, sin
}

// Rotary applies rotary position embeddings (Su et al. 2021, "RoFormer:
// Enhanced Transformer with Rotary Position Embedding") to x [Batch*SeqLen,
// Heads*HeadDim]: in each head, pair (x_2i, x_2i+1) at position n is rotated
// by the angle n * Base^(-2i/RotDims), so that the dot product of a rotated
// query at n and a rotated key at m depends on n - m only. Dimensions past
// RotDims pass through (partial RoPE). With XPosScaleBase > 0 it is xPos
// (Sun et al. 2022, "A Length-Extrapolatable Transformer"): pair i of a
// query is also scaled by zeta_i^(n/XPosScaleBase) and of a key by
// zeta_i^(-m/XPosScaleBase), so scores decay like zeta^((n-m)/base).
//
// The map is linear and block-diagonal, so its gradient is the transpose: the
// same rotation by the opposite angle, with the same scale. O(T d) time.
func Rotary(x *G.Node, s RotaryShape) (*G.Node, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return apply(rotaryOp(s, false), x)
}

func rotaryOp(s RotaryShape, transpose bool) *op {
	name := fmt.Sprintf("Rotary(%+v,transpose=%t)", s, transpose)
	return &op{
		name:  name,
		arity: 1,
		typ:   fnType(2, 2),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			want := tensor.Shape{s.Batch * s.SeqLen, s.Heads * s.HeadDim}
			if !in[0].Eq(want) {
				return nil, shapeErr(name, "want input %v, got %v", want, in[0])
			}
			return want, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), in[0].Shape()...)
			cos, sin := s.factors()
			if f32 {
				rotate(s, cos, sin, transpose, data[float32](in[0]), data[float32](out))
			} else {
				rotate(s, cos, sin, transpose, data[float64](in[0]), data[float64](out))
			}
			return out, nil
		},
		diffWRT: []bool{true},
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			d, err := apply(rotaryOp(s, !transpose), grad)
			return G.Nodes{d}, err
		},
		gpu: rotaryKernel(s, transpose),
	}
}

func rotate[T Float](s RotaryShape, cos, sin []float64, transpose bool, x, out []T) {
	copy(out, x)
	pairs := s.RotDims / 2
	width := s.Heads * s.HeadDim
	for r := 0; r < s.Batch*s.SeqLen; r++ {
		n := r % s.SeqLen
		c, sn := cos[n*pairs:(n+1)*pairs], sin[n*pairs:(n+1)*pairs]
		for h := 0; h < s.Heads; h++ {
			xr := x[r*width+h*s.HeadDim:]
			or := out[r*width+h*s.HeadDim:]
			for i := 0; i < pairs; i++ {
				a, b := xr[2*i], xr[2*i+1]
				ci, si := T(c[i]), T(sn[i])
				if transpose {
					si = -si
				}
				or[2*i] = a*ci - b*si
				or[2*i+1] = a*si + b*ci
			}
		}
	}
}
