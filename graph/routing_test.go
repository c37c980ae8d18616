package graph

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// routingRef is the slow routing reference's output, logsumexp, dense
// weights, gradients and k-means statistics, the smallest gap between a
// token's best and second-best centroid score (+Inf without routing
// heads), and how often the self rule and an empty cluster occurred.
type routingRef struct {
	out, lse, weights, dq, dk, dv []float64
	sum, count                    []float64
	gap                           float64
	selfRule, emptyClusters       int
}

// routingReference computes routing attention the slow way: assignments by
// comparing every centroid, an explicit T x T visibility mask built from
// the cluster lists, every score, the masked softmax, and the gradients
// of sum(out * r) + sum(lse * rl) (rl nil: no lse term) by loops over the
// mask. It shares no code with the op.
func routingReference(s RoutingShape, mu, q, k, v, mask, r, rl []float64) routingRef {
	T, hd, H := s.QLen, s.HeadDim, s.Heads
	dv := s.VDim()
	scale := s.Scale
	if scale == 0 {
		scale = 1 / math.Sqrt(float64(hd))
	}
	var slopes []float64
	if s.ALiBi {
		slopes = ALiBiSlopes(H)
	}
	C := s.Clusters
	ref := routingRef{
		out: make([]float64, s.Batch*T*H*dv), lse: make([]float64, s.Batch*H*T),
		weights: make([]float64, s.Batch*H*T*T),
		dq:      make([]float64, len(q)), dk: make([]float64, len(k)), dv: make([]float64, len(v)),
		sum: make([]float64, s.RoutingHeads()*C*hd), count: make([]float64, s.RoutingHeads()*C),
		gap: math.Inf(1),
	}
	unit := func(x []float64) []float64 {
		n := 0.0
		for _, e := range x {
			n += e * e
		}
		n = math.Sqrt(n)
		u := make([]float64, len(x))
		for i, e := range x {
			if n > 0 {
				u[i] = e / n
			}
		}
		return u
	}
	qv := func(b, i, h int) []float64 { return q[(b*T+i)*H*hd+h*hd:][:hd] }
	kv := func(b, i, h int) []float64 { return k[(b*T+i)*H*hd+h*hd:][:hd] }
	for b := 0; b < s.Batch; b++ {
		for h := 0; h < H; h++ {
			hr := h - s.LocalHeads
			padded := func(j int) bool { return mask != nil && mask[b*T+j] == 0 }
			assign := func(x []float64) int {
				if hr < 0 {
					return 0
				}
				xn := unit(x)
				scores := make([]float64, C)
				best := 0
				for c := 0; c < C; c++ {
					m := unit(mu[(hr*C+c)*hd : (hr*C+c+1)*hd])
					for t := range xn {
						scores[c] += m[t] * xn[t]
					}
					if scores[c] > scores[best] {
						best = c
					}
				}
				for c := 0; c < C; c++ {
					if c != best {
						ref.gap = math.Min(ref.gap, scores[best]-scores[c])
					}
				}
				return best
			}
			cq, ck := make([]int, T), make([]int, T)
			for i := 0; i < T; i++ {
				cq[i], ck[i] = assign(qv(b, i, h)), assign(kv(b, i, h))
				if hr >= 0 && !padded(i) {
					for _, x := range [][2]int{{cq[i], 0}, {ck[i], 1}} {
						vec := qv(b, i, h)
						if x[1] == 1 {
							vec = kv(b, i, h)
						}
						for t, e := range unit(vec) {
							ref.sum[(hr*C+x[0])*hd+t] += e
						}
						ref.count[hr*C+x[0]]++
					}
				}
			}
			nc, w := C, s.Window
			if hr < 0 {
				nc, w = 1, s.LocalWindow
			}
			lists := make([][]int, nc)
			for j := 0; j < T; j++ {
				if !padded(j) {
					lists[ck[j]] = append(lists[ck[j]], j)
				}
			}
			for _, l := range lists {
				if len(l) == 0 {
					ref.emptyClusters++
				}
			}
			visible := make([][]bool, T) // the explicit mask
			for i := 0; i < T; i++ {
				visible[i] = make([]bool, T)
				l := lists[cq[i]]
				var seen []int
				if s.Causal {
					var upTo []int
					for _, j := range l {
						if j <= i {
							upTo = append(upTo, j)
						}
					}
					if len(upTo) > w {
						upTo = upTo[len(upTo)-w:]
					}
					seen = upTo
				} else if len(l) <= w {
					seen = l
				} else {
					before := 0
					for _, j := range l {
						if j < i {
							before++
						}
					}
					lo := before - w/2
					if lo < 0 {
						lo = 0
					}
					if lo > len(l)-w {
						lo = len(l) - w
					}
					seen = l[lo : lo+w]
				}
				for _, j := range seen {
					visible[i][j] = true
				}
				if len(seen) == 0 && !padded(i) {
					visible[i][i] = true
					ref.selfRule++
				}
			}
			for i := 0; i < T; i++ {
				row := (b*H+h)*T + i
				score := make([]float64, T)
				mx := math.Inf(-1)
				for j := 0; j < T; j++ {
					for c := 0; c < hd; c++ {
						score[j] += q[(b*T+i)*H*hd+h*hd+c] * k[(b*T+j)*H*hd+h*hd+c]
					}
					score[j] *= scale
					if slopes != nil {
						score[j] -= slopes[h] * math.Abs(float64(i-j))
					}
					if visible[i][j] {
						mx = math.Max(mx, score[j])
					}
				}
				if math.IsInf(mx, -1) {
					ref.lse[row] = mx
					continue
				}
				p := make([]float64, T)
				sum := 0.0
				for j := 0; j < T; j++ {
					if visible[i][j] {
						p[j] = math.Exp(score[j] - mx)
						sum += p[j]
					}
				}
				ref.lse[row] = mx + math.Log(sum)
				o := ref.out[(b*T+i)*H*dv+h*dv:][:dv]
				ri := r[(b*T+i)*H*dv+h*dv:][:dv]
				dp := make([]float64, T)
				d := 0.0
				if rl != nil {
					d = -rl[row]
				}
				for j := 0; j < T; j++ {
					if !visible[i][j] {
						continue
					}
					p[j] /= sum
					ref.weights[row*T+j] = p[j]
					for c := range o {
						o[c] += p[j] * v[(b*T+j)*H*dv+h*dv+c]
						dp[j] += ri[c] * v[(b*T+j)*H*dv+h*dv+c]
					}
					d += p[j] * dp[j]
				}
				for j := 0; j < T; j++ {
					if !visible[i][j] {
						continue
					}
					g := scale * p[j] * (dp[j] - d)
					for c := 0; c < hd; c++ {
						ref.dq[(b*T+i)*H*hd+h*hd+c] += g * k[(b*T+j)*H*hd+h*hd+c]
						ref.dk[(b*T+j)*H*hd+h*hd+c] += g * q[(b*T+i)*H*hd+h*hd+c]
					}
					for c := 0; c < dv; c++ {
						ref.dv[(b*T+j)*H*dv+h*dv+c] += p[j] * ri[c]
					}
				}
			}
		}
	}
	return ref
}

