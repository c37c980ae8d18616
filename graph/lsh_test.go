package graph

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// lshRef is a slow reference's output, dense weights and gradients.
type lshRef struct {
	out, weights, dq, dv []float64
}

// lshVisible says whether, in hash round r, query i of sequence b under
// head h may see key j before the self rule is applied.
type lshVisible func(b, h, r, i, j int) bool

// sharedQKReference is shared-QK attention the slow way: full Len x Len
// scores against the normalized queries, the selection given by visible
// per round, the self rule (a query sees itself only when no other key is
// visible in that round), the rounds' pairs pooled into one softmax (a
// pair visible in several rounds counted in each), and the gradients of
// sum(out * rr) by loops over the visible pairs, through the key
// normalization written out. It shares no code with the op.
func sharedQKReference(s LSHShape, rounds int, q, v, rr []float64, visible lshVisible) lshRef {
	T, d, H := s.Len, s.HeadDim, s.Heads
	dq := H * d
	scale := s.Scale
	if scale == 0 {
		scale = 1 / math.Sqrt(float64(d))
	}
	ref := lshRef{out: make([]float64, len(q)), weights: make([]float64, s.Batch*H*T*T),
		dq: make([]float64, len(q)), dv: make([]float64, len(v))}
	at := func(b, i, h, c int) int { return (b*T+i)*dq + h*d + c }
	for b := 0; b < s.Batch; b++ {
		for h := 0; h < H; h++ {
			norm := make([]float64, T)
			kn := make([][]float64, T)
			for j := 0; j < T; j++ {
				for c := 0; c < d; c++ {
					norm[j] += q[at(b, j, h, c)] * q[at(b, j, h, c)]
				}
				norm[j] = math.Sqrt(norm[j])
				kn[j] = make([]float64, d)
				for c := 0; c < d; c++ {
					kn[j][c] = q[at(b, j, h, c)] / norm[j]
				}
			}
			dkn := make([][]float64, T)
			for j := range dkn {
				dkn[j] = make([]float64, d)
			}
			for i := 0; i < T; i++ {
				type pair struct {
					j int
					s float64
				}
				var pairs []pair
				for r := 0; r < rounds; r++ {
					var vis []int
					self := false
					for j := 0; j < T; j++ {
						if !visible(b, h, r, i, j) {
							continue
						}
						if j == i {
							self = true
						} else {
							vis = append(vis, j)
						}
					}
					if len(vis) == 0 && self {
						vis = []int{i}
					}
					for _, j := range vis {
						sc := 0.0
						for c := 0; c < d; c++ {
							sc += q[at(b, i, h, c)] * kn[j][c]
						}
						pairs = append(pairs, pair{j, scale * sc})
					}
				}
				if len(pairs) == 0 {
					continue
				}
				mx := math.Inf(-1)
				for _, p := range pairs {
					mx = math.Max(mx, p.s)
				}
				sum := 0.0
				for _, p := range pairs {
					sum += math.Exp(p.s - mx)
				}
				L := mx + math.Log(sum)
				P := make([]float64, len(pairs))
				dP := make([]float64, len(pairs))
				D := 0.0
				row := (b*H+h)*T + i
				for x, p := range pairs {
					P[x] = math.Exp(p.s - L)
					ref.weights[row*T+p.j] += P[x]
					for c := 0; c < d; c++ {
						ref.out[at(b, i, h, c)] += P[x] * v[at(b, p.j, h, c)]
						dP[x] += rr[at(b, i, h, c)] * v[at(b, p.j, h, c)]
						ref.dv[at(b, p.j, h, c)] += P[x] * rr[at(b, i, h, c)]
					}
					D += P[x] * dP[x]
				}
				for x, p := range pairs {
					g := scale * P[x] * (dP[x] - D)
					for c := 0; c < d; c++ {
						ref.dq[at(b, i, h, c)] += g * kn[p.j][c]
						dkn[p.j][c] += g * q[at(b, i, h, c)]
					}
				}
			}
			for j := 0; j < T; j++ { // d(q/|q|)/dq = (I - k k^T) / |q|
				kg := 0.0
				for c := 0; c < d; c++ {
					kg += kn[j][c] * dkn[j][c]
				}
				for c := 0; c < d; c++ {
					ref.dq[at(b, j, h, c)] += (dkn[j][c] - kn[j][c]*kg) / norm[j]
				}
			}
		}
	}
	return ref
}

