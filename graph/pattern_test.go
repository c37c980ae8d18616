package graph

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/graph/blockmask"
)

// lseCore is a core that returns the output and the logsumexp.
type lseCore func(q, k, v, m *G.Node, s AttentionShape, p *Pattern) (out, lse *G.Node, err error)

// patternResult is a core's output, logsumexp and input gradients for the
// loss sum(out * R) + sum(exp(lse / 2) * R2), which sends a gradient
// through both outputs (exp keeps an lse of -Inf finite: weight 0).
type patternResult struct{ out, lse, dq, dk, dv []float64 }

func runPatternCore(t *testing.T, core lseCore, s AttentionShape, p *Pattern, in []*tensor.Dense) patternResult {
	t.Helper()
	g := G.NewGraph()
	clone := func(name string, x *tensor.Dense) *G.Node { return Variable(g, name, x.Clone().(*tensor.Dense)) }
	q, k, v := clone("q", in[0]), clone("k", in[1]), clone("v", in[2])
	var m *G.Node
	if in[3] != nil {
		m = clone("mask", in[3])
	}
	out, lse, err := core(q, k, v, m, s, p)
	if err != nil {
		t.Fatal(err)
	}
	must := func(n *G.Node, err error) *G.Node {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	l1 := must(G.Sum(must(G.HadamardProd(out, clone("r", in[4])))))
	half := must(G.HadamardProd(lse, G.NewConstant(tensor.New(tensor.WithShape(lse.Shape()...), tensor.WithBacking(fill(lse.Shape().TotalSize(), 0.5))))))
	l2 := must(G.Sum(must(G.HadamardProd(must(G.Exp(half)), clone("r2", in[5])))))
	loss := must(G.Add(l1, l2))
	if _, err := G.Grad(loss, q, k, v); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g, G.BindDualValues(q, k, v))
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	grad := func(n *G.Node) []float64 {
		gv, err := n.Grad()
		if err != nil {
			t.Fatal(err)
		}
		return append([]float64(nil), Float64s(gv)...)
	}
	res := patternResult{dq: grad(q), dk: grad(k), dv: grad(v)}
	// The values from a graph of the core alone: in the one above,
	// Gorgonia may overwrite lse in place at its last use.
	g = G.NewGraph()
	q, k, v = clone("q", in[0]), clone("k", in[1]), clone("v", in[2])
	if in[3] != nil {
		m = clone("mask", in[3])
	}
	if out, lse, err = core(q, k, v, m, s, p); err != nil {
		t.Fatal(err)
	}
	vm2 := G.NewTapeMachine(g)
	defer vm2.Close()
	if err := vm2.RunAll(); err != nil {
		t.Fatal(err)
	}
	res.out, res.lse = append([]float64(nil), Float64s(out.Value())...), append([]float64(nil), Float64s(lse.Value())...)
	return res
}

func fill(n int, x float64) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = x
	}
	return s
}

// patternInputs are random q, k, v, key mask (nil unless padded; every
// sequence keeps its first key), and the two cotangents.
func patternInputs(rng *rand.Rand, s AttentionShape, padded bool) []*tensor.Dense {
	in := []*tensor.Dense{
		RandomTensor(rng, 1, s.Batch*s.QLen, s.Heads*s.HeadDim),
		RandomTensor(rng, 1, s.Batch*s.KLen, s.KVHeads*s.HeadDim),
		RandomTensor(rng, 1, s.Batch*s.KLen, s.KVHeads*s.VDim()),
		nil,
		RandomTensor(rng, 1, s.Batch*s.QLen, s.Heads*s.VDim()),
		RandomTensor(rng, 1, s.Batch*s.Heads, s.QLen),
	}
	if padded {
		m := make([]float64, s.Batch*s.KLen)
		for i := range m {
			if i%s.KLen == 0 || rng.Float64() < 0.7 {
				m[i] = 1
			}
		}
		in[3] = tensor.New(tensor.WithShape(len(m)), tensor.WithBacking(m))
	}
	return in
}

