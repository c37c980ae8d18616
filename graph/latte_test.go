package graph

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// naiveLatte is Latte from its definition, by loops over (t, s, l): per
// sequence and head, for each query t with visible keys V(t) (unpadded, s
// <= t when causal), alpha_tl = softmax_l(q_tl), p_tsl = softmax over s in
// V(t) of k_sl (each stabilized by its own maximum over V(t), not by the
// op's c_l), w_ts = sum_l alpha_tl p_tsl and y_t = sum_s w_ts v_s; a t
// with an empty V(t) outputs 0. It also returns the weights w [Batch*Heads*
// T, T] and the gradients of sum(y * R), derived pairwise: with G_ts = R_t .
// v_s, dv_s = sum_t w_ts R_t; A_tl = sum_s p_tsl G_ts gives dq_tl =
// alpha_tl (A_tl - sum_l' alpha_tl' A_tl'); and p_t.l being a softmax over
// s of alpha_tl G_ts's coefficient, dk_sl += alpha_tl p_tsl (G_ts - A_tl).
func naiveLatte(s LatteShape, q, k, v, mask, R []float64) (out, w, dq, dk, dv []float64) {
	T, L, e, H := s.SeqLen, s.Latents, s.ValueDim, s.Heads
	out = make([]float64, s.Batch*T*H*e)
	w = make([]float64, s.Batch*H*T*T)
	dq, dk, dv = make([]float64, len(q)), make([]float64, len(k)), make([]float64, len(v))
	for b := 0; b < s.Batch; b++ {
		for h := 0; h < H; h++ {
			qi := func(t, l int) int { return (b*T+t)*H*L + h*L + l }
			vi := func(t, c int) int { return (b*T+t)*H*e + h*e + c }
			for t := 0; t < T; t++ {
				var vis []int
				for s2 := 0; s2 < T; s2++ {
					if (mask == nil || mask[b*T+s2] != 0) && (!s.Causal || s2 <= t) {
						vis = append(vis, s2)
					}
				}
				if len(vis) == 0 {
					continue
				}
				alpha := make([]float64, L)
				qm := math.Inf(-1)
				for l := range alpha {
					qm = math.Max(qm, q[qi(t, l)])
				}
				var qz float64
				for l := range alpha {
					alpha[l] = math.Exp(q[qi(t, l)] - qm)
					qz += alpha[l]
				}
				p := make([][]float64, len(vis)) // p[n][l] for key vis[n]
				for n := range p {
					p[n] = make([]float64, L)
				}
				for l := range alpha {
					alpha[l] /= qz
					km := math.Inf(-1)
					for _, s2 := range vis {
						km = math.Max(km, k[qi(s2, l)])
					}
					var kz float64
					for n, s2 := range vis {
						p[n][l] = math.Exp(k[qi(s2, l)] - km)
						kz += p[n][l]
					}
					for n := range vis {
						p[n][l] /= kz
					}
				}
				gts := make([]float64, len(vis))
				for n, s2 := range vis {
					ws := 0.0
					for l := range alpha {
						ws += alpha[l] * p[n][l]
					}
					w[((b*H+h)*T+t)*T+s2] = ws
					for c := 0; c < e; c++ {
						out[vi(t, c)] += ws * v[vi(s2, c)]
						dv[vi(s2, c)] += ws * R[vi(t, c)]
						gts[n] += R[vi(t, c)] * v[vi(s2, c)]
					}
				}
				A := make([]float64, L)
				var aA float64
				for l := range alpha {
					for n := range vis {
						A[l] += p[n][l] * gts[n]
					}
					aA += alpha[l] * A[l]
				}
				for l := range alpha {
					dq[qi(t, l)] += alpha[l] * (A[l] - aA)
					for n, s2 := range vis {
						dk[qi(s2, l)] += alpha[l] * p[n][l] * (gts[n] - A[l])
					}
				}
			}
		}
	}
	return out, w, dq, dk, dv
}

