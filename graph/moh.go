package graph

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// MoHRouterWidth is the number of router logits per token MoHGates takes
// for heads heads of which shared are shared: one per head, plus the two
// balance logits that weigh the shared against the routed heads when there
// are both.
func MoHRouterWidth(heads, shared int) int {
	if shared > 0 && shared < heads {
		return heads + 2
	}
	return heads
}

// MoHGates computes the head gates of Mixture-of-Head attention (Jin et al.
// 2024, "MoH: Multi-Head Attention as Mixture-of-Head Attention") from
// router logits z [N, MoHRouterWidth(heads, shared)] to gates g [N, heads].
// With S = shared heads, R = heads - S routed heads, z_s = z[:S],
// z_r = z[S:heads] and z_b = z[heads:heads+2]:
//
//	g_h = alpha1 softmax(z_s)_h                           h < S (always on)
//	g_h = alpha2 softmax(z_r)_h  if h is in TopK(softmax(z_r)), else 0   h >= S
//	[alpha1, alpha2] = softmax(z_b)
//
// alpha2 = 1 when S = 0 and alpha1 = 1 when S = heads (there are no balance
// logits then). The routed softmax runs over all R routed heads and the
// selected values are not renormalized, as in the paper. TopK keeps the
// topK largest, ties going to the lower index, so the choice is
// deterministic.
//
// The selection is piecewise constant in z: the gradient flows through the
// selected gates' values (and, through the softmax's normalization, into
// every routed logit) but not through which heads are selected; it is exact
// wherever no two routed logits tie.
//
// With softmaxGates false (the "none" gate) every active head - the shared
// ones and the selected routed ones - has gate exactly 1 and every other 0;
// the router still selects, but its logits get zero gradient. That is an
// ablation of the gate values, and with all heads active it reduces the
// layer to plain multi-head attention exactly.
//
// topK must be in [1, R] when R > 0 and is ignored when R = 0. O(N heads
// topK) time.
func MoHGates(logits *G.Node, heads, shared, topK int, softmaxGates bool) (*G.Node, error) {
	m := mohRouting{heads: heads, shared: shared, topK: topK, softmax: softmaxGates}
	if heads < 1 || shared < 0 || shared > heads {
		return nil, fmt.Errorf("moh gates: need heads >= 1 and 0 <= shared <= heads, got %d heads, %d shared", heads, shared)
	}
	if r := heads - shared; r == 0 {
		m.topK = 0
	} else if topK < 1 || topK > r {
		return nil, fmt.Errorf("moh gates: top-k must be in [1, %d] (the routed heads), got %d", r, topK)
	}
	if s := logits.Shape(); s.Dims() != 2 || s[1] != m.width() {
		return nil, fmt.Errorf("moh gates: want logits [N, %d], got %v", m.width(), s)
	}
	return apply(mohGatesOp(m), logits)
}

// mohRouting is the configuration of MoHGates.
type mohRouting struct {
	heads, shared, topK int
	softmax             bool
}

func (m mohRouting) width() int { return MoHRouterWidth(m.heads, m.shared) }

func (m mohRouting) String() string {
	return fmt.Sprintf("heads=%d,shared=%d,topk=%d,softmax=%t", m.heads, m.shared, m.topK, m.softmax)
}

func mohGatesOp(m mohRouting) *op {
	name := fmt.Sprintf("MoHGates(%v)", m)
	w := m.width()
	return &op{
		name:  name,
		arity: 1,
		typ:   fnType(2, 2),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if in[0].Dims() != 2 || in[0][1] != w {
				return nil, shapeErr(name, "want logits [N, %d], got %v", w, in[0])
			}
			return tensor.Shape{in[0][0], m.heads}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			n := in[0].Shape()[0]
			out := newTensor(in[0].Dtype(), n, m.heads)
			if f32 {
				mohForward(m, n, data[float32](in[0]), data[float32](out))
			} else {
				mohForward(m, n, data[float64](in[0]), data[float64](out))
			}
			return out, nil
		},
		diffWRT: []bool{true},
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			d, err := apply(mohGatesGradOp(m), in[0], grad)
			return G.Nodes{d}, err
		},
		gpu: mohKernel(m, "moh_gates_f32"),
	}
}