// maxAbsDiff is the largest |a_i - b_i|, with equal infinities equal.
func maxAbsDiff(a, b []float64) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		if a[i] == b[i] {
			continue
		}
		d = math.Max(d, math.Abs(a[i]-b[i]))
		if math.IsNaN(a[i]) || math.IsNaN(b[i]) {
			return math.NaN()
		}
	}
	return d
}

// allPartial is a mask whose every tile is Partial: the kernel then
// decides every element by the predicate, whatever the pattern.
func allPartial(name string, n, block int, visible func(q, k int) bool) *blockmask.Mask {
	nt := (n + block - 1) / block
	all := make([]int, nt)
	for i := range all {
		all[i] = i
	}
	return blockmask.New(name, n, n, block, visible, func(int) []int { return all }, func(int, int) blockmask.Kind { return blockmask.Partial })
}

// segments is a test-local LongNet segment mask (block-diagonal).
func segments(n, block, w int) *blockmask.Mask {
	return allPartial(fmt.Sprintf("segments(%d)", w), n, block, func(q, k int) bool { return q/w == k/w })
}

// dilatedPattern: head h reads positions h mod r, h mod r + r, ... in
// segments of w gathered positions.
func dilatedPattern(s AttentionShape, r, w, block int) *Pattern {
	p := &Pattern{}
	for h := 0; h < s.Heads; h++ {
		st := Stream{Offset: h % r, Stride: r}
		st.Mask = segments(st.gathered(s.QLen), block, w)
		p.Heads = append(p.Heads, []Stream{st})
	}
	return p
}

// stridedPattern: even heads a causal-able local window, odd heads every
// r-th key (r streams, each every key of its residue).
func stridedPattern(s AttentionShape, r, block int) *Pattern {
	p := &Pattern{}
	for h := 0; h < s.Heads; h++ {
		if h%2 == 0 {
			p.Heads = append(p.Heads, []Stream{{Offset: 0, Stride: 1, Mask: blockmask.SlidingWindow(s.QLen, block, r-1, false)}})
			continue
		}
		var streams []Stream
		for o := 0; o < r; o++ {
			st := Stream{Offset: o, Stride: r}
			st.Mask = blockmask.Dense(st.gathered(s.QLen), st.gathered(s.KLen), block)
			streams = append(streams, st)
		}
		p.Heads = append(p.Heads, streams)
	}
	return p
}

// unionPattern has, for every head, the streams of all of ps (overlapping
// streams: LongNet's pairs in one call).
func unionPattern(s AttentionShape, ps ...*Pattern) *Pattern {
	u := &Pattern{Heads: make([][]Stream, s.Heads)}
	for h := range u.Heads {
		for _, p := range ps {
			u.Heads[h] = append(u.Heads[h], p.Streams(h)...)
		}
	}
	return u
}

// dilatedPairs is the three-pair dilated pattern (r, w) = (1, 4), (2, 2),
// (3, 2) as overlapping streams of one pattern, with a duplicated window
// stream on top (a key shown by the same positions twice).
func dilatedPairs(s AttentionShape) *Pattern {
	return unionPattern(s, dilatedPattern(s, 1, 4, 2), dilatedPattern(s, 2, 2, 2), dilatedPattern(s, 3, 2, 3),
		MaskPattern(blockmask.SlidingWindow(s.QLen, 2, 1, false)))
}

type patternCase struct {
	name   string
	s      AttentionShape
	padded bool
	p      func(s AttentionShape) *Pattern
}

