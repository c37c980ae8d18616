package graph

import (
	"fmt"
	"math"
	"runtime"

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
// form of flash-linear-attention). The (sequence, head) pairs run in waves
// of GOMAXPROCS; a wave of fewer pairs than workers splits each sequence
// into groups of chunks that run in parallel, with only a scan over the
// groups' d x dv states in between. The backward recomputes the forward
// from q, k and v, then scans the chunks in reverse with the queries'
// transposed states. Time O(T Chunk d + T d dv), memory O(T d) per pair in
// a wave plus O(GOMAXPROCS d dv) for the group states.
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
	p := newLinearPass[E](s, in)
	res := data[E](out)
	var g []E
	if grad != nil {
		g = data[E](grad)
	}
	// Waves of at most GOMAXPROCS (sequence, head) pairs, so that the
	// per-head buffers are those of one wave; a wave of fewer heads than
	// workers splits each head's chunks into groups run in parallel.
	workers := runtime.GOMAXPROCS(0)
	BH := s.Batch * s.Heads
	wave := min(BH, workers)
	pool := make([]*linearHead[E], wave)
	for i := range pool {
		pool[i] = p.newHead(grad != nil)
	}
	for w0 := 0; w0 < BH; w0 += wave {
		p.heads = pool[:min(wave, BH-w0)]
		for i, hd := range p.heads {
			hd.b, hd.h = (w0+i)/s.Heads, (w0+i)%s.Heads
		}
		// Four groups per worker, so that a slow worker delays a phase by
		// a quarter of its share.
		p.setGroups(min(p.nc, (4*workers+len(p.heads)-1)/len(p.heads)))
		if g == nil {
			p.forward(func(hd *linearHead[E]) ([]E, int) { return res[p.vOff(hd):], p.dvv })
			continue
		}
		p.backward(g, res)
	}
}

// linearPass is one call's work over a wave of (sequence, head) pairs, in
// phases each parallel over (head, group of chunks), with short scans over
// the groups' states in between: so that a few heads of long sequences
// still use every core. Within a group, the chunks run in order with a
// running state, as a single-threaded scan would.
type linearPass[E Float] struct {
	s                 LinearShape
	T, d, dv, dq, dvv int
	nc                int // chunks per sequence
	groups, perGroup  int // groups of chunks per head, chunks per group
	q, k, v, mask     []E
	heads             []*linearHead[E]
}

// linearHead holds one (sequence, head)'s features and per-group states;
// queries, keys, values, gradients and results are read and written in
// place, through the rows' leading dimension.
type linearHead[E Float] struct {
	b, h   int
	fq, fk []E // [T*d]: phi of queries and keys (keys of padding zeroed)
	keep   []E // [T]: 1 for a real key, 0 for padding
	den    []E // [T]: the normalizer (with eps for NormEps)
	S, z   []E // per group: the keys' state before it (causal) or of all keys (slot 0)
	out, u []E // backward: the normalized output and U = dO / den, [T*dv]
	gs     []E // backward: g_i = -(dO_i . out_i) / den_i, [T]
	R, r   []E // backward: per group, the queries' state after it (causal) or of all (slot 0)
}

func newLinearPass[E Float](s LinearShape, in []G.Value) *linearPass[E] {
	p := &linearPass[E]{s: s, T: s.SeqLen, d: s.HeadDim, dv: s.vdim()}
	p.dq, p.dvv = s.Heads*p.d, s.Heads*p.dv
	p.nc = (p.T + s.Chunk - 1) / s.Chunk
	p.q, p.k, p.v = data[E](in[0]), data[E](in[1]), data[E](in[2])
	if len(in) > 3 {
		p.mask = data[E](in[3])
	}
	return p
}

// newHead allocates one head's buffers (those of the backward too, with
// grad).
func (p *linearPass[E]) newHead(grad bool) *linearHead[E] {
	T, d, dv := p.T, p.d, p.dv
	hd := &linearHead[E]{fq: make([]E, T*d), fk: make([]E, T*d), keep: make([]E, T), den: make([]E, T)}
	if grad {
		hd.out, hd.u, hd.gs = make([]E, T*dv), make([]E, T*dv), make([]E, T)
	}
	return hd
}

