package graph

import (
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// nsaShapes are the shapes the NSA core tests run: several compressed
// tokens and selection blocks, overlapping (d < l) and disjoint (d = l)
// compression blocks, l' > l and l' < l, a choice among the non-forced
// blocks, and a sequence shorter than one compression block.
var nsaShapes = []NSAShape{
	{Batch: 2, Len: 20, Heads: 2, HeadDim: 3, Block: 4, Stride: 2, SelectBlock: 4, Selected: 4, Causal: true},
	{Batch: 1, Len: 24, Heads: 2, HeadDim: 2, Block: 4, Stride: 4, SelectBlock: 4, Selected: 5, Causal: true},
	{Batch: 2, Len: 13, Heads: 1, HeadDim: 4, Block: 3, Stride: 1, SelectBlock: 2, Selected: 4, Causal: true},
	{Batch: 1, Len: 17, Heads: 2, HeadDim: 2, Block: 2, Stride: 2, SelectBlock: 6, Selected: 3, Causal: true},
	{Batch: 2, Len: 18, Heads: 2, HeadDim: 3, Block: 4, Stride: 2, SelectBlock: 4, Selected: 3},
	{Batch: 1, Len: 15, Heads: 1, HeadDim: 2, Block: 3, Stride: 1, SelectBlock: 3, Selected: 4},
	{Batch: 2, Len: 7, Heads: 2, HeadDim: 2, Block: 8, Stride: 4, SelectBlock: 4, Selected: 3, Causal: true},
	{Batch: 1, Len: 7, Heads: 2, HeadDim: 2, Block: 8, Stride: 2, SelectBlock: 2, Selected: 3},
}

// nsaWithBlocks are the shapes with at least one compression block.
func nsaWithBlocks() []NSAShape {
	var out []NSAShape
	for _, s := range nsaShapes {
		if s.Compressed() > 0 {
			out = append(out, s)
		}
	}
	return out
}

// nsaCmpVisible is the compression branch's visibility the slow way:
// causal, the block has ended; and it holds a real key (mask nil: none).
func nsaCmpVisible(s NSAShape, mask []float64, b, t, i int) bool {
	if s.Causal && i*s.Stride+s.Block-1 > t {
		return false
	}
	if mask == nil {
		return true
	}
	for p := i * s.Stride; p < i*s.Stride+s.Block; p++ {
		if mask[b*s.Len+p] != 0 {
			return true
		}
	}
	return false
}

// nsaAttentionRef is masked softmax attention the slow way over q
// [B*T, H*dh] and k, v [B*nk, H*dh] with visible(b, h, t, j) saying which
// keys query t sees: output, logsumexp (-Inf, output 0, for a query that
// sees none) and the gradients of sum(out*r) + sum(lse*rl) by loops.
func nsaAttentionRef(s NSAShape, nk int, q, k, v, r, rl []float64, visible func(b, h, t, j int) bool) (out, lse, dq, dk, dv []float64) {
	dh, ld := s.HeadDim, s.Heads*s.HeadDim
	scale := 1 / math.Sqrt(float64(dh))
	out, lse = make([]float64, len(q)), make([]float64, s.Batch*s.Heads*s.Len)
	dq, dk, dv = make([]float64, len(q)), make([]float64, len(k)), make([]float64, len(v))
	for b := 0; b < s.Batch; b++ {
		for h := 0; h < s.Heads; h++ {
			for t := 0; t < s.Len; t++ {
				row := (b*s.Heads+h)*s.Len + t
				qo := (b*s.Len+t)*ld + h*dh
				sc := make([]float64, nk)
				mx := math.Inf(-1)
				for j := 0; j < nk; j++ {
					sc[j] = math.Inf(-1)
					if !visible(b, h, t, j) {
						continue
					}
					sc[j] = 0
					for c := 0; c < dh; c++ {
						sc[j] += q[qo+c] * k[(b*nk+j)*ld+h*dh+c]
					}
					sc[j] *= scale
					mx = math.Max(mx, sc[j])
				}
				if math.IsInf(mx, -1) {
					lse[row] = mx
					continue
				}
				sum := 0.0
				for j := range sc {
					sum += math.Exp(sc[j] - mx)
				}
				lse[row] = mx + math.Log(sum)
				p, dp := make([]float64, nk), make([]float64, nk)
				d := -rl[row]
				for j := range sc {
					p[j] = math.Exp(sc[j] - lse[row])
					for c := 0; c < dh; c++ {
						out[qo+c] += p[j] * v[(b*nk+j)*ld+h*dh+c]
						dp[j] += r[qo+c] * v[(b*nk+j)*ld+h*dh+c]
					}
					d += p[j] * dp[j]
				}
				for j := range sc {
					g := scale * p[j] * (dp[j] - d)
					for c := 0; c < dh; c++ {
						dq[qo+c] += g * k[(b*nk+j)*ld+h*dh+c]
						dk[(b*nk+j)*ld+h*dh+c] += g * q[qo+c]
						dv[(b*nk+j)*ld+h*dh+c] += p[j] * r[qo+c]
					}
				}
			}
		}
	}
	return
}

// nsaSelectionRef chooses every query's selection blocks the slow way: the
// full compressed scores of every (query, compressed token), masked
// explicitly, a softmax, the importance of every block from every span
// that overlaps it, and the forced blocks plus repeated argmax. keep[row][j]
// says whether query row (b*Heads + h)*Len + t keeps block j; margin is
// the smallest gap between a kept and a dropped non-forced block's
// importance (+Inf when no row drops one).
func nsaSelectionRef(s NSAShape, q, kc, mask []float64) (keep [][]bool, margin float64) {
	dh, ld, nc, nb := s.HeadDim, s.Heads*s.HeadDim, s.Compressed(), s.Blocks()
	margin = math.Inf(1)
	for b := 0; b < s.Batch; b++ {
		for h := 0; h < s.Heads; h++ {
			for t := 0; t < s.Len; t++ {
				p := make([]float64, nc)
				mx, sum := math.Inf(-1), 0.0
				for i := range p {
					p[i] = math.Inf(-1)
					if !nsaCmpVisible(s, mask, b, t, i) {
						continue
					}
					p[i] = 0
					for c := 0; c < dh; c++ {
						p[i] += q[(b*s.Len+t)*ld+h*dh+c] * kc[(b*nc+i)*ld+h*dh+c]
					}
					p[i] /= math.Sqrt(float64(dh))
					mx = math.Max(mx, p[i])
				}
				for i := range p {
					if !math.IsInf(mx, -1) {
						sum += math.Exp(p[i] - mx)
					}
				}
				imp := make([]float64, nb)
				for j := range imp {
					for i := range p {
						if i*s.Stride < (j+1)*s.SelectBlock && i*s.Stride+s.Block > j*s.SelectBlock && !math.IsInf(p[i], -1) {
							imp[j] += math.Exp(p[i]-mx) / sum
						}
					}
				}
				k := make([]bool, nb)
				left := s.Selected
				cand := func(j int) bool { return !s.Causal || j*s.SelectBlock <= t }
				for j := range k {
					if cand(j) && (j == 0 || t >= j*s.SelectBlock && t < (j+1)*s.SelectBlock ||
						t-s.SelectBlock >= j*s.SelectBlock && t-s.SelectBlock < (j+1)*s.SelectBlock) {
						k[j] = true
						left--
					}
				}
				for ; left > 0; left-- {
					best := -1
					for j := range k {
						if !k[j] && cand(j) && (best < 0 || imp[j] > imp[best]) {
							best = j
						}
					}
					if best < 0 {
						break
					}
					k[best] = true
					for j := range k {
						if !k[j] && cand(j) {
							margin = math.Min(margin, imp[best]-imp[j])
						}
					}
				}
				keep = append(keep, k)
			}
		}
	}
	return keep, margin
}

// nsaRun runs build over variables holding ins, with loss sum(out*r) +
// sum(lse*rl), and returns out, lse and the gradients of ins[:nGrad] in
// float64.
func nsaRun(t *testing.T, ins []*tensor.Dense, nGrad int, r, rl *tensor.Dense, build func(in []*G.Node) (out, lse *G.Node, err error)) (out, lse []float64, grads [][]float64) {
	t.Helper()
	g := G.NewGraph()
	nodes := make([]*G.Node, len(ins))
	for i, x := range ins {
		nodes[i] = Variable(g, string(rune('a'+i)), x.Clone().(*tensor.Dense))
	}
	o, l, err := build(nodes)
	if err != nil {
		t.Fatal(err)
	}
	prod, err := G.HadamardProd(o, Variable(g, "r", r.Clone().(*tensor.Dense)))
	if err != nil {
		t.Fatal(err)
	}
	loss, err := G.Sum(prod)
	if err != nil {
		t.Fatal(err)
	}
	if l != nil {
		lp, err := G.HadamardProd(l, Variable(g, "rl", rl.Clone().(*tensor.Dense)))
		if err != nil {
			t.Fatal(err)
		}
		ls, err := G.Sum(lp)
		if err != nil {
			t.Fatal(err)
		}
		if loss, err = G.Add(loss, ls); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := G.Grad(loss, nodes[:nGrad]...); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g, G.BindDualValues(nodes[:nGrad]...))
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	out = append(out, Float64s(o.Value())...)
	if l != nil {
		lse = append(lse, Float64s(l.Value())...)
	}
	for _, n := range nodes[:nGrad] {
		gv, err := n.Grad()
		if err != nil {
			t.Fatal(err)
		}
		grads = append(grads, append([]float64(nil), Float64s(gv)...))
	}
	return out, lse, grads
}

// nsaInputs draws q, k, v [B*T, H*dh] and kc [B*nc, H*dh] until every
// selection decision has a clear margin, plus r and rl for the loss.
func nsaInputs(t *testing.T, rng *rand.Rand, s NSAShape, mt *tensor.Dense) (q, k, v, kc, r, rl *tensor.Dense) {
	t.Helper()
	var mask []float64
	if mt != nil {
		mask = Float64s(mt)
	}
	n, ld, nc := s.Batch*s.Len, s.Heads*s.HeadDim, s.Compressed()
	for tries := 0; ; tries++ {
		q, k, v = RandomTensor(rng, 1.5, n, ld), RandomTensor(rng, 1, n, ld), RandomTensor(rng, 1, n, ld)
		if nc == 0 {
			break
		}
		kc = RandomTensor(rng, 1.5, s.Batch*nc, ld)
		if _, m := nsaSelectionRef(s, Float64s(q), Float64s(kc), mask); m > 1e-3 {
			break
		}
		if tries > 1000 {
			t.Fatalf("%+v: no draw with a clear selection margin", s)
		}
	}
	return q, k, v, kc, RandomTensor(rng, 1, n, ld), RandomTensor(rng, 1, s.Batch*s.Heads, s.Len)
}

// nsaCase is one core test case: a shape, with or without a key mask.
type nsaCase struct {
	s      NSAShape
	masked bool
}

// nsaCases are every shape unmasked and masked in the default tile (one
// tile at these lengths), and once more (masked every other shape) in a
// tile of 2 to 4 rows: several query and compressed tiles, a ragged last
// tile of each, whole tiles of queries that see no compressed token and
// unions of kept blocks larger than the tile.
func nsaCases(shapes []NSAShape) []nsaCase {
	var out []nsaCase
	for i, s := range shapes {
		out = append(out, nsaCase{s, false}, nsaCase{s, true})
		s.Tile = 2 + i%3
		out = append(out, nsaCase{s, i%2 == 0})
	}
	return out
}

// mask draws the case's key mask (30% padded), nil when unmasked.
func (c nsaCase) mask(rng *rand.Rand) *tensor.Dense {
	if !c.masked {
		return nil
	}
	return mask01(rng, c.s.Batch*c.s.Len, 0.3)
}

// floats is the data of an optional tensor.
func floats(t *tensor.Dense) []float64 {
	if t == nil {
		return nil
	}
	return Float64s(t)
}

// TestNSABlockUnfold: the unfold is the direct gather (padded positions
// zero), and its gradient the direct scatter-add of the upstream gradient
// (overlapping blocks add; padded positions get none), checked against a
// loop and by finite differences.
func TestNSABlockUnfold(t *testing.T) {
	rng := testRNG(t)
	for _, c := range nsaCases(nsaWithBlocks()) {
		s := c.s
		nc, dh, ld := s.Compressed(), s.HeadDim, s.Heads*s.HeadDim
		xt := RandomTensor(rng, 1, s.Batch*s.Len, ld)
		rt := RandomTensor(rng, 1, s.Batch*nc*s.Heads, s.Block*dh)
		mt := c.mask(rng)
		ins := []*tensor.Dense{xt}
		if mt != nil {
			ins = append(ins, mt)
		}
		out, _, grads := nsaRun(t, ins, 1, rt, nil, func(in []*G.Node) (*G.Node, *G.Node, error) {
			var m *G.Node
			if len(in) > 1 {
				m = in[1]
			}
			u, err := BlockUnfold(in[0], m, s)
			return u, nil, err
		})
		x, r, mask := Float64s(xt), Float64s(rt), floats(mt)
		want, dx := make([]float64, len(out)), make([]float64, len(x))
		for b := 0; b < s.Batch; b++ {
			for i := 0; i < nc; i++ {
				for h := 0; h < s.Heads; h++ {
					for rr := 0; rr < s.Block; rr++ {
						if mask != nil && mask[b*s.Len+i*s.Stride+rr] == 0 {
							continue
						}
						for c := 0; c < dh; c++ {
							src := (b*s.Len+i*s.Stride+rr)*ld + h*dh + c
							dst := ((b*nc+i)*s.Heads+h)*s.Block*dh + rr*dh + c
							want[dst] = x[src]
							dx[src] += r[dst]
						}
					}
				}
			}
		}
		if d := maxAbsDiff(out, want); d != 0 {
			t.Errorf("%+v masked %v: unfold differs from the gather by %g", s, c.masked, d)
		}
		if d := maxAbsDiff(grads[0], dx); d > 1e-12 {
			t.Errorf("%+v masked %v: gradient differs from the scatter-add by %g", s, c.masked, d)
		}
		g := G.NewGraph()
		xn := Variable(g, "x", xt.Clone().(*tensor.Dense))
		var mn *G.Node
		if mt != nil {
			mn = Variable(g, "mask", mt.Clone().(*tensor.Dense))
		}
		u, err := BlockUnfold(xn, mn, s)
		if err != nil {
			t.Fatal(err)
		}
		res, err := GradCheck{}.Run(g, u, []*G.Node{xn})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Pass {
			t.Errorf("%+v masked %v: %s", s, c.masked, res)
		}
	}
}

// TestNSACompressedMatchesReference: the compression branch equals masked
// attention over the compressed tokens with the explicit visibility
// (causal: i*d + l - 1 <= t; the block holds a real key), output,
// logsumexp and every input gradient to 1e-10.
func TestNSACompressedMatchesReference(t *testing.T) {
	rng := testRNG(t)
	for _, c := range nsaCases(nsaWithBlocks()) {
		checkCompressed(t, rng, c)
	}
}

// TestNSASplitBackward: with more workers than (sequence, head) pairs the
// backwards split each pair's query tiles and sum private key gradients;
// both cores still match the references.
func TestNSASplitBackward(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(8))
	rng := testRNG(t)
	for _, s := range []NSAShape{nsaShapes[0], nsaShapes[2], nsaShapes[4]} {
		s.Tile = 3
		for _, masked := range []bool{false, true} {
			checkCompressed(t, rng, nsaCase{s, masked})
			checkSelected(t, rng, nsaCase{s, masked})
		}
	}
}

