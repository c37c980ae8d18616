package graph

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Feature maps of linear attention.
const (
	FeatureELU1 = "elu1" // elu(x) + 1 (Katharopoulos et al. 2020)
	FeatureReLU = "relu" // max(x, 0)
	// FeatureIdentity takes q and k as the features already (phi(x) = x):
	// for callers that compute their own, such as Performer's random
	// features or Latte's latent weights.
	FeatureIdentity = "identity"
)

// Normalizations of linear attention's output.
const (
	// NormEps divides by sum_j a_ij + LinearEps (the paper's).
	NormEps = ""
	// NormExact divides by sum_j a_ij exactly, a row whose sum is 0
	// outputting 0 (with positive features only rows that see no key).
	NormExact = "exact"
	// NormNone does not divide: out_i = sum_j a_ij v_j, for features that
	// carry their own normalization (Latte's).
	NormNone = "none"
)

// LinearEps is added to linear attention's normalizer, as the paper's
// implementation does, so that a query whose features meet no key's (all
// zero with relu) outputs 0 instead of 0/0.
const LinearEps = 1e-6

// LinearShape describes linear attention's inputs: Batch sequences of
// SeqLen positions, Heads heads of HeadDim query/key dimensions and ValueDim
// value dimensions (0: HeadDim), causal or not, in chunks of Chunk
// positions, with feature map Feature and normalization Norm (NormEps,
// NormExact or NormNone).
type LinearShape struct {
	Batch, SeqLen, Heads, HeadDim, ValueDim int
	Causal                                  bool
	Feature                                 string
	Chunk                                   int
	Norm                                    string
}

func (s LinearShape) vdim() int {
	if s.ValueDim > 0 {
		return s.ValueDim
	}
	return s.HeadDim
}

func (s LinearShape) validate() error {
	switch {
	case s.Batch < 1 || s.SeqLen < 1 || s.Heads < 1 || s.HeadDim < 1 || s.ValueDim < 0 || s.Chunk < 1:
		return fmt.Errorf("linear attention: sizes must be positive: %+v", s)
	case s.Feature != FeatureELU1 && s.Feature != FeatureReLU && s.Feature != FeatureIdentity:
		return fmt.Errorf("linear attention: unknown feature map %q (want %s, %s or %s)", s.Feature, FeatureELU1, FeatureReLU, FeatureIdentity)
	case s.Norm != NormEps && s.Norm != NormExact && s.Norm != NormNone:
		return fmt.Errorf("linear attention: unknown normalization %q (want %q, %s or %s)", s.Norm, NormEps, NormExact, NormNone)
	}
	return nil
}

// feature and featureGrad are phi and phi' of the feature map.
func (s LinearShape) feature(x float64) float64 {
	if s.Feature == FeatureIdentity {
		return x
	}
	if s.Feature == FeatureReLU {
		return math.Max(x, 0)
	}
	if x > 0 {
		return x + 1
	}
	return math.Exp(x)
}

func (s LinearShape) featureGrad(x float64) float64 {
	if x > 0 || s.Feature == FeatureIdentity {
		return 1
	}
	if s.Feature == FeatureReLU {
		return 0
	}
	return math.Exp(x)
}