// routingCentroids is a centroid buffer of s drawn from rng.
func routingCentroids(rng *rand.Rand, s RoutingShape) *Param {
	if s.RoutingHeads() == 0 {
		return nil
	}
	sh := s.CentroidShape()
	return &Param{Name: "centroids", Value: RandomTensor(rng, 1, sh...), Mutable: true}
}

// runRouting runs the op on copies of the inputs with loss sum(out * r) +
// sum(lse * rl) (rl nil: no lse term) and returns what routingReference
// does (gap and counters aside).
func runRouting(t *testing.T, s RoutingShape, mu *Param, qt, kt, vt, mt, rt, rlt *tensor.Dense) routingRef {
	t.Helper()
	stats := NewRoutingStats(s)
	r := runMappedCore(t, coreOps{
		attend: func(q, k, v, m *G.Node) (*G.Node, *G.Node, error) {
			return RoutingAttentionLSE(q, k, v, m, mu, stats, s)
		},
		weights: func(q, k, m *G.Node) (*G.Node, error) { return RoutingWeights(q, k, m, mu, s) },
	}, qt, kt, vt, mt, rt, rlt)
	return routingRef{out: r.out, lse: r.lse, weights: r.weights, dq: r.dq, dk: r.dk, dv: r.dv, sum: stats.Sum, count: stats.Count}
}

