package graph

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

func testRNG(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("input seed %d", seed)
	return rand.New(rand.NewPCG(seed, 1))
}

// ids returns a float64 tensor of n integers in [0, v).
func ids(rng *rand.Rand, n, v int) *tensor.Dense {
	t := tensor.New(tensor.WithShape(n), tensor.Of(tensor.Float64))
	for i, d := 0, t.Data().([]float64); i < len(d); i++ {
		d[i] = float64(rng.IntN(v))
	}
	return t
}

func mask01(rng *rand.Rand, n int, p float64) *tensor.Dense {
	t := tensor.New(tensor.WithShape(n), tensor.Of(tensor.Float64))
	for i, d := 0, t.Data().([]float64); i < len(d); i++ {
		if rng.Float64() >= p {
			d[i] = 1
		}
	}
	return t
}

// opCase builds one op on fresh random inputs: diff are the inputs checked,
// fixed the non-differentiable ones.
type opCase struct {
	name  string
	build func(g *G.ExprGraph, rng *rand.Rand) (out *G.Node, wrt []*G.Node, err error)
}

func opCases() []opCase {
	v := Variable
	return []opCase{
		{"Dot", func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
			x, r := v(g, "x", RandomTensor(rng, 1, 3, 4)), v(g, "r", RandomTensor(rng, 1, 3, 4))
			out, err := Dot(x, r)
			if err != nil {
				return nil, nil, err
			}
			// the checker's loss is of an output tensor: scale a vector by Dot
			out, err = G.Mul(out, v(g, "s", RandomTensor(rng, 1, 2)))
			return out, []*G.Node{x}, err
		}},
		{"MatMul", func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
			a, b := v(g, "a", RandomTensor(rng, 1, 3, 4)), v(g, "b", RandomTensor(rng, 1, 4, 5))
			out, err := MatMul(a, b, false, false)
			return out, []*G.Node{a, b}, err
		}},
		{"MatMulNT", func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
			a, b := v(g, "a", RandomTensor(rng, 1, 3, 4)), v(g, "b", RandomTensor(rng, 1, 5, 4))
			out, err := MatMul(a, b, false, true)
			return out, []*G.Node{a, b}, err
		}},
		{"MatMulTN", func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
			a, b := v(g, "a", RandomTensor(rng, 1, 4, 3)), v(g, "b", RandomTensor(rng, 1, 4, 5))
			out, err := MatMul(a, b, true, false)
			return out, []*G.Node{a, b}, err
		}},
		{"MatMulTT", func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
			a, b := v(g, "a", RandomTensor(rng, 1, 4, 3)), v(g, "b", RandomTensor(rng, 1, 5, 4))
			out, err := MatMul(a, b, true, true)
			return out, []*G.Node{a, b}, err
		}},
		{"Linear", func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
			x, w, b := v(g, "x", RandomTensor(rng, 1, 6, 4)), v(g, "w", RandomTensor(rng, 1, 4, 3)), v(g, "b", RandomTensor(rng, 1, 3))
			out, err := Linear(x, w, b)
			return out, []*G.Node{x, w, b}, err
		}},
		{"LayerNorm", func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
			x, ga, be := v(g, "x", RandomTensor(rng, 2, 5, 7)), v(g, "gamma", RandomTensor(rng, 1, 7)), v(g, "beta", RandomTensor(rng, 1, 7))
			out, err := LayerNorm(x, ga, be, 1e-5)
			return out, []*G.Node{x, ga, be}, err
		}},
		{"RMSNorm", func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
			x, ga := v(g, "x", RandomTensor(rng, 2, 5, 7)), v(g, "gamma", RandomTensor(rng, 1, 7))
			out, err := RMSNorm(x, ga, 1e-5)
			return out, []*G.Node{x, ga}, err
		}},
		{"GELU", func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
			x := v(g, "x", RandomTensor(rng, 3, 6, 5))
			out, err := Activate(x, GELU)
			return out, []*G.Node{x}, err
		}},
		{"ReLU", func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
			x := v(g, "x", RandomTensor(rng, 3, 6, 5))
			out, err := Activate(x, ReLU)
			return out, []*G.Node{x}, err
		}},
		{"Embedding", func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
			id, tab := v(g, "ids", ids(rng, 9, 5)), v(g, "table", RandomTensor(rng, 1, 5, 4))
			out, err := Embedding(id, tab)
			return out, []*G.Node{tab}, err
		}},
		{"SoftmaxCrossEntropy", func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
			z, t, w := v(g, "logits", RandomTensor(rng, 3, 8, 6)), v(g, "targets", ids(rng, 8, 6)), v(g, "weights", mask01(rng, 8, 0.4))
			out, err := SoftmaxCrossEntropy(z, t, w)
			return out, []*G.Node{z}, err
		}},
		{"MeanPool", func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
			x, m := v(g, "x", RandomTensor(rng, 1, 2*5, 3)), v(g, "mask", mask01(rng, 2*5, 0.3))
			out, err := Pool(x, m, 2, 5, MeanPool)
			return out, []*G.Node{x}, err
		}},
		{"RoPE", func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
			x := v(g, "x", RandomTensor(rng, 1, 2*5, 2*6))
			out, err := Rotary(x, RotaryShape{Batch: 2, SeqLen: 5, Heads: 2, HeadDim: 6, RotDims: 6, Base: 10000})
			return out, []*G.Node{x}, err
		}},
		{"PartialRoPE", func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
			x := v(g, "x", RandomTensor(rng, 1, 2*5, 2*6))
			out, err := Rotary(x, RotaryShape{Batch: 2, SeqLen: 5, Heads: 2, HeadDim: 6, RotDims: 2, Base: 100})
			return out, []*G.Node{x}, err
		}},
		{"XPosKey", func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
			x := v(g, "x", RandomTensor(rng, 1, 2*5, 4))
			out, err := Rotary(x, RotaryShape{Batch: 2, SeqLen: 5, Heads: 1, HeadDim: 4, RotDims: 4, Base: 10, XPosScaleBase: 2})
			return out, []*G.Node{x}, err
		}},
		{"ConcatHeads", func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
			a, b := v(g, "a", RandomTensor(rng, 1, 4, 3*2)), v(g, "b", RandomTensor(rng, 1, 4, 3*1))
			out, err := ConcatHeads(a, b, 3, false)
			return out, []*G.Node{a, b}, err
		}},
		{"ConcatHeadsShared", func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
			a, b := v(g, "a", RandomTensor(rng, 1, 4, 2*3)), v(g, "b", RandomTensor(rng, 1, 4, 2))
			out, err := ConcatHeads(a, b, 2, true)
			return out, []*G.Node{a, b}, err
		}},
		{"Combine", func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
			a, b := v(g, "a", RandomTensor(rng, 1, 4, 3)), v(g, "b", RandomTensor(rng, 1, 4, 3))
			out, err := Combine(a, b, 1.3, -0.3)
			return out, []*G.Node{a, b}, err
		}},
		{"FirstPool", func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
			x, m := v(g, "x", RandomTensor(rng, 1, 2*5, 3)), v(g, "mask", mask01(rng, 2*5, 0.3))
			out, err := Pool(x, m, 2, 5, FirstPool)
			return out, []*G.Node{x}, err
		}},
	}
}

