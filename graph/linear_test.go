package graph

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// naiveLinear is linear attention as its quadratic form, by loops over
// every (query, key) pair: a_ij = phi(q_i) . phi(k_j) for the unpadded,
// visible keys, out_i = sum_j a_ij v_j / (sum_j a_ij + eps); and the
// gradients of sum(out * R) from the same pairs (G_ij = u_i . v_j + g_i,
// u_i = R_i / den_i, g_i = -(R_i . out_i) / den_i); NormExact drops the
// eps, NormNone the division (den_i = 1, g_i = 0).
func naiveLinear(s LinearShape, q, k, v, mask, R []float64) (out, dq, dk, dv []float64) {
	T, d, e := s.SeqLen, s.HeadDim, s.vdim()
	H := s.Heads
	out = make([]float64, s.Batch*T*H*e)
	dq, dk, dv = make([]float64, len(q)), make([]float64, len(k)), make([]float64, len(v))
	for b := 0; b < s.Batch; b++ {
		for h := 0; h < H; h++ {
			qi := func(i, c int) int { return (b*T+i)*H*d + h*d + c }
			vi := func(i, c int) int { return (b*T+i)*H*e + h*e + c }
			sees := func(i, j int) bool { return (mask == nil || mask[b*T+j] != 0) && (!s.Causal || j <= i) }
			phi := func(x []float64, i int) []float64 {
				f := make([]float64, d)
				for c := range f {
					f[c] = s.feature(x[qi(i, c)])
				}
				return f
			}
			den := make([]float64, T)
			for i := 0; i < T; i++ {
				if s.Norm == NormEps {
					den[i] = LinearEps
				}
				for j := 0; j < T; j++ {
					if sees(i, j) {
						a := dot(phi(q, i), phi(k, j))
						den[i] += a
						for c := 0; c < e; c++ {
							out[vi(i, c)] += a * v[vi(j, c)]
						}
					}
				}
				if s.Norm == NormNone {
					den[i] = 1
				}
				inv := 1 / den[i]
				if den[i] == 0 { // NormExact: a row that sees no key outputs 0
					inv = 0
				}
				for c := 0; c < e; c++ {
					out[vi(i, c)] *= inv
				}
				den[i] = 1 / inv // +Inf for an empty row: its gradients are 0
			}
			for i := 0; i < T; i++ {
				g := 0.0
				for c := 0; c < e && s.Norm != NormNone; c++ {
					g -= R[vi(i, c)] * out[vi(i, c)] / den[i]
				}
				for j := 0; j < T; j++ {
					if !sees(i, j) {
						continue
					}
					fq, fk := phi(q, i), phi(k, j)
					G := g
					for c := 0; c < e; c++ {
						G += R[vi(i, c)] / den[i] * v[vi(j, c)]
						dv[vi(j, c)] += dot(fq, fk) * R[vi(i, c)] / den[i]
					}
					for c := 0; c < d; c++ {
						dq[qi(i, c)] += G * fk[c] * s.featureGrad(q[qi(i, c)])
						dk[qi(j, c)] += G * fq[c] * s.featureGrad(k[qi(j, c)])
					}
				}
			}
		}
	}
	return out, dq, dk, dv
}

func linearCases() []struct {
	name   string
	s      LinearShape
	padded bool
} {
	var cases []struct {
		name   string
		s      LinearShape
		padded bool
	}
	// identity features (positive inputs: see positiveInputs) with the
	// normalizations Performer and Latte use
	for _, fn := range [][2]string{{FeatureELU1, NormEps}, {FeatureReLU, NormEps}, {FeatureIdentity, NormExact}, {FeatureIdentity, NormNone}} {
		for _, causal := range []bool{true, false} {
			for _, padded := range []bool{false, true} {
				for _, c := range []struct{ T, chunk int }{{11, 4}, {8, 8}, {5, 16}, {13, 1}, {200, 16}} { // 200: enough chunks that the phases run in parallel
					s := LinearShape{Batch: 2, SeqLen: c.T, Heads: 2, HeadDim: 3, ValueDim: 2, Causal: causal, Feature: fn[0], Chunk: c.chunk, Norm: fn[1]}
					cases = append(cases, struct {
						name   string
						s      LinearShape
						padded bool
					}{fmt.Sprintf("%s-norm=%s-causal=%v-padded=%v-T%d-chunk%d", fn[0], fn[1], causal, padded, c.T, c.chunk), s, padded})
				}
			}
		}
	}
	return cases
}