// lshSelection is the LSH visibility predicate built the slow way: the
// buckets by explicit products with the rotation columns, the order by a
// stable sort on the buckets, each position's chunk from its rank within
// its bucket (the number of earlier positions counted directly, not from
// the sorted order); j is visible to i when in its bucket, in its own or
// the previous chunk of that bucket, unpadded and (causal) not after it. margin is the smallest gap between
// a position's best and second-best hash projection.
func lshSelection(s LSHShape, q, mask []float64, rots [][]float64) (vis lshVisible, margin float64) {
	T, d, H := s.Len, s.HeadDim, s.Heads
	half := s.Buckets / 2
	margin = math.Inf(1)
	bucket := make([][][][]int, len(rots)) // [round][b][h][i]
	chunk := make([][][][]int, len(rots))
	for r, rot := range rots {
		bucket[r], chunk[r] = make([][][]int, s.Batch), make([][][]int, s.Batch)
		for b := 0; b < s.Batch; b++ {
			bucket[r][b], chunk[r][b] = make([][]int, H), make([][]int, H)
			for h := 0; h < H; h++ {
				bk := make([]int, T)
				for i := 0; i < T; i++ {
					var proj []float64
					for c := 0; c < half; c++ {
						x := 0.0
						for e := 0; e < d; e++ {
							x += q[(b*T+i)*H*d+h*d+e] * rot[h*d*half+e*half+c]
						}
						proj = append(proj, x)
					}
					for c := 0; c < half; c++ {
						proj = append(proj, -proj[c])
					}
					if half > 0 {
						bk[i] = 0
						for c := range proj {
							if proj[c] > proj[bk[i]] {
								bk[i] = c
							}
						}
						sorted := slices.Clone(proj)
						slices.Sort(sorted)
						margin = math.Min(margin, sorted[len(sorted)-1]-sorted[len(sorted)-2])
					}
				}
				ch := make([]int, T)
				for i := 0; i < T; i++ {
					rank := 0
					for j := 0; j < i; j++ {
						if bk[j] == bk[i] {
							rank++
						}
					}
					ch[i] = rank / s.Chunk
				}
				bucket[r][b][h], chunk[r][b][h] = bk, ch
			}
		}
	}
	return func(b, h, r, i, j int) bool {
		bk, ch := bucket[r][b][h], chunk[r][b][h]
		return bk[i] == bk[j] && (ch[j] == ch[i] || ch[j] == ch[i]-1) &&
			(!s.Causal || j <= i) && (mask == nil || mask[b*T+j] != 0)
	}, margin
}

func randomRotations(rng *rand.Rand, s LSHShape, rounds int) [][]float64 {
	rots := make([][]float64, rounds)
	for r := range rots {
		rots[r] = make([]float64, s.RotationSize())
		for i := range rots[r] {
			rots[r][i] = rng.NormFloat64()
		}
	}
	return rots
}

// runLSH runs LSHAttention and LSHWeights on copies of the inputs with the
// loss sum(out * r).
func runLSH(t *testing.T, s LSHShape, rots [][]float64, qt, vt, mt, rt *tensor.Dense) lshRef {
	t.Helper()
	g := G.NewGraph()
	q, v := Variable(g, "q", qt.Clone().(*tensor.Dense)), Variable(g, "v", vt.Clone().(*tensor.Dense))
	var m *G.Node
	if mt != nil {
		m = Variable(g, "mask", mt.Clone().(*tensor.Dense))
	}
	out, err := LSHAttention(q, v, m, rots, s)
	if err != nil {
		t.Fatal(err)
	}
	w, err := LSHWeights(q, m, rots, s)
	if err != nil {
		t.Fatal(err)
	}
	vm := runWeightedSum(t, g, out, Variable(g, "r", rt.Clone().(*tensor.Dense)), q, v)
	defer vm.Close()
	grad := func(n *G.Node) []float64 {
		gv, err := n.Grad()
		if err != nil {
			t.Fatal(err)
		}
		return append([]float64(nil), Float64s(gv)...)
	}
	return lshRef{out: append([]float64(nil), Float64s(out.Value())...), weights: append([]float64(nil), Float64s(w.Value())...),
		dq: grad(q), dv: grad(v)}
}