// LinearAttention is linear attention (Katharopoulos et al. 2020,
// "Transformers are RNNs: Fast Autoregressive Transformers with Linear
// Attention") over q, k [Batch*SeqLen, Heads*HeadDim] and v [Batch*SeqLen,
// Heads*ValueDim], with key mask keyMask [Batch*SeqLen] (nil: none): per
// sequence and head, with phi the feature map,
//
//	out_i = sum_j a_ij v_j / (sum_j a_ij + eps),   a_ij = phi(q_i) . phi(k_j)
//
// over the unpadded keys j (j <= i when causal). It never forms the T x T
// matrix a: bidirectional, it sums S = sum_j phi(k_j) v_j^T and z = sum_j
// phi(k_j) once; causal, it scans chunks of Chunk positions, each chunk's
// output its queries times the state carried from the earlier chunks plus
// the causally masked Chunk x Chunk product within the chunk (the chunked
// form of flash-linear-attention). The backward recomputes the chunk
// boundary states from q, k and v, then scans the chunks in reverse with the
// transposed state. Time O(T Chunk d + T d dv), memory O(T d) plus
// O(T / Chunk x d x dv) for the boundary states during the backward.
func LinearAttention(q, k, v, keyMask *G.Node, s LinearShape) (*G.Node, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	masked := keyMask != nil
	name := fmt.Sprintf("LinearAttention(%+v,masked=%t)", s, masked)
	children := G.Nodes{q, k, v}
	typ := fnType(2, 2, 2, 2)
	diff := []bool{true, true, true}
	if masked {
		children = append(children, keyMask)
		typ = fnType(2, 2, 2, 1, 2)
		diff = append(diff, false)
	}
	rows, dq, dvv := s.Batch*s.SeqLen, s.Heads*s.HeadDim, s.Heads*s.vdim()
	shape := func(in []tensor.Shape) (tensor.Shape, error) {
		if !in[0].Eq(tensor.Shape{rows, dq}) || !in[1].Eq(tensor.Shape{rows, dq}) || !in[2].Eq(tensor.Shape{rows, dvv}) {
			return nil, shapeErr(name, "want q and k [%d %d], v [%d %d]; got %v, %v, %v", rows, dq, rows, dvv, in[0], in[1], in[2])
		}
		if masked && !in[3].Eq(tensor.Shape{rows}) {
			return nil, shapeErr(name, "want key mask [%d], got %v", rows, in[3])
		}
		return tensor.Shape{rows, dvv}, nil
	}
	return apply(&op{
		name:  name,
		arity: len(children),
		typ:   typ,
		shape: shape,
		do: func(in []G.Value) (G.Value, error) {
			if _, err := checkDtype(name, in...); err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), rows, dvv)
			linearRun(s, in, out, nil)
			return out, nil
		},
		diffWRT: diff,
		symDiff: func(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
			args := append(append(G.Nodes{}, in...), grad)
			packed, err := apply(&op{
				name:  "Grad" + name,
				arity: len(args),
				typ:   fnType(append(append([]int{}, dimsOf(len(in))...), 2, 1)...),
				shape: func([]tensor.Shape) (tensor.Shape, error) { return tensor.Shape{2*rows*dq + rows*dvv}, nil },
				do: func(vals []G.Value) (G.Value, error) {
					if _, err := checkDtype(name, vals...); err != nil {
						return nil, err
					}
					g := newTensor(vals[0].Dtype(), 2*rows*dq+rows*dvv)
					linearRun(s, vals[:len(vals)-1], g, vals[len(vals)-1])
					return g, nil
				},
			}, args...)
			if err != nil {
				return nil, err
			}
			grads, err := Views(packed, [2]int{rows, dq}, [2]int{rows, dq}, [2]int{rows, dvv})
			if err != nil {
				return nil, err
			}
			if masked {
				grads = append(grads, nil)
			}
			return grads, nil
		},
	}, children...)
}

// dimsOf is the tensor ranks of linear attention's inputs: q, k, v are
// matrices, the key mask a vector.
func dimsOf(n int) []int {
	d := []int{2, 2, 2}
	if n == 4 {
		d = append(d, 1)
	}
	return d
}

// linearRun computes the forward into out (grad nil) or the gradients
// dq|dk|dv into out (grad the output's gradient), per (sequence, head), in
// the inputs' dtype (the float32 products through attnlab's GEMM).
func linearRun(s LinearShape, in []G.Value, out G.Value, grad G.Value) {
	if _, ok := in[0].Data().([]float32); ok {
		linearRunT[float32](s, in, out, grad)
		return
	}
	linearRunT[float64](s, in, out, grad)
}