func muData(p *Param) []float64 {
	if p == nil {
		return nil
	}
	return p.Value.Data().([]float64)
}

// TestRoutingMatchesReference: the op's output, logsumexp, map
// (RoutingWeights), q, k, v gradients and k-means statistics equal the
// slow reference's to 1e-10 in float64: causal and bidirectional, padded,
// local heads, clusters of unequal sizes, windows smaller and larger than
// the clusters, one cluster, empty clusters (a duplicated centroid never
// wins a tie), the self rule (keys pointing away from their queries),
// ALiBi, a value width of its own, and a shape large enough for
// parallelFor to split the work; each with the default query blocks and
// with blocks of 3 and 1 queries (so that blocks end both at their count
// and at their span of keys).
func TestRoutingMatchesReference(t *testing.T) {
	rng := testRNG(t)
	base := AttentionShape{Batch: 2, QLen: 11, KLen: 11, Heads: 2, KVHeads: 2, HeadDim: 3}
	with := func(f func(*AttentionShape)) AttentionShape {
		s := base
		f(&s)
		return s
	}
	causal := with(func(s *AttentionShape) { s.Causal = true })
	for _, c := range []struct {
		name      string
		s         RoutingShape
		masked    bool
		lseLoss   bool
		emptyLast bool // the last centroid of every head copies the first: its cluster is empty
		flipKeys  bool // k = -q: keys land in other clusters than their queries (the self rule)
		wantSelf  bool // the self rule must occur
	}{
		{name: "causal/C3/w2", s: RoutingShape{causal, 3, 2, 0, 0}, lseLoss: true},
		{name: "bidirectional/C3/w3", s: RoutingShape{base, 3, 3, 0, 0}, lseLoss: true},
		{name: "bidirectional/C2/w4 even", s: RoutingShape{base, 2, 4, 0, 0}, lseLoss: true},
		{name: "causal/padded/C2/w3", s: RoutingShape{causal, 2, 3, 0, 0}, masked: true},
		{name: "bidirectional/padded/C3/w2", s: RoutingShape{base, 3, 2, 0, 0}, masked: true},
		{name: "causal/window>clusters", s: RoutingShape{causal, 3, 20, 0, 0}, lseLoss: true},
		{name: "bidirectional/window>clusters", s: RoutingShape{base, 3, 20, 0, 0}, lseLoss: true},
		{name: "causal/C1/w>=T", s: RoutingShape{causal, 1, 11, 0, 0}, lseLoss: true},
		{name: "causal/local heads", s: RoutingShape{causal, 3, 2, 1, 3}, lseLoss: true},
		{name: "bidirectional/padded/local heads", s: RoutingShape{with(func(s *AttentionShape) { s.Heads, s.KVHeads = 4, 4 }), 2, 3, 2, 2}, masked: true},
		{name: "causal/all local", s: RoutingShape{causal, 2, 2, 2, 4}, lseLoss: true},
		{name: "causal/empty clusters", s: RoutingShape{causal, 4, 3, 0, 0}, lseLoss: true, emptyLast: true},
		{name: "bidirectional/padded/empty clusters", s: RoutingShape{base, 3, 2, 0, 0}, masked: true, emptyLast: true},
		{name: "causal/self rule", s: RoutingShape{causal, 2, 3, 0, 0}, flipKeys: true, lseLoss: true, wantSelf: true},
		{name: "causal/padded/self rule", s: RoutingShape{causal, 2, 3, 0, 0}, flipKeys: true, masked: true, wantSelf: true},
		{name: "causal/alibi/valuedim", s: RoutingShape{with(func(s *AttentionShape) { s.Causal, s.ALiBi, s.ValueDim = true, true, 4 }), 3, 3, 1, 2}, lseLoss: true},
		{name: "bidirectional/alibi/padded", s: RoutingShape{with(func(s *AttentionShape) { s.ALiBi = true }), 2, 3, 0, 0}, masked: true},
		{name: "causal/padded/parallel workers", s: RoutingShape{AttentionShape{Batch: 3, QLen: 24, KLen: 24, Heads: 4, KVHeads: 4, HeadDim: 4, Causal: true}, 3, 4, 2, 3}, masked: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.s
			n, dqk, dvv := s.Batch*s.QLen, s.Heads*s.HeadDim, s.Heads*s.VDim()
			qt := RandomTensor(rng, 1.5, n, dqk)
			kt := RandomTensor(rng, 1.5, n, dqk)
			if c.flipKeys {
				kd, qd := Float64s(kt), Float64s(qt)
				for i := range kd {
					kd[i] = -qd[i]
				}
				kt = tensor.New(tensor.WithShape(n, dqk), tensor.WithBacking(kd))
			}
			vt := RandomTensor(rng, 1, n, dvv)
			rt := RandomTensor(rng, 1, n, dvv)
			mu := routingCentroids(rng, s)
			if c.emptyLast {
				m := muData(mu)
				for hr := 0; hr < s.RoutingHeads(); hr++ {
					copy(m[(hr*s.Clusters+s.Clusters-1)*s.HeadDim:][:s.HeadDim], m[hr*s.Clusters*s.HeadDim:][:s.HeadDim])
				}
			}
			if c.flipKeys { // two opposite centroids: k = -q is never in q's cluster
				m := muData(mu)
				for t := 0; t < s.HeadDim; t++ {
					m[s.HeadDim+t] = -m[t]
				}
			}
			var mt, rlt *tensor.Dense
			var mask, rl []float64
			if c.masked {
				mt = mask01(rng, n, 0.35)
				mask = mt.Data().([]float64)
				mask[0] = 0        // a padded first position: causal, it sees no key
				mask[s.KLen] = 1   // the second sequence starts unpadded
				mask[s.KLen-1] = 0 // a padded last key
				mask[s.KLen+2] = 1
			}
			if c.lseLoss {
				rlt = RandomTensor(rng, 1, s.Batch*s.Heads, s.QLen)
				rl = Float64s(rlt)
			}
			want := routingReference(s, muData(mu), Float64s(qt), Float64s(kt), Float64s(vt), mask, Float64s(rt), rl)
			t.Logf("self rule %d times, %d empty clusters", want.selfRule, want.emptyClusters)
			if c.wantSelf && want.selfRule == 0 {
				t.Fatal("the self rule never applies: the case tests nothing")
			}
			if c.emptyLast && want.emptyClusters == 0 {
				t.Fatal("no empty cluster: the case tests nothing")
			}
			for _, block := range []int{16, 3, 1} { // the default blocks, and blocks split by count and by span
				routingBlock = block
				got := runRouting(t, s, mu, qt, kt, vt, mt, rt, rlt)
				routingBlock = 16
				for _, x := range []struct {
					name      string
					got, want []float64
				}{
					{"output", got.out, want.out}, {"logsumexp", got.lse, want.lse}, {"weights", got.weights, want.weights},
					{"dq", got.dq, want.dq}, {"dk", got.dk, want.dk}, {"dv", got.dv, want.dv},
					{"statistics sums", got.sum, want.sum}, {"statistics counts", got.count, want.count},
				} {
					if d := maxAbsDiff(x.got, x.want); !(d <= 1e-10) {
						t.Errorf("blocks of %d: %s: differs from the reference by %g", block, x.name, d)
					}
				}
			}
		})
	}
}