// checkCompressed compares the compression core with the reference.
func checkCompressed(t *testing.T, rng *rand.Rand, c nsaCase) {
	t.Helper()
	s := c.s
	nc, ld := s.Compressed(), s.Heads*s.HeadDim
	mt := c.mask(rng)
	q, _, _, _, r, rl := nsaInputs(t, rng, s, mt)
	kc, vc := RandomTensor(rng, 1.5, s.Batch*nc, ld), RandomTensor(rng, 1, s.Batch*nc, ld)
	ins := []*tensor.Dense{q, kc, vc}
	if mt != nil {
		ins = append(ins, mt)
	}
	out, lse, grads := nsaRun(t, ins, 3, r, rl, func(in []*G.Node) (*G.Node, *G.Node, error) {
		var cm *G.Node
		if len(in) > 3 {
			var err error
			if cm, err = CompressedMask(in[3], s); err != nil {
				return nil, nil, err
			}
		}
		return CompressedAttentionLSE(in[0], in[1], in[2], cm, s)
	})
	mask := floats(mt)
	wo, wl, wq, wk, wv := nsaAttentionRef(s, nc, Float64s(q), Float64s(kc), Float64s(vc), Float64s(r), Float64s(rl),
		func(b, h, t, i int) bool { return nsaCmpVisible(s, mask, b, t, i) })
	for _, x := range []struct {
		name      string
		got, want []float64
	}{{"output", out, wo}, {"lse", lse, wl}, {"dq", grads[0], wq}, {"dkc", grads[1], wk}, {"dvc", grads[2], wv}} {
		if !sameInf(x.got, x.want) {
			t.Errorf("%+v masked %v: %s differs from the reference by %g", s, c.masked, x.name, maxAbsDiff(x.got, x.want))
		}
	}
}

