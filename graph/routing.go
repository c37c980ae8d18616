package graph

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// RoutingShape is the shape of a Routing Transformer core: the attention
// shape (self-attention: QLen = KLen, KVHeads = Heads; causal and padding
// masks, ALiBi) and the routing: Clusters centroids per routing head, the
// Window of keys each query sees within its cluster, and LocalHeads heads
// (the first ones) that are plain sliding windows of LocalWindow keys.
type RoutingShape struct {
	AttentionShape
	// Clusters is the number of k-means centroids C per routing head.
	Clusters int
	// Window is w, the number of keys of its cluster a routing query sees.
	Window int
	// LocalHeads is the number of local heads, heads 0..LocalHeads-1; the
	// others route.
	LocalHeads int
	// LocalWindow is the window of the local heads (unused without them).
	LocalWindow int
}

// RoutingHeads is the number of heads that route through centroids.
func (s RoutingShape) RoutingHeads() int { return s.Heads - s.LocalHeads }

// CentroidShape is the shape of the centroid buffer: one row of HeadDim
// per (routing head, cluster), row (h - LocalHeads)*Clusters + c.
func (s RoutingShape) CentroidShape() []int {
	return []int{s.RoutingHeads() * s.Clusters, s.HeadDim}
}

// Validate reports an impossible shape.
func (s RoutingShape) Validate() error {
	if err := s.AttentionShape.Validate(); err != nil {
		return err
	}
	switch {
	case s.QLen != s.KLen:
		return fmt.Errorf("routing attention: self-attention only, got %d queries and %d keys", s.QLen, s.KLen)
	case s.KVHeads != s.Heads:
		return fmt.Errorf("routing attention: needs as many key/value heads as query heads, got %d and %d", s.KVHeads, s.Heads)
	case s.Clusters < 1:
		return fmt.Errorf("routing attention: clusters must be positive, got %d", s.Clusters)
	case s.Window < 1:
		return fmt.Errorf("routing attention: window must be positive, got %d", s.Window)
	case s.LocalHeads < 0 || s.LocalHeads > s.Heads:
		return fmt.Errorf("routing attention: local heads must be in [0, %d], got %d", s.Heads, s.LocalHeads)
	case s.LocalHeads > 0 && s.LocalWindow < 1:
		return fmt.Errorf("routing attention: local window must be positive with local heads, got %d", s.LocalWindow)
	}
	return nil
}

func (s RoutingShape) name(kind, centroids string, masked bool) string {
	return fmt.Sprintf("%s(%+v,scale=%g,C=%d,w=%d,local=%d/%d,centroids=%s,masked=%t)", kind, s.AttentionShape, s.scale(),
		s.Clusters, s.Window, s.LocalHeads, s.LocalWindow, centroids, masked)
}

// checkCentroids reports a centroid buffer that does not fit s.
func (s RoutingShape) checkCentroids(centroids *Param) (string, error) {
	if s.RoutingHeads() == 0 {
		if centroids == nil {
			return "", nil
		}
		return centroids.Name, nil
	}
	if centroids == nil {
		return "", fmt.Errorf("routing attention: %d routing heads need centroids", s.RoutingHeads())
	}
	want := s.CentroidShape()
	if got := centroids.Value.Shape(); !got.Eq(tensor.Shape(want)) || centroids.Value.Dtype() != tensor.Float64 {
		return "", fmt.Errorf("routing attention: centroids %s: want float64 %v, got %v %v", centroids.Name, want, centroids.Value.Dtype(), got)
	}
	return centroids.Name, nil
}

// RoutingStats is the sink of the k-means statistics of a routing layer:
// each forward of RoutingAttention adds to it, per routing head and
// cluster, the sum of the unit-normalized queries and keys assigned there
// (unpadded tokens only, summed over the batch) and their count, and
// UpdateCentroids consumes it. Several cores may share one sink (a layer
// run on each segment of a memory model), so that one update per step
// sees every segment's assignments; the update's mean is the same
// whether a forward ran once or twice on the same data.
type RoutingStats struct {
	headDim int
	Sum     []float64 // [RoutingHeads*Clusters*HeadDim]
	Count   []float64 // [RoutingHeads*Clusters]
}

// NewRoutingStats returns an empty sink for cores of shape s.
func NewRoutingStats(s RoutingShape) *RoutingStats {
	n := s.RoutingHeads() * s.Clusters
	return &RoutingStats{headDim: s.HeadDim, Sum: make([]float64, n*s.HeadDim), Count: make([]float64, n)}
}