// TestRoutingSmallWindowDiffers: the reference comparison could fail: a
// window of 1 in clusters of 3 gives other outputs than a window >= T.
func TestRoutingSmallWindowDiffers(t *testing.T) {
	rng := testRNG(t)
	a := AttentionShape{Batch: 1, QLen: 9, KLen: 9, Heads: 1, KVHeads: 1, HeadDim: 3}
	qt, kt, vt, rt := RandomTensor(rng, 1, 9, 3), RandomTensor(rng, 1, 9, 3), RandomTensor(rng, 1, 9, 3), RandomTensor(rng, 1, 9, 3)
	mu := routingCentroids(rng, RoutingShape{a, 1, 1, 0, 0})
	small := runRouting(t, RoutingShape{a, 1, 1, 0, 0}, mu, qt, kt, vt, nil, rt, nil)
	all := runRouting(t, RoutingShape{a, 1, 9, 0, 0}, mu, qt, kt, vt, nil, rt, nil)
	if maxAbsDiff(small.out, all.out) < 1e-6 {
		t.Error("window 1 and window 9 give the same output")
	}
	dense := runCore(t, func(q, k, v, m *G.Node, s AttentionShape) (*G.Node, error) {
		return DenseAttention(q, k, v, m, s, nil)
	}, a, qt, kt, vt, nil, rt)
	if d := maxAbsDiff(all.out, dense.out); !(d <= 1e-10) {
		t.Errorf("one cluster, window >= T: differs from dense attention by %g", d)
	}
}