// mohGatesGradOp maps (logits, dgates) to dlogits; zeros for the none gate.
func mohGatesGradOp(m mohRouting) *op {
	name := fmt.Sprintf("MoHGatesGrad(%v)", m)
	return &op{
		name:  name,
		arity: 2,
		typ:   fnType(2, 2, 2),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if in[0].Dims() != 2 || in[1].Dims() != 2 || in[0][1] != m.width() || in[1][1] != m.heads || in[0][0] != in[1][0] {
				return nil, shapeErr(name, "got logits %v and gate gradient %v", in[0], in[1])
			}
			return in[0].Clone(), nil
		},
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			n := in[0].Shape()[0]
			out := newTensor(in[0].Dtype(), n, m.width())
			if !m.softmax {
				return out, nil
			}
			if f32 {
				mohBackward(m, n, data[float32](in[0]), data[float32](in[1]), data[float32](out))
			} else {
				mohBackward(m, n, data[float64](in[0]), data[float64](in[1]), data[float64](out))
			}
			return out, nil
		},
		gpu: mohKernel(m, "moh_gates_grad_f32"),
	}
}

// route computes one token's routing from its logits z: p[:S] is the
// softmax over the shared heads, p[S:heads] the softmax over the routed
// heads, on[h] whether head h is active, and alpha1, alpha2 the group
// weights. Arithmetic is in float64 whatever T is.
func route[T Float](m mohRouting, z []T, p []float64, on []bool) (alpha1, alpha2 float64) {
	softmaxInto(z[:m.shared], p[:m.shared])
	softmaxInto(z[m.shared:m.heads], p[m.shared:m.heads])
	for h := range on {
		on[h] = h < m.shared
	}
	for range m.topK {
		best := -1
		for h := m.shared; h < m.heads; h++ {
			if !on[h] && (best < 0 || p[h] > p[best]) {
				best = h
			}
		}
		on[best] = true
	}
	switch {
	case m.shared == 0:
		return 0, 1
	case m.shared == m.heads:
		return 1, 0
	}
	b1, b2 := float64(z[m.heads]), float64(z[m.heads+1])
	mx := math.Max(b1, b2)
	e1, e2 := math.Exp(b1-mx), math.Exp(b2-mx)
	return e1 / (e1 + e2), e2 / (e1 + e2)
}

// softmaxInto writes softmax(z) to p (nothing for an empty z).
func softmaxInto[T Float](z []T, p []float64) {
	if len(z) == 0 {
		return
	}
	mx := math.Inf(-1)
	for _, x := range z {
		mx = math.Max(mx, float64(x))
	}
	var sum float64
	for i, x := range z {
		p[i] = math.Exp(float64(x) - mx)
		sum += p[i]
	}
	for i := range p[:len(z)] {
		p[i] /= sum
	}
}

func mohForward[T Float](m mohRouting, n int, z, g []T) {
	w := m.width()
	parallelFor(n, 8*w, func(lo, hi int) {
		p, on := make([]float64, m.heads), make([]bool, m.heads)
		for r := lo; r < hi; r++ {
			a1, a2 := route(m, z[r*w:(r+1)*w], p, on)
			gr := g[r*m.heads : (r+1)*m.heads]
			for h := range gr {
				switch {
				case !on[h]:
					gr[h] = 0
				case !m.softmax:
					gr[h] = 1
				case h < m.shared:
					gr[h] = T(a1 * p[h])
				default:
					gr[h] = T(a2 * p[h])
				}
			}
		}
	})
}

// mohBackward is the gradient of the softmax gates. With a = alpha1,
// s = softmax(z_s) and da1 = sum_h s_h dg_h over the shared heads,
// dz_h = a s_h (dg_h - da1); with b = alpha2, r = softmax(z_r) and
// da2 = sum_h on_h r_h dg_h over the routed heads,
// dz_h = b r_h (on_h dg_h - da2); and the balance logits get
// dz_b = alpha * (dalpha - (a da1 + b da2)), softmax's Jacobian.
func mohBackward[T Float](m mohRouting, n int, z, dg, dz []T) {
	w := m.width()
	parallelFor(n, 8*w, func(lo, hi int) {
		p, on := make([]float64, m.heads), make([]bool, m.heads)
		for r := lo; r < hi; r++ {
			a1, a2 := route(m, z[r*w:(r+1)*w], p, on)
			d, out := dg[r*m.heads:(r+1)*m.heads], dz[r*w:(r+1)*w]
			var da1, da2 float64
			for h := range d {
				switch {
				case h < m.shared:
					da1 += p[h] * float64(d[h])
				case on[h]:
					da2 += p[h] * float64(d[h])
				}
			}
			for h := range d {
				switch {
				case h < m.shared:
					out[h] = T(a1 * p[h] * (float64(d[h]) - da1))
				case on[h]:
					out[h] = T(a2 * p[h] * (float64(d[h]) - da2))
				default:
					out[h] = T(-a2 * p[h] * da2)
				}
			}
			if w > m.heads {
				t := a1*da1 + a2*da2
				out[m.heads] = T(a1 * (da1 - t))
				out[m.heads+1] = T(a2 * (da2 - t))
			}
		}
	})
}