// setGroups splits each head's chunks into n groups and sizes the heads'
// group states.
func (p *linearPass[E]) setGroups(n int) {
	p.perGroup = (p.nc + n - 1) / n
	p.groups = (p.nc + p.perGroup - 1) / p.perGroup
	d, dv := p.d, p.dv
	for _, hd := range p.heads {
		if len(hd.S) != p.groups*d*dv {
			hd.S, hd.z = make([]E, p.groups*d*dv), make([]E, p.groups*d)
			if hd.out != nil {
				hd.R, hd.r = make([]E, p.groups*d*dv), make([]E, p.groups*d)
			}
		}
	}
}

// qOff and vOff are the offsets of head hd's first row in a [rows, H*d]
// and a [rows, H*dv] matrix.
func (p *linearPass[E]) qOff(hd *linearHead[E]) int { return hd.b*p.T*p.dq + hd.h*p.d }
func (p *linearPass[E]) vOff(hd *linearHead[E]) int { return hd.b*p.T*p.dvv + hd.h*p.dv }

// state is the slot of group g's state: its own causally, the one total
// bidirectionally.
func (p *linearPass[E]) state(g int) int {
	if p.s.Causal {
		return g
	}
	return 0
}

// chunksOf calls fn for each chunk [c0, c1) of group g, in order (reverse:
// last first).
func (p *linearPass[E]) chunksOf(g int, reverse bool, fn func(c0, c1 int)) {
	n0, n1 := g*p.perGroup, min((g+1)*p.perGroup, p.nc)
	for i := n0; i < n1; i++ {
		n := i
		if reverse {
			n = n1 - 1 - (i - n0)
		}
		c0 := n * p.s.Chunk
		fn(c0, min(c0+p.s.Chunk, p.T))
	}
}

// overGroup runs group g's rows against the states S, z (all slots):
// bidirectionally, from(r0, r1) with the total; causally, chunk by chunk in
// order (reverse: last first), from(c0, c1) with a running state that
// starts at the group's slot, then the chunk's own masked term own(c0, c1),
// then add(c0, c1) of the chunk to the running state.
func (p *linearPass[E]) overGroup(g int, S, z []E, sc *linearScratch[E], reverse bool, from func(c0, c1 int, S, z []E), own func(c0, c1 int), add func(c0, c1 int, S, z []E)) {
	n, m := p.d*p.dv, p.state(g)
	S, z = S[m*n:(m+1)*n], z[m*p.d:(m+1)*p.d]
	if !p.s.Causal {
		r0, r1 := p.rowsOf(g)
		from(r0, r1, S, z)
		return
	}
	copy(sc.S, S)
	copy(sc.z, z)
	p.chunksOf(g, reverse, func(c0, c1 int) {
		from(c0, c1, sc.S, sc.z)
		own(c0, c1)
		add(c0, c1, sc.S, sc.z)
	})
}

// rowsOf is the rows [r0, r1) of group g.
func (p *linearPass[E]) rowsOf(g int) (int, int) {
	return g * p.perGroup * p.s.Chunk, min((g+1)*p.perGroup*p.s.Chunk, p.T)
}

// linearScratch is one worker's scratch: the C x C scores and their
// gradient, and a running state.
type linearScratch[E Float] struct {
	A, Gm, S, z []E
}

// eachGroup runs fn for every (head, group) in parallel.
func (p *linearPass[E]) eachGroup(fn func(hd *linearHead[E], g int, sc *linearScratch[E])) {
	C := min(p.s.Chunk, p.T)
	cost := p.perGroup * C * (C + p.dv) * p.d * 4
	parallelFor(len(p.heads)*p.groups, cost, func(lo, hi int) {
		sc := &linearScratch[E]{A: make([]E, C*C), Gm: make([]E, C*C), S: make([]E, p.d*p.dv), z: make([]E, p.d)}
		for t := lo; t < hi; t++ {
			fn(p.heads[t/p.groups], t%p.groups, sc)
		}
	})
}

// eachHead runs fn for every head in parallel (the scans over groups).
func (p *linearPass[E]) eachHead(fn func(hd *linearHead[E])) {
	parallelFor(len(p.heads), p.groups*p.d*p.dv, func(lo, hi int) {
		for _, hd := range p.heads[lo:hi] {
			fn(hd)
		}
	})
}

// scan turns per-group contributions x (groups slots of n values) into
// states: causal, slot m gets the sum over the groups before it (reverse:
// after it); bidirectional, slot 0 gets the sum of all.
func (p *linearPass[E]) scan(x []E, n int, reverse bool) {
	if !p.s.Causal {
		for m := 1; m < p.groups; m++ {
			for i, y := range x[m*n : (m+1)*n] {
				x[i] += y
			}
		}
		return
	}
	run := make([]E, n)
	for step := 0; step < p.groups; step++ {
		m := step
		if reverse {
			m = p.groups - 1 - step
		}
		slot := x[m*n : (m+1)*n]
		for i, y := range slot {
			slot[i], run[i] = run[i], run[i]+y
		}
	}
}