func attentionCases() []struct {
	name   string
	shape  AttentionShape
	masked bool
} {
	return []struct {
		name   string
		shape  AttentionShape
		masked bool
	}{
		{"causal", AttentionShape{Batch: 2, QLen: 5, KLen: 5, Heads: 2, KVHeads: 2, HeadDim: 3, Causal: true}, false},
		{"bidirectional", AttentionShape{Batch: 2, QLen: 5, KLen: 5, Heads: 2, KVHeads: 2, HeadDim: 3}, false},
		{"bidirectional-padded", AttentionShape{Batch: 2, QLen: 4, KLen: 4, Heads: 2, KVHeads: 2, HeadDim: 3}, true},
		{"causal-padded", AttentionShape{Batch: 2, QLen: 4, KLen: 4, Heads: 2, KVHeads: 2, HeadDim: 3, Causal: true}, true},
		{"grouped", AttentionShape{Batch: 1, QLen: 4, KLen: 4, Heads: 4, KVHeads: 2, HeadDim: 2, Causal: true}, false},
		{"cross", AttentionShape{Batch: 2, QLen: 3, KLen: 6, Heads: 1, KVHeads: 1, HeadDim: 4}, true},
		{"single-position", AttentionShape{Batch: 2, QLen: 1, KLen: 1, Heads: 2, KVHeads: 2, HeadDim: 3, Causal: true}, false},
		{"value-dim", AttentionShape{Batch: 2, QLen: 5, KLen: 5, Heads: 2, KVHeads: 1, HeadDim: 3, ValueDim: 4, Causal: true}, false},
		{"alibi-causal", AttentionShape{Batch: 1, QLen: 7, KLen: 7, Heads: 4, KVHeads: 2, HeadDim: 2, Causal: true, ALiBi: true}, false},
		{"alibi-bidirectional-padded", AttentionShape{Batch: 2, QLen: 5, KLen: 5, Heads: 2, KVHeads: 2, HeadDim: 3, ALiBi: true}, true},
		{"causal-cross", AttentionShape{Batch: 1, QLen: 3, KLen: 7, Heads: 2, KVHeads: 2, HeadDim: 3, Causal: true}, false},
	}
}

// attentionCore builds one attention core over q, k, v and the key mask.
type attentionCore struct {
	name  string
	build func(q, k, v, m *G.Node, s AttentionShape) (*G.Node, error)
}

// attentionCores are the dense core and flash with tiles small enough that
// the test shapes span several (and ragged) tiles.
func attentionCores() []attentionCore {
	flash := func(block int) func(q, k, v, m *G.Node, s AttentionShape) (*G.Node, error) {
		return func(q, k, v, m *G.Node, s AttentionShape) (*G.Node, error) {
			return FlashAttention(q, k, v, m, s, block)
		}
	}
	return []attentionCore{{"dense", Attention}, {"flash-block2", flash(2)}, {"flash-block3", flash(3)}}
}