// ScaleHeads multiplies head h of row n of o [N, heads*d] by g[n, h], for g
// [N, heads]: the per-token head weighting of Mixture-of-Head attention.
// The gradients are do * g (ScaleHeads of do) and dg[n, h] = sum_c do * o
// over the head's d columns. O(N heads d) time.
func ScaleHeads(o, g *G.Node) (*G.Node, error) {
	so, sg := o.Shape(), g.Shape()
	if so.Dims() != 2 || sg.Dims() != 2 || so[0] != sg[0] || sg[1] < 1 || so[1]%sg[1] != 0 {
		return nil, fmt.Errorf("scale heads: want o [N, heads*d] and g [N, heads], got %v and %v", so, sg)
	}
	return apply(scaleHeadsOp(sg[1]), o, g)
}

func scaleHeadsOp(heads int) *op {
	name := fmt.Sprintf("ScaleHeads(%d)", heads)
	return &op{
		name:  name,
		arity: 2,
		typ:   fnType(2, 2, 2),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if in[0].Dims() != 2 || in[1].Dims() != 2 || in[0][0] != in[1][0] || in[1][1] != heads || in[0][1]%heads != 0 {
				return nil, shapeErr(name, "got o %v and gates %v", in[0], in[1])
			}
			return in[0].Clone(), nil
		},
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), in[0].Shape()...)
			n, w := in[0].Shape()[0], in[0].Shape()[1]
			if f32 {
				scaleHeads(n, heads, w/heads, data[float32](in[0]), data[float32](in[1]), data[float32](out))
			} else {
				scaleHeads(n, heads, w/heads, data[float64](in[0]), data[float64](in[1]), data[float64](out))
			}
			return out, nil
		},
		diffWRT: []bool{true, true},
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			do, err := apply(scaleHeadsOp(heads), grad, in[1])
			if err != nil {
				return nil, err
			}
			dg, err := apply(headDotsOp(heads), grad, in[0])
			if err != nil {
				return nil, err
			}
			return G.Nodes{do, dg}, nil
		},
		gpu: headsProductKernel("scale_heads_f32", heads),
	}
}

func scaleHeads[T Float](n, heads, d int, o, g, out []T) {
	w := heads * d
	parallelFor(n, w, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			for h := 0; h < heads; h++ {
				gh := g[r*heads+h]
				src, dst := o[r*w+h*d:r*w+(h+1)*d], out[r*w+h*d:r*w+(h+1)*d]
				for c := range dst {
					dst[c] = gh * src[c]
				}
			}
		}
	})
}

// headDotsOp maps a, b [N, heads*d] to [N, heads], the dot product of each
// row's heads: ScaleHeads's gradient of the gates.
func headDotsOp(heads int) *op {
	name := fmt.Sprintf("HeadDots(%d)", heads)
	return &op{
		name:  name,
		arity: 2,
		typ:   fnType(2, 2, 2),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if !in[0].Eq(in[1]) || in[0].Dims() != 2 || in[0][1]%heads != 0 {
				return nil, shapeErr(name, "got %v and %v", in[0], in[1])
			}
			return tensor.Shape{in[0][0], heads}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			n, w := in[0].Shape()[0], in[0].Shape()[1]
			out := newTensor(in[0].Dtype(), n, heads)
			if f32 {
				headDots(n, heads, w/heads, data[float32](in[0]), data[float32](in[1]), data[float32](out))
			} else {
				headDots(n, heads, w/heads, data[float64](in[0]), data[float64](in[1]), data[float64](out))
			}
			return out, nil
		},
		gpu: headsProductKernel("head_dots_f32", heads),
	}
}

func headDots[T Float](n, heads, d int, a, b, out []T) {
	w := heads * d
	parallelFor(n, w, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			for h := 0; h < heads; h++ {
				out[r*heads+h] = dot(a[r*w+h*d:r*w+(h+1)*d], b[r*w+h*d:r*w+(h+1)*d])
			}
		}
	})
}