func linearRunT[E Float](s LinearShape, in []G.Value, out G.Value, grad G.Value) {
	q, k, v := data[E](in[0]), data[E](in[1]), data[E](in[2])
	var mask []E
	if len(in) > 3 {
		mask = data[E](in[3])
	}
	rows, d, dv := s.Batch*s.SeqLen, s.HeadDim, s.vdim()
	dq, dvv := s.Heads*d, s.Heads*dv
	res := data[E](out)
	var g []E
	if grad != nil {
		g = data[E](grad)
	}
	parallelFor(s.Batch*s.Heads, s.SeqLen*(s.Chunk+dv)*d*4, func(lo, hi int) {
		w := newLinearWork[E](s)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/s.Heads, bh%s.Heads
			w.load(s, q, k, v, mask, b, h)
			if g == nil {
				w.forward(s)
				w.store(s, res, b, h, 0, dvv, w.out, dv)
				continue
			}
			w.loadGrad(s, g, b, h)
			w.backward(s)
			w.store(s, res, b, h, 0, dq, w.gq, d)
			w.store(s, res, b, h, rows*dq, dq, w.gk, d)
			w.store(s, res, b, h, 2*rows*dq, dvv, w.gv, dv)
		}
	})
}

// linearWork holds one (sequence, head)'s rows: the raw and
// featured queries and keys (keys of padding zeroed), values, and results.
type linearWork[E Float] struct {
	xq, xk, fq, fk, v, keep []E // [T*d], [T*d], [T*d], [T*d], [T*dv], [T]
	out, den                []E // [T*dv], [T]: output and normalizer (with eps)
	do, gq, gk, gv          []E
}

func newLinearWork[E Float](s LinearShape) *linearWork[E] {
	T, d, dv := s.SeqLen, s.HeadDim, s.vdim()
	return &linearWork[E]{
		xq: make([]E, T*d), xk: make([]E, T*d), fq: make([]E, T*d), fk: make([]E, T*d),
		v: make([]E, T*dv), keep: make([]E, T), out: make([]E, T*dv), den: make([]E, T),
		do: make([]E, T*dv), gq: make([]E, T*d), gk: make([]E, T*d), gv: make([]E, T*dv),
	}
}

func (w *linearWork[E]) load(s LinearShape, q, k, v, mask []E, b, h int) {
	T, d, dv := s.SeqLen, s.HeadDim, s.vdim()
	dq, dvv := s.Heads*d, s.Heads*dv
	for t := 0; t < T; t++ {
		r := b*T + t
		w.keep[t] = 1
		if mask != nil && mask[r] == 0 {
			w.keep[t] = 0
		}
		for c := 0; c < d; c++ {
			w.xq[t*d+c] = q[r*dq+h*d+c]
			w.xk[t*d+c] = k[r*dq+h*d+c]
			w.fq[t*d+c] = E(s.feature(float64(w.xq[t*d+c])))
			w.fk[t*d+c] = E(s.feature(float64(w.xk[t*d+c]))) * w.keep[t]
		}
		copy(w.v[t*dv:(t+1)*dv], v[r*dvv+h*dv:r*dvv+(h+1)*dv])
	}
}

func (w *linearWork[E]) loadGrad(s LinearShape, g []E, b, h int) {
	T, dv := s.SeqLen, s.vdim()
	dvv := s.Heads * dv
	for t := 0; t < T; t++ {
		r := b*T + t
		copy(w.do[t*dv:(t+1)*dv], g[r*dvv+h*dv:r*dvv+(h+1)*dv])
	}
}

// store writes rows of x (width n) into res from offset on, at head h's
// columns of rows of width ld.
func (w *linearWork[E]) store(s LinearShape, res []E, b, h, offset, ld int, x []E, n int) {
	for t := 0; t < s.SeqLen; t++ {
		r := b*s.SeqLen + t
		copy(res[offset+r*ld+h*n:offset+r*ld+(h+1)*n], x[t*n:(t+1)*n])
	}
}

// chunks calls fn for each chunk [c0, c1) of the sequence, in order.
func (s LinearShape) chunks(fn func(c0, c1 int)) {
	for c0 := 0; c0 < s.SeqLen; c0 += s.Chunk {
		fn(c0, min(c0+s.Chunk, s.SeqLen))
	}
}