func patternCases() []patternCase {
	sh := func(t, heads, kv int, causal, alibi bool) AttentionShape {
		return AttentionShape{Batch: 2, QLen: t, KLen: t, Heads: heads, KVHeads: kv, HeadDim: 3, Causal: causal, ALiBi: alibi}
	}
	window := func(w, block int) func(AttentionShape) *Pattern {
		return func(s AttentionShape) *Pattern { return MaskPattern(blockmask.SlidingWindow(s.QLen, block, w, false)) }
	}
	random := func(s AttentionShape) *Pattern { // an arbitrary predicate, every tile Partial
		return MaskPattern(allPartial("random", s.QLen, 3, func(q, k int) bool { return (q*7+k*13)%5 < 2 }))
	}
	var cases []patternCase
	for _, causal := range []bool{true, false} {
		dir := map[bool]string{true: "causal", false: "bidirectional"}[causal]
		for _, padded := range []bool{false, true} {
			name := dir
			if padded {
				name += "-padded"
			}
			cases = append(cases,
				patternCase{"window3-block4-T13-" + name, sh(13, 2, 2, causal, false), padded, window(3, 4)},
				patternCase{"window0-block3-T7-" + name, sh(7, 2, 1, causal, false), padded, window(0, 3)},
				patternCase{"window2-block64-T7-" + name, sh(7, 2, 1, causal, false), padded, window(2, 64)},   // a tile larger than the sequence
				patternCase{"window5-block32-T45-" + name, sh(45, 2, 1, causal, false), padded, window(5, 32)}, // spans widened to 16 inside a tile
				patternCase{"summary-l12-c4-block32-T45-" + name, sh(45, 2, 1, causal, true), padded, func(s AttentionShape) *Pattern {
					return MaskPattern(blockmask.Summary(s.QLen, 32, 12, 4)) // hidden column runs
				}},
				patternCase{"window5-block2-T11-gqa-alibi-" + name, sh(11, 4, 2, causal, true), padded, window(5, 2)},
				patternCase{"dilated-r2-w3-T11-" + name, sh(11, 2, 2, causal, false), padded, func(s AttentionShape) *Pattern { return dilatedPattern(s, 2, 3, 2) }},
				patternCase{"dilated-r3-w2-T10-alibi-" + name, sh(10, 4, 2, causal, true), padded, func(s AttentionShape) *Pattern { return dilatedPattern(s, 3, 2, 2) }},
				patternCase{"overlapping-streams-T11-gqa-alibi-" + name, sh(11, 4, 2, causal, true), padded, dilatedPairs},
				patternCase{"strided-r3-T10-" + name, sh(10, 2, 2, causal, false), padded, func(s AttentionShape) *Pattern { return stridedPattern(s, 3, 2) }},
				patternCase{"random-T9-" + name, sh(9, 2, 2, causal, false), padded, random},
				patternCase{"odd-rows-uncovered-T9-" + name, sh(9, 2, 2, causal, false), padded, func(s AttentionShape) *Pattern {
					return &Pattern{Heads: [][]Stream{{{Offset: 0, Stride: 2, Mask: blockmask.Dense(5, 5, 2)}}}}
				}},
			)
		}
	}
	return cases
}

// TestTiledMatchesDensePattern: for every pattern, the tiled core computes
// what the dense core computes with the same pattern, output, logsumexp
// and the three input gradients, to 1e-10 in float64 (fresh random inputs
// each run), causal and bidirectional, padded, T not a multiple of the
// tile, with empty rows.
func TestTiledMatchesDensePattern(t *testing.T) {
	rng := testRNG(t)
	for _, c := range patternCases() {
		t.Run(c.name, func(t *testing.T) {
			p := c.p(c.s)
			in := patternInputs(rng, c.s, c.padded)
			dense := runPatternCore(t, DenseAttentionLSE, c.s, p, in)
			tiled := runPatternCore(t, TiledAttentionLSE, c.s, p, in)
			for _, x := range []struct {
				name string
				a, b []float64
			}{{"out", dense.out, tiled.out}, {"lse", dense.lse, tiled.lse}, {"dq", dense.dq, tiled.dq}, {"dk", dense.dk, tiled.dk}, {"dv", dense.dv, tiled.dv}} {
				if d := maxAbsDiff(x.a, x.b); !(d <= 1e-10) {
					t.Errorf("%s differs by %g", x.name, d)
				}
			}
		})
	}
}