// addKeys adds rows [j0, j1)'s keys to the state S, z (beta 0: sets it).
func (p *linearPass[E]) addKeys(hd *linearHead[E], j0, j1 int, beta E, S, z []E) {
	d, dv := p.d, p.dv
	gemm(true, false, d, dv, j1-j0, 1, hd.fk[j0*d:], d, p.v[p.vOff(hd)+j0*p.dvv:], p.dvv, beta, S, dv)
	if beta == 0 {
		clear(z)
	}
	for j := j0; j < j1; j++ {
		for c, x := range hd.fk[j*d : (j+1)*d] {
			z[c] += x
		}
	}
}

// forward computes the wave's outputs into the rows dst gives each head
// (a slice and its leading dimension) and den. Per group of rows: its keys'
// contribution phi(K)^T V and colsum(phi(K)); a scan over the groups makes
// them the state of the keys before each group (causal) or of all keys
// (bidirectional). Then, bidirectionally, out = phi(Q) S / (phi(Q) z (+
// eps)); causally, per chunk n of the group in order, out_n = phi(Q_n) S +
// A_n V_n over phi(Q_n) z + rowsum(A_n) (+ eps) with A_n = phi(Q_n)
// phi(K_n)^T masked to j <= i, then S += phi(K_n)^T V_n, z += colsum
// phi(K_n): every step a matrix product.
func (p *linearPass[E]) forward(dst func(hd *linearHead[E]) ([]E, int)) {
	s, d, dv := p.s, p.d, p.dv
	p.eachGroup(func(hd *linearHead[E], g int, _ *linearScratch[E]) {
		r0, r1 := p.rowsOf(g)
		p.load(hd, r0, r1)
		if !s.Causal || g < p.groups-1 { // causally, no group sees the last one's keys
			p.addKeys(hd, r0, r1, 0, hd.S[g*d*dv:(g+1)*d*dv], hd.z[g*d:(g+1)*d])
		}
	})
	p.eachHead(func(hd *linearHead[E]) {
		p.scan(hd.S, d*dv, false)
		p.scan(hd.z, d, false)
	})
	p.eachGroup(func(hd *linearHead[E], g int, sc *linearScratch[E]) {
		o, ld := dst(hd)
		fromState := func(c0, c1 int, S, z []E) {
			gemm(false, false, c1-c0, dv, d, 1, hd.fq[c0*d:], d, S, dv, 0, o[c0*ld:], ld)
			gemm(false, false, c1-c0, 1, d, 1, hd.fq[c0*d:], d, z, 1, 0, hd.den[c0:], 1)
		}
		own := func(c0, c1 int) {
			C := c1 - c0
			p.chunkScores(hd, c0, c1, sc.A)
			gemm(false, false, C, dv, C, 1, sc.A, C, p.v[p.vOff(hd)+c0*p.dvv:], p.dvv, 1, o[c0*ld:], ld)
			for i := 0; i < C; i++ {
				for _, a := range sc.A[i*C : (i+1)*C] {
					hd.den[c0+i] += a
				}
			}
		}
		add := func(c0, c1 int, S, z []E) { p.addKeys(hd, c0, c1, 1, S, z) }
		p.overGroup(g, hd.S, hd.z, sc, false, fromState, own, add)
		r0, r1 := p.rowsOf(g)
		for i := r0; i < r1; i++ {
			if s.Norm == NormEps {
				hd.den[i] += LinearEps
			}
			inv := p.inv(hd, i)
			for e := range o[i*ld : i*ld+dv] {
				o[i*ld+e] *= inv
			}
		}
	})
}

// load fills head hd's features and keep flags for rows [c0, c1).
func (p *linearPass[E]) load(hd *linearHead[E], c0, c1 int) {
	d := p.d
	off := p.qOff(hd)
	for t := c0; t < c1; t++ {
		keep := E(1)
		if p.mask != nil && p.mask[hd.b*p.T+t] == 0 {
			keep = 0
		}
		hd.keep[t] = keep
		for c := 0; c < d; c++ {
			hd.fq[t*d+c] = E(p.s.feature(float64(p.q[off+t*p.dq+c])))
			hd.fk[t*d+c] = E(p.s.feature(float64(p.k[off+t*p.dq+c]))) * keep
		}
	}
}