// forward fills out and den. Bidirectional: S = phi(K)^T V and z = the
// column sums of phi(K) over every key, out = phi(Q) S / (phi(Q) z + eps).
// Causal, per chunk n of rows: out_n = phi(Q_n) S + A_n V_n over
// phi(Q_n) z + rowsum(A_n) + eps, with A_n = phi(Q_n) phi(K_n)^T masked to
// j <= i, then S += phi(K_n)^T V_n and z += colsum(phi(K_n)): every step a
// matrix product.
func (w *linearWork[E]) forward(s LinearShape) {
	T, d, dv := s.SeqLen, s.HeadDim, s.vdim()
	S := make([]E, d*dv)
	z := make([]E, d)
	if !s.Causal {
		w.addKeys(s, S, z, 0, T)
		w.fromStates(s, S, z, 0, T)
		w.normalize(s, 0, T)
		return
	}
	A := make([]E, s.Chunk*s.Chunk)
	s.chunks(func(c0, c1 int) {
		C := c1 - c0
		w.fromStates(s, S, z, c0, c1)
		w.chunkScores(s, c0, c1, A)
		gemm(false, false, C, dv, C, 1, A, C, w.v[c0*dv:], dv, 1, w.out[c0*dv:], dv)
		for i := 0; i < C; i++ {
			for _, a := range A[i*C : (i+1)*C] {
				w.den[c0+i] += a
			}
		}
		w.normalize(s, c0, c1)
		w.addKeys(s, S, z, c0, c1)
	})
}

// fromStates sets out and den of rows [i0, i1) to phi(Q) S and phi(Q) z +
// eps.
func (w *linearWork[E]) fromStates(s LinearShape, S, z []E, i0, i1 int) {
	d, dv := s.HeadDim, s.vdim()
	n := i1 - i0
	gemm(false, false, n, dv, d, 1, w.fq[i0*d:], d, S, dv, 0, w.out[i0*dv:], dv)
	gemm(false, false, n, 1, d, 1, w.fq[i0*d:], d, z, 1, 0, w.den[i0:], 1)
	if s.Norm == NormEps {
		for i := i0; i < i1; i++ {
			w.den[i] += LinearEps
		}
	}
}

// inv is the factor row i's output is multiplied by: 1 / den, 0 for an
// exact normalizer of 0, 1 without normalization.
func (w *linearWork[E]) inv(s LinearShape, i int) E {
	switch {
	case s.Norm == NormNone:
		return 1
	case s.Norm == NormExact && w.den[i] == 0:
		return 0
	}
	return 1 / w.den[i]
}

func (w *linearWork[E]) normalize(s LinearShape, i0, i1 int) {
	dv := s.vdim()
	for i := i0; i < i1; i++ {
		inv := w.inv(s, i)
		for e := i * dv; e < (i+1)*dv; e++ {
			w.out[e] *= inv
		}
	}
}

// chunkScores fills A (C x C) with phi(q_i) . phi(k_j) for the chunk's
// rows, 0 above the diagonal.
func (w *linearWork[E]) chunkScores(s LinearShape, c0, c1 int, A []E) {
	d := s.HeadDim
	C := c1 - c0
	gemm(false, true, C, C, d, 1, w.fq[c0*d:], d, w.fk[c0*d:], d, 0, A, C)
	for i := 0; i < C; i++ {
		clear(A[i*C+i+1 : (i+1)*C])
	}
}

// addKeys adds keys [j0, j1) to the state: S += phi(K)^T V, z += colsum
// phi(K).
func (w *linearWork[E]) addKeys(s LinearShape, S, z []E, j0, j1 int) {
	d, dv := s.HeadDim, s.vdim()
	n := j1 - j0
	gemm(true, false, d, dv, n, 1, w.fk[j0*d:], d, w.v[j0*dv:], dv, 1, S, dv)
	for j := j0; j < j1; j++ {
		for c, x := range w.fk[j*d : (j+1)*d] {
			z[c] += x
		}
	}
}