// naivePattern is attention by its definition, with visibility vis(h, i,
// j) written from each pattern's formula (not from its mask): per head
// and query, softmax over the visible, unpadded keys, with ALiBi and the
// causal mask; a query that sees nothing outputs 0.
func naivePattern(s AttentionShape, vis func(h, i, j int) bool, q, k, v, pad []float64) (out, lse []float64) {
	dv := s.VDim()
	out = make([]float64, s.Batch*s.QLen*s.Heads*dv)
	lse = make([]float64, s.Batch*s.Heads*s.QLen)
	slopes := s.slopes()
	for b := 0; b < s.Batch; b++ {
		for h := 0; h < s.Heads; h++ {
			kh := h / (s.Heads / s.KVHeads)
			for i := 0; i < s.QLen; i++ {
				var sc []float64
				var js []int
				for j := 0; j < s.KLen; j++ {
					if s.Causal && j > i || pad != nil && pad[b*s.KLen+j] == 0 || !vis(h, i, j) {
						continue
					}
					x := 0.0
					for c := 0; c < s.HeadDim; c++ {
						x += q[(b*s.QLen+i)*s.Heads*s.HeadDim+h*s.HeadDim+c] * k[(b*s.KLen+j)*s.KVHeads*s.HeadDim+kh*s.HeadDim+c]
					}
					x *= s.scale()
					if slopes != nil {
						x -= slopes[h] * math.Abs(float64(i-j))
					}
					sc, js = append(sc, x), append(js, j)
				}
				at := (b*s.Heads+h)*s.QLen + i
				if len(sc) == 0 {
					lse[at] = math.Inf(-1)
					continue
				}
				mx := math.Inf(-1)
				for _, x := range sc {
					mx = math.Max(mx, x)
				}
				sum := 0.0
				for _, x := range sc {
					sum += math.Exp(x - mx)
				}
				lse[at] = mx + math.Log(sum)
				for n, j := range js {
					w := math.Exp(sc[n]-mx) / sum
					for c := 0; c < dv; c++ {
						out[(b*s.QLen+i)*s.Heads*dv+h*dv+c] += w * v[(b*s.KLen+j)*s.KVHeads*dv+kh*dv+c]
					}
				}
			}
		}
	}
	return out, lse
}

// TestDensePatternMatchesDefinition: the oracle itself, against the
// patterns' formulas.
func TestDensePatternMatchesDefinition(t *testing.T) {
	rng := testRNG(t)
	abs := func(x int) int { return max(x, -x) }
	for _, c := range []struct {
		name string
		s    AttentionShape
		p    func(AttentionShape) *Pattern
		vis  func(h, i, j int) bool
	}{
		{"window", AttentionShape{Batch: 2, QLen: 11, KLen: 11, Heads: 2, KVHeads: 1, HeadDim: 3, ALiBi: true},
			func(s AttentionShape) *Pattern { return MaskPattern(blockmask.SlidingWindow(s.QLen, 4, 2, false)) },
			func(h, i, j int) bool { return abs(i-j) <= 2 }},
		{"dilated", AttentionShape{Batch: 2, QLen: 11, KLen: 11, Heads: 2, KVHeads: 2, HeadDim: 3, Causal: true},
			func(s AttentionShape) *Pattern { return dilatedPattern(s, 2, 3, 2) },
			// head h: positions h mod 2 + 2m, segments of 3 such positions (6 original ones)
			func(h, i, j int) bool { return i%2 == h%2 && j%2 == h%2 && (i/2)/3 == (j/2)/3 }},
		{"strided", AttentionShape{Batch: 1, QLen: 10, KLen: 10, Heads: 2, KVHeads: 2, HeadDim: 3, Causal: true},
			func(s AttentionShape) *Pattern { return stridedPattern(s, 3, 2) },
			func(h, i, j int) bool { return h%2 == 0 && abs(i-j) < 3 || h%2 == 1 && abs(i-j)%3 == 0 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := patternInputs(rng, c.s, true)
			got := runPatternCore(t, DenseAttentionLSE, c.s, c.p(c.s), in)
			out, lse := naivePattern(c.s, c.vis, in[0].Data().([]float64), in[1].Data().([]float64), in[2].Data().([]float64), in[3].Data().([]float64))
			if d := maxAbsDiff(out, got.out); !(d <= 1e-12) {
				t.Errorf("out differs from the definition by %g", d)
			}
			if d := maxAbsDiff(lse, got.lse); !(d <= 1e-12) {
				t.Errorf("lse differs from the definition by %g", d)
			}
		})
	}
}

