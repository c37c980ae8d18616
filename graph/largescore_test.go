package graph

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Large scores: exp overflows past 709 in float64 and 88 in float32, so a
// softmax that does not subtract the row maximum returns Inf/Inf = NaN for
// scores of 1e3 and more. These tests put every score near 1e3 or 1e4 and
// check the ops against max-subtracted float64 references, failing on the
// first non-finite value with a message that says so.

// naiveAttentionGrad is the gradient of sum(O * r) for O =
// naiveAttention(s, q, k, v, mask), from the definition: with P the
// weights, dP_ij = r_i . v_j, dS_ij = P_ij (dP_ij - sum_l P_il dP_il),
// dq_i = scale sum_j dS_ij k_j, dk_j = scale sum_i dS_ij q_i,
// dv_j = sum_i P_ij r_i (summed over the query heads of a group). No ALiBi.
func naiveAttentionGrad(s AttentionShape, q, k, v, mask, r []float64) (dq, dk, dv []float64) {
	wq, wk, dvw := s.Heads*s.HeadDim, s.KVHeads*s.HeadDim, s.VDim()
	dq, dk, dv = make([]float64, len(q)), make([]float64, len(k)), make([]float64, len(v))
	scale := 1 / math.Sqrt(float64(s.HeadDim))
	for b := 0; b < s.Batch; b++ {
		for h := 0; h < s.Heads; h++ {
			kh := h / (s.Heads / s.KVHeads)
			qi := func(i, c int) int { return (b*s.QLen+i)*wq + h*s.HeadDim + c }
			kj := func(j, c int) int { return (b*s.KLen+j)*wk + kh*s.HeadDim + c }
			vj := func(j, c int) int { return (b*s.KLen+j)*s.KVHeads*dvw + kh*dvw + c }
			ri := func(i, c int) int { return (b*s.QLen+i)*s.Heads*dvw + h*dvw + c }
			for i := 0; i < s.QLen; i++ {
				pos := i + s.KLen - s.QLen
				p := make([]float64, s.KLen)
				seen := make([]bool, s.KLen)
				mx := math.Inf(-1)
				for j := range p {
					if (s.Causal && j > pos) || (mask != nil && mask[b*s.KLen+j] == 0) {
						continue
					}
					seen[j] = true
					for c := 0; c < s.HeadDim; c++ {
						p[j] += q[qi(i, c)] * k[kj(j, c)]
					}
					p[j] *= scale
					mx = math.Max(mx, p[j])
				}
				var z float64
				for j := range p {
					if seen[j] {
						p[j] = math.Exp(p[j] - mx)
						z += p[j]
					}
				}
				if z == 0 {
					continue
				}
				dp := make([]float64, s.KLen)
				var sum float64
				for j := range p {
					if !seen[j] {
						continue
					}
					p[j] /= z
					for c := 0; c < dvw; c++ {
						dp[j] += r[ri(i, c)] * v[vj(j, c)]
						dv[vj(j, c)] += p[j] * r[ri(i, c)]
					}
					sum += p[j] * dp[j]
				}
				for j := range p {
					if !seen[j] {
						continue
					}
					ds := p[j] * (dp[j] - sum) * scale
					for c := 0; c < s.HeadDim; c++ {
						dq[qi(i, c)] += ds * k[kj(j, c)]
						dk[kj(j, c)] += ds * q[qi(i, c)]
					}
				}
			}
		}
	}
	return dq, dk, dv
}

// largeScoreInputs returns q, k, v, r for shape s whose scores are all
// offset plus an O(1) random part: the first dim of every query and key
// head is sqrt(offset sqrt(d)), the others uniform in +-1. The softmax is
// then shift-equivalent to one of O(1) scores, far from one-hot, so the
// comparison exercises the weights and not only the argmax.
func largeScoreInputs(rng *rand.Rand, s AttentionShape, offset float64) (q, k, v, r *tensor.Dense) {
	big := math.Sqrt(offset * math.Sqrt(float64(s.HeadDim)))
	lift := func(t *tensor.Dense) *tensor.Dense {
		d := t.Data().([]float64)
		for i := 0; i < len(d); i += s.HeadDim {
			d[i] = big
		}
		return t
	}
	q = lift(RandomTensor(rng, 1, s.Batch*s.QLen, s.Heads*s.HeadDim))
	k = lift(RandomTensor(rng, 1, s.Batch*s.KLen, s.KVHeads*s.HeadDim))
	v = RandomTensor(rng, 1, s.Batch*s.KLen, s.KVHeads*s.VDim())
	r = RandomTensor(rng, 1, s.Batch*s.QLen, s.Heads*s.VDim())
	return q, k, v, r
}