// backward fills gq, gk, gv. With U = dO / den (row-wise) and g_i = -(dO_i
// . out_i) / den_i, the gradient of a_ij = phi(q_i) . phi(k_j) is G_ij =
// U_i . v_j + g_i, so over the visible pairs dphi(Q) = G phi(K), dphi(K) =
// G^T phi(Q) and dV = A^T U. Bidirectional that is dphi(Q) = U S^T + g z^T,
// dphi(K) = V R^T + 1 r^T and dV = phi(K) R with R = phi(Q)^T U, r =
// phi(Q)^T g. Causal, a forward scan over the chunks carries S, z (the
// keys before the chunk) and adds the chunk's own masked G phi(K_n); a
// reverse scan carries R, r (the queries after it) and adds the chunk's
// G^T phi(Q_n) and A^T U_n.
func (w *linearWork[E]) backward(s LinearShape) {
	T, d, dv := s.SeqLen, s.HeadDim, s.vdim()
	w.forward(s)
	u := make([]E, T*dv)
	g := make([]E, T)
	for i := 0; i < T; i++ {
		inv := w.inv(s, i)
		if s.Norm != NormNone {
			g[i] = -dot(w.do[i*dv:(i+1)*dv], w.out[i*dv:(i+1)*dv]) * inv
		}
		for e := 0; e < dv; e++ {
			u[i*dv+e] = w.do[i*dv+e] * inv
		}
	}
	S := make([]E, d*dv)
	z := make([]E, d)
	R := make([]E, d*dv)
	r := make([]E, d)
	// fromS sets gq of rows [i0, i1) to U S^T + g z^T; fromR sets gk to
	// V R^T + 1 r^T and gv to phi(K) R.
	fromS := func(i0, i1 int) {
		gemm(false, true, i1-i0, d, dv, 1, u[i0*dv:], dv, S, dv, 0, w.gq[i0*d:], d)
		for i := i0; i < i1; i++ {
			for c := 0; c < d; c++ {
				w.gq[i*d+c] += g[i] * z[c]
			}
		}
	}
	fromR := func(j0, j1 int) {
		gemm(false, true, j1-j0, d, dv, 1, w.v[j0*dv:], dv, R, dv, 0, w.gk[j0*d:], d)
		for j := j0; j < j1; j++ {
			for c := 0; c < d; c++ {
				w.gk[j*d+c] += r[c]
			}
		}
		gemm(false, false, j1-j0, dv, d, 1, w.fk[j0*d:], d, R, dv, 0, w.gv[j0*dv:], dv)
	}
	addQueries := func(i0, i1 int) {
		gemm(true, false, d, dv, i1-i0, 1, w.fq[i0*d:], d, u[i0*dv:], dv, 1, R, dv)
		gemm(true, false, d, 1, i1-i0, 1, w.fq[i0*d:], d, g[i0:], 1, 1, r, 1)
	}
	if !s.Causal {
		w.addKeys(s, S, z, 0, T)
		addQueries(0, T)
		fromS(0, T)
		fromR(0, T)
	} else {
		A := make([]E, s.Chunk*s.Chunk)
		Gm := make([]E, s.Chunk*s.Chunk)
		// chunkGrads fills Gm (masked G) and A for a chunk.
		chunkGrads := func(c0, c1 int) int {
			C := c1 - c0
			w.chunkScores(s, c0, c1, A)
			gemm(false, true, C, C, dv, 1, u[c0*dv:], dv, w.v[c0*dv:], dv, 0, Gm, C)
			for i := 0; i < C; i++ {
				row := Gm[i*C : (i+1)*C]
				for j := range row[:i+1] {
					row[j] += g[c0+i]
				}
				clear(row[i+1:])
			}
			return C
		}
		s.chunks(func(c0, c1 int) {
			fromS(c0, c1)
			C := chunkGrads(c0, c1)
			gemm(false, false, C, d, C, 1, Gm, C, w.fk[c0*d:], d, 1, w.gq[c0*d:], d)
			w.addKeys(s, S, z, c0, c1)
		})
		var spans [][2]int
		s.chunks(func(c0, c1 int) { spans = append(spans, [2]int{c0, c1}) })
		for n := len(spans) - 1; n >= 0; n-- {
			c0, c1 := spans[n][0], spans[n][1]
			fromR(c0, c1)
			C := chunkGrads(c0, c1)
			gemm(true, false, C, d, C, 1, Gm, C, w.fq[c0*d:], d, 1, w.gk[c0*d:], d)
			gemm(true, false, C, dv, C, 1, A, C, u[c0*dv:], dv, 1, w.gv[c0*dv:], dv)
			addQueries(c0, c1)
		}
	}
	// Through the feature map (padded keys get none).
	for t := 0; t < T; t++ {
		for c := 0; c < d; c++ {
			w.gq[t*d+c] *= E(s.featureGrad(float64(w.xq[t*d+c])))
			w.gk[t*d+c] *= E(s.featureGrad(float64(w.xk[t*d+c]))) * w.keep[t]
		}
	}
}