// inv is the factor row i's output is multiplied by: 1 / den, 0 for an
// exact normalizer of 0, 1 without normalization.
func (p *linearPass[E]) inv(hd *linearHead[E], i int) E {
	switch {
	case p.s.Norm == NormNone:
		return 1
	case p.s.Norm == NormExact && hd.den[i] == 0:
		return 0
	}
	return 1 / hd.den[i]
}

// chunkScores fills A (C x C) with phi(q_i) . phi(k_j) for the chunk's
// rows, 0 above the diagonal.
func (p *linearPass[E]) chunkScores(hd *linearHead[E], c0, c1 int, A []E) {
	d, C := p.d, c1-c0
	gemm(false, true, C, C, d, 1, hd.fq[c0*d:], d, hd.fk[c0*d:], d, 0, A, C)
	for i := 0; i < C; i++ {
		clear(A[i*C+i+1 : (i+1)*C])
	}
}

// chunkGrads fills Gm (C x C) with the masked gradient of the chunk's
// scores, G_ij = U_i . v_j + g_i for j <= i.
func (p *linearPass[E]) chunkGrads(hd *linearHead[E], c0, c1 int, Gm []E) {
	dv, C := p.dv, c1-c0
	gemm(false, true, C, C, dv, 1, hd.u[c0*dv:], dv, p.v[p.vOff(hd)+c0*p.dvv:], p.dvv, 0, Gm, C)
	for i := 0; i < C; i++ {
		row := Gm[i*C : (i+1)*C]
		for j := range row[:i+1] {
			row[j] += hd.gs[c0+i]
		}
		clear(row[i+1:])
	}
}

// backward writes dq|dk|dv of the wave's heads into res. With U = dO / den
// (row-wise) and g_i = -(dO_i . out_i) / den_i, the gradient of a_ij =
// phi(q_i) . phi(k_j) is G_ij = U_i . v_j + g_i, so over the visible pairs
// dphi(Q) = G phi(K), dphi(K) = G^T phi(Q) and dV = A^T U. Through the
// states that is, per chunk n, dphi(Q_n) = U_n S_n^T + g_n z_n^T (the keys
// before it) plus its own masked G_n phi(K_n), and dphi(K_n) = V_n R_n^T +
// 1 r_n^T, dV_n = phi(K_n) R_n with R_n = sum phi(Q)^T U, r_n = sum
// phi(Q)^T g over the queries after it (per group, a reverse scan; within a
// group, the chunks last first), plus G_n^T phi(Q_n) and A_n^T U_n.
// Bidirectional, S, z, R and r are the totals and there is no own term.
// The forward is recomputed first (out and den), not stored.
func (p *linearPass[E]) backward(grad, res []E) {
	s, d, dv, dq := p.s, p.d, p.dv, p.dq
	rows := s.Batch * p.T
	p.forward(func(hd *linearHead[E]) ([]E, int) { return hd.out, dv })
	// U, g; dphi(Q); each group's queries' contribution to R, r.
	p.eachGroup(func(hd *linearHead[E], g int, sc *linearScratch[E]) {
		r0, r1 := p.rowsOf(g)
		goff := p.vOff(hd)
		for i := r0; i < r1; i++ {
			do := grad[goff+i*p.dvv : goff+i*p.dvv+dv]
			inv := p.inv(hd, i)
			if s.Norm != NormNone {
				hd.gs[i] = -dot(do, hd.out[i*dv:(i+1)*dv]) * inv
			}
			for e, x := range do {
				hd.u[i*dv+e] = x * inv
			}
		}
		dQ := res[p.qOff(hd):]
		fromState := func(c0, c1 int, S, z []E) {
			gemm(false, true, c1-c0, d, dv, 1, hd.u[c0*dv:], dv, S, dv, 0, dQ[c0*dq:], dq)
			for i := c0; i < c1; i++ {
				for c := 0; c < d; c++ {
					dQ[i*dq+c] += hd.gs[i] * z[c]
				}
			}
		}
		own := func(c0, c1 int) {
			C := c1 - c0
			p.chunkGrads(hd, c0, c1, sc.Gm)
			gemm(false, false, C, d, C, 1, sc.Gm, C, hd.fk[c0*d:], d, 1, dQ[c0*dq:], dq)
		}
		add := func(c0, c1 int, S, z []E) { p.addKeys(hd, c0, c1, 1, S, z) }
		p.overGroup(g, hd.S, hd.z, sc, false, fromState, own, add)
		qoff := p.qOff(hd)
		for i := r0; i < r1; i++ {
			for c := 0; c < d; c++ {
				dQ[i*dq+c] *= E(s.featureGrad(float64(p.q[qoff+i*dq+c])))
			}
		}
		if !s.Causal || g > 0 { // causally, no group sees the first one's queries
			p.addQueries(hd, r0, r1, 0, hd.R[g*d*dv:(g+1)*d*dv], hd.r[g*d:(g+1)*d])
		}
	})
	p.eachHead(func(hd *linearHead[E]) {
		p.scan(hd.R, d*dv, true)
		p.scan(hd.r, d, true)
	})
	// dphi(K), dV.
	p.eachGroup(func(hd *linearHead[E], g int, sc *linearScratch[E]) {
		dK, dV := res[rows*dq+p.qOff(hd):], res[2*rows*dq+p.vOff(hd):]
		fromState := func(c0, c1 int, R, r []E) {
			gemm(false, true, c1-c0, d, dv, 1, p.v[p.vOff(hd)+c0*p.dvv:], p.dvv, R, dv, 0, dK[c0*dq:], dq)
			for j := c0; j < c1; j++ {
				for c := 0; c < d; c++ {
					dK[j*dq+c] += r[c]
				}
			}
			gemm(false, false, c1-c0, dv, d, 1, hd.fk[c0*d:], d, R, dv, 0, dV[c0*p.dvv:], p.dvv)
		}
		own := func(c0, c1 int) {
			C := c1 - c0
			p.chunkScores(hd, c0, c1, sc.A)
			p.chunkGrads(hd, c0, c1, sc.Gm)
			gemm(true, false, C, d, C, 1, sc.Gm, C, hd.fq[c0*d:], d, 1, dK[c0*dq:], dq)
			gemm(true, false, C, dv, C, 1, sc.A, C, hd.u[c0*dv:], dv, 1, dV[c0*p.dvv:], p.dvv)
		}
		add := func(c0, c1 int, R, r []E) { p.addQueries(hd, c0, c1, 1, R, r) }
		p.overGroup(g, hd.R, hd.r, sc, true, fromState, own, add)
		r0, r1 := p.rowsOf(g)
		qoff := p.qOff(hd)
		for j := r0; j < r1; j++ {
			for c := 0; c < d; c++ {
				dK[j*dq+c] *= E(s.featureGrad(float64(p.k[qoff+j*dq+c]))) * hd.keep[j]
			}
		}
	})
}