// latteMask makes a key mask for rows of batch sequences of T positions:
// "none" is nil; "random" keeps position 0 of every sequence and about 60%
// of the others; "leading" is random but pads the first two positions of
// sequence 0 (causal rows that see no key) and all of the last sequence.
func latteMask(rng *rand.Rand, mode string, batch, T int) []float64 {
	if mode == "none" {
		return nil
	}
	m := make([]float64, batch*T)
	for i := range m {
		if i%T == 0 || rng.Float64() < 0.6 {
			m[i] = 1
		}
	}
	if mode == "leading" {
		m[0], m[1] = 0, 0
		clear(m[(batch-1)*T:])
	}
	return m
}

// maskNode is a copy of the key mask m as a node of g, nil for none.
func maskNode(g *G.ExprGraph, m []float64) *G.Node {
	if m == nil {
		return nil
	}
	return vecNode(g, "mask", append([]float64(nil), m...))
}

type latteCase struct {
	name  string
	s     LatteShape
	mask  string
	shift float64 // added to every key of sequence 1: the stabilizer must absorb it
}

func latteCases() []latteCase {
	var cases []latteCase
	for _, causal := range []bool{true, false} {
		for _, mask := range []string{"none", "random", "leading"} {
			for _, c := range []struct{ T, chunk int }{{11, 4}, {8, 8}, {5, 16}, {13, 1}} {
				for _, shift := range []float64{0, 750} {
					s := LatteShape{Batch: 3, SeqLen: c.T, Heads: 2, Latents: 3, ValueDim: 2, Causal: causal, Chunk: c.chunk}
					cases = append(cases, latteCase{fmt.Sprintf("causal=%v-mask=%s-T%d-chunk%d-shift%g", causal, mask, c.T, c.chunk, shift), s, mask, shift})
				}
			}
		}
	}
	return cases
}

// latteInputs draws q, k (scale 2) and v (scale 1), adding shift to the
// keys of sequence 1.
func latteInputs(rng *rand.Rand, s LatteShape, shift float64) (q, k, v *tensor.Dense) {
	rows := s.Batch * s.SeqLen
	q = RandomTensor(rng, 2, rows, s.Heads*s.Latents)
	k = RandomTensor(rng, 2, rows, s.Heads*s.Latents)
	v = RandomTensor(rng, 1, rows, s.Heads*s.ValueDim)
	if s.Batch > 1 {
		kd := k.Data().([]float64)
		w := s.Heads * s.Latents
		for i := s.SeqLen * w; i < 2*s.SeqLen*w; i++ {
			kd[i] += shift
		}
	}
	return q, k, v
}

// runGraph runs every node of g once.
func runGraph(t *testing.T, g *G.ExprGraph) {
	t.Helper()
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
}

func gradOf(t *testing.T, n *G.Node) []float64 {
	t.Helper()
	gv, err := n.Grad()
	if err != nil {
		t.Fatal(err)
	}
	return Float64s(gv)
}

