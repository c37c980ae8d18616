package graph

import (
	"fmt"
	"math"
	"math/cmplx"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// naiveTokenStats is token statistics attention by loops, in complex
// arithmetic: for every token t it recomputes P_tk and M_tkc from scratch
// over the tokens it sees (s <= t causal, all s otherwise; padding left
// out), O(T^2) per sequence, and returns sum(out * R) and the outputs. It
// is analytic in w and tau (squares, not moduli; exp; division), so that
// its derivative along any input is Im(f(x + ih)) / h to machine precision
// (complex-step differentiation): gradients that come from no hand
// derivation.
func naiveTokenStats(s TokenStatsShape, w, tau []complex128, mask, R []float64) (loss complex128, out []complex128) {
	T, H, p := s.SeqLen, s.Heads, s.HeadDim
	out = make([]complex128, len(w))
	at := func(b, t, h, c int) int { return ((b*T+t)*H+h)*p + c }
	for b := 0; b < s.Batch; b++ {
		pi := make([]complex128, T*H)
		for t := 0; t < T; t++ {
			a := make([]complex128, H)
			mx := math.Inf(-1)
			for h := 0; h < H; h++ {
				for c := 0; c < p; c++ {
					a[h] += w[at(b, t, h, c)] * w[at(b, t, h, c)]
				}
				a[h] *= tau[h] / complex(float64(p), 0)
				mx = math.Max(mx, real(a[h]))
			}
			var sum complex128
			for h := range a {
				a[h] = cmplx.Exp(a[h] - complex(mx, 0))
				sum += a[h]
			}
			for h := range a {
				pi[t*H+h] = a[h] / sum
			}
		}
		for t := 0; t < T; t++ {
			for h := 0; h < H; h++ {
				var P complex128
				M := make([]complex128, p)
				for u := 0; u < T; u++ {
					if (s.Causal && u > t) || (mask != nil && mask[b*T+u] == 0) {
						continue
					}
					P += pi[u*H+h]
					for c := 0; c < p; c++ {
						x := w[at(b, u, h, c)]
						M[c] += pi[u*H+h] * x * x
					}
				}
				for c := 0; c < p; c++ {
					i := at(b, t, h, c)
					out[i] = -pi[t*H+h] * w[i] / (1 + M[c]/(P+TokenStatsEps))
					loss += out[i] * complex(R[i], 0)
				}
			}
		}
	}
	return loss, out
}

// naiveTokenStatsGrads returns the naive outputs and, by complex steps,
// the gradients of sum(out * R) with respect to w and tau.
func naiveTokenStatsGrads(s TokenStatsShape, w, tau, mask, R []float64) (out, dw, dtau []float64) {
	cw, ct := make([]complex128, len(w)), make([]complex128, len(tau))
	for i, x := range w {
		cw[i] = complex(x, 0)
	}
	for i, x := range tau {
		ct[i] = complex(x, 0)
	}
	_, co := naiveTokenStats(s, cw, ct, mask, R)
	for _, x := range co {
		out = append(out, real(x))
	}
	const h = 1e-30
	step := func(x []complex128, grad []float64) {
		for i := range x {
			x[i] += complex(0, h)
			l, _ := naiveTokenStats(s, cw, ct, mask, R)
			grad[i] = imag(l) / h
			x[i] -= complex(0, h)
		}
	}
	dw, dtau = make([]float64, len(w)), make([]float64, len(tau))
	step(cw, dw)
	step(ct, dtau)
	return out, dw, dtau
}

type tostCase struct {
	name string
	s    TokenStatsShape
	// mask: "" none, "random" (every sequence keeps its last position),
	// "first" (random, and the first position of sequence 0 is padding),
	// "empty" (random, and sequence 1 is all padding)
	mask string
}

func tostCases() []tostCase {
	var cases []tostCase
	for _, causal := range []bool{true, false} {
		for _, mask := range []string{"", "random", "first", "empty"} {
			for _, T := range []int{1, 2, 7, 12} {
				if mask == "first" && T == 1 {
					continue // a sequence of one padding token: "empty" covers it
				}
				s := TokenStatsShape{Batch: 3, SeqLen: T, Heads: 3, HeadDim: 4, Causal: causal}
				cases = append(cases, tostCase{fmt.Sprintf("causal=%v-mask=%s-T%d", causal, mask, T), s, mask})
			}
		}
	}
	return cases
}

func (c tostCase) keyMask(rng *rand.Rand) []float64 {
	if c.mask == "" {
		return nil
	}
	T := c.s.SeqLen
	m := make([]float64, c.s.Batch*T)
	for i := range m {
		if i%T == T-1 || rng.Float64() < 0.6 {
			m[i] = 1
		}
	}
	switch c.mask {
	case "first":
		m[0] = 0
	case "empty":
		clear(m[T : 2*T])
	}
	return m
}

// tostInputs draws w (entries in +-1.5, so that memberships range from
// even to peaked) and tau (in [-2, 3], negative temperatures included).
func tostInputs(rng *rand.Rand, s TokenStatsShape) (w, tau *tensor.Dense) {
	w = RandomTensor(rng, 1.5, s.rows(), s.width())
	tau = tensor.New(tensor.WithShape(s.Heads), tensor.Of(tensor.Float64))
	for i, d := 0, tau.Data().([]float64); i < len(d); i++ {
		d[i] = 5*rng.Float64() - 2
	}
	return w, tau
}

// TestTokenStatisticsMatchesNaive: the op (prefix sums causal, totals
// bidirectional) computes what the from-scratch loops compute, outputs and
// the gradients of w and tau to 1e-10 in float64 on fresh random inputs:
// causal and bidirectional, unpadded and padded (a causal sequence whose
// first token is padding, a sequence all padding), T from 1 to 12. The
// reference gradients are complex-step derivatives of the loops.
func TestTokenStatisticsMatchesNaive(t *testing.T) {
	rng := testRNG(t)
	for _, c := range tostCases() {
		t.Run(c.name, func(t *testing.T) {
			s := c.s
			wt, taut := tostInputs(rng, s)
			rt := RandomTensor(rng, 1, s.rows(), s.width())
			mask := c.keyMask(rng)
			g := G.NewGraph()
			w, tau := Variable(g, "w", wt), Variable(g, "tau", taut)
			var m *G.Node
			if mask != nil {
				m = Variable(g, "mask", tensor.New(tensor.WithShape(s.rows()), tensor.WithBacking(mask)))
			}
			out, err := TokenStatistics(w, tau, m, s)
			if err != nil {
				t.Fatal(err)
			}
			vm := runWeightedSum(t, g, out, Variable(g, "r", rt), w, tau)
			defer vm.Close()
			wo, ww, wtau := naiveTokenStatsGrads(s, Float64s(wt), Float64s(taut), mask, Float64s(rt))
			grad := func(n *G.Node) []float64 {
				gv, err := n.Grad()
				if err != nil {
					t.Fatal(err)
				}
				return Float64s(gv)
			}
			for _, x := range []struct {
				name      string
				got, want []float64
			}{{"out", Float64s(out.Value()), wo}, {"dw", grad(w), ww}, {"dtau", grad(tau), wtau}} {
				if d := maxAbsDiff(x.got, x.want); !(d <= 1e-10) {
					t.Errorf("%s differs from the naive form by %g", x.name, d)
				}
			}
		})
	}
}

// TestTokenStatisticsGradCheck: finite differences through the op (the
// gradient formulas themselves) for w and tau, causal and bidirectional,
// with and without padding.
func TestTokenStatisticsGradCheck(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, causal := range []bool{true, false} {
		for _, padded := range []bool{false, true} {
			s := TokenStatsShape{Batch: 2, SeqLen: 6, Heads: 3, HeadDim: 2, Causal: causal}
			g := G.NewGraph()
			wt, taut := tostInputs(rng, s)
			w, tau := Variable(g, "w", wt), Variable(g, "tau", taut)
			var m *G.Node
			if padded {
				m = Variable(g, "mask", tensor.New(tensor.WithShape(s.rows()), tensor.WithBacking([]float64{0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1})))
			}
			out, err := TokenStatistics(w, tau, m, s)
			if err != nil {
				t.Fatal(err)
			}
			res, err := GradCheck{MaxPerInput: 100}.Run(g, out, []*G.Node{w, tau})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Pass {
				t.Errorf("causal %v padded %v: %s", causal, padded, res)
			}
		}
	}
}

// TestTokenStatisticsFloat32: the float32 op agrees with the float64 one
// to float32 rounding (1e-5 of the largest value, or absolute below 1),
// outputs and gradients, padded (the kernels are generic over the dtype).
func TestTokenStatisticsFloat32(t *testing.T) {
	rng := testRNG(t)
	for _, causal := range []bool{true, false} {
		s := TokenStatsShape{Batch: 2, SeqLen: 9, Heads: 2, HeadDim: 3, Causal: causal}
		wt, taut := tostInputs(rng, s)
		rt := RandomTensor(rng, 1, s.rows(), s.width())
		mask := []float64{1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1}
		run := func(dt tensor.Dtype) (out, dw, dtau []float64) {
			conv := func(x *tensor.Dense) *tensor.Dense {
				if dt == tensor.Float64 {
					return x.Clone().(*tensor.Dense)
				}
				f := make([]float32, x.Shape().TotalSize())
				for i, v := range Float64s(x) {
					f[i] = float32(v)
				}
				return tensor.New(tensor.WithShape(x.Shape().Clone()...), tensor.WithBacking(f))
			}
			g := G.NewGraph()
			w, tau, r := Variable(g, "w", conv(wt)), Variable(g, "tau", conv(taut)), Variable(g, "r", conv(rt))
			m := Variable(g, "mask", conv(tensor.New(tensor.WithShape(s.rows()), tensor.WithBacking(mask))))
			o, err := TokenStatistics(w, tau, m, s)
			if err != nil {
				t.Fatal(err)
			}
			prod, err := G.HadamardProd(o, r)
			if err != nil {
				t.Fatal(err)
			}
			loss, err := G.Sum(prod)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := G.Grad(loss, w, tau); err != nil {
				t.Fatal(err)
			}
			vm := G.NewTapeMachine(g, G.BindDualValues(w, tau))
			defer vm.Close()
			if err := vm.RunAll(); err != nil {
				t.Fatal(err)
			}
			gw, _ := w.Grad()
			gt, _ := tau.Grad()
			return Float64s(o.Value()), Float64s(gw), Float64s(gt)
		}
		o64, w64, t64 := run(tensor.Float64)
		o32, w32, t32 := run(tensor.Float32)
		for _, x := range []struct {
			name      string
			got, want []float64
		}{{"out", o32, o64}, {"dw", w32, w64}, {"dtau", t32, t64}} {
			scale := 1.0
			for _, v := range x.want {
				scale = math.Max(scale, math.Abs(v))
			}
			if d := maxAbsDiff(x.got, x.want); !(d <= 1e-5*scale) {
				t.Errorf("causal %v: float32 %s differs from float64 by %g (largest %g)", causal, x.name, d, scale)
			}
		}
	}
}

// TestTokenStatisticsMembership: the map op's rows are the naive membership softmax
// over the heads, each summing to 1.
func TestTokenStatisticsMembership(t *testing.T) {
	rng := testRNG(t)
	s := TokenStatsShape{Batch: 2, SeqLen: 5, Heads: 3, HeadDim: 4}
	wt, taut := tostInputs(rng, s)
	g := G.NewGraph()
	pi, err := TokenMembership(Variable(g, "w", wt), Variable(g, "tau", taut), s)
	if err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	got, w, tau := Float64s(pi.Value()), Float64s(wt), Float64s(taut)
	if len(got) != s.rows()*s.Heads {
		t.Fatalf("%d values, want %d", len(got), s.rows()*s.Heads)
	}
	for r := 0; r < s.rows(); r++ {
		want := make([]float64, s.Heads)
		sum, gsum := 0.0, 0.0
		for h := range want {
			n := 0.0
			for c := 0; c < s.HeadDim; c++ {
				x := w[r*s.width()+h*s.HeadDim+c]
				n += x * x
			}
			want[h] = math.Exp(tau[h] * n / float64(s.HeadDim))
			sum += want[h]
		}
		for h := range want {
			want[h] /= sum
			gsum += got[r*s.Heads+h]
		}
		if d := maxAbsDiff(got[r*s.Heads:(r+1)*s.Heads], want); !(d <= 1e-12) || math.Abs(gsum-1) > 1e-12 {
			t.Errorf("row %d: %v (sum %v), want %v", r, got[r*s.Heads:(r+1)*s.Heads], gsum, want)
		}
	}
}

// TestTokenStatisticsNames: ops of different shapes, directions or masking
// get different names, so that Gorgonia never merges two of them into one
// node; the causal and bidirectional ops over the same inputs in one graph
// compute different outputs.
func TestTokenStatisticsNames(t *testing.T) {
	rng := testRNG(t)
	s := TokenStatsShape{Batch: 1, SeqLen: 4, Heads: 2, HeadDim: 2, Causal: true}
	wt, taut := tostInputs(rng, s)
	g := G.NewGraph()
	w, tau := Variable(g, "w", wt), Variable(g, "tau", taut)
	m := Variable(g, "mask", tensor.New(tensor.WithShape(4), tensor.WithBacking([]float64{1, 1, 1, 1})))
	bi := s
	bi.Causal = false
	var outs []*G.Node
	names := map[string]bool{}
	for _, x := range []struct {
		s    TokenStatsShape
		mask *G.Node
	}{{s, nil}, {bi, nil}, {s, m}, {bi, m}} {
		o, err := TokenStatistics(w, tau, x.mask, x.s)
		if err != nil {
			t.Fatal(err)
		}
		names[o.Op().String()] = true
		outs = append(outs, o)
	}
	if len(names) != 4 {
		t.Fatalf("op names %v: want 4 distinct", names)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	if d := maxAbsDiff(Float64s(outs[0].Value()), Float64s(outs[1].Value())); !(d > 1e-6) {
		t.Errorf("causal and bidirectional outputs differ by only %g", d)
	}
	if d := maxAbsDiff(Float64s(outs[0].Value()), Float64s(outs[2].Value())); !(d <= 1e-15) {
		t.Errorf("an all-ones mask changed the causal output by %g", d)
	}
}