// LinearAttentionWeights are the weights linear attention applies, for
// attention maps (no gradient): [Batch*Heads*SeqLen, SeqLen], row (b*Heads
// + h)*SeqLen + i holding a_ij / sum_j a_ij over the visible unpadded keys
// (NormEps divides by the sum + LinearEps; a row whose sum is 0 is zeros),
// or a_ij itself with NormNone.
// It forms the T x T matrix: for inspection only.
func LinearAttentionWeights(q, k, keyMask *G.Node, s LinearShape) (*G.Node, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	masked := keyMask != nil
	name := fmt.Sprintf("LinearAttentionWeights(%+v,masked=%t)", s, masked)
	children := G.Nodes{q, k}
	typ := fnType(2, 2, 2)
	if masked {
		children = append(children, keyMask)
		typ = fnType(2, 2, 1, 2)
	}
	T := s.SeqLen
	return apply(&op{
		name:  name,
		arity: len(children),
		typ:   typ,
		shape: func([]tensor.Shape) (tensor.Shape, error) { return tensor.Shape{s.Batch * s.Heads * T, T}, nil },
		do: func(in []G.Value) (G.Value, error) {
			if _, err := checkDtype(name, in...); err != nil {
				return nil, err
			}
			vals := []G.Value{in[0], in[1], in[0]} // v unused: any matrix of the right rows
			if masked {
				vals = append(vals, in[2])
			}
			ws := s
			ws.ValueDim = s.HeadDim
			f := func(v G.Value) []float64 { return Float64s(v) }
			var mask []float64
			if masked {
				mask = f(in[2])
			}
			res := make([]float64, s.Batch*s.Heads*T*T)
			w := newLinearWork[float64](ws)
			for b := 0; b < s.Batch; b++ {
				for h := 0; h < s.Heads; h++ {
					w.load(ws, f(vals[0]), f(vals[1]), f(vals[2]), mask, b, h)
					for i := 0; i < T; i++ {
						row := res[((b*s.Heads+h)*T+i)*T : ((b*s.Heads+h)*T+i+1)*T]
						sum := 0.0
						for j := 0; j < T; j++ {
							if s.Causal && j > i {
								continue
							}
							row[j] = dot(w.fq[i*s.HeadDim:(i+1)*s.HeadDim], w.fk[j*s.HeadDim:(j+1)*s.HeadDim])
							sum += row[j]
						}
						for j := range row {
							if s.Norm == NormNone {
								break
							}
							if sum != 0 {
								row[j] /= sum
							} else {
								row[j] = 0
							}
						}
					}
				}
			}
			out := newTensor(in[0].Dtype(), s.Batch*s.Heads*T, T)
			switch o := out.Data().(type) {
			case []float32:
				for i, x := range res {
					o[i] = float32(x)
				}
			case []float64:
				copy(o, res)
			}
			return out, nil
		},
	}, children...)
}