// UpdateCentroids applies the exponential moving average to the centroids
// mu [RoutingHeads*Clusters*HeadDim]: for each cluster with count > 0,
// mu_c <- decay mu_c + (1 - decay) sum_c / count_c, renormalized to unit
// length; then it clears the sink, so that a second call without a
// forward in between changes nothing.
func (st *RoutingStats) UpdateCentroids(mu []float64, decay float64) {
	d := st.headDim
	for hc, n := range st.Count {
		if n == 0 {
			continue
		}
		m := mu[hc*d : (hc+1)*d]
		norm := 0.0
		for t := range m {
			m[t] = decay*m[t] + (1-decay)*st.Sum[hc*d+t]/n
			norm += m[t] * m[t]
		}
		if norm = math.Sqrt(norm); norm > 0 {
			for t := range m {
				m[t] /= norm
			}
		}
	}
	clear(st.Sum)
	clear(st.Count)
}

// RoutingAttention is the attention of the Routing Transformer (Roy et
// al. 2021, "Efficient Content-Based Sparse Attention with Routing
// Transformers") over q [Batch*Len, Heads*HeadDim] and k, v [Batch*Len,
// Heads*HeadDim (values VDim)] in Attention's layout. Per routing head h,
// with q^_i = q_i/|q_i|, k^_j = k_j/|k_j| and the centroids mu_c of h
// (rows of centroids, unit-normalized at use),
//
//	c_q(i) = argmax_c mu_c . q^_i,  c_k(j) = argmax_c mu_c . k^_j   (ties to the lower c)
//	K_c    = the unpadded j with c_k(j) = c, in increasing order
//	V(i)   = causal: the last min(w, n) keys of K_c with j <= i (n of them), c = c_q(i)
//	         bidirectional: K_c[lo, lo+w), lo = clamp(r - w/2, 0, max(0, |K_c| - w)),
//	         r = #{j in K_c: j < i} (all of K_c when |K_c| <= w)
//	s_ij   = scale q_i . k_j (- slope_h |i - j| with ALiBi)
//	out_i  = sum_{j in V(i)} softmax_{V(i)}(s_ij) v_j
//
// A query whose V(i) is empty sees its own key if that is unpadded (the
// self rule), else outputs 0 with logsumexp -Inf. The LocalHeads first
// heads use no centroids: every unpadded key is in one cluster and the
// window is LocalWindow (causal: the last LocalWindow unpadded keys up to
// i). The assignments are not differentiated.
//
// The centroids are not a graph input: the forward reads centroids' current
// value (a float64 store buffer that training moves between steps), and
// saves c_q and c_k per (sequence, head, position) after O and L, so the
// backward uses the forward's assignments whatever the centroids do
// afterwards. When stats is not nil the forward adds the k-means
// statistics of its assignments to it (RoutingStats).
//
// Forward, per (sequence, head): the assignments (O(T C d)), a counting
// sort of the keys by cluster that gathers each cluster's keys and values
// into contiguous buffers, and each query's window [lo, hi) in its
// cluster's list. Windows only move forward as i grows, so the queries of
// a cluster, in order, are cut into blocks of up to 16 whose windows span
// at most w + 16 consecutive keys of the cluster; per block one GEMM gives
// the scores (entries outside a query's window are ignored), then the
// softmax over each window and one GEMM for the outputs: O(T (w + 16) d).
// Backward, one worker per (sequence, head), which owns that head's dq,
// dk and dv rows, by the same blocks: P recomputed from q, k and L, dP =
// dO V^T, dS = P (dP - rowsum(P dP) + dL), dQ = scale dS K, dK += scale dS^T
// Q, dV += P^T dO (GEMMs over the block's keys, accumulated in the
// gathered order and scattered back). Time O(T (w + C) d) per head;
// memory O(T) for the saved assignments plus O(T d) buffers per worker;
// no T x T. Indices are stored in the dtype of the inputs (float32:
// clusters up to 2^24).
func RoutingAttention(q, k, v, keyMask *G.Node, centroids *Param, stats *RoutingStats, s RoutingShape) (*G.Node, error) {
	out, _, err := RoutingAttentionLSE(q, k, v, keyMask, centroids, stats, s)
	return out, err
}