// TestLatteMatchesQuadraticForm: the composition (GroupSoftmax, SeqMax,
// ShiftedExp, PrefixSum, SeenDiv, then LinearAttention) computes Latte's
// definition, outputs and the gradients of q, k and v to 1e-10 in float64
// against naiveLatte on fresh random inputs: causal and bidirectional,
// unpadded, padded and with rows and a whole sequence that see no key, T
// not a multiple of the chunk, chunks of 1 and of more than T, and keys
// shifted by 750 (exp would overflow without the stabilizer). The
// recorded weights (LinearAttentionWeights of the features) are the
// reference's w_ts.
func TestLatteMatchesQuadraticForm(t *testing.T) {
	rng := testRNG(t)
	for _, c := range latteCases() {
		t.Run(c.name, func(t *testing.T) {
			s := c.s
			qt, kt, vt := latteInputs(rng, s, c.shift)
			rt := RandomTensor(rng, 1, s.Batch*s.SeqLen, s.Heads*s.ValueDim)
			mask := latteMask(rng, c.mask, s.Batch, s.SeqLen)
			g := G.NewGraph()
			q, k, v, m := Variable(g, "q", qt), Variable(g, "k", kt), Variable(g, "v", vt), maskNode(g, mask)
			out, err := Latte(q, k, v, m, s)
			if err != nil {
				t.Fatal(err)
			}
			fq, fk, err := LatteFeatures(q, k, m, s)
			if err != nil {
				t.Fatal(err)
			}
			weights, err := LinearAttentionWeights(fq, fk, m, s.Linear())
			if err != nil {
				t.Fatal(err)
			}
			vm := runWeightedSum(t, g, out, Variable(g, "r", rt), q, k, v)
			defer vm.Close()
			wo, ww, wq, wk, wv := naiveLatte(s, Float64s(qt), Float64s(kt), Float64s(vt), mask, Float64s(rt))
			for _, x := range []struct {
				name      string
				got, want []float64
			}{{"out", Float64s(out.Value()), wo}, {"weights", Float64s(weights.Value()), ww},
				{"dq", gradOf(t, q), wq}, {"dk", gradOf(t, k), wk}, {"dv", gradOf(t, v), wv}} {
				if d := maxAbsDiff(x.got, x.want); !(d <= 1e-10) {
					t.Errorf("%s differs from the definition by %g", x.name, d)
				}
			}
		})
	}
}

// TestLatteGradCheck: finite differences through the whole composition,
// causal and bidirectional, padded (with causal rows that see no key), over
// several chunks.
func TestLatteGradCheck(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, causal := range []bool{true, false} {
		for _, mode := range []string{"none", "leading"} {
			s := LatteShape{Batch: 3, SeqLen: 9, Heads: 2, Latents: 3, ValueDim: 2, Causal: causal, Chunk: 4}
			g := G.NewGraph()
			qt, kt, vt := latteInputs(rng, s, 3)
			q, k, v := Variable(g, "q", qt), Variable(g, "k", kt), Variable(g, "v", vt)
			out, err := Latte(q, k, v, maskNode(g, latteMask(rng, mode, s.Batch, s.SeqLen)), s)
			if err != nil {
				t.Fatal(err)
			}
			res, err := GradCheck{Seed: 3}.Run(g, out, []*G.Node{q, k, v})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Pass {
				t.Errorf("causal %v, mask %s: %s", causal, mode, res)
			}
		}
	}
}

// TestGroupSoftmax: each group of columns is a softmax of its own entries
// (also far from 0, where an unstabilized exp overflows), and finite
// differences agree with the backward.
func TestGroupSoftmax(t *testing.T) {
	rng := testRNG(t)
	for _, c := range []struct{ rows, cols, group int }{{4, 6, 3}, {3, 5, 1}, {2, 8, 8}} {
		t.Run(fmt.Sprintf("%dx%d-group%d", c.rows, c.cols, c.group), func(t *testing.T) {
			g := G.NewGraph()
			xt := RandomTensor(rng, 3, c.rows, c.cols)
			xd := xt.Data().([]float64)
			xd[0] += 800
			x := Variable(g, "x", xt)
			y, err := GroupSoftmax(x, c.group)
			if err != nil {
				t.Fatal(err)
			}
			vm := G.NewTapeMachine(g)
			if err := vm.RunAll(); err != nil {
				t.Fatal(err)
			}
			vm.Close()
			want := make([]float64, len(xd))
			for i := 0; i < len(xd); i += c.group {
				m := math.Inf(-1)
				for _, v := range xd[i : i+c.group] {
					m = math.Max(m, v)
				}
				var z float64
				for j := i; j < i+c.group; j++ {
					want[j] = math.Exp(xd[j] - m)
					z += want[j]
				}
				for j := i; j < i+c.group; j++ {
					want[j] /= z
				}
			}
			if d := maxAbsDiff(Float64s(y.Value()), want); !(d <= 1e-14) {
				t.Errorf("differs from the softmax of each group by %g", d)
			}

			g = G.NewGraph()
			x = Variable(g, "x", RandomTensor(rng, 2, c.rows, c.cols))
			if y, err = GroupSoftmax(x, c.group); err != nil {
				t.Fatal(err)
			}
			res, err := GradCheck{}.Run(g, y, []*G.Node{x})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Pass {
				t.Error(res)
			}
		})
	}
	if _, err := GroupSoftmax(Variable(G.NewGraph(), "x", RandomTensor(rng, 1, 2, 5)), 3); err == nil {
		t.Error("GroupSoftmax took 5 columns in groups of 3")
	}
}