// TestTiledPatternGradCheck: finite differences through the tiled core's
// output and logsumexp, merged (the LongNet path), in float64.
func TestTiledPatternGradCheck(t *testing.T) {
	rng := testRNG(t)
	for _, causal := range []bool{true, false} {
		s := AttentionShape{Batch: 1, QLen: 9, KLen: 9, Heads: 2, KVHeads: 1, HeadDim: 3, Causal: causal}
		g := G.NewGraph()
		q := Variable(g, "q", RandomTensor(rng, 1, 9, 6))
		k := Variable(g, "k", RandomTensor(rng, 1, 9, 3))
		v := Variable(g, "v", RandomTensor(rng, 1, 9, 3))
		var outs, lses []*G.Node
		for _, p := range []*Pattern{dilatedPattern(s, 1, 4, 2), dilatedPattern(s, 2, 2, 2), MaskPattern(blockmask.SlidingWindow(9, 2, 1, false))} {
			o, l, err := TiledAttentionLSE(q, k, v, nil, s, p)
			if err != nil {
				t.Fatal(err)
			}
			outs, lses = append(outs, o), append(lses, l)
		}
		out, err := MergeAttention(outs, lses, s)
		if err != nil {
			t.Fatal(err)
		}
		res, err := GradCheck{}.Run(g, out, []*G.Node{q, k, v})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Pass {
			t.Errorf("causal %v: %s", causal, res)
		}
	}
}

// TestMergeOfSplitKeysIsAttention: attention over the two halves of the
// keys, merged, is attention over all keys (the merge is exact).
func TestMergeOfSplitKeysIsAttention(t *testing.T) {
	rng := testRNG(t)
	s := AttentionShape{Batch: 2, QLen: 8, KLen: 8, Heads: 2, KVHeads: 2, HeadDim: 3}
	in := patternInputs(rng, s, true)
	in[5] = tensor.New(tensor.WithShape(s.Batch*s.Heads, s.QLen), tensor.Of(tensor.Float64)) // the loss through the outputs only: merged returns a half's lse
	half := func(lo bool) *Pattern {
		return MaskPattern(allPartial(fmt.Sprintf("half(%v)", lo), 8, 3, func(q, k int) bool { return (k < 4) == lo }))
	}
	whole := runPatternCore(t, DenseAttentionLSE, s, nil, in)
	merged := runPatternCore(t, func(q, k, v, m *G.Node, s AttentionShape, _ *Pattern) (*G.Node, *G.Node, error) {
		o1, l1, err := TiledAttentionLSE(q, k, v, m, s, half(true))
		if err != nil {
			return nil, nil, err
		}
		o2, l2, err := TiledAttentionLSE(q, k, v, m, s, half(false))
		if err != nil {
			return nil, nil, err
		}
		o, err := MergeAttention([]*G.Node{o1, o2}, []*G.Node{l1, l2}, s)
		return o, l1, err
	}, s, nil, in)
	for _, x := range []struct {
		name string
		a, b []float64
	}{{"out", whole.out, merged.out}, {"dq", whole.dq, merged.dq}, {"dk", whole.dk, merged.dk}, {"dv", whole.dv, merged.dv}} {
		if d := maxAbsDiff(x.a, x.b); !(d <= 1e-10) {
			t.Errorf("%s differs by %g", x.name, d)
		}
	}
}

