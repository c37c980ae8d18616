package graph

import (
	"math"
	"testing"

	G "gorgonia.org/gorgonia"
)

// naiveAttention is the textbook definition, loop by loop, with ALiBi's
// closed form -slope_h * |i - j| added to each score (slope_h = 2^(-8(h+1)/H)
// for a power-of-two H).
func naiveAttention(s AttentionShape, q, k, v, mask []float64) []float64 {
	dq, dk, dv := s.Heads*s.HeadDim, s.KVHeads*s.HeadDim, s.VDim()
	out := make([]float64, s.Batch*s.QLen*s.Heads*dv)
	for b := 0; b < s.Batch; b++ {
		for h := 0; h < s.Heads; h++ {
			kh := h / (s.Heads / s.KVHeads)
			slope := 0.0
			if s.ALiBi {
				slope = math.Pow(2, -8*float64(h+1)/float64(s.Heads))
			}
			for i := 0; i < s.QLen; i++ {
				pos := i + s.KLen - s.QLen
				scores := make([]float64, s.KLen)
				mx := math.Inf(-1)
				for j := 0; j < s.KLen; j++ {
					scores[j] = math.Inf(-1)
					if (s.Causal && j > pos) || (mask != nil && mask[b*s.KLen+j] == 0) {
						continue
					}
					var dot float64
					for c := 0; c < s.HeadDim; c++ {
						dot += q[(b*s.QLen+i)*dq+h*s.HeadDim+c] * k[(b*s.KLen+j)*dk+kh*s.HeadDim+c]
					}
					scores[j] = dot/math.Sqrt(float64(s.HeadDim)) - slope*math.Abs(float64(pos-j))
					mx = math.Max(mx, scores[j])
				}
				if math.IsInf(mx, -1) {
					continue
				}
				var z float64
				for j := range scores {
					scores[j] = math.Exp(scores[j] - mx)
					z += scores[j]
				}
				for j := range scores {
					for c := 0; c < dv; c++ {
						out[(b*s.QLen+i)*s.Heads*dv+h*dv+c] += scores[j] / z * v[(b*s.KLen+j)*s.KVHeads*dv+kh*dv+c]
					}
				}
			}
		}
	}
	return out
}

func runForward(t *testing.T, g *G.ExprGraph, out *G.Node) []float64 {
	t.Helper()
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	return Float64s(out.Value())
}

func maxRelDiff(a, b []float64) float64 {
	var d, n float64
	for i := range a {
		d = math.Max(d, math.Abs(a[i]-b[i]))
		n = math.Max(n, math.Abs(b[i]))
	}
	return d / math.Max(n, 1e-300)
}

func TestAttentionMatchesDefinition(t *testing.T) {
	rng := testRNG(t)
	for _, c := range attentionCases() {
		t.Run(c.name, func(t *testing.T) {
			for _, core := range attentionCores() {
				g := G.NewGraph()
				out, q, k, v, m, err := buildAttention(g, rng, c.shape, c.masked, core.build)
				if err != nil {
					t.Fatal(err)
				}
				var mask []float64
				if m != nil {
					mask = Float64s(m.Value())
				}
				got := runForward(t, g, out)
				want := naiveAttention(c.shape, Float64s(q.Value()), Float64s(k.Value()), Float64s(v.Value()), mask)
				if d := maxRelDiff(got, want); d > 1e-12 {
					t.Errorf("%s: relative difference %g from the definition", core.name, d)
				}
			}
		})
	}
}

func TestNormsAndLossMatchDefinitions(t *testing.T) {
	rng := testRNG(t)
	const n, d = 4, 6
	xt, gt, bt := RandomTensor(rng, 2, n, d), RandomTensor(rng, 1, d), RandomTensor(rng, 1, d)
	x, gamma, beta := Float64s(xt), Float64s(gt), Float64s(bt)
	wantLN, wantRMS := make([]float64, n*d), make([]float64, n*d)
	for r := 0; r < n; r++ {
		row := x[r*d : (r+1)*d]
		var mean, ms float64
		for _, v := range row {
			mean += v / d
			ms += v * v / d
		}
		var variance float64
		for _, v := range row {
			variance += (v - mean) * (v - mean) / d
		}
		for j, v := range row {
			wantLN[r*d+j] = (v-mean)/math.Sqrt(variance+1e-5)*gamma[j] + beta[j]
			wantRMS[r*d+j] = v / math.Sqrt(ms+1e-5) * gamma[j]
		}
	}
	g := G.NewGraph()
	ln, _ := LayerNorm(Variable(g, "x", xt), Variable(g, "g", gt), Variable(g, "b", bt), 1e-5)
	if diff := maxRelDiff(runForward(t, g, ln), wantLN); diff > 1e-12 {
		t.Errorf("LayerNorm differs by %g", diff)
	}
	g = G.NewGraph()
	rms, _ := RMSNorm(Variable(g, "x", xt), Variable(g, "g", gt), 1e-5)
	if diff := maxRelDiff(runForward(t, g, rms), wantRMS); diff > 1e-12 {
		t.Errorf("RMSNorm differs by %g", diff)
	}

	// Cross-entropy: only weighted rows count.
	zt, tt, wt := RandomTensor(rng, 3, n, d), ids(rng, n, d), mask01(rng, n, 0.5)
	wt.Data().([]float64)[0] = 1
	z, tg, w := Float64s(zt), Float64s(tt), Float64s(wt)
	var want, wsum float64
	for r := 0; r < n; r++ {
		var se float64
		for j := 0; j < d; j++ {
			se += math.Exp(z[r*d+j])
		}
		want += w[r] * (math.Log(se) - z[r*d+int(tg[r])])
		wsum += w[r]
	}
	want /= wsum
	g = G.NewGraph()
	ce, _ := SoftmaxCrossEntropy(Variable(g, "z", zt), Variable(g, "t", tt), Variable(g, "w", wt))
	if got := runForward(t, g, ce)[0]; math.Abs(got-want) > 1e-12*math.Abs(want) {
		t.Errorf("cross-entropy %v, want %v", got, want)
	}
}