// sameInf reports whether a and b agree exactly where either is infinite
// and to 1e-10 elsewhere (logsumexps of -Inf).
func sameInf(a, b []float64) bool {
	for i := range a {
		if math.IsInf(a[i], 0) || math.IsInf(b[i], 0) {
			if a[i] != b[i] {
				return false
			}
		} else if !(math.Abs(a[i]-b[i]) <= 1e-10) {
			return false
		}
	}
	return len(a) == len(b)
}

// nsaSelectedInputs lists the selection core's inputs: q, k, v, then kc
// and the mask where present.
func nsaSelectedInputs(q, k, v, kc, mt *tensor.Dense) ([]*tensor.Dense, func(in []*G.Node) (kc, mask *G.Node)) {
	ins := []*tensor.Dense{q, k, v}
	iKC, iM := -1, -1
	if kc != nil {
		iKC = len(ins)
		ins = append(ins, kc)
	}
	if mt != nil {
		iM = len(ins)
		ins = append(ins, mt)
	}
	return ins, func(in []*G.Node) (kcn, mn *G.Node) {
		if iKC >= 0 {
			kcn = in[iKC]
		}
		if iM >= 0 {
			mn = in[iM]
		}
		return kcn, mn
	}
}

// TestNSASelectedMatchesReference: the selection branch equals masked
// attention with an explicit key mask built from the reference's block
// choice (full compressed scores, importance by overlap, forced blocks,
// repeated argmax), output, logsumexp, dq, dk and dv to 1e-10; kc gets no
// gradient. The selected blocks themselves (SelectedBlocks) are the
// reference's.
func TestNSASelectedMatchesReference(t *testing.T) {
	rng := testRNG(t)
	for _, c := range nsaCases(nsaShapes) {
		checkSelected(t, rng, c)
	}
}

