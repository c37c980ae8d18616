package graph

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// topKRef is the slow top-k reference's output, logsumexp, dense weights
// and gradients, and the smallest gap between a row's last kept score and
// its best dropped one (+Inf when no row drops a key).
type topKRef struct {
	out, lse, weights, dq, dk, dv []float64
	gap                           float64
}

// topKReference computes top-k attention the slow way: every score of a
// row, an explicit keep mask of its TopK largest visible scores (ties to
// the lower index), the masked softmax, and the gradients of
// sum(out * r) + sum(lse * rl) (rl nil: no lse term) by loops over the
// kept pairs. It shares no code with the op.
func topKReference(s TopKShape, q, k, v, mask, r, rl []float64) topKRef {
	dq, dk := s.Heads*s.HeadDim, s.KVHeads*s.HeadDim
	dv := s.VDim()
	ov, kv := s.Heads*dv, s.KVHeads*dv
	scale := s.Scale
	if scale == 0 {
		scale = 1 / math.Sqrt(float64(s.HeadDim))
	}
	var slopes []float64
	if s.ALiBi {
		slopes = ALiBiSlopes(s.Heads)
	}
	ref := topKRef{
		out: make([]float64, s.Batch*s.QLen*ov), lse: make([]float64, s.Batch*s.Heads*s.QLen),
		weights: make([]float64, s.Batch*s.Heads*s.QLen*s.KLen),
		dq:      make([]float64, len(q)), dk: make([]float64, len(k)), dv: make([]float64, len(v)),
		gap: math.Inf(1),
	}
	for b := 0; b < s.Batch; b++ {
		for h := 0; h < s.Heads; h++ {
			kh := h / (s.Heads / s.KVHeads)
			for i := 0; i < s.QLen; i++ {
				row := (b*s.Heads+h)*s.QLen + i
				pos := i + s.KLen - s.QLen
				score := make([]float64, s.KLen)
				var visible []int
				for j := 0; j < s.KLen; j++ {
					if s.Causal && j > pos || mask != nil && mask[b*s.KLen+j] == 0 {
						continue
					}
					visible = append(visible, j)
					for c := 0; c < s.HeadDim; c++ {
						score[j] += q[(b*s.QLen+i)*dq+h*s.HeadDim+c] * k[(b*s.KLen+j)*dk+kh*s.HeadDim+c]
					}
					score[j] *= scale
					if slopes != nil {
						score[j] -= slopes[h] * math.Abs(float64(pos-j))
					}
				}
				slices.SortStableFunc(visible, func(a, c int) int { // best first, ties to the lower index
					switch {
					case score[a] > score[c]:
						return -1
					case score[a] < score[c]:
						return 1
					}
					return a - c
				})
				keep := make([]bool, s.KLen)
				for x, j := range visible {
					if x < s.TopK {
						keep[j] = true
					}
				}
				if len(visible) > s.TopK {
					ref.gap = math.Min(ref.gap, score[visible[s.TopK-1]]-score[visible[s.TopK]])
				}
				if len(visible) == 0 {
					ref.lse[row] = math.Inf(-1)
					continue
				}
				mx := math.Inf(-1)
				for j := range keep {
					if keep[j] {
						mx = math.Max(mx, score[j])
					}
				}
				sum := 0.0
				p := make([]float64, s.KLen)
				for j := range keep {
					if keep[j] {
						p[j] = math.Exp(score[j] - mx)
						sum += p[j]
					}
				}
				ref.lse[row] = mx + math.Log(sum)
				o := ref.out[(b*s.QLen+i)*ov+h*dv:][:dv]
				ri := r[(b*s.QLen+i)*ov+h*dv:][:dv]
				dp := make([]float64, s.KLen)
				d := 0.0
				if rl != nil {
					d = -rl[row]
				}
				for j := range keep {
					if !keep[j] {
						continue
					}
					p[j] /= sum
					ref.weights[row*s.KLen+j] = p[j]
					for c := range o {
						o[c] += p[j] * v[(b*s.KLen+j)*kv+kh*dv+c]
						dp[j] += ri[c] * v[(b*s.KLen+j)*kv+kh*dv+c]
					}
					d += p[j] * dp[j]
				}
				for j := range keep {
					if !keep[j] {
						continue
					}
					g := scale * p[j] * (dp[j] - d)
					for c := 0; c < s.HeadDim; c++ {
						ref.dq[(b*s.QLen+i)*dq+h*s.HeadDim+c] += g * k[(b*s.KLen+j)*dk+kh*s.HeadDim+c]
						ref.dk[(b*s.KLen+j)*dk+kh*s.HeadDim+c] += g * q[(b*s.QLen+i)*dq+h*s.HeadDim+c]
					}
					for c := 0; c < dv; c++ {
						ref.dv[(b*s.KLen+j)*kv+kh*dv+c] += p[j] * ri[c]
					}
				}
			}
		}
	}
	return ref
}