func compareLSH(t *testing.T, got, want lshRef, tol float64) {
	t.Helper()
	for _, x := range []struct {
		name      string
		got, want []float64
	}{{"output", got.out, want.out}, {"weights", got.weights, want.weights}, {"dq", got.dq, want.dq}, {"dv", got.dv, want.dv}} {
		if d := maxAbsDiff(x.got, x.want); !(d <= tol) {
			t.Errorf("%s: differs from the reference by %g", x.name, d)
		}
	}
}

// TestLSHMatchesReference: LSHAttention's output, map (LSHWeights) and q
// and v gradients equal the dense reference's (the same selection built
// the slow way) to 1e-10 in float64: causal and bidirectional, padded
// (including positions that see no key), lengths no multiple of the
// chunk, one to three rounds, and a shape large enough for parallelFor
// to split the work (run with -race).
func TestLSHMatchesReference(t *testing.T) {
	rng := testRNG(t)
	for _, c := range []struct {
		name   string
		s      LSHShape
		rounds int
		masked bool
	}{
		{"causal/b4/c3/T11", LSHShape{Batch: 2, Len: 11, Heads: 2, HeadDim: 3, Causal: true, Buckets: 4, Chunk: 3}, 1, false},
		{"bidirectional/b4/c3/T11", LSHShape{Batch: 2, Len: 11, Heads: 2, HeadDim: 3, Buckets: 4, Chunk: 3}, 1, false},
		{"bidirectional/b2/c2/rounds2", LSHShape{Batch: 2, Len: 9, Heads: 2, HeadDim: 4, Buckets: 2, Chunk: 2}, 2, false},
		{"causal/b6/c2/rounds3", LSHShape{Batch: 1, Len: 13, Heads: 2, HeadDim: 3, Causal: true, Buckets: 6, Chunk: 2}, 3, false},
		{"causal/padded/b4/c3", LSHShape{Batch: 2, Len: 10, Heads: 2, HeadDim: 3, Causal: true, Buckets: 4, Chunk: 3}, 2, true},
		{"bidirectional/padded/b2/c4", LSHShape{Batch: 2, Len: 10, Heads: 3, HeadDim: 2, Buckets: 2, Chunk: 4}, 1, true},
		{"bidirectional/c>=T", LSHShape{Batch: 1, Len: 7, Heads: 2, HeadDim: 3, Buckets: 4, Chunk: 8}, 2, true},
		{"causal/padded/scale/parallel workers", LSHShape{Batch: 2, Len: 70, Heads: 4, HeadDim: 8, Causal: true, Scale: 0.7, Buckets: 8, Chunk: 8}, 2, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.s
			n, w := s.Batch*s.Len, s.Heads*s.HeadDim
			qt, vt, rt := RandomTensor(rng, 1.5, n, w), RandomTensor(rng, 1, n, w), RandomTensor(rng, 1, n, w)
			rots := randomRotations(rng, s, c.rounds)
			var mt *tensor.Dense
			var mask []float64
			if c.masked {
				mt = mask01(rng, n, 0.4)
				mask = mt.Data().([]float64)
				mask[0] = 0 // the first position of a causal sequence sees no key
			}
			vis, _ := lshSelection(s, Float64s(qt), mask, rots)
			want := sharedQKReference(s, c.rounds, Float64s(qt), Float64s(vt), Float64s(rt), vis)
			compareLSH(t, runLSH(t, s, rots, qt, vt, mt, rt), want, 1e-10)
		})
	}
}