// checkSelected compares the selection core and its blocks with the
// reference.
func checkSelected(t *testing.T, rng *rand.Rand, c nsaCase) {
	t.Helper()
	s := c.s
	mt := c.mask(rng)
	q, k, v, kc, r, rl := nsaInputs(t, rng, s, mt)
	mask := floats(mt)
	keep, _ := nsaSelectionRef(s, Float64s(q), floats(kc), mask)
	ins, opt := nsaSelectedInputs(q, k, v, kc, mt)
	out, lse, grads := nsaRun(t, ins, 3, r, rl, func(in []*G.Node) (*G.Node, *G.Node, error) {
		kcn, mn := opt(in)
		return SelectedAttentionLSE(in[0], in[1], in[2], kcn, mn, s)
	})
	checkSelectedBlocks(t, s, q, kc, mt, keep)
	wo, wl, wq, wk, wv := nsaAttentionRef(s, s.Len, Float64s(q), Float64s(k), Float64s(v), Float64s(r), Float64s(rl),
		func(b, h, t, j int) bool {
			return (!s.Causal || j <= t) && (mask == nil || mask[b*s.Len+j] != 0) && keep[(b*s.Heads+h)*s.Len+t][j/s.SelectBlock]
		})
	for _, x := range []struct {
		name      string
		got, want []float64
	}{{"output", out, wo}, {"lse", lse, wl}, {"dq", grads[0], wq}, {"dk", grads[1], wk}, {"dv", grads[2], wv}} {
		if !sameInf(x.got, x.want) {
			t.Errorf("%+v masked %v: %s differs from the reference by %g", s, c.masked, x.name, maxAbsDiff(x.got, x.want))
		}
	}
}

