package graph

import (
	"math"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// rotated returns Rotary applied to the same vector u at every position of
// one sequence of T positions (one head of dimension len(u)).
func rotated(t *testing.T, u []float64, s RotaryShape) [][]float64 {
	t.Helper()
	g := G.NewGraph()
	xt := tensor.New(tensor.WithShape(s.SeqLen, len(u)), tensor.Of(tensor.Float64))
	for n, d := 0, xt.Data().([]float64); n < s.SeqLen; n++ {
		copy(d[n*len(u):], u)
	}
	out, err := Rotary(Variable(g, "x", xt), s)
	if err != nil {
		t.Fatal(err)
	}
	flat := runForward(t, g, out)
	rows := make([][]float64, s.SeqLen)
	for n := range rows {
		rows[n] = flat[n*len(u) : (n+1)*len(u)]
	}
	return rows
}

// TestRotaryScores: the score between a rotated query at position i and a
// rotated key at j depends only on i - j, and equals the closed form
// sum_p zeta_p^((i-j)/B) [cos(d theta_p)(q_a k_a + q_b k_b) + sin(d theta_p)(q_a k_b - q_b k_a)]
// with d = i - j (zeta = 1 for RoPE); unrotated dims add q.k unchanged.
func TestRotaryScores(t *testing.T) {
	rng := testRNG(t)
	const T, dim = 9, 6
	for _, c := range []struct {
		name  string
		rot   int
		xposB float64
		base  float64
	}{
		{"rope", dim, 0, 10000},
		{"partial_rope", 2, 0, 10},
		{"xpos", dim, 4, 100},
	} {
		t.Run(c.name, func(t *testing.T) {
			q := Float64s(RandomTensor(rng, 1, dim))
			k := Float64s(RandomTensor(rng, 1, dim))
			s := RotaryShape{Batch: 1, SeqLen: T, Heads: 1, HeadDim: dim, RotDims: c.rot, Base: c.base, XPosScaleBase: c.xposB, Query: true}
			qs := rotated(t, q, s)
			s.Query = false
			ks := rotated(t, k, s)
			for i := 0; i < T; i++ {
				for j := 0; j < T; j++ {
					got := dot(qs[i], ks[j])
					d := float64(i - j)
					var want float64
					for p := 0; p < c.rot/2; p++ {
						theta := math.Pow(c.base, -2*float64(p)/float64(c.rot))
						zeta := 1.0
						if c.xposB > 0 {
							zeta = math.Pow((2*float64(p)/float64(c.rot)+0.4)/1.4, d/c.xposB)
						}
						qa, qb, ka, kb := q[2*p], q[2*p+1], k[2*p], k[2*p+1]
						want += zeta * (math.Cos(d*theta)*(qa*ka+qb*kb) + math.Sin(d*theta)*(qa*kb-qb*ka))
					}
					for c2 := c.rot; c2 < dim; c2++ {
						want += q[c2] * k[c2]
					}
					if math.Abs(got-want) > 1e-12*math.Max(1, math.Abs(want)) {
						t.Fatalf("score(%d, %d) = %g, closed form %g", i, j, got, want)
					}
					// relative: the pair one step earlier has the same score
					if i > 0 && j > 0 {
						if other := dot(qs[i-1], ks[j-1]); math.Abs(got-other) > 1e-12*math.Max(1, math.Abs(got)) {
							t.Fatalf("score(%d, %d) = %g but score(%d, %d) = %g", i, j, got, i-1, j-1, other)
						}
					}
				}
			}
		})
	}
}