// TestLSHOneBucketIsSharedQK: with one bucket, one round and a chunk of at
// least Len, LSH attention is shared-QK attention with the self rule
// (every unpadded, and when causal earlier, key but the query itself,
// itself only when there is no other): outputs, map and gradients to
// 1e-10. With buckets 2 it must differ (so the test can fail).
func TestLSHOneBucketIsSharedQK(t *testing.T) {
	rng := testRNG(t)
	for _, causal := range []bool{true, false} {
		for _, masked := range []bool{false, true} {
			s := LSHShape{Batch: 2, Len: 9, Heads: 2, HeadDim: 3, Causal: causal, Buckets: 1, Chunk: 9}
			n, w := s.Batch*s.Len, s.Heads*s.HeadDim
			qt, vt, rt := RandomTensor(rng, 1.5, n, w), RandomTensor(rng, 1, n, w), RandomTensor(rng, 1, n, w)
			var mt *tensor.Dense
			var mask []float64
			if masked {
				mt = mask01(rng, n, 0.3)
				mask = mt.Data().([]float64)
			}
			dense := func(b, h, r, i, j int) bool {
				return (!causal || j <= i) && (mask == nil || mask[b*s.Len+j] != 0)
			}
			want := sharedQKReference(s, 1, Float64s(qt), Float64s(vt), Float64s(rt), dense)
			got := runLSH(t, s, [][]float64{nil}, qt, vt, mt, rt)
			compareLSH(t, got, want, 1e-10)
			s2 := s
			s2.Buckets = 2
			hashed := runLSH(t, s2, randomRotations(rng, s2, 1), qt, vt, mt, rt)
			if d := maxAbsDiff(hashed.out, want.out); d < 1e-6 {
				t.Errorf("causal %v masked %v: two buckets give shared-QK attention's output (difference %g)", causal, masked, d)
			}
		}
	}
}

// TestLSHGradCheck: finite differences through one round's output and
// logsumexp and through the merged rounds agree with the backward, on
// inputs whose hash projections have no near ties (so the steps move no
// position to another bucket).
func TestLSHGradCheck(t *testing.T) {
	rng := testRNG(t)
	for _, c := range []struct {
		name   string
		s      LSHShape
		rounds int
		masked bool
	}{
		{"causal/b4/c2", LSHShape{Batch: 1, Len: 9, Heads: 2, HeadDim: 3, Causal: true, Buckets: 4, Chunk: 2}, 1, false},
		{"bidirectional/padded/b2/c3", LSHShape{Batch: 2, Len: 7, Heads: 2, HeadDim: 3, Buckets: 2, Chunk: 3}, 1, true},
		{"causal/rounds2/b2/c2", LSHShape{Batch: 1, Len: 8, Heads: 2, HeadDim: 3, Causal: true, Buckets: 2, Chunk: 2}, 2, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.s
			n, w := s.Batch*s.Len, s.Heads*s.HeadDim
			var qt, vt, mt *tensor.Dense
			var rots [][]float64
			for try := 0; ; try++ {
				if try == 200 {
					t.Fatal("no input without near hash ties in 200 draws")
				}
				qt, vt = RandomTensor(rng, 1.5, n, w), RandomTensor(rng, 1, n, w)
				rots = randomRotations(rng, s, c.rounds)
				var mask []float64
				if c.masked {
					mt = mask01(rng, n, 0.3)
					mask = mt.Data().([]float64)
					for b := 0; b < s.Batch; b++ {
						for i := 0; i < s.Len; i++ {
							mask[b*s.Len+i] = 1 // padded positions see no key: logsumexp -Inf
						}
						mask[b*s.Len+s.Len-1] = 0
					}
				}
				if _, m := lshSelection(s, Float64s(qt), mask, rots); m > 1e-2 {
					break
				}
			}
			for _, lse := range []bool{false, true} {
				if lse && (c.rounds > 1 || c.masked) {
					continue
				}
				g := G.NewGraph()
				q, v := Variable(g, "q", qt.Clone().(*tensor.Dense)), Variable(g, "v", vt.Clone().(*tensor.Dense))
				var m *G.Node
				if mt != nil {
					m = Variable(g, "mask", mt.Clone().(*tensor.Dense))
				}
				var out *G.Node
				var err error
				if c.rounds == 1 {
					var l *G.Node
					out, l, err = LSHAttentionLSE(q, v, m, rots[0], s)
					if lse {
						out = l
					}
				} else {
					out, err = LSHAttention(q, v, m, rots, s)
				}
				if err != nil {
					t.Fatal(err)
				}
				res, err := GradCheck{}.Run(g, out, []*G.Node{q, v})
				if err != nil {
					t.Fatal(err)
				}
				if !res.Pass {
					t.Errorf("lse %v: %s", lse, res)
				}
			}
		})
	}
}