// TestPrefixSum: causal rows hold the sums over s <= t of their sequence
// only, bidirectional rows the sequence's total; finite differences agree
// with the backward (the reverse sum, or the total) in both.
func TestPrefixSum(t *testing.T) {
	rng := testRNG(t)
	const batch, T, C = 3, 5, 2
	for _, causal := range []bool{true, false} {
		t.Run(fmt.Sprintf("causal=%v", causal), func(t *testing.T) {
			g := G.NewGraph()
			xt := RandomTensor(rng, 1, batch*T, C)
			x := Variable(g, "x", xt)
			y, err := PrefixSum(x, batch, T, causal)
			if err != nil {
				t.Fatal(err)
			}
			res, err := GradCheck{}.Run(g, y, []*G.Node{x})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Pass {
				t.Error(res)
			}
			runGraph(t, g) // GradCheck leaves the last perturbed values
			xd := Float64s(xt)
			want := make([]float64, len(xd))
			for b := 0; b < batch; b++ {
				for tt := 0; tt < T; tt++ {
					for s := 0; s < T; s++ {
						if causal && s > tt {
							continue
						}
						for c := 0; c < C; c++ {
							want[(b*T+tt)*C+c] += xd[(b*T+s)*C+c]
						}
					}
				}
			}
			if d := maxAbsDiff(Float64s(y.Value()), want); !(d <= 1e-14) {
				t.Errorf("differs from the sums over time by %g", d)
			}
		})
	}
}

// TestLatteSeqMax: the per-sequence column maxima over the unpadded rows
// (0 for a sequence with none), and no gradient flows through them: the
// gradient of exp(x - SeqMax(x)) is exp(x - c) alone.
func TestLatteSeqMax(t *testing.T) {
	rng := testRNG(t)
	const batch, T, C = 3, 4, 2
	mask := latteMask(rng, "leading", batch, T)
	g := G.NewGraph()
	xt := RandomTensor(rng, 1, batch*T, C)
	x := Variable(g, "x", xt)
	m := maskNode(g, mask)
	c, err := SeqMax(x, m, batch, T)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ShiftedExp(x, c, m, batch, T)
	if err != nil {
		t.Fatal(err)
	}
	loss, err := G.Sum(e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := G.Grad(loss, x); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g, G.BindDualValues(x))
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	xd := Float64s(xt)
	want := make([]float64, batch*C)
	for b := 0; b < batch; b++ {
		for col := 0; col < C; col++ {
			best := math.Inf(-1)
			for tt := 0; tt < T; tt++ {
				if mask[b*T+tt] != 0 {
					best = math.Max(best, xd[(b*T+tt)*C+col])
				}
			}
			if math.IsInf(best, -1) {
				best = 0
			}
			want[b*C+col] = best
		}
	}
	if d := maxAbsDiff(Float64s(c.Value()), want); d != 0 {
		t.Errorf("maxima %v, want %v", Float64s(c.Value()), want)
	}
	if d := maxAbsDiff(gradOf(t, x), Float64s(e.Value())); !(d <= 1e-15) {
		t.Errorf("the gradient of sum(exp(x - c)) differs from exp(x - c) by %g: a gradient flowed through c", d)
	}
}