// TestRoutingReadsCentroidsAtForward: the op reads the centroid buffer
// when it runs, not when it is built: changing the buffer between two runs
// of one tape changes the assignments the second run uses (it matches the
// reference for the new centroids, gradients included).
func TestRoutingReadsCentroidsAtForward(t *testing.T) {
	rng := testRNG(t)
	s := RoutingShape{AttentionShape{Batch: 1, QLen: 10, KLen: 10, Heads: 1, KVHeads: 1, HeadDim: 3, Causal: true}, 3, 2, 0, 0}
	qt, kt, vt, rt := RandomTensor(rng, 1.5, 10, 3), RandomTensor(rng, 1.5, 10, 3), RandomTensor(rng, 1, 10, 3), RandomTensor(rng, 1, 10, 3)
	mu := routingCentroids(rng, s)
	g := G.NewGraph()
	q, k, v := Variable(g, "q", qt), Variable(g, "k", kt), Variable(g, "v", vt)
	out, err := RoutingAttention(q, k, v, nil, mu, nil, s)
	if err != nil {
		t.Fatal(err)
	}
	prod, err := G.HadamardProd(out, Variable(g, "r", rt))
	if err != nil {
		t.Fatal(err)
	}
	loss, err := G.Sum(prod)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := G.Grad(loss, q, k, v); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g, G.BindDualValues(q, k, v))
	defer vm.Close()
	var first, dq0 []float64
	for run := 0; run < 2; run++ {
		if run == 1 {
			first = append([]float64(nil), Float64s(out.Value())...)
			g, _ := q.Grad()
			dq0 = append([]float64(nil), Float64s(g)...)
			m := muData(mu)
			for i := range m {
				m[i] = rng.NormFloat64() // in place, as training and checkpoint restores do
			}
			vm.Reset()
		}
		if err := vm.RunAll(); err != nil {
			t.Fatal(err)
		}
		want := routingReference(s, muData(mu), Float64s(qt), Float64s(kt), Float64s(vt), nil, Float64s(rt), nil)
		if d := maxAbsDiff(Float64s(out.Value()), want.out); !(d <= 1e-10) {
			t.Errorf("run %d: output differs from the reference for the current centroids by %g", run, d)
		}
		g, _ := q.Grad()
		dq := append([]float64(nil), Float64s(g)...)
		for i := range dq0 { // the tape accumulates gradients over runs
			dq[i] -= dq0[i]
		}
		if d := maxAbsDiff(dq, want.dq); !(d <= 1e-10) {
			t.Errorf("run %d: dq differs from the reference for the current centroids by %g", run, d)
		}
	}
	if maxAbsDiff(first, Float64s(out.Value())) < 1e-9 {
		t.Error("new centroids gave the same output: the comparison cannot see a stale read")
	}
}