// TestLSHRejects: impossible shapes and rotations are errors.
func TestLSHRejects(t *testing.T) {
	g := G.NewGraph()
	x := Variable(g, "x", tensor.New(tensor.WithShape(4, 2), tensor.Of(tensor.Float64)))
	base := LSHShape{Batch: 1, Len: 4, Heads: 1, HeadDim: 2, Buckets: 2, Chunk: 2}
	for _, c := range []struct {
		s   LSHShape
		rot []float64
	}{
		{LSHShape{Batch: 1, Len: 4, Heads: 1, HeadDim: 2, Buckets: 3, Chunk: 2}, make([]float64, 2)},
		{LSHShape{Batch: 1, Len: 4, Heads: 1, HeadDim: 2, Buckets: 2, Chunk: 0}, make([]float64, 2)},
		{base, make([]float64, 3)},
	} {
		if _, err := LSHAttention(x, x, nil, [][]float64{c.rot}, c.s); err == nil {
			t.Errorf("%+v with %d rotation entries: no error", c.s, len(c.rot))
		}
	}
	if _, err := LSHAttention(x, x, nil, nil, base); err == nil {
		t.Error("no rounds: no error")
	}
}

// TestLSHFloat32: the float32 kernels agree with the float64 reference to
// float32 precision, on inputs without near hash ties.
func TestLSHFloat32(t *testing.T) {
	rng := testRNG(t)
	s := LSHShape{Batch: 2, Len: 10, Heads: 2, HeadDim: 4, Causal: true, Buckets: 4, Chunk: 3}
	var qt *tensor.Dense
	var rots [][]float64
	for {
		qt, rots = RandomTensor(rng, 1.5, 20, 8), randomRotations(rng, s, 2)
		if _, m := lshSelection(s, Float64s(qt), nil, rots); m > 1e-3 {
			break
		}
	}
	vt, rt := RandomTensor(rng, 1, 20, 8), RandomTensor(rng, 1, 20, 8)
	vis, _ := lshSelection(s, Float64s(qt), nil, rots)
	want := sharedQKReference(s, 2, Float64s(qt), Float64s(vt), Float64s(rt), vis)
	f32 := func(x *tensor.Dense) *tensor.Dense {
		d := Float64s(x)
		out := make([]float32, len(d))
		for i, v := range d {
			out[i] = float32(v)
		}
		return tensor.New(tensor.WithShape(x.Shape().Clone()...), tensor.WithBacking(out))
	}
	g := G.NewGraph()
	q, v := Variable(g, "q", f32(qt)), Variable(g, "v", f32(vt))
	out, err := LSHAttention(q, v, nil, rots, s)
	if err != nil {
		t.Fatal(err)
	}
	vm := runWeightedSum(t, g, out, Variable(g, "r", f32(rt)), q, v)
	defer vm.Close()
	dq, _ := q.Grad()
	dv, _ := v.Grad()
	for _, x := range []struct {
		name      string
		got, want []float64
	}{{"output", Float64s(out.Value()), want.out}, {"dq", Float64s(dq), want.dq}, {"dv", Float64s(dv), want.dv}} {
		if d := maxAbsDiff(x.got, x.want); !(d <= 1e-4) {
			t.Errorf("%s: differs from the reference by %g", x.name, d)
		}
	}
}