// checkSelectedBlocks: SelectedBlocks lists, per query row, the blocks
// keep marks, ascending, -1 after them.
func checkSelectedBlocks(t *testing.T, s NSAShape, qt, kct, mt *tensor.Dense, keep [][]bool) {
	t.Helper()
	g := G.NewGraph()
	q := Variable(g, "q", qt.Clone().(*tensor.Dense))
	var kc, m *G.Node
	if kct != nil {
		kc = Variable(g, "kc", kct.Clone().(*tensor.Dense))
	}
	if mt != nil {
		m = Variable(g, "mask", mt.Clone().(*tensor.Dense))
	}
	bl, err := SelectedBlocks(q, kc, m, s)
	if err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	got := Float64s(bl.Value())
	for row, k := range keep {
		var want []float64
		for j, in := range k {
			if in {
				want = append(want, float64(j))
			}
		}
		for len(want) < s.Selected {
			want = append(want, -1)
		}
		if d := maxAbsDiff(got[row*s.Selected:(row+1)*s.Selected], want); d != 0 {
			t.Errorf("%+v: row %d keeps blocks %v, want %v", s, row, got[row*s.Selected:(row+1)*s.Selected], want)
			return
		}
	}
}

// TestNSAGradients: finite-difference gradient checks of both cores, on
// the output and on exp(logsumexp) (rows of -Inf would make the check's
// R * lse NaN), masked and not, inputs drawn with a clear selection margin
// so that no block choice flips under the step.
func TestNSAGradients(t *testing.T) {
	rng := testRNG(t)
	for _, c := range nsaCases(nsaShapes) {
		s := c.s
		mt := c.mask(rng)
		q, k, v, kc, _, _ := nsaInputs(t, rng, s, mt)
		for _, lse := range []bool{false, true} {
			for _, branch := range []string{"compressed", "selected"} {
				if branch == "compressed" && kc == nil {
					continue
				}
				g := G.NewGraph()
				qn, kn, vn := Variable(g, "q", q.Clone().(*tensor.Dense)), Variable(g, "k", k.Clone().(*tensor.Dense)), Variable(g, "v", v.Clone().(*tensor.Dense))
				var kcn, mn *G.Node
				if kc != nil {
					kcn = Variable(g, "kc", kc.Clone().(*tensor.Dense))
				}
				if mt != nil {
					mn = Variable(g, "mask", mt.Clone().(*tensor.Dense))
				}
				var o, l *G.Node
				var err error
				wrt := []*G.Node{qn, kn, vn}
				if branch == "compressed" {
					var cm *G.Node
					if mn != nil {
						if cm, err = CompressedMask(mn, s); err != nil {
							t.Fatal(err)
						}
					}
					vc := Variable(g, "vc", RandomTensor(rng, 1, s.Batch*s.Compressed(), s.Heads*s.HeadDim))
					o, l, err = CompressedAttentionLSE(qn, kcn, vc, cm, s)
					wrt = []*G.Node{qn, kcn, vc}
				} else {
					o, l, err = SelectedAttentionLSE(qn, kn, vn, kcn, mn, s)
				}
				if err != nil {
					t.Fatal(err)
				}
				if lse {
					if o, err = G.Exp(l); err != nil {
						t.Fatal(err)
					}
				}
				res, err := GradCheck{}.Run(g, o, wrt)
				if err != nil {
					t.Fatal(err)
				}
				if !res.Pass {
					t.Errorf("%+v masked %v %s lse %v: %s", s, c.masked, branch, lse, res)
				}
			}
		}
	}
}