// TestRoutingUpdateCentroids: the EMA update moves each cluster with
// statistics to decay*mu + (1-decay)*mean, renormalized, leaves clusters
// without statistics alone, and clears the sink (a second call is a
// no-op).
func TestRoutingUpdateCentroids(t *testing.T) {
	s := RoutingShape{AttentionShape{Batch: 1, QLen: 4, KLen: 4, Heads: 2, KVHeads: 2, HeadDim: 2}, 2, 2, 1, 2}
	st := NewRoutingStats(s) // one routing head, two clusters
	copy(st.Sum, []float64{2, 0, 0, 0})
	copy(st.Count, []float64{4, 0})
	mu := []float64{0, 3, 5, 5}
	st.UpdateCentroids(mu, 0.75)
	// cluster 0: 0.75*(0, 3) + 0.25*(0.5, 0) = (0.125, 2.25), then unit length
	n := math.Hypot(0.125, 2.25)
	want := []float64{0.125 / n, 2.25 / n, 5, 5}
	if d := maxAbsDiff(mu, want); !(d <= 1e-15) {
		t.Errorf("after the update %v, want %v", mu, want)
	}
	st.UpdateCentroids(mu, 0.75)
	if d := maxAbsDiff(mu, want); d != 0 {
		t.Errorf("a second update without a forward moved the centroids to %v", mu)
	}
}

// routingInputs draws q, k, v (and a mask) until every assignment has a
// margin of 1e-2 between its best and second-best centroid, so that
// finite-difference steps move no token to another cluster, and every
// query sees a key (a logsumexp of -Inf has no finite difference).
func routingInputs(t *testing.T, rng *rand.Rand, s RoutingShape, masked bool) (mu *Param, qt, kt, vt, mt *tensor.Dense) {
	t.Helper()
	n := s.Batch * s.QLen
	for try := 0; ; try++ {
		if try == 500 {
			t.Fatal("no input without near ties in 500 draws")
		}
		mu = routingCentroids(rng, s)
		qt = RandomTensor(rng, 2, n, s.Heads*s.HeadDim)
		kt = RandomTensor(rng, 2, n, s.Heads*s.HeadDim)
		vt = RandomTensor(rng, 1, n, s.Heads*s.VDim())
		var mask []float64
		if masked {
			mt = mask01(rng, n, 0.3)
			mask = mt.Data().([]float64)
			for b := 0; b < s.Batch; b++ {
				mask[b*s.KLen] = 1 // no query without a key: its logsumexp would be -Inf
			}
		}
		ref := routingReference(s, muData(mu), Float64s(qt), Float64s(kt), Float64s(vt), mask, make([]float64, n*s.Heads*s.VDim()), nil)
		if ref.gap > 1e-2 && !slices.ContainsFunc(ref.lse, func(x float64) bool { return math.IsInf(x, -1) }) {
			return
		}
	}
}