func buildAttention(g *G.ExprGraph, rng *rand.Rand, s AttentionShape, masked bool,
	core func(q, k, v, m *G.Node, s AttentionShape) (*G.Node, error)) (out, q, k, v, m *G.Node, err error) {
	q = Variable(g, "q", RandomTensor(rng, 1, s.Batch*s.QLen, s.Heads*s.HeadDim))
	k = Variable(g, "k", RandomTensor(rng, 1, s.Batch*s.KLen, s.KVHeads*s.HeadDim))
	v = Variable(g, "v", RandomTensor(rng, 1, s.Batch*s.KLen, s.KVHeads*s.VDim()))
	if masked {
		mt := mask01(rng, s.Batch*s.KLen, 0.3)
		mt.Data().([]float64)[0] = 1 // key 0 of sequence 0 real, so causal rows see something
		m = Variable(g, "mask", mt)
	}
	out, err = core(q, k, v, m, s)
	return out, q, k, v, m, err
}

func TestOpGradients(t *testing.T) {
	rng := testRNG(t)
	for _, c := range opCases() {
		t.Run(c.name, func(t *testing.T) {
			g := G.NewGraph()
			out, wrt, err := c.build(g, rng)
			if err != nil {
				t.Fatal(err)
			}
			res, err := GradCheck{}.Run(g, out, wrt)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Pass {
				t.Errorf("gradient check failed: %v", res)
			}
		})
	}
	for _, c := range attentionCases() {
		for _, core := range attentionCores() {
			t.Run("Attention/"+core.name+"/"+c.name, func(t *testing.T) {
				g := G.NewGraph()
				out, q, k, v, _, err := buildAttention(g, rng, c.shape, c.masked, core.build)
				if err != nil {
					t.Fatal(err)
				}
				res, err := GradCheck{}.Run(g, out, []*G.Node{q, k, v})
				if err != nil {
					t.Fatal(err)
				}
				if !res.Pass {
					t.Errorf("gradient check failed: %v", res)
				}
			})
		}
	}
}

// The checker must be able to fail: Gorgonia's InverseSqrt has a wrong
// gradient (-g/(2 y^3) instead of -g y^3 / 2), and Pow(x, -0.5) a right one.
func TestGradCheckCatchesInverseSqrt(t *testing.T) {
	rng := testRNG(t)
	for _, c := range []struct {
		name string
		f    func(*G.Node) (*G.Node, error)
		pass bool
	}{
		{"InverseSqrt", G.InverseSqrt, false},
		{"Pow-0.5", func(x *G.Node) (*G.Node, error) {
			return G.Pow(x, G.NewConstant(-0.5))
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := G.NewGraph()
			xt := RandomTensor(rng, 1, 4, 3)
			for i, d := 0, xt.Data().([]float64); i < len(d); i++ {
				d[i] = 0.5 + math.Abs(d[i]) // positive, away from 0 and 1
			}
			x := Variable(g, "x", xt)
			out, err := c.f(x)
			if err != nil {
				t.Fatal(err)
			}
			res, err := GradCheck{}.Run(g, out, []*G.Node{x})
			if err != nil {
				t.Fatal(err)
			}
			if res.Pass != c.pass {
				t.Errorf("pass = %v, want %v: %v", res.Pass, c.pass, res)
			}
		})
	}
}

// A ReLU input within the default step (1e-5) of its kink makes the first
// central difference wrong (it straddles 0): the check measures such an
// element again with smaller steps, and passes. A wrong gradient still
// fails at every step (TestGradCheckCatchesInverseSqrt).
func TestGradCheckStepsPastAKink(t *testing.T) {
	g := G.NewGraph()
	near := []float64{3e-6, -4e-6, 0.5, -0.5, 2e-6, 0.25}
	xt := RandomTensor(testRNG(t), 1, 2, 3)
	copy(xt.Data().([]float64), near)
	x := Variable(g, "x", xt)
	out, err := Activate(x, ReLU)
	if err != nil {
		t.Fatal(err)
	}
	res, err := GradCheck{}.Run(g, out, []*G.Node{x})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Pass {
		t.Errorf("ReLU beside its kink: %v", res)
	}
}

// The float32 GELU path uses a polynomial erf; it must agree with the exact
// form to float32 resolution.
func TestFastGELU(t *testing.T) {
	for x := -8.0; x <= 8; x += 0.01 {
		if d := math.Abs(geluFast(x) - gelu(x)); d > 1e-6*math.Max(1, math.Abs(x)) {
			t.Fatalf("gelu(%g): fast %g exact %g", x, geluFast(x), gelu(x))
		}
		if d := math.Abs(geluGradFast(x) - geluGrad(x)); d > 1e-6*math.Max(1, math.Abs(x)) {
			t.Fatalf("gelu'(%g): fast %g exact %g", x, geluGradFast(x), geluGrad(x))
		}
	}
}