// TestNSAFloat32: the float32 kernels of both cores and of the unfold agree
// with float64 to float32 precision, masked.
func TestNSAFloat32(t *testing.T) {
	rng := testRNG(t)
	s := nsaShapes[0]
	mt := mask01(rng, s.Batch*s.Len, 0.3)
	q, k, v, kc, r, rl := nsaInputs(t, rng, s, mt)
	f32 := func(x *tensor.Dense) *tensor.Dense {
		d := Float64s(x)
		out := make([]float32, len(d))
		for i, v := range d {
			out[i] = float32(v)
		}
		return tensor.New(tensor.WithShape(x.Shape().Clone()...), tensor.WithBacking(out))
	}
	build := func(in []*G.Node) (*G.Node, *G.Node, error) {
		cm, err := CompressedMask(in[4], s)
		if err != nil {
			return nil, nil, err
		}
		oc, _, err := CompressedAttentionLSE(in[0], in[3], in[3], cm, s)
		if err != nil {
			return nil, nil, err
		}
		os, ls, err := SelectedAttentionLSE(in[0], in[1], in[2], in[3], in[4], s)
		if err != nil {
			return nil, nil, err
		}
		o, err := G.Add(oc, os)
		return o, ls, err
	}
	ins := []*tensor.Dense{q, k, v, kc, mt}
	wo, wl, wg := nsaRun(t, ins, 3, r, rl, build)
	ins32 := make([]*tensor.Dense, len(ins))
	for i, x := range ins {
		ins32[i] = f32(x)
	}
	go32, gl32, gg32 := nsaRun(t, ins32, 3, f32(r), f32(rl), build)
	for _, c := range []struct {
		name      string
		got, want []float64
	}{{"output", go32, wo}, {"lse", gl32, wl}, {"dq", gg32[0], wg[0]}, {"dk", gg32[1], wg[1]}, {"dv", gg32[2], wg[2]}} {
		for i := range c.got {
			if math.IsInf(c.want[i], -1) && math.IsInf(c.got[i], -1) {
				continue
			}
			if d := math.Abs(c.got[i] - c.want[i]); !(d <= 1e-4) {
				t.Fatalf("float32 %s[%d] differs from float64 by %g", c.name, i, d)
			}
		}
	}
	ru := RandomTensor(rng, 1, s.Batch*s.Compressed()*s.Heads, s.Block*s.HeadDim)
	unfold := func(in []*G.Node) (*G.Node, *G.Node, error) {
		u, err := BlockUnfold(in[0], in[1], s)
		return u, nil, err
	}
	uo, _, ug := nsaRun(t, []*tensor.Dense{k, mt}, 1, ru, nil, unfold)
	uo32, _, ug32 := nsaRun(t, []*tensor.Dense{f32(k), f32(mt)}, 1, f32(ru), nil, unfold)
	if d := math.Max(maxAbsDiff(uo32, uo), maxAbsDiff(ug32[0], ug[0])); !(d <= 1e-6) {
		t.Errorf("float32 unfold differs from float64 by %g", d)
	}
}