// TestRoutingGradCheck: finite differences through the op (output and
// logsumexp) agree with its backward, on inputs with a clear margin in
// every assignment.
func TestRoutingGradCheck(t *testing.T) {
	rng := testRNG(t)
	for _, c := range []struct {
		name   string
		s      RoutingShape
		masked bool
	}{
		{"causal/C2/w2/local", RoutingShape{AttentionShape{Batch: 1, QLen: 9, KLen: 9, Heads: 2, KVHeads: 2, HeadDim: 3, Causal: true}, 2, 2, 1, 2}, false},
		{"bidirectional/padded/C3/w3", RoutingShape{AttentionShape{Batch: 2, QLen: 7, KLen: 7, Heads: 2, KVHeads: 2, HeadDim: 3}, 3, 3, 0, 0}, true},
		{"causal/alibi/C2/w3", RoutingShape{AttentionShape{Batch: 1, QLen: 9, KLen: 9, Heads: 2, KVHeads: 2, HeadDim: 2, Causal: true, ALiBi: true}, 2, 3, 0, 0}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.s
			mu, qt, kt, vt, mt := routingInputs(t, rng, s, c.masked)
			gradCheckCore(t, func(q, k, v, m *G.Node) (*G.Node, *G.Node, error) { return RoutingAttentionLSE(q, k, v, m, mu, nil, s) }, qt, kt, vt, mt)
		})
	}
}

// TestRoutingFloat32: the float32 kernels agree with the float64
// reference to float32 precision (output and gradients), on inputs with a
// clear margin in every assignment.
func TestRoutingFloat32(t *testing.T) {
	rng := testRNG(t)
	s := RoutingShape{AttentionShape{Batch: 2, QLen: 9, KLen: 9, Heads: 2, KVHeads: 2, HeadDim: 4, Causal: true}, 2, 3, 1, 2}
	mu, qt, kt, vt, _ := routingInputs(t, rng, s, false)
	rt := RandomTensor(rng, 1, 18, 8)
	want := routingReference(s, muData(mu), Float64s(qt), Float64s(kt), Float64s(vt), nil, Float64s(rt), nil)
	checkFloat32Core(t, "", func(q, k, v *G.Node) (*G.Node, error) { return RoutingAttention(q, k, v, nil, mu, nil, s) }, qt, kt, vt, rt,
		coreRun{out: want.out, dq: want.dq, dk: want.dk, dv: want.dv})
}

// TestRoutingRejects: impossible shapes and centroid buffers are errors.
func TestRoutingRejects(t *testing.T) {
	g := G.NewGraph()
	x := Variable(g, "x", tensor.New(tensor.WithShape(4, 2), tensor.Of(tensor.Float64)))
	base := AttentionShape{Batch: 1, QLen: 4, KLen: 4, Heads: 1, KVHeads: 1, HeadDim: 2}
	good := &Param{Name: "mu", Value: tensor.New(tensor.WithShape(2, 2), tensor.Of(tensor.Float64))}
	wrong := &Param{Name: "mu", Value: tensor.New(tensor.WithShape(3, 2), tensor.Of(tensor.Float64))}
	for _, c := range []struct {
		name string
		s    RoutingShape
		mu   *Param
	}{
		{"clusters 0", RoutingShape{base, 0, 2, 0, 0}, good},
		{"window 0", RoutingShape{base, 2, 0, 0, 0}, good},
		{"local heads > heads", RoutingShape{base, 2, 2, 2, 2}, good},
		{"local window 0", RoutingShape{base, 2, 2, 1, 0}, nil},
		{"negative local heads", RoutingShape{base, 2, 2, -1, 0}, good},
		{"cross attention", RoutingShape{AttentionShape{Batch: 1, QLen: 2, KLen: 4, Heads: 1, KVHeads: 1, HeadDim: 2}, 2, 2, 0, 0}, good},
		{"no centroids", RoutingShape{base, 2, 2, 0, 0}, nil},
		{"grouped key/value heads", RoutingShape{AttentionShape{Batch: 1, QLen: 4, KLen: 4, Heads: 2, KVHeads: 1, HeadDim: 1}, 2, 2, 0, 0}, good},
		{"centroids of another shape", RoutingShape{base, 2, 2, 0, 0}, wrong},
	} {
		if _, err := RoutingAttention(x, x, x, nil, c.mu, nil, c.s); err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
	if _, err := RoutingAttention(x, x, x, nil, good, NewRoutingStats(RoutingShape{base, 3, 2, 0, 0}), RoutingShape{base, 2, 2, 0, 0}); err == nil {
		t.Error("a statistics sink of another shape: no error")
	}
}