// RoutingAttentionLSE is RoutingAttention that also returns each query's
// logsumexp over its visible keys, lse [Batch*Heads, Len] (row b*Heads +
// h), -Inf for a query that sees no key; both outputs are differentiable.
func RoutingAttentionLSE(q, k, v, keyMask *G.Node, centroids *Param, stats *RoutingStats, s RoutingShape) (out, lse *G.Node, err error) {
	if err := s.Validate(); err != nil {
		return nil, nil, err
	}
	cname, err := s.checkCentroids(centroids)
	if err != nil {
		return nil, nil, err
	}
	if stats != nil && (len(stats.Count) != s.RoutingHeads()*s.Clusters || stats.headDim != s.HeadDim) {
		return nil, nil, fmt.Errorf("routing attention: statistics sink made for another shape")
	}
	name := s.name("RoutingAttention", cname, keyMask != nil)
	return applyCore(name, s.AttentionShape, q, k, v, keyMask, routingFuncs[float32](s, centroids, stats), routingFuncs[float64](s, centroids, stats), nil)
}

// routingFuncs are the routing core's kernels: the forward saves c_q and
// c_k (B*H*T each) after O and L, the backward reads them.
func routingFuncs[T Float](s RoutingShape, centroids *Param, stats *RoutingStats) coreFuncs[T] {
	return coreFuncs[T]{
		saved: 2 * s.Batch * s.Heads * s.QLen,
		forward: func(q, k, v, mask, out, lse, saved []T) {
			routingForward(s, centroidData(centroids), q, k, v, mask, out, lse, saved, nil, stats)
		},
		backward: func(q, k, v, _, _, lse, saved, do, dlse, dq, dk, dv []T) {
			routingBackward(s, q, k, v, lse, saved, do, dlse, dq, dk, dv)
		},
	}
}

// centroidData is the centroids' current value, read at forward time.
func centroidData(p *Param) []float64 {
	if p == nil {
		return nil
	}
	return p.Value.Data().([]float64)
}

// RoutingWeights returns the weights RoutingAttention applies to the
// values for the same q, k, keyMask, centroids and shape, as a dense map
// [Batch*Heads*Len, Len] (row (b*Heads + h)*Len + i), a row of zeros for a
// query that sees no key. For inspecting a model (trainer attnmap): no
// gradient, every map materialized, and the statistics are left alone.
func RoutingWeights(q, k, keyMask *G.Node, centroids *Param, s RoutingShape) (*G.Node, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	cname, err := s.checkCentroids(centroids)
	if err != nil {
		return nil, err
	}
	nLSE := s.Batch * s.Heads * s.QLen
	return weightsOp(s.name("RoutingWeights", cname, keyMask != nil), s.AttentionShape, q, k, keyMask,
		func(q, k, mask, out []float32) {
			routingForward(s, centroidData(centroids), q, k, nil, mask, nil, make([]float32, nLSE), make([]float32, 2*nLSE), out, nil)
		},
		func(q, k, mask, out []float64) {
			routingForward(s, centroidData(centroids), q, k, nil, mask, nil, make([]float64, nLSE), make([]float64, 2*nLSE), out, nil)
		})
}

// routingAssign returns argmax_c mun_c . x/|x| over the C unit rows of
// mun (ties to the lower c; a zero x goes to cluster 0) and writes x/|x|
// into xn.
func routingAssign[T Float](mun []float64, C, d int, x []T, xn []float64) int {
	norm := 0.0
	for _, e := range x {
		norm += float64(e) * float64(e)
	}
	norm = math.Sqrt(norm)
	for t, e := range x {
		if norm > 0 {
			xn[t] = float64(e) / norm
		} else {
			xn[t] = 0
		}
	}
	best, arg := math.Inf(-1), 0
	for c := 0; c < C; c++ {
		sc := 0.0
		for t, m := range mun[c*d : (c+1)*d] {
			sc += m * xn[t]
		}
		if sc > best {
			best, arg = sc, c
		}
	}
	return arg
}

// routingWindow is the range [lo, hi) of the cluster's key list that a
// query sees: r keys of its cluster come before it, self says its own key
// is in the cluster, n is the cluster's size.
func routingWindow(causal bool, w, r, n int, self bool) (lo, hi int) {
	if causal {
		hi = r
		if self {
			hi++
		}
		return max(0, hi-w), hi
	}
	lo = min(max(r-w/2, 0), max(0, n-w))
	return lo, min(lo+w, n)
}