// addQueries adds rows [i0, i1)'s queries to the reverse state R, r:
// phi(Q)^T U and phi(Q)^T g (beta 0: sets it).
func (p *linearPass[E]) addQueries(hd *linearHead[E], i0, i1 int, beta E, R, r []E) {
	d, dv := p.d, p.dv
	gemm(true, false, d, dv, i1-i0, 1, hd.fq[i0*d:], d, hd.u[i0*dv:], dv, beta, R, dv)
	gemm(true, false, d, 1, i1-i0, 1, hd.fq[i0*d:], d, hd.gs[i0:], 1, beta, r, 1)
}

// LinearAttentionWeights are the weights linear attention applies, for
// attention maps (no gradient): [Batch*Heads*SeqLen, SeqLen], row (b*Heads
// + h)*SeqLen + i holding a_ij / sum_j a_ij over the visible unpadded keys
// (exactly, whatever the normalization: the op's NormEps adds LinearEps to
// the sum, which the map leaves out; a row whose sum is 0 is zeros), or a_ij
// itself with NormNone.
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
			ws := s
			ws.ValueDim = s.HeadDim
			f64 := func(v G.Value) G.Value {
				return tensor.New(tensor.WithShape(v.Shape().Clone()...), tensor.WithBacking(Float64s(v)))
			}
			vals := []G.Value{f64(in[0]), f64(in[1]), f64(in[0])} // v unused: any matrix of the right rows
			if masked {
				vals = append(vals, f64(in[2]))
			}
			p := newLinearPass[float64](ws, vals)
			res := make([]float64, s.Batch*s.Heads*T*T)
			w := p.newHead(false)
			for bh := 0; bh < s.Batch*s.Heads; bh++ {
				b, h := bh/s.Heads, bh%s.Heads
				w.b, w.h = b, h
				p.load(w, 0, T)
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