// positiveInputs makes the entries of ts positive (|x| + 0.1), as the
// features identity-feature callers pass are, so that normalizers stay away
// from 0.
func positiveInputs(ts ...tensor.Tensor) {
	for _, t := range ts {
		d := t.Data().([]float64)
		for i, x := range d {
			d[i] = math.Abs(x) + 0.1
		}
	}
}

// TestLinearMatchesQuadraticForm: the chunked op computes what the
// quadratic form computes, outputs and the three gradients to 1e-10 in
// float64 on fresh random inputs: both feature maps, causal and
// bidirectional, padded, T not a multiple of the chunk, chunks of 1 and of
// more than T; with GOMAXPROCS 1 (one group of chunks per head) and 16
// (waves of up to 16 heads, each head's chunks split into groups, run in
// parallel where large enough).
func TestLinearMatchesQuadraticForm(t *testing.T) {
	rng := testRNG(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, procs := range []int{1, 16} {
		runtime.GOMAXPROCS(procs)
		for _, c := range linearCases() {
			testLinearCase(t, rng, fmt.Sprintf("procs%d-%s", procs, c.name), c.s, c.padded)
		}
	}
}

func testLinearCase(t *testing.T, rng *rand.Rand, name string, s LinearShape, padded bool) {
	t.Run(name, func(t *testing.T) {
		rows := s.Batch * s.SeqLen
		qt := RandomTensor(rng, 1, rows, s.Heads*s.HeadDim)
		kt := RandomTensor(rng, 1, rows, s.Heads*s.HeadDim)
		if s.Feature == FeatureIdentity {
			positiveInputs(qt, kt)
		}
		vt := RandomTensor(rng, 1, rows, s.Heads*s.vdim())
		rt := RandomTensor(rng, 1, rows, s.Heads*s.vdim())
		var mask []float64
		g := G.NewGraph()
		q, k, v := Variable(g, "q", qt), Variable(g, "k", kt), Variable(g, "v", vt)
		var m *G.Node
		if padded {
			mask = make([]float64, rows)
			for i := range mask {
				if i%s.SeqLen == 0 || rng.Float64() < 0.6 {
					mask[i] = 1
				}
				if s.Norm == NormExact && i == 0 {
					mask[i] = 0 // causal, row 0 of sequence 0 sees no key
				}
			}
			m = Variable(g, "mask", tensor.New(tensor.WithShape(rows), tensor.WithBacking(mask)))
		}
		out, err := LinearAttention(q, k, v, m, s)
		if err != nil {
			t.Fatal(err)
		}
		vm := runWeightedSum(t, g, out, Variable(g, "r", rt), q, k, v)
		defer vm.Close()
		wo, wq, wk, wv := naiveLinear(s, Float64s(qt), Float64s(kt), Float64s(vt), mask, Float64s(rt))
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
		}{{"out", Float64s(out.Value()), wo}, {"dq", grad(q), wq}, {"dk", grad(k), wk}, {"dv", grad(v), wv}} {
			if d := maxAbsDiff(x.got, x.want); !(d <= 1e-10) {
				t.Errorf("%s differs from the quadratic form by %g", x.name, d)
			}
		}
	})
}

// TestLinearGradCheck: finite differences through the op (the gradient
// formulas themselves), causal and bidirectional, over several chunks.
func TestLinearGradCheck(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, causal := range []bool{true, false} {
		for _, feature := range []string{FeatureELU1, FeatureReLU} {
			s := LinearShape{Batch: 1, SeqLen: 9, Heads: 2, HeadDim: 3, Causal: causal, Feature: feature, Chunk: 4}
			g := G.NewGraph()
			q := Variable(g, "q", RandomTensor(rng, 1, 9, 6))
			k := Variable(g, "k", RandomTensor(rng, 1, 9, 6))
			v := Variable(g, "v", RandomTensor(rng, 1, 9, 6))
			out, err := LinearAttention(q, k, v, nil, s)
			if err != nil {
				t.Fatal(err)
			}
			res, err := GradCheck{}.Run(g, out, []*G.Node{q, k, v})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Pass {
				t.Errorf("causal %v %s: %s", causal, feature, res)
			}
		}
	}
}
