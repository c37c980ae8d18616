package graph

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// naiveGemm is the definition: C = alpha op(A) op(B) + beta C, in float64.
func naiveGemm(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for p := 0; p < k; p++ {
				var av, bv float32
				if tA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if tB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += float64(av) * float64(bv)
			}
			old := float64(c[i*ldc+j])
			if beta == 0 {
				old = 0
			}
			c[i*ldc+j] = float32(float64(alpha)*s + float64(beta)*old)
		}
	}
}

func TestSgemmKernelsMatchNaive(t *testing.T) {
	type shape struct{ m, n, k int }
	shapes := []shape{{1, 1, 1}, {3, 5, 7}, {8, 32, 4}, {6, 16, 1}, {9, 33, 17}, {13, 31, 300},
		{64, 64, 32}, {100, 70, 513}, {257, 129, 64}, {2, 2100, 5}, {300, 9, 260}, {5, 3, 0},
		{13, 40, 2500}} // the last split over k (sgemmSplitOverK), a ragged last chunk
	rng := rand.New(rand.NewPCG(1, 2))
	for _, kn := range sgemmKernels() {
		for _, s := range shapes {
			for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
				for _, ab := range [][2]float32{{1, 0}, {0.5, 1}, {-2, 0.25}} {
					tA, tB, alpha, beta := tr[0], tr[1], ab[0], ab[1]
					name := fmt.Sprintf("%s/%dx%dx%d/tA=%t,tB=%t/alpha=%g,beta=%g", kn.name, s.m, s.n, s.k, tA, tB, alpha, beta)
					// Padded leading dimensions, so strides are exercised.
					ar, ac := s.m, s.k
					if tA {
						ar, ac = s.k, s.m
					}
					br, bc := s.k, s.n
					if tB {
						br, bc = s.n, s.k
					}
					lda, ldb, ldc := ac+3, bc+1, s.n+2
					a := randF32(rng, max(ar*lda, 1))
					b := randF32(rng, max(br*ldb, 1))
					c := randF32(rng, s.m*ldc)
					if beta == 0 {
						for i := range c {
							c[i] = float32(math.NaN()) // beta 0 must overwrite, not scale
						}
					}
					want := append([]float32(nil), c...)
					naiveGemm(tA, tB, s.m, s.n, s.k, alpha, a, lda, b, ldb, beta, want, ldc)
					got := append([]float32(nil), c...)
					sgemmWith(kn, tA, tB, s.m, s.n, s.k, alpha, a, lda, b, ldb, beta, got, ldc)
					for i := range got {
						tol := 1e-5 * float64(s.k+1)
						bothNaN := got[i] != got[i] && want[i] != want[i] // untouched padding
						if d := math.Abs(float64(got[i] - want[i])); !(d <= tol) && !bothNaN {
							t.Fatalf("%s: C[%d] = %g, want %g", name, i, got[i], want[i])
						}
					}
				}
			}
		}
	}
}

// TestSgemmSplitOverKIsDeterministic: a product split over k (a weight
// gradient's shape) gives the same bits on 1 and 4 threads.
func TestSgemmSplitOverKIsDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	m, n, k := 128, 96, 5000
	a, b := randF32(rng, k*m), randF32(rng, k*n)
	run := func(threads int) []float32 {
		prev := runtime.GOMAXPROCS(threads)
		defer runtime.GOMAXPROCS(prev)
		c := make([]float32, m*n)
		sgemm(true, false, m, n, k, 1, a, m, b, n, 0, c, n)
		return c
	}
	one, four := run(1), run(4)
	for i := range one {
		if one[i] != four[i] {
			t.Fatalf("C[%d]: %g on 1 thread, %g on 4", i, one[i], four[i])
		}
	}
}

func TestSgemmParallelMatchesSerial(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	m, n, k := 301, 257, 129 // above the parallel threshold, ragged blocks
	a, b := randF32(rng, m*k), randF32(rng, k*n)
	serial := make([]float32, m*n)
	prev := runtime.GOMAXPROCS(1)
	sgemm(false, false, m, n, k, 1, a, k, b, n, 0, serial, n)
	runtime.GOMAXPROCS(4)
	defer runtime.GOMAXPROCS(prev)
	par := make([]float32, m*n)
	sgemm(false, false, m, n, k, 1, a, k, b, n, 0, par, n)
	for i := range par {
		if par[i] != serial[i] {
			t.Fatalf("C[%d]: parallel %g, serial %g", i, par[i], serial[i])
		}
	}
}

func TestSgemmShortSlicePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for a C too short for its shape")
		}
	}()
	sgemm(false, false, 4, 4, 4, 1, make([]float32, 16), 4, make([]float32, 16), 4, 0, make([]float32, 15), 4)
}

func randF32(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.NormFloat64())
	}
	return s
}

// BenchmarkSgemm compares each micro-kernel with gonum's Sgemm (the pure-Go
// build's BLAS before this one) and the BLAS this binary links, on the
// reference model's shapes: (2048x128)(128x384) is the QKV projection,
// 2048x512x128 the FFN, 128x512x2048 a weight gradient, 256x256x32 one
// head's scores.
func BenchmarkSgemm(b *testing.B) {
	type shape struct {
		m, n, k int
		tA, tB  bool
	}
	shapes := []shape{{2048, 384, 128, false, false}, {2048, 512, 128, false, false}, {2048, 128, 512, false, false},
		{128, 512, 2048, true, false}, {2048, 128, 512, false, true}, {256, 256, 32, false, true}, {256, 32, 256, false, false},
		{64, 64, 32, false, true}}
	rng := rand.New(rand.NewPCG(5, 6))
	for _, s := range shapes {
		a, bb, c := randF32(rng, s.m*s.k), randF32(rng, s.k*s.n), make([]float32, s.m*s.n)
		lda, ldb := s.k, s.n
		if s.tA {
			lda = s.m
		}
		if s.tB {
			ldb = s.k
		}
		run := func(name string, f func()) {
			b.Run(fmt.Sprintf("%dx%dx%d,tA=%t,tB=%t/%s", s.m, s.n, s.k, s.tA, s.tB, name), func(b *testing.B) {
				for b.Loop() {
					f()
				}
				b.ReportMetric(2*float64(s.m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
		for _, kn := range sgemmKernels() {
			run(kn.name, func() { sgemmWith(kn, s.tA, s.tB, s.m, s.n, s.k, 1, a, lda, bb, ldb, 0, c, s.n) })
		}
		ta, tb := blas.NoTrans, blas.NoTrans
		if s.tA {
			ta = blas.Trans
		}
		if s.tB {
			tb = blas.Trans
		}
		run("gonum", func() { gonum.Implementation{}.Sgemm(ta, tb, s.m, s.n, s.k, 1, a, lda, bb, ldb, 0, c, s.n) })
		if _, isGonum := BLAS().(gonum.Implementation); !isGonum {
			run("linked", func() { BLAS().Sgemm(ta, tb, s.m, s.n, s.k, 1, a, lda, bb, ldb, 0, c, s.n) })
		}
	}
}