// TestLatteShiftedExpGradCheck: finite differences in x (shift held fixed),
// with and without padding; padded rows are 0 and get no gradient.
func TestLatteShiftedExpGradCheck(t *testing.T) {
	rng := testRNG(t)
	const batch, T, C = 2, 5, 3
	for _, mode := range []string{"none", "random"} {
		g := G.NewGraph()
		x := Variable(g, "x", RandomTensor(rng, 2, batch*T, C))
		shift := Variable(g, "shift", RandomTensor(rng, 1, batch, C))
		mask := latteMask(rng, mode, batch, T)
		e, err := ShiftedExp(x, shift, maskNode(g, mask), batch, T)
		if err != nil {
			t.Fatal(err)
		}
		res, err := GradCheck{MaxPerInput: -1}.Run(g, e, []*G.Node{x})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Pass {
			t.Errorf("mask %s: %s", mode, res)
		}
		runGraph(t, g) // GradCheck leaves the last perturbed values
		for r := range mask {
			for col, v := range Float64s(e.Value())[r*C : (r+1)*C] {
				if mask[r] == 0 && v != 0 {
					t.Errorf("padded row %d, column %d: %g, want 0", r, col, v)
				}
			}
		}
	}
}

// TestLatteSeenDivGradCheck: a / d on the rows that see a key, 0 on the
// others (causal: before the first unpadded row; bidirectional: a sequence
// with none), and finite differences in a and d agree with the backward.
func TestLatteSeenDivGradCheck(t *testing.T) {
	rng := testRNG(t)
	const batch, T, C = 3, 4, 2
	for _, causal := range []bool{true, false} {
		g := G.NewGraph()
		at, dt := RandomTensor(rng, 1, batch*T, C), RandomTensor(rng, 1, batch*T, C)
		positiveInputs(dt)
		a, d := Variable(g, "a", at), Variable(g, "d", dt)
		mask := latteMask(rng, "leading", batch, T)
		y, err := SeenDiv(a, d, maskNode(g, mask), batch, T, causal)
		if err != nil {
			t.Fatal(err)
		}
		res, err := GradCheck{MaxPerInput: -1}.Run(g, y, []*G.Node{a, d})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Pass {
			t.Errorf("causal %v: %s", causal, res)
		}
		runGraph(t, g) // GradCheck leaves the last perturbed values
		ad, dd, yd := Float64s(at), Float64s(dt), Float64s(y.Value())
		for b := 0; b < batch; b++ {
			any := false
			for tt := 0; tt < T; tt++ {
				any = any || mask[b*T+tt] != 0
			}
			seen := false
			for tt := 0; tt < T; tt++ {
				seen = seen || mask[b*T+tt] != 0 || (!causal && any)
				for col := 0; col < C; col++ {
					i := (b*T+tt)*C + col
					want := 0.0
					if seen {
						want = ad[i] / dd[i]
					}
					if yd[i] != want {
						t.Errorf("causal %v, sequence %d, row %d: %g, want %g", causal, b, tt, yd[i], want)
					}
				}
			}
		}
	}
}

// latteRun32 runs Latte in float32 on the float64 inputs and returns the
// output and the gradients of sum(out * R).
func latteRun32(t *testing.T, s LatteShape, ins []*tensor.Dense, mask []float64, R *tensor.Dense) [][]float64 {
	t.Helper()
	g := G.NewGraph()
	f32 := func(name string, x *tensor.Dense) *G.Node {
		d := Float64s(x)
		b := make([]float32, len(d))
		for i, v := range d {
			b[i] = float32(v)
		}
		return G.NewTensor(g, tensor.Float32, x.Shape().Dims(), G.WithShape(x.Shape().Clone()...), G.WithName(name),
			G.WithValue(tensor.New(tensor.WithShape(x.Shape().Clone()...), tensor.WithBacking(b))))
	}
	q, k, v := f32("q", ins[0]), f32("k", ins[1]), f32("v", ins[2])
	var m *G.Node
	if mask != nil {
		m = f32("mask", tensor.New(tensor.WithShape(len(mask)), tensor.WithBacking(append([]float64(nil), mask...))))
	}
	out, err := Latte(q, k, v, m, s)
	if err != nil {
		t.Fatal(err)
	}
	vm := runWeightedSum(t, g, out, f32("r", R), q, k, v)
	defer vm.Close()
	return [][]float64{Float64s(out.Value()), gradOf(t, q), gradOf(t, k), gradOf(t, v)}
}