// TestOverlappingStreamsAreMergedPairs: one call over overlapping streams
// equals one call per stream group merged by MergeAttention (LongNet's
// mixing of its pairs): outputs and every gradient to 1e-10 (the loss
// through the outputs; the logsumexp's own gradient is checked against the
// dense core in TestTiledMatchesDensePattern), and the logsumexp is that of
// the parts' logsumexps.
func TestOverlappingStreamsAreMergedPairs(t *testing.T) {
	rng := testRNG(t)
	for _, causal := range []bool{true, false} {
		for _, padded := range []bool{false, true} {
			s := AttentionShape{Batch: 2, QLen: 11, KLen: 11, Heads: 4, KVHeads: 2, HeadDim: 3, Causal: causal, ALiBi: true}
			parts := []*Pattern{dilatedPattern(s, 1, 4, 2), dilatedPattern(s, 2, 2, 2), dilatedPattern(s, 3, 2, 3), MaskPattern(blockmask.SlidingWindow(11, 2, 1, false))}
			in := patternInputs(rng, s, padded)
			in[5] = tensor.New(tensor.WithShape(s.Batch*s.Heads, s.QLen), tensor.Of(tensor.Float64))
			one := runPatternCore(t, TiledAttentionLSE, s, unionPattern(s, parts...), in)
			merged := runPatternCore(t, func(q, k, v, m *G.Node, s AttentionShape, _ *Pattern) (*G.Node, *G.Node, error) {
				var outs, lses []*G.Node
				for _, p := range parts {
					o, l, err := TiledAttentionLSE(q, k, v, m, s, p)
					if err != nil {
						return nil, nil, err
					}
					outs, lses = append(outs, o), append(lses, l)
				}
				o, err := MergeAttention(outs, lses, s)
				return o, lses[0], err
			}, s, nil, in)
			lse := make([]float64, len(one.lse))
			for i := range lse {
				lse[i] = math.Inf(-1)
			}
			for _, p := range parts {
				for i, l := range runPatternCore(t, TiledAttentionLSE, s, p, in).lse {
					if hi := math.Max(lse[i], l); !math.IsInf(hi, -1) {
						lse[i] = hi + math.Log(math.Exp(lse[i]-hi)+math.Exp(l-hi))
					}
				}
			}
			for _, x := range []struct {
				name string
				a, b []float64
			}{{"out", one.out, merged.out}, {"lse", one.lse, lse}, {"dq", one.dq, merged.dq}, {"dk", one.dk, merged.dk}, {"dv", one.dv, merged.dv}} {
				if d := maxAbsDiff(x.a, x.b); !(d <= 1e-10) {
					t.Errorf("causal %v padded %v: %s differs by %g", causal, padded, x.name, d)
				}
			}
		}
	}
}

// Two patterns on the same inputs are two nodes, not one merged by name.
func TestPatternsAreDistinctOps(t *testing.T) {
	s := AttentionShape{Batch: 1, QLen: 8, KLen: 8, Heads: 1, KVHeads: 1, HeadDim: 2}
	g := G.NewGraph()
	rng := rand.New(rand.NewPCG(1, 2))
	q := Variable(g, "q", RandomTensor(rng, 1, 8, 2))
	a, err := TiledAttention(q, q, q, nil, s, MaskPattern(blockmask.SlidingWindow(8, 2, 1, false)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := TiledAttention(q, q, q, nil, s, MaskPattern(blockmask.SlidingWindow(8, 2, 2, false)))
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatal("window 1 and window 2 share one node")
	}
}

func TestPatternCheck(t *testing.T) {
	s := AttentionShape{Batch: 1, QLen: 8, KLen: 8, Heads: 2, KVHeads: 2, HeadDim: 2}
	for name, p := range map[string]*Pattern{
		"heads":       {Heads: [][]Stream{{{0, 1, blockmask.Dense(8, 8, 2)}}, {{0, 1, blockmask.Dense(8, 8, 2)}}, {{0, 1, blockmask.Dense(8, 8, 2)}}}},
		"size":        MaskPattern(blockmask.Dense(7, 7, 2)),
		"offset":      {Heads: [][]Stream{{{2, 2, blockmask.Dense(3, 3, 2)}}}},
		"stream size": {Heads: [][]Stream{{{0, 2, blockmask.Dense(4, 4, 2)}, {1, 3, blockmask.Dense(4, 4, 2)}}}},
		"no mask":     {Heads: [][]Stream{{{0, 1, nil}}}},
	} {
		if err := p.check(s); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := dilatedPattern(s, 2, 2, 2).check(s); err != nil {
		t.Error(err)
	}
}