// runTopK runs the op on copies of the inputs with loss sum(out * r) +
// sum(lse * rl) (rl nil: no lse term) and returns what topKReference does
// (gap aside).
func runTopK(t *testing.T, s TopKShape, qt, kt, vt, mt, rt, rlt *tensor.Dense) topKRef {
	t.Helper()
	r := runMappedCore(t, coreOps{
		attend:  func(q, k, v, m *G.Node) (*G.Node, *G.Node, error) { return TopKAttentionLSE(q, k, v, m, s) },
		weights: func(q, k, m *G.Node) (*G.Node, error) { return TopKWeights(q, k, m, s) },
	}, qt, kt, vt, mt, rt, rlt)
	return topKRef{out: r.out, lse: r.lse, weights: r.weights, dq: r.dq, dk: r.dk, dv: r.dv}
}

// integerTensor has entries drawn from {-1, 0, 1}: with Scale 1 every score
// is an exact small integer, so rows are full of exact ties.
func integerTensor(rng *rand.Rand, rows, cols int) *tensor.Dense {
	t := tensor.New(tensor.WithShape(rows, cols), tensor.Of(tensor.Float64))
	for i, d := 0, t.Data().([]float64); i < len(d); i++ {
		d[i] = float64(rng.IntN(3) - 1)
	}
	return t
}