// routingLists sorts the positions of one (sequence, head) by key cluster
// (a counting sort; ck < 0 is a padded key, in no cluster): with C =
// len(start) - 1 clusters, cluster c is pos[start[c]:start[c+1]] in
// increasing order, and start[C] is the number of unpadded keys. next has
// room for C counters.
func routingLists[T Float](ck []T, start, next, pos []int) {
	C := len(start) - 1
	clear(start)
	for _, c := range ck {
		if c >= 0 {
			start[int(c)+1]++
		}
	}
	for c := 0; c < C; c++ {
		start[c+1] += start[c]
	}
	copy(next[:C], start[:C])
	for j, c := range ck {
		if c >= 0 {
			pos[next[int(c)]] = j
			next[int(c)]++
		}
	}
}

// routingBlock is the number of queries of one cluster whose scores one
// GEMM computes (a variable so that tests can make blocks tiny).
var routingBlock = 16

// routingBlocks is the plan of one (sequence, head): each query's window
// [lo, hi) in its cluster's key list, the queries the self rule serves
// (or that see nothing), and blocks of up to routingBlock queries of one
// cluster in increasing order whose windows together span at most maxKeys
// = w + routingBlock keys. Windows only move forward as i grows, so a
// block's keys are consecutive rows of the gathered buffers.
type routingBlocks struct {
	lo, hi  []int
	queries []int // the others, sorted by cluster, then position
	self    []int
	blocks  []routingSpan
	maxKeys int
	qstart  []int
}

// routingSpan is one block: queries[q0:q1], keys l..l+nu-1 of their
// cluster, which are the gathered rows base..base+nu-1.
type routingSpan struct {
	q0, q1, l, nu, base int
}

func newRoutingBlocks(T, C, w int) *routingBlocks {
	return &routingBlocks{lo: make([]int, T), hi: make([]int, T), queries: make([]int, T), self: make([]int, 0, T),
		maxKeys: w + routingBlock, qstart: make([]int, C+1)}
}

// planRouting fills bl from the assignments cq, ck of one (sequence, head)
// and its key lists start, pos (routingLists, nc = len(start) - 1
// clusters); run has room for nc counters.
func planRouting[T Float](bl *routingBlocks, causal bool, w int, cq, ck []T, start, pos, run []int) {
	nc := len(start) - 1
	clear(run[:nc])
	bl.self, bl.blocks = bl.self[:0], bl.blocks[:0]
	qs := bl.qstart[:nc+1]
	clear(qs)
	for i := range cq {
		c, own := int(cq[i]), int(ck[i])
		l, u := routingWindow(causal, w, run[c], start[c+1]-start[c], own == c)
		if own >= 0 {
			run[own]++
		}
		bl.lo[i], bl.hi[i] = l, u
		if u == l {
			bl.self = append(bl.self, i)
		} else {
			qs[c+1]++
		}
	}
	for c := 0; c < nc; c++ {
		qs[c+1] += qs[c]
	}
	copy(run[:nc], qs[:nc])
	for i := range cq {
		if bl.hi[i] > bl.lo[i] {
			c := int(cq[i])
			bl.queries[run[c]] = i
			run[c]++
		}
	}
	for c := 0; c < nc; c++ {
		for x := qs[c]; x < qs[c+1]; {
			l := bl.lo[bl.queries[x]]
			y := x + 1
			for y < qs[c+1] && y-x < routingBlock && bl.hi[bl.queries[y]]-l <= bl.maxKeys {
				y++
			}
			bl.blocks = append(bl.blocks, routingSpan{q0: x, q1: y, l: l, nu: bl.hi[bl.queries[y-1]] - l, base: start[c] + l})
			x = y
		}
	}
}

