package graph

// AdamWPrefix32 applies the AdamW update to the longest prefix of w it can
// do with vector instructions (a multiple of 8 elements on CPUs with
// AVX-512, none elsewhere) and returns its length; the caller updates the
// rest. The arithmetic is train.adamw's, in float64, operation for
// operation: g' = g scale; m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g' g';
// w -= lr (wd w + (m/c1) / (sqrt(v/c2) + eps)).
func AdamWPrefix32(w, g []float32, m, v []float64, lr, wd, scale, b1, b2, eps, c1, c2 float64) int {
	n := len(w) &^ 7
	if !hasAVX512 || n == 0 || len(g) < n || len(m) < n || len(v) < n {
		return 0
	}
	p := [8]float64{scale, b1, 1 - b1, b2, 1 - b2, c1, c2, eps}
	adamwAVX512(&w[0], &g[0], &m[0], &v[0], n, &p, lr, wd)
	return n
}