// TestLatteFloat32: in float32 the ops agree with the float64 definition to
// float32 precision (outputs and gradients, causal and bidirectional,
// padded with rows that see no key); and the documented limit of the
// whole-sequence stabilizer: a causal row whose keys all lie 120 below a
// later key's maximum underflows in float32 to a non-finite output, not to
// a silently clamped one, while float64 computes it.
func TestLatteFloat32(t *testing.T) {
	rng := testRNG(t)
	for _, causal := range []bool{true, false} {
		s := LatteShape{Batch: 3, SeqLen: 11, Heads: 2, Latents: 3, ValueDim: 2, Causal: causal, Chunk: 4}
		qt, kt, vt := latteInputs(rng, s, 40)
		rt := RandomTensor(rng, 1, s.Batch*s.SeqLen, s.Heads*s.ValueDim)
		mask := latteMask(rng, "leading", s.Batch, s.SeqLen)
		got := latteRun32(t, s, []*tensor.Dense{qt, kt, vt}, mask, rt)
		wo, _, wq, wk, wv := naiveLatte(s, Float64s(qt), Float64s(kt), Float64s(vt), mask, Float64s(rt))
		for i, want := range [][]float64{wo, wq, wk, wv} {
			if d := maxAbsDiff(got[i], want); !(d <= 1e-5) {
				t.Errorf("causal %v: float32 result %d differs from the definition by %g", causal, i, d)
			}
		}
	}

	s := LatteShape{Batch: 1, SeqLen: 6, Heads: 1, Latents: 2, ValueDim: 2, Causal: true, Chunk: 4}
	qt, kt, vt := latteInputs(rng, s, 0)
	kd := kt.Data().([]float64)
	for i := 4 * s.Latents; i < len(kd); i++ {
		kd[i] += 120 // rows 4 and 5: rows 0..3 see keys 120 below the sequence's maximum
	}
	rt := RandomTensor(rng, 1, s.SeqLen, s.ValueDim)
	out := latteRun32(t, s, []*tensor.Dense{qt, kt, vt}, nil, rt)[0]
	if y := out[0]; !math.IsNaN(y) && !math.IsInf(y, 0) {
		t.Errorf("float32 row 0 under keys 120 below the maximum: %g, want the documented underflow (Inf or NaN)", y)
	}
	wo, _, _, _, _ := naiveLatte(s, Float64s(qt), Float64s(kt), Float64s(vt), nil, Float64s(rt))
	g := G.NewGraph()
	y, err := Latte(Variable(g, "q", qt), Variable(g, "k", kt), Variable(g, "v", vt), nil, s)
	if err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	if d := maxAbsDiff(Float64s(y.Value()), wo); !(d <= 1e-10) {
		t.Errorf("float64 with keys 120 apart differs from the definition by %g", d)
	}
}

// TestLatteRejectsBadShapes: mismatched inputs are errors, not panics.
func TestLatteRejectsBadShapes(t *testing.T) {
	rng := testRNG(t)
	s := LatteShape{Batch: 2, SeqLen: 3, Heads: 2, Latents: 3, ValueDim: 2, Chunk: 4}
	for _, c := range []struct {
		name       string
		qk, vc     int
		shapeEdits func(*LatteShape)
	}{
		{"q and k columns", 5, 4, nil},
		{"v columns", 6, 3, nil},
		{"no latents", 6, 4, func(s *LatteShape) { s.Latents = 0 }},
	} {
		g := G.NewGraph()
		sh := s
		if c.shapeEdits != nil {
			c.shapeEdits(&sh)
		}
		q := Variable(g, "q", RandomTensor(rng, 1, 6, c.qk))
		k := Variable(g, "k", RandomTensor(rng, 1, 6, c.qk))
		v := Variable(g, "v", RandomTensor(rng, 1, 6, c.vc))
		if _, err := Latte(q, k, v, nil, sh); err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
}