// nonFinite returns a message naming the first NaN or Inf of x, or "".
func nonFinite(name string, x []float64) string {
	for i, a := range x {
		if math.IsNaN(a) || math.IsInf(a, 0) {
			return fmt.Sprintf("%s[%d] = %g: not finite (a softmax without the max subtracted overflows exp at these scores)", name, i, a)
		}
	}
	return ""
}

// largeScoreTol is how close a core in dtype dt must come to the float64
// reference (relative, max norm) at scores near offset: float64 rounding,
// or float32 rounding of the scores themselves (offset x 2^-24 absolute,
// which moves the weights by as much relative), with room.
func largeScoreTol(dt tensor.Dtype, offset float64) float64 {
	if dt == tensor.Float32 {
		return 8 * offset * 0x1p-24
	}
	return 1e-9
}

// TestAttentionLargeScores: the dense and flash cores, float64 and float32,
// with every score near 1e3 and 1e4, return finite outputs and gradients
// that match the max-subtracted references.
func TestAttentionLargeScores(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 1))
	shapes := []struct {
		name   string
		shape  AttentionShape
		masked bool
	}{
		{"causal", AttentionShape{Batch: 2, QLen: 7, KLen: 7, Heads: 2, KVHeads: 2, HeadDim: 4, Causal: true}, false},
		{"bidirectional-padded", AttentionShape{Batch: 2, QLen: 6, KLen: 6, Heads: 2, KVHeads: 2, HeadDim: 4}, true},
		{"causal-padded-grouped", AttentionShape{Batch: 2, QLen: 9, KLen: 9, Heads: 4, KVHeads: 2, HeadDim: 3, Causal: true}, true},
	}
	for _, c := range shapes {
		for _, offset := range []float64{1e3, 1e4} {
			q, k, v, r := largeScoreInputs(rng, c.shape, offset)
			var m *tensor.Dense
			var mask []float64
			if c.masked {
				m = mask01(rng, c.shape.Batch*c.shape.KLen, 0.3)
				md := m.Data().([]float64)
				for b := 0; b < c.shape.Batch; b++ {
					md[b*c.shape.KLen] = 1 // every query sees a key
				}
				mask = md
			}
			for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
				// The reference runs on the values the core sees (rounded
				// to float32 for the float32 run).
				q32, q64 := as32(q)
				k32, k64 := as32(k)
				v32, v64 := as32(v)
				r32, r64 := as32(r)
				in := [4]*tensor.Dense{q, k, v, r}
				if dt == tensor.Float32 {
					in = [4]*tensor.Dense{q32, k32, v32, r32}
				} else {
					q64, k64, v64, r64 = q, k, v, r
				}
				var mIn *tensor.Dense
				if m != nil {
					mIn = m
					if dt == tensor.Float32 {
						mIn, _ = as32(m)
					}
				}
				s := c.shape
				want := naiveAttention(s, Float64s(q64), Float64s(k64), Float64s(v64), mask)
				wdq, wdk, wdv := naiveAttentionGrad(s, Float64s(q64), Float64s(k64), Float64s(v64), mask, Float64s(r64))
				for _, core := range attentionCores() {
					name := fmt.Sprintf("%s/%g/%v/%s", c.name, offset, dt, core.name)
					t.Run(name, func(t *testing.T) {
						got := runCore(t, core.build, s, in[0], in[1], in[2], mIn, in[3])
						tol := largeScoreTol(dt, offset)
						for _, o := range []struct {
							name      string
							got, want []float64
						}{{"out", got.out, want}, {"dq", got.dq, wdq}, {"dk", got.dk, wdk}, {"dv", got.dv, wdv}} {
							if msg := nonFinite(o.name, o.got); msg != "" {
								t.Fatal(msg)
							}
							d := maxRelDiff(o.got, o.want)
							t.Logf("%s: relative difference %.3g (tolerance %.3g)", o.name, d, tol)
							if d > tol {
								t.Errorf("%s: relative difference %.3g from the max-subtracted reference, want <= %.3g", o.name, d, tol)
							}
						}
					})
				}
			}
		}
	}
}

