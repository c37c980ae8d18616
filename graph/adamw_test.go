package graph

import (
	"math"
	"math/rand/v2"
	"testing"
)

// scalarAdamW is the update AdamWPrefix32 vectorizes, written out.
func scalarAdamW(w, g []float32, m, v []float64, lr, wd, scale, b1, b2, eps, c1, c2 float64) {
	for j := range w {
		gj := float64(g[j]) * scale
		m[j] = b1*m[j] + (1-b1)*gj
		v[j] = b2*v[j] + (1-b2)*gj*gj
		x := float64(w[j])
		x -= lr * (wd*x + (m[j]/c1)/(math.Sqrt(v[j]/c2)+eps))
		w[j] = float32(x)
	}
}

func TestAdamWPrefix32(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, n := range []int{0, 1, 7, 8, 9, 64, 101} {
		w, g := randF32(rng, n), randF32(rng, n)
		m, v := make([]float64, n), make([]float64, n)
		for i := range m {
			m[i], v[i] = rng.NormFloat64()*0.1, rng.Float64()*0.01
		}
		w2, m2, v2 := append([]float32(nil), w...), append([]float64(nil), m...), append([]float64(nil), v...)
		args := []float64{3e-4, 0.01, 0.7, 0.9, 0.999, 1e-8, 0.19, 0.0399}
		d := AdamWPrefix32(w, g, m, v, args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7])
		if d > n || (hasAVX512 && d != n&^7) || (!hasAVX512 && d != 0) {
			t.Fatalf("n=%d: prefix %d", n, d)
		}
		scalarAdamW(w[d:], g[d:], m[d:], v[d:], args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7])
		scalarAdamW(w2, g, m2, v2, args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7])
		for i := range w {
			if math.Abs(float64(w[i]-w2[i])) > 1e-7*math.Abs(float64(w2[i])) ||
				math.Abs(m[i]-m2[i]) > 1e-15*math.Abs(m2[i]) || math.Abs(v[i]-v2[i]) > 1e-15*math.Abs(v2[i]) {
				t.Fatalf("n=%d, [%d]: w %v m %v v %v, scalar w %v m %v v %v", n, i, w[i], m[i], v[i], w2[i], m2[i], v2[i])
			}
		}
	}
}

func TestColSum32(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, d := range []int{1, 7, 8, 9, 15, 16, 17, 40, 64} {
		n := 5
		a := randF32(rng, n*d)
		got := make([]float32, d)
		colSum(a, got, n, d)
		for j := 0; j < d; j++ {
			var want float32
			for r := 0; r < n; r++ {
				want += a[r*d+j]
			}
			if got[j] != want {
				t.Fatalf("d=%d: column %d sum %v, want %v", d, j, got[j], want)
			}
		}
	}
}

// TestRowStats32: the float32 row statistics (AVX-512 for lengths that are
// multiples of 16) against the float64 ones on the same values.
func TestRowStats32(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, d := range []int{1, 3, 16, 17, 32, 128, 129} {
		for _, centered := range []bool{true, false} {
			r32 := randF32(rng, d)
			for i := range r32 {
				r32[i] = r32[i]*3 + 5 // an offset, so that centering matters
			}
			r64 := make([]float64, d)
			for i, v := range r32 {
				r64[i] = float64(v)
			}
			m32, s32 := rowStats(r32, centered, 1e-5)
			m64, s64 := rowStats(r64, centered, 1e-5)
			if math.Abs(m32-m64) > 1e-12*math.Max(1, math.Abs(m64)) || math.Abs(s32-s64) > 1e-12*s64 {
				t.Fatalf("d=%d centered=%t: float32 rows (%v, %v), float64 rows (%v, %v)", d, centered, m32, s32, m64, s64)
			}
		}
	}
}