// TestLSHCausalIsCausal: the causal op's output and logsumexp at positions
// <= p do not change (beyond 1e-12 relative) when q and v at positions > p are redrawn, for every
// p, with buckets larger than a chunk (several chunks per bucket), one to
// two rounds; redrawing position p itself changes its output (so the test
// can see a leak).
func TestLSHCausalIsCausal(t *testing.T) {
	rng := testRNG(t)
	for _, s := range []LSHShape{
		{Batch: 2, Len: 14, Heads: 2, HeadDim: 3, Causal: true, Buckets: 4, Chunk: 2},
		{Batch: 1, Len: 16, Heads: 1, HeadDim: 4, Causal: true, Buckets: 2, Chunk: 3},
	} {
		n, w := s.Batch*s.Len, s.Heads*s.HeadDim
		rots := randomRotations(rng, s, 2)
		run := func(qd, vd []float64) (out, lse []float64) {
			g := G.NewGraph()
			q := Variable(g, "q", tensor.New(tensor.WithShape(n, w), tensor.WithBacking(slices.Clone(qd))))
			v := Variable(g, "v", tensor.New(tensor.WithShape(n, w), tensor.WithBacking(slices.Clone(vd))))
			o, l, err := LSHAttentionLSE(q, v, nil, rots[0], s)
			if err != nil {
				t.Fatal(err)
			}
			merged, err := LSHAttention(q, v, nil, rots, s)
			if err != nil {
				t.Fatal(err)
			}
			vm := G.NewTapeMachine(g)
			defer vm.Close()
			if err := vm.RunAll(); err != nil {
				t.Fatal(err)
			}
			return append(slices.Clone(Float64s(o.Value())), Float64s(merged.Value())...), slices.Clone(Float64s(l.Value()))
		}
		qd, vd := Float64s(RandomTensor(rng, 1.5, n, w)), Float64s(RandomTensor(rng, 1, n, w))
		out0, lse0 := run(qd, vd)
		for p := 0; p < s.Len-1; p++ {
			q2, v2 := slices.Clone(qd), slices.Clone(vd)
			for b := 0; b < s.Batch; b++ {
				for i := p + 1; i < s.Len; i++ {
					for c := 0; c < w; c++ {
						q2[(b*s.Len+i)*w+c], v2[(b*s.Len+i)*w+c] = 1.5*rng.NormFloat64(), rng.NormFloat64()
					}
				}
			}
			out, lse := run(q2, v2)
			for part := 0; part < 2; part++ {
				for b := 0; b < s.Batch; b++ {
					for i := 0; i <= p; i++ {
						for c := 0; c < w; c++ {
							if r := part*n*w + (b*s.Len+i)*w + c; math.Abs(out[r]-out0[r]) > 1e-12*(1+math.Abs(out0[r])) {
								t.Fatalf("%+v: redrawing positions > %d changed the output (merged %v) at %d of sequence %d", s, p, part == 1, i, b)
							}
						}
					}
				}
			}
			for bh := 0; bh < s.Batch*s.Heads; bh++ {
				for i := 0; i <= p; i++ {
					if r := bh*s.Len + i; math.Abs(lse[r]-lse0[r]) > 1e-12*(1+math.Abs(lse0[r])) {
						t.Fatalf("%+v: redrawing positions > %d changed the logsumexp at %d of row %d", s, p, i, bh)
					}
				}
			}
		}
		q2 := slices.Clone(qd)
		for c := 0; c < w; c++ {
			q2[5*w+c] = -q2[5*w+c] + 0.3
		}
		out, _ := run(q2, vd)
		if d := maxAbsDiff(out[5*w:6*w], out0[5*w:6*w]); d == 0 {
			t.Errorf("%+v: changing position 5 left its output unchanged: the test cannot see a leak", s)
		}
	}
}