// TestAttentionWeightsLargeScores: the maps of trainer attnmap
// (AttentionWeights) at scores near 1e4 are finite and match the reference
// weights: every row sums to 1 and P V is the reference output.
func TestAttentionWeightsLargeScores(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 1))
	s := AttentionShape{Batch: 2, QLen: 5, KLen: 5, Heads: 2, KVHeads: 1, HeadDim: 4, Causal: true}
	q, k, v, _ := largeScoreInputs(rng, s, 1e4)
	g := G.NewGraph()
	w, err := AttentionWeights(Variable(g, "q", q), Variable(g, "k", k), nil, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := runForward(t, g, w)
	if msg := nonFinite("weights", p); msg != "" {
		t.Fatal(msg)
	}
	// P V row by row against the reference output.
	got := make([]float64, s.Batch*s.QLen*s.Heads*s.VDim())
	vd := Float64s(v)
	for b := 0; b < s.Batch; b++ {
		for h := 0; h < s.Heads; h++ {
			for i := 0; i < s.QLen; i++ {
				row := p[((b*s.Heads+h)*s.QLen+i)*s.KLen:][:s.KLen]
				for j, a := range row {
					for c := 0; c < s.VDim(); c++ {
						got[(b*s.QLen+i)*s.Heads*s.VDim()+h*s.VDim()+c] += a * vd[(b*s.KLen+j)*s.KVHeads*s.VDim()+c]
					}
				}
			}
		}
	}
	if d := maxRelDiff(got, naiveAttention(s, Float64s(q), Float64s(k), vd, nil)); d > 1e-9 {
		t.Errorf("P V differs from the reference output by %.3g", d)
	}
}

// TestLossAndGatesLargeLogits: softmax cross-entropy and the MoH gates at
// logits near 1e4 are finite and match their max-subtracted references.
func TestLossAndGatesLargeLogits(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 1))
	const n, vocab = 6, 5
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		zt := RandomTensor(rng, 2, n, vocab)
		z := zt.Data().([]float64)
		for i := range z {
			z[i] += 1e4
		}
		z32, z64 := as32(zt)
		in, zs := zt, z
		if dt == tensor.Float32 {
			in, zs = z32, Float64s(z64)
		}
		tg := ids(rng, n, vocab)
		wt := tensor.New(tensor.WithShape(n), tensor.WithBacking([]float64{1, 1, 1, 1, 1, 1}))
		tgIn, wIn := tg, wt
		if dt == tensor.Float32 {
			tgIn, _ = as32(tg)
			wIn, _ = as32(wt)
		}
		var want float64
		for r := 0; r < n; r++ {
			row := zs[r*vocab : (r+1)*vocab]
			mx := math.Inf(-1)
			for _, a := range row {
				mx = math.Max(mx, a)
			}
			var se float64
			for _, a := range row {
				se += math.Exp(a - mx)
			}
			want += (mx + math.Log(se) - row[int(Float64s(tg)[r])]) / n
		}
		g := G.NewGraph()
		ce, err := SoftmaxCrossEntropy(Variable(g, "z", in), Variable(g, "t", tgIn), Variable(g, "w", wIn))
		if err != nil {
			t.Fatal(err)
		}
		got := runForward(t, g, ce)
		if msg := nonFinite(fmt.Sprintf("%v cross-entropy", dt), got); msg != "" {
			t.Fatal(msg)
		}
		// float32 logits near 1e4 carry 1e4 x 2^-24 of rounding each.
		if tol := largeScoreTol(dt, 1e4); math.Abs(got[0]-want) > tol*math.Max(1, math.Abs(want)) {
			t.Errorf("%v cross-entropy %v at logits near 1e4, want %v", dt, got[0], want)
		}
	}

	m := mohRouting{heads: 4, shared: 1, topK: 2, softmax: true}
	zt := routerLogits(rng, 8, m.heads, m.shared)
	zd := zt.Data().([]float64)
	for i := range zd {
		zd[i] += 1e4
	}
	ot, rt := RandomTensor(rng, 1, 8, m.heads*3), RandomTensor(rng, 1, 8, m.heads*3)
	out, _, _ := runMoH(t, tensor.Float64, m, zt, ot, rt)
	if msg := nonFinite("moh gated output", out); msg != "" {
		t.Fatal(msg)
	}
	for i := range zd {
		zd[i] -= 1e4 // gates are shift-invariant within each softmax
	}
	ref, _, _ := runMoH(t, tensor.Float64, m, zt, ot, rt)
	if d := maxRelDiff(out, ref); d > 1e-9 {
		t.Errorf("moh gates at logits near 1e4 differ from those near 0 by %.3g", d)
	}
}