// TestNSARejects: impossible shapes and inputs are errors.
func TestNSARejects(t *testing.T) {
	g := G.NewGraph()
	x := Variable(g, "x", tensor.New(tensor.WithShape(8, 2), tensor.Of(tensor.Float64)))
	kc := Variable(g, "kc", tensor.New(tensor.WithShape(3, 2), tensor.Of(tensor.Float64)))
	m7 := Variable(g, "m7", tensor.New(tensor.WithShape(7), tensor.Of(tensor.Float64)))
	ok := NSAShape{Batch: 1, Len: 8, Heads: 1, HeadDim: 2, Block: 4, Stride: 2, SelectBlock: 4, Selected: 3, Causal: true}
	bad := func(f func(*NSAShape)) NSAShape { s := ok; f(&s); return s }
	for _, c := range []struct {
		name string
		s    NSAShape
		want string
	}{
		{"stride does not divide block", bad(func(s *NSAShape) { s.Stride = 3 }), "must divide"},
		{"stride above block", bad(func(s *NSAShape) { s.Stride = 8 }), "must divide"},
		{"select block not a multiple of the stride", bad(func(s *NSAShape) { s.SelectBlock = 3 }), "multiple"},
		{"too few selected", bad(func(s *NSAShape) { s.Selected = 2 }), "at least 3"},
		{"no heads", bad(func(s *NSAShape) { s.Heads = 0 }), "positive"},
	} {
		if _, _, err := SelectedAttentionLSE(x, x, x, kc, nil, c.s); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
	if _, _, err := SelectedAttentionLSE(x, x, x, kc, nil, bad(func(s *NSAShape) { s.Len = 9 })); err == nil {
		t.Error("q of the wrong length: no error")
	}
	if _, _, err := SelectedAttentionLSE(x, x, x, x, nil, ok); err == nil {
		t.Error("compressed keys of the wrong shape: no error")
	}
	if _, _, err := SelectedAttentionLSE(x, x, x, nil, nil, ok); err == nil {
		t.Error("no compressed keys for a sequence with compression blocks: no error")
	}
	if _, _, err := SelectedAttentionLSE(x, x, x, kc, m7, ok); err == nil {
		t.Error("key mask of the wrong length: no error")
	}
	if _, err := BlockUnfold(x, m7, ok); err == nil {
		t.Error("unfold with a key mask of the wrong length: no error")
	}
	short := bad(func(s *NSAShape) { s.Block, s.SelectBlock = 16, 16 })
	if _, err := BlockUnfold(x, nil, short); err == nil {
		t.Error("unfold of a sequence shorter than a block: no error")
	}
	if _, err := CompressedMask(m7, ok); err == nil {
		t.Error("compressed mask of a key mask of the wrong length: no error")
	}
	if _, _, err := CompressedAttentionLSE(x, kc, x, nil, ok); err == nil {
		t.Error("compressed values of the wrong shape: no error")
	}
	if _, err := GatedSum(x, []*G.Node{x, kc}, 1, 2); err == nil {
		t.Error("gated sum over outputs of different shapes: no error")
	}
}

// TestNSAWeights: the maps are the weights the cores apply: W V equals
// each core's output, rows sum to 1 (0 for a query that sees nothing), and
// no weight falls on a key the query may not see.
func TestNSAWeights(t *testing.T) {
	rng := testRNG(t)
	for _, c := range nsaCases(nsaWithBlocks()) {
		s := c.s
		mt := c.mask(rng)
		q, k, v, kc, _, _ := nsaInputs(t, rng, s, mt)
		nc, dh, ld := s.Compressed(), s.HeadDim, s.Heads*s.HeadDim
		vc := RandomTensor(rng, 1, s.Batch*nc, ld)
		g := G.NewGraph()
		qn, kn, vn := Variable(g, "q", q), Variable(g, "k", k), Variable(g, "v", v)
		kcn, vcn := Variable(g, "kc", kc), Variable(g, "vc", vc)
		var mn, cm *G.Node
		var err error
		if mt != nil {
			mn = Variable(g, "mask", mt)
			if cm, err = CompressedMask(mn, s); err != nil {
				t.Fatal(err)
			}
		}
		oc, _, err := CompressedAttentionLSE(qn, kcn, vcn, cm, s)
		if err != nil {
			t.Fatal(err)
		}
		os, _, err := SelectedAttentionLSE(qn, kn, vn, kcn, mn, s)
		if err != nil {
			t.Fatal(err)
		}
		wc, err := CompressedWeights(qn, kcn, cm, s)
		if err != nil {
			t.Fatal(err)
		}
		ws, err := SelectedWeights(qn, kn, kcn, mn, s)
		if err != nil {
			t.Fatal(err)
		}
		vm := G.NewTapeMachine(g)
		if err := vm.RunAll(); err != nil {
			t.Fatal(err)
		}
		mask := floats(mt)
		for _, x := range []struct {
			name    string
			w, out  []float64
			vals    []float64
			nk      int
			visible func(b, t, j int) bool
		}{
			{"compressed", Float64s(wc.Value()), Float64s(oc.Value()), Float64s(vc), nc, func(b, t, i int) bool { return nsaCmpVisible(s, mask, b, t, i) }},
			{"selected", Float64s(ws.Value()), Float64s(os.Value()), Float64s(v), s.Len, func(b, t, j int) bool {
				return (!s.Causal || j <= t) && (mask == nil || mask[b*s.Len+j] != 0)
			}},
		} {
			for b := 0; b < s.Batch; b++ {
				for h := 0; h < s.Heads; h++ {
					for tt := 0; tt < s.Len; tt++ {
						row := x.w[((b*s.Heads+h)*s.Len+tt)*x.nk:][:x.nk]
						sum := 0.0
						for j, p := range row {
							if p != 0 && !x.visible(b, tt, j) {
								t.Fatalf("%s: row %d has weight %g on hidden key %d", x.name, tt, p, j)
							}
							sum += p
						}
						if math.Abs(sum-1) > 1e-12 && sum != 0 {
							t.Errorf("%s: row %d sums to %g", x.name, tt, sum)
						}
						for y := 0; y < dh; y++ {
							want := 0.0
							for j, p := range row {
								want += p * x.vals[(b*x.nk+j)*ld+h*dh+y]
							}
							if got := x.out[(b*s.Len+tt)*ld+h*dh+y]; math.Abs(got-want) > 1e-12 {
								t.Fatalf("%s: W V %g, output %g", x.name, want, got)
							}
						}
					}
				}
			}
		}
		vm.Close()
	}
}

// TestNSAGatedSum: the gated sum is the loop, and its gradient checks,
// with every branch and with one absent (nil: zero output, its gates get
// zero gradient).
func TestNSAGatedSum(t *testing.T) {
	rng := testRNG(t)
	const rows, heads, dh = 5, 2, 3
	gt := RandomTensor(rng, 1, rows, 3*heads)
	os := []*tensor.Dense{RandomTensor(rng, 1, rows, heads*dh), RandomTensor(rng, 1, rows, heads*dh), RandomTensor(rng, 1, rows, heads*dh)}
	for _, absent := range []int{-1, 0, 1} {
		build := func() (*G.ExprGraph, *G.Node, []*G.Node) {
			g := G.NewGraph()
			gn := Variable(g, "g", gt.Clone().(*tensor.Dense))
			in := []*G.Node{gn}
			var branches []*G.Node
			for i, o := range os {
				if i == absent {
					branches = append(branches, nil)
					continue
				}
				n := Variable(g, string(rune('a'+i)), o.Clone().(*tensor.Dense))
				branches = append(branches, n)
				in = append(in, n)
			}
			out, err := GatedSum(gn, branches, heads, dh)
			if err != nil {
				t.Fatal(err)
			}
			return g, out, in
		}
		g, out, in := build()
		res, err := GradCheck{}.Run(g, out, in)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Pass {
			t.Errorf("absent %d: %s", absent, res)
		}
		g, out, _ = build()
		vm := G.NewTapeMachine(g)
		if err := vm.RunAll(); err != nil {
			t.Fatal(err)
		}
		got, gv := Float64s(out.Value()), Float64s(gt)
		vm.Close()
		for r := 0; r < rows; r++ {
			for h := 0; h < heads; h++ {
				for c := 0; c < dh; c++ {
					want := 0.0
					for b, o := range os {
						if b != absent {
							want += gv[r*3*heads+b*heads+h] * Float64s(o)[r*heads*dh+h*dh+c]
						}
					}
					if d := math.Abs(got[r*heads*dh+h*dh+c] - want); d > 1e-12 {
						t.Fatalf("absent %d: row %d head %d col %d: %g, want %g", absent, r, h, c, got[r*heads*dh+h*dh+c], want)
					}
				}
			}
		}
	}
	g := G.NewGraph()
	x := Variable(g, "x", gt)
	if _, err := GatedSum(x, []*G.Node{nil, nil}, heads, dh); err == nil {
		t.Error("gated sum of no branch: no error")
	}
}