// TestTopKMatchesReference: the op's output, logsumexp, map
// (TopKWeights) and q, k, v gradients equal the slow reference's to
// 1e-10 in float64: causal and bidirectional, padded (including queries
// that see no key), lengths not a multiple of the tile, several tiles,
// k < T, k = 1 and k >= T, GQA with a value width of its own, ALiBi, more
// keys than queries, exact ties, and a shape large enough for parallelFor
// to split the work over workers (run with -race).
func TestTopKMatchesReference(t *testing.T) {
	rng := testRNG(t)
	base := AttentionShape{Batch: 2, QLen: 9, KLen: 9, Heads: 2, KVHeads: 2, HeadDim: 3}
	with := func(f func(*AttentionShape)) AttentionShape {
		s := base
		f(&s)
		return s
	}
	for _, c := range []struct {
		name    string
		s       TopKShape
		masked  bool
		lseLoss bool // add sum(lse * rl) to the loss (no empty rows)
		ties    bool // integer inputs, Scale 1
	}{
		{name: "causal/k3/tiles", s: TopKShape{with(func(s *AttentionShape) { s.Causal = true }), 3, 4}, lseLoss: true},
		{name: "bidirectional/k3/tiles", s: TopKShape{base, 3, 4}, lseLoss: true},
		{name: "bidirectional/k1/tile2", s: TopKShape{base, 1, 2}, lseLoss: true},
		{name: "causal/padded/k2/tiles", s: TopKShape{with(func(s *AttentionShape) { s.Causal = true }), 2, 4}, masked: true},
		{name: "bidirectional/padded/k4/tiles", s: TopKShape{base, 4, 4}, masked: true},
		{name: "causal/k>=T", s: TopKShape{with(func(s *AttentionShape) { s.Causal = true }), 20, 4}, lseLoss: true},
		{name: "bidirectional/padded/k>=T", s: TopKShape{base, 9, 4}, masked: true},
		{name: "bidirectional/k3/one tile", s: TopKShape{base, 3, 0}, lseLoss: true},
		{name: "causal/gqa/valuedim/k3", s: TopKShape{with(func(s *AttentionShape) { s.Causal, s.Heads, s.KVHeads, s.ValueDim = true, 4, 2, 5 }), 3, 4}, lseLoss: true},
		{name: "causal/alibi/padded/k3", s: TopKShape{with(func(s *AttentionShape) { s.Causal, s.ALiBi = true, true }), 3, 4}, masked: true},
		{name: "causal/klen>qlen/k4", s: TopKShape{with(func(s *AttentionShape) { s.Causal, s.QLen, s.KLen = true, 5, 11 }), 4, 4}, lseLoss: true},
		{name: "bidirectional/ties/k3", s: TopKShape{with(func(s *AttentionShape) { s.Scale, s.HeadDim = 1, 2 }), 3, 4}, ties: true, lseLoss: true},
		{name: "causal/gqa/padded/k8/parallel workers", s: TopKShape{AttentionShape{Batch: 2, QLen: 70, KLen: 70, Heads: 4, KVHeads: 2, HeadDim: 8, Causal: true}, 8, 16}, masked: true},
		{name: "causal/padded/ties/k2", s: TopKShape{with(func(s *AttentionShape) { s.Causal, s.Scale, s.HeadDim = true, 1, 2 }), 2, 4}, masked: true, ties: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.s
			qt := RandomTensor(rng, 1.5, s.Batch*s.QLen, s.Heads*s.HeadDim)
			kt := RandomTensor(rng, 1.5, s.Batch*s.KLen, s.KVHeads*s.HeadDim)
			if c.ties {
				qt, kt = integerTensor(rng, s.Batch*s.QLen, s.Heads*s.HeadDim), integerTensor(rng, s.Batch*s.KLen, s.KVHeads*s.HeadDim)
			}
			vt := RandomTensor(rng, 1, s.Batch*s.KLen, s.KVHeads*s.VDim())
			rt := RandomTensor(rng, 1, s.Batch*s.QLen, s.Heads*s.VDim())
			var mt, rlt *tensor.Dense
			var mask, rl []float64
			if c.masked {
				mt = mask01(rng, s.Batch*s.KLen, 0.4)
				mask = mt.Data().([]float64)
				mask[0] = 0        // the first query of a causal sequence sees no key
				mask[s.KLen+1] = 1 // and some row of the second sees one
				mask[s.KLen-1] = 0 // a padded key at a tile's end
			}
			if c.lseLoss {
				rlt = RandomTensor(rng, 1, s.Batch*s.Heads, s.QLen)
				rl = Float64s(rlt)
			}
			want := topKReference(s, Float64s(qt), Float64s(kt), Float64s(vt), mask, Float64s(rt), rl)
			got := runTopK(t, s, qt, kt, vt, mt, rt, rlt)
			for _, x := range []struct {
				name      string
				got, want []float64
			}{
				{"output", got.out, want.out}, {"logsumexp", got.lse, want.lse}, {"weights", got.weights, want.weights},
				{"dq", got.dq, want.dq}, {"dk", got.dk, want.dk}, {"dv", got.dv, want.dv},
			} {
				if d := maxAbsDiff(x.got, x.want); !(d <= 1e-10) {
					t.Errorf("%s: differs from the reference by %g", x.name, d)
				}
			}
		})
	}
}

// TestTopKGradCheck: finite differences through the op (output and
// logsumexp) agree with its backward, on inputs where no row's last kept
// score is within 1e-2 of its best dropped one (so the steps change no
// selection).
func TestTopKGradCheck(t *testing.T) {
	rng := testRNG(t)
	for _, c := range []struct {
		name   string
		s      TopKShape
		masked bool
	}{
		{"causal/k3", TopKShape{AttentionShape{Batch: 1, QLen: 9, KLen: 9, Heads: 2, KVHeads: 1, HeadDim: 3, Causal: true}, 3, 4}, false},
		{"bidirectional/padded/k2", TopKShape{AttentionShape{Batch: 2, QLen: 7, KLen: 7, Heads: 2, KVHeads: 2, HeadDim: 3}, 2, 4}, true},
		{"causal/alibi/k4", TopKShape{AttentionShape{Batch: 1, QLen: 9, KLen: 9, Heads: 2, KVHeads: 2, HeadDim: 2, Causal: true, ALiBi: true}, 4, 4}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.s
			var qt, kt, vt, mt *tensor.Dense
			for try := 0; ; try++ {
				if try == 200 {
					t.Fatal("no input without near ties in 200 draws")
				}
				qt = RandomTensor(rng, 2, s.Batch*s.QLen, s.Heads*s.HeadDim)
				kt = RandomTensor(rng, 2, s.Batch*s.KLen, s.KVHeads*s.HeadDim)
				vt = RandomTensor(rng, 1, s.Batch*s.KLen, s.KVHeads*s.VDim())
				var mask []float64
				if c.masked {
					mt = mask01(rng, s.Batch*s.KLen, 0.3)
					mask = mt.Data().([]float64)
					for b := 0; b < s.Batch; b++ {
						mask[b*s.KLen] = 1 // no query without a key: its logsumexp would be -Inf
					}
				}
				if ref := topKReference(s, Float64s(qt), Float64s(kt), Float64s(vt), mask, make([]float64, s.Batch*s.QLen*s.Heads*s.VDim()), nil); ref.gap > 1e-2 {
					break
				}
			}
			gradCheckCore(t, func(q, k, v, m *G.Node) (*G.Node, *G.Node, error) { return TopKAttentionLSE(q, k, v, m, s) }, qt, kt, vt, mt)
		})
	}
}