// routingForward fills, for every (sequence, head), the assignments
// saved[:B*H*T] (c_q) and saved[B*H*T:] (c_k, -1 for padded keys), lse and,
// when v is not nil, the output rows; when weights is not nil it writes
// the dense map; when stats is not nil it adds to them.
func routingForward[T Float](s RoutingShape, mu []float64, q, k, v, mask, out, lse, saved, weights []T, stats *RoutingStats) {
	T_, hd := s.QLen, s.HeadDim
	dq := s.Heads * hd
	dv := s.VDim()
	ov := s.Heads * dv
	C := s.Clusters
	scale := s.scale()
	slopes := s.slopes()
	nBH := s.Batch * s.Heads
	rh := s.RoutingHeads()
	// Unit centroids, once per forward.
	mun := make([]float64, len(mu))
	for hc := 0; hc < len(mu)/max(hd, 1); hc++ {
		m := mu[hc*hd : (hc+1)*hd]
		norm := 0.0
		for _, e := range m {
			norm += e * e
		}
		if norm = math.Sqrt(norm); norm > 0 {
			for t, e := range m {
				mun[hc*hd+t] = e / norm
			}
		}
	}
	var part []float64 // per (sequence, routing head): C*(hd+1) sums and counts
	stride := C * (hd + 1)
	if stats != nil && rh > 0 {
		part = make([]float64, s.Batch*rh*stride)
	}
	if out != nil {
		clear(out)
	}
	if weights != nil {
		clear(weights)
	}
	w := max(s.Window, s.LocalWindow)
	parallelFor(nBH, T_*(min(w, T_)+C)*hd, func(lo, hi int) {
		start := make([]int, C+1)
		pos := make([]int, T_)
		run := make([]int, C)
		next := make([]int, C)
		kbuf := make([]T, T_*hd)
		vbuf := make([]T, T_*dv)
		xn := make([]float64, hd)
		bl := newRoutingBlocks(T_, C, min(w, T_))
		p := make([]float64, bl.maxKeys)
		qbuf := make([]T, routingBlock*hd)
		sbuf := make([]T, routingBlock*bl.maxKeys)
		obuf := make([]T, routingBlock*dv)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/s.Heads, bh%s.Heads
			hr := h - s.LocalHeads
			slope := 0.0
			if slopes != nil {
				slope = slopes[h]
			}
			win, nc := s.Window, C
			if hr < 0 {
				win, nc = s.LocalWindow, 1
			}
			cq := saved[bh*T_ : (bh+1)*T_]
			ck := saved[(nBH+bh)*T_ : (nBH+bh+1)*T_]
			var ps []float64
			if part != nil && hr >= 0 {
				ps = part[(b*rh+hr)*stride : (b*rh+hr+1)*stride]
			}
			var mh []float64
			if hr >= 0 {
				mh = mun[hr*C*hd : (hr+1)*C*hd]
			}
			for i := 0; i < T_; i++ {
				unpadded := mask == nil || mask[b*T_+i] != 0
				qi := q[b*T_*dq+i*dq+h*hd:][:hd]
				ki := k[b*T_*dq+i*dq+h*hd:][:hd]
				a, c := 0, 0
				if hr >= 0 {
					a = routingAssign(mh, C, hd, qi, xn)
					if ps != nil && unpadded {
						for t, e := range xn {
							ps[a*hd+t] += e
						}
						ps[C*hd+a]++
					}
					c = routingAssign(mh, C, hd, ki, xn)
					if ps != nil && unpadded {
						for t, e := range xn {
							ps[c*hd+t] += e
						}
						ps[C*hd+c]++
					}
				}
				if !unpadded {
					c = -1
				}
				cq[i], ck[i] = T(a), T(c)
			}
			routingLists(ck, start[:nc+1], next, pos)
			for x, j := range pos[:start[nc]] {
				copy(kbuf[x*hd:(x+1)*hd], k[b*T_*dq+j*dq+h*hd:][:hd])
				if v != nil {
					copy(vbuf[x*dv:(x+1)*dv], v[b*T_*ov+j*ov+h*dv:][:dv])
				}
			}
			planRouting(bl, s.Causal, win, cq, ck, start[:nc+1], pos, run)
			for _, i := range bl.self { // the self rule, or no key at all
				row := bh*T_ + i
				if int(ck[i]) < 0 {
					lse[row] = T(math.Inf(-1))
					continue
				}
				qi := q[b*T_*dq+i*dq+h*hd:][:hd]
				lse[row] = T(scale * float64(dot(qi, k[b*T_*dq+i*dq+h*hd:][:hd])))
				if weights != nil {
					weights[row*T_+i] = 1
				}
				if v != nil {
					copy(out[b*T_*ov+i*ov+h*dv:][:dv], v[b*T_*ov+i*ov+h*dv:][:dv])
				}
			}
			for _, blk := range bl.blocks {
				qs := bl.queries[blk.q0:blk.q1]
				nb, base, nu := len(qs), blk.base, blk.nu
				for r, i := range qs {
					copy(qbuf[r*hd:(r+1)*hd], q[b*T_*dq+i*dq+h*hd:][:hd])
				}
				// The block's keys are contiguous rows of kbuf: one GEMM.
				gemm(false, true, nb, nu, hd, T(scale), qbuf, hd, kbuf[base*hd:], hd, 0, sbuf, nu)
				for r, i := range qs {
					row := bh*T_ + i
					l, u := bl.lo[i]-blk.l, bl.hi[i]-blk.l
					sr := sbuf[r*nu : (r+1)*nu]
					mx := math.Inf(-1)
					for x := l; x < u; x++ {
						sc := float64(sr[x])
						if slope != 0 {
							sc -= slope * math.Abs(float64(i-pos[base+x]))
						}
						p[x] = sc
						mx = max(mx, sc)
					}
					sum := 0.0
					for x := l; x < u; x++ {
						p[x] = math.Exp(p[x] - mx)
						sum += p[x]
					}
					lse[row] = T(mx + math.Log(sum))
					clear(sr)
					for x := l; x < u; x++ {
						sr[x] = T(p[x] / sum)
						if weights != nil {
							weights[row*T_+pos[base+x]] = sr[x]
						}
					}
				}
				if v == nil {
					continue
				}
				gemm(false, false, nb, dv, nu, 1, sbuf, nu, vbuf[base*dv:], dv, 0, obuf, dv)
				for r, i := range qs {
					copy(out[b*T_*ov+i*ov+h*dv:][:dv], obuf[r*dv:(r+1)*dv])
				}
			}
		}
	})
	if stats != nil { // added to what the sink holds (UpdateCentroids clears it)
		for b := 0; b < s.Batch; b++ { // in a fixed order: deterministic sums
			for hr := 0; hr < rh; hr++ {
				ps := part[(b*rh+hr)*stride : (b*rh+hr+1)*stride]
				for c := 0; c < C; c++ {
					sum := stats.Sum[(hr*C+c)*hd : (hr*C+c+1)*hd]
					for t := range sum {
						sum[t] += ps[c*hd+t]
					}
					stats.Count[hr*C+c] += ps[C*hd+c]
				}
			}
		}
	}
}