// TestTopKRejects: impossible shapes are errors.
func TestTopKRejects(t *testing.T) {
	g := G.NewGraph()
	x := Variable(g, "x", tensor.New(tensor.WithShape(4, 2), tensor.Of(tensor.Float64)))
	base := AttentionShape{Batch: 1, QLen: 4, KLen: 4, Heads: 1, KVHeads: 1, HeadDim: 2}
	for _, s := range []TopKShape{{base, 0, 0}, {base, 2, -1}, {AttentionShape{Batch: 1, QLen: 4, KLen: 4, Heads: 2, KVHeads: 3, HeadDim: 1}, 2, 0}} {
		if _, err := TopKAttention(x, x, x, nil, s); err == nil {
			t.Errorf("%+v: no error", s)
		}
	}
}

// TestTopKAllKeysIsAttention: with k >= KLen top-k attention is the dense
// core (Attention), outputs and gradients to 1e-10, causal and
// bidirectional, padded, over several tiles.
func TestTopKAllKeysIsAttention(t *testing.T) {
	rng := testRNG(t)
	for _, causal := range []bool{true, false} {
		s := AttentionShape{Batch: 2, QLen: 10, KLen: 10, Heads: 2, KVHeads: 1, HeadDim: 3, Causal: causal}
		qt, kt := RandomTensor(rng, 1, 20, 6), RandomTensor(rng, 1, 20, 3)
		vt, rt := RandomTensor(rng, 1, 20, 3), RandomTensor(rng, 1, 20, 6)
		mt := mask01(rng, 20, 0.3)
		got := runCore(t, func(q, k, v, m *G.Node, s AttentionShape) (*G.Node, error) {
			return TopKAttention(q, k, v, m, TopKShape{s, 10, 3})
		}, s, qt, kt, vt, mt, rt)
		want := runCore(t, func(q, k, v, m *G.Node, s AttentionShape) (*G.Node, error) {
			return DenseAttention(q, k, v, m, s, nil)
		}, s, qt, kt, vt, mt, rt)
		for _, x := range [][2][]float64{{got.out, want.out}, {got.dq, want.dq}, {got.dk, want.dk}, {got.dv, want.dv}} {
			if d := maxAbsDiff(x[0], x[1]); !(d <= 1e-10) {
				t.Errorf("causal %v: differs from Attention by %g", causal, d)
			}
		}
	}
}

// TestTopKFloat32: the float32 kernels agree with the float64 reference
// to float32 precision (output and gradients), on inputs without near
// ties.
func TestTopKFloat32(t *testing.T) {
	rng := testRNG(t)
	s := TopKShape{AttentionShape{Batch: 2, QLen: 9, KLen: 9, Heads: 2, KVHeads: 1, HeadDim: 4, Causal: true}, 3, 4}
	var qt, kt, vt *tensor.Dense
	for {
		qt, kt, vt = RandomTensor(rng, 1.5, 18, 8), RandomTensor(rng, 1.5, 18, 4), RandomTensor(rng, 1, 18, 4)
		if topKReference(s, Float64s(qt), Float64s(kt), Float64s(vt), nil, make([]float64, 18*8), nil).gap > 1e-3 {
			break
		}
	}
	rt := RandomTensor(rng, 1, 18, 8)
	want := topKReference(s, Float64s(qt), Float64s(kt), Float64s(vt), nil, Float64s(rt), nil)
	checkFloat32Core(t, "", func(q, k, v *G.Node) (*G.Node, error) { return TopKAttention(q, k, v, nil, s) }, qt, kt, vt, rt,
		coreRun{out: want.out, dq: want.dq, dk: want.dk, dv: want.dv})
}