// routingBackward maps the forward's logsumexp and assignments and the
// gradients of its output and logsumexp to dq, dk and dv.
func routingBackward[T Float](s RoutingShape, q, k, v, lse, saved, do, dlse, dqOut, dkOut, dvOut []T) {
	T_, hd := s.QLen, s.HeadDim
	dq := s.Heads * hd
	dv := s.VDim()
	ov := s.Heads * dv
	C := s.Clusters
	scale := s.scale()
	slopes := s.slopes()
	nBH := s.Batch * s.Heads
	clear(dqOut)
	clear(dkOut)
	clear(dvOut)
	w := max(s.Window, s.LocalWindow)
	// One worker per (sequence, head): it owns the dq, dk and dv rows of
	// that head (KVHeads = Heads).
	parallelFor(nBH, T_*min(w, T_)*(2*hd+2*dv), func(lo, hi int) {
		start := make([]int, C+1)
		pos := make([]int, T_)
		run := make([]int, C)
		next := make([]int, C)
		kbuf := make([]T, T_*hd)
		vbuf := make([]T, T_*dv)
		dkbuf := make([]T, T_*hd)
		dvbuf := make([]T, T_*dv)
		bl := newRoutingBlocks(T_, C, min(w, T_))
		p := make([]float64, bl.maxKeys)
		qbuf := make([]T, routingBlock*hd)
		qbuf2 := make([]T, routingBlock*hd)
		dobuf := make([]T, routingBlock*dv)
		pbuf := make([]T, routingBlock*bl.maxKeys)
		dsbuf := make([]T, routingBlock*bl.maxKeys)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/s.Heads, bh%s.Heads
			slope := 0.0
			if slopes != nil {
				slope = slopes[h]
			}
			win, nc := s.Window, C
			if h < s.LocalHeads {
				win, nc = s.LocalWindow, 1
			}
			cq := saved[bh*T_ : (bh+1)*T_]
			ck := saved[(nBH+bh)*T_ : (nBH+bh+1)*T_]
			routingLists(ck, start[:nc+1], next, pos)
			nk := start[nc]
			for x, j := range pos[:nk] {
				copy(kbuf[x*hd:(x+1)*hd], k[b*T_*dq+j*dq+h*hd:][:hd])
				copy(vbuf[x*dv:(x+1)*dv], v[b*T_*ov+j*ov+h*dv:][:dv])
			}
			clear(dkbuf[:nk*hd])
			clear(dvbuf[:nk*dv])
			planRouting(bl, s.Causal, win, cq, ck, start[:nc+1], pos, run)
			for _, i := range bl.self { // the self rule: P_ii = 1
				row := bh*T_ + i
				L := float64(lse[row])
				if math.IsInf(L, -1) {
					continue // the query sees no key
				}
				qi := q[b*T_*dq+i*dq+h*hd:][:hd]
				doi := do[b*T_*ov+i*ov+h*dv:][:dv]
				dqi := dqOut[b*T_*dq+i*dq+h*hd:][:hd]
				ki := k[b*T_*dq+i*dq+h*hd:][:hd]
				vi := v[b*T_*ov+i*ov+h*dv:][:dv]
				pi := math.Exp(scale*float64(dot(qi, ki)) - L)
				dsi := float64(dot(doi, vi))
				g := T(scale * pi * (dsi - (pi*dsi - float64(dlse[row]))))
				dki := dkOut[b*T_*dq+i*dq+h*hd:][:hd]
				for t := range dqi {
					dqi[t] += g * ki[t]
					dki[t] += g * qi[t]
				}
				dvi := dvOut[b*T_*ov+i*ov+h*dv:][:dv]
				for t := range dvi {
					dvi[t] += T(pi) * doi[t]
				}
			}
			for _, blk := range bl.blocks {
				qs := bl.queries[blk.q0:blk.q1]
				nb, base, nu := len(qs), blk.base, blk.nu
				for r, i := range qs {
					copy(qbuf[r*hd:(r+1)*hd], q[b*T_*dq+i*dq+h*hd:][:hd])
					copy(dobuf[r*dv:(r+1)*dv], do[b*T_*ov+i*ov+h*dv:][:dv])
				}
				gemm(false, true, nb, nu, hd, T(scale), qbuf, hd, kbuf[base*hd:], hd, 0, pbuf, nu)
				gemm(false, true, nb, nu, dv, 1, dobuf, dv, vbuf[base*dv:], dv, 0, dsbuf, nu)
				for r, i := range qs {
					row := bh*T_ + i
					L := float64(lse[row])
					l, u := bl.lo[i]-blk.l, bl.hi[i]-blk.l
					pr, dr := pbuf[r*nu:(r+1)*nu], dsbuf[r*nu:(r+1)*nu]
					// P_ij = exp(s_ij - L), dP_ij = dO_i . v_j, D = sum_j P dP - dL
					d := -float64(dlse[row])
					for x := l; x < u; x++ {
						sc := float64(pr[x])
						if slope != 0 {
							sc -= slope * math.Abs(float64(i-pos[base+x]))
						}
						p[x] = math.Exp(sc - L)
						d += p[x] * float64(dr[x])
					}
					clear(pr[:l])
					clear(pr[u:])
					for x := l; x < u; x++ {
						dr[x] = T(scale * p[x] * (float64(dr[x]) - d)) // scale dS_ij
						pr[x] = T(p[x])
					}
					clear(dr[:l])
					clear(dr[u:])
				}
				gemm(false, false, nb, hd, nu, 1, dsbuf, nu, kbuf[base*hd:], hd, 0, qbuf2, hd)
				for r, i := range qs {
					dqi := dqOut[b*T_*dq+i*dq+h*hd:][:hd]
					for t, g := range qbuf2[r*hd : (r+1)*hd] {
						dqi[t] += g
					}
				}
				gemm(true, false, nu, hd, nb, 1, dsbuf, nu, qbuf, hd, 1, dkbuf[base*hd:], hd)
				gemm(true, false, nu, dv, nb, 1, pbuf, nu, dobuf, dv, 1, dvbuf[base*dv:], dv)
			}
			for x, j := range pos[:nk] { // scatter back (adds: the self rule wrote some rows)
				dkj := dkOut[b*T_*dq+j*dq+h*hd:][:hd]
				for t, g := range dkbuf[x*hd : (x+1)*hd] {
					dkj[t] += g
				}
				dvj := dvOut[b*T_*ov+j*ov+h*dv:][:dv]
				for t, g := range dvbuf[x*dv : (x+1)*dv] {
					dvj[t] += g
				}
			}
		}
	})
}
