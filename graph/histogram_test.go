package graph

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// histRef is the slow histogram reference's output, logsumexp, dense
// weights and gradients, and the smallest gap between adjacent unpadded
// intensities of any (sequence, key/value head) (+Inf with fewer than two).
type histRef struct {
	out, lse, weights, dq, dk, dv []float64
	gap                           float64
}

// histogramReference computes histogram attention the slow way: each
// position's rank by counting the positions that sort before it, its bin
// by the formula, an explicit T x T visibility mask (unpadded key, same
// bin), full scores, the masked softmax, and the gradients of
// sum(out * r) + sum(lse * rl) (rl nil: no lse term) by loops over every
// pair. It shares no code with the op.
func histogramReference(s HistogramShape, q, k, v, mask, r, rl []float64) histRef {
	n := s.KLen
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
	ref := histRef{
		out: make([]float64, s.Batch*n*ov), lse: make([]float64, s.Batch*s.Heads*n),
		weights: make([]float64, s.Batch*s.Heads*n*n),
		dq:      make([]float64, len(q)), dk: make([]float64, len(k)), dv: make([]float64, len(v)),
		gap: math.Inf(1),
	}
	padded := func(b, i int) bool { return mask != nil && mask[b*n+i] == 0 }
	for b := 0; b < s.Batch; b++ {
		for kh := 0; kh < s.KVHeads; kh++ {
			inten := make([]float64, n)
			var real []float64
			for i := range inten {
				inten[i] = k[(b*n+i)*dk+kh*s.HeadDim]
				if padded(b, i) {
					inten[i] = math.Inf(1)
				} else {
					real = append(real, inten[i])
				}
			}
			slices.Sort(real)
			for x := 1; x < len(real); x++ {
				ref.gap = math.Min(ref.gap, real[x]-real[x-1])
			}
			bin := make([]int, n)
			for i := range bin {
				rank := 0
				for j := range n {
					if inten[j] < inten[i] || inten[j] == inten[i] && j < i {
						rank++
					}
				}
				if s.Interleaved {
					bin[i] = rank % s.Bins
				} else {
					bin[i] = rank * s.Bins / n
				}
			}
			for h := kh * (s.Heads / s.KVHeads); h < (kh+1)*(s.Heads/s.KVHeads); h++ {
				for i := 0; i < n; i++ {
					row := (b*s.Heads+h)*n + i
					score := make([]float64, n)
					see := make([]bool, n)
					mx := math.Inf(-1)
					for j := 0; j < n; j++ {
						if padded(b, j) || bin[j] != bin[i] {
							continue
						}
						see[j] = true
						for c := 0; c < s.HeadDim; c++ {
							score[j] += q[(b*n+i)*dq+h*s.HeadDim+c] * k[(b*n+j)*dk+kh*s.HeadDim+c]
						}
						score[j] *= scale
						if slopes != nil {
							score[j] -= slopes[h] * math.Abs(float64(i-j))
						}
						mx = math.Max(mx, score[j])
					}
					if math.IsInf(mx, -1) {
						ref.lse[row] = math.Inf(-1)
						continue
					}
					p := make([]float64, n)
					sum := 0.0
					for j := range see {
						if see[j] {
							p[j] = math.Exp(score[j] - mx)
							sum += p[j]
						}
					}
					ref.lse[row] = mx + math.Log(sum)
					o := ref.out[(b*n+i)*ov+h*dv:][:dv]
					ri := r[(b*n+i)*ov+h*dv:][:dv]
					dp := make([]float64, n)
					d := 0.0
					if rl != nil {
						d = -rl[row]
					}
					for j := range see {
						if !see[j] {
							continue
						}
						p[j] /= sum
						ref.weights[row*n+j] = p[j]
						for c := range o {
							o[c] += p[j] * v[(b*n+j)*kv+kh*dv+c]
							dp[j] += ri[c] * v[(b*n+j)*kv+kh*dv+c]
						}
						d += p[j] * dp[j]
					}
					for j := range see {
						if !see[j] {
							continue
						}
						g := scale * p[j] * (dp[j] - d)
						for c := 0; c < s.HeadDim; c++ {
							ref.dq[(b*n+i)*dq+h*s.HeadDim+c] += g * k[(b*n+j)*dk+kh*s.HeadDim+c]
							ref.dk[(b*n+j)*dk+kh*s.HeadDim+c] += g * q[(b*n+i)*dq+h*s.HeadDim+c]
						}
						for c := 0; c < dv; c++ {
							ref.dv[(b*n+j)*kv+kh*dv+c] += p[j] * ri[c]
						}
					}
				}
			}
		}
	}
	return ref
}

// runHistogram runs the op on copies of the inputs with loss sum(out * r)
// + sum(lse * rl) (rl nil: no lse term) and returns what
// histogramReference does (gap aside).
func runHistogram(t *testing.T, s HistogramShape, qt, kt, vt, mt, rt, rlt *tensor.Dense) histRef {
	t.Helper()
	r := runMappedCore(t, coreOps{
		attend:  func(q, k, v, m *G.Node) (*G.Node, *G.Node, error) { return HistogramAttentionLSE(q, k, v, m, s) },
		weights: func(q, k, m *G.Node) (*G.Node, error) { return HistogramWeights(q, k, m, s) },
	}, qt, kt, vt, mt, rt, rlt)
	return histRef{out: r.out, lse: r.lse, weights: r.weights, dq: r.dq, dk: r.dk, dv: r.dv}
}

// TestHistogramMatchesReference: the op's output, logsumexp, map
// (HistogramWeights) and q, k, v gradients equal the slow reference's to
// 1e-10 in float64: both groupings, padded (including queries whose bin
// has no unpadded key), T not a multiple of B, B > T (empty bins), one
// bin, GQA with a value width of its own, ALiBi, exact ties in the
// intensity, and a shape large enough for parallelFor to split the work
// (run with -race).
func TestHistogramMatchesReference(t *testing.T) {
	rng := testRNG(t)
	base := AttentionShape{Batch: 2, QLen: 10, KLen: 10, Heads: 2, KVHeads: 2, HeadDim: 3}
	with := func(f func(*AttentionShape)) AttentionShape {
		s := base
		f(&s)
		return s
	}
	for _, c := range []struct {
		name    string
		s       HistogramShape
		masked  bool
		lseLoss bool // add sum(lse * rl) to the loss (no empty rows)
		ties    bool // integer inputs, Scale 1
	}{
		{name: "contiguous/B3 (T=10 not a multiple)", s: HistogramShape{base, 3, false}, lseLoss: true},
		{name: "interleaved/B3", s: HistogramShape{base, 3, true}, lseLoss: true},
		{name: "contiguous/B2", s: HistogramShape{base, 2, false}, lseLoss: true},
		{name: "contiguous/B1", s: HistogramShape{base, 1, false}, lseLoss: true},
		{name: "contiguous/padded/B3", s: HistogramShape{base, 3, false}, masked: true},
		{name: "interleaved/padded/B4", s: HistogramShape{base, 4, true}, masked: true},
		{name: "contiguous/B>T (empty bins)", s: HistogramShape{base, 13, false}, lseLoss: true},
		{name: "interleaved/B>T (empty bins)", s: HistogramShape{base, 13, true}, lseLoss: true},
		{name: "contiguous/B=T (one position each)", s: HistogramShape{base, 10, false}, lseLoss: true},
		{name: "contiguous/gqa/valuedim/B3", s: HistogramShape{with(func(s *AttentionShape) { s.Heads, s.KVHeads, s.ValueDim = 4, 2, 5 }), 3, false}, lseLoss: true},
		{name: "interleaved/alibi/padded/B2", s: HistogramShape{with(func(s *AttentionShape) { s.ALiBi = true }), 2, true}, masked: true},
		{name: "contiguous/ties/B3", s: HistogramShape{with(func(s *AttentionShape) { s.Scale, s.HeadDim = 1, 2 }), 3, false}, ties: true, lseLoss: true},
		{name: "interleaved/padded/ties/B3", s: HistogramShape{with(func(s *AttentionShape) { s.Scale, s.HeadDim = 1, 2 }), 3, true}, ties: true, masked: true},
		{name: "contiguous/gqa/padded/B5/parallel workers", s: HistogramShape{AttentionShape{Batch: 2, QLen: 70, KLen: 70, Heads: 4, KVHeads: 2, HeadDim: 8}, 5, false}, masked: true},
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
				for j := 0; j < s.KLen; j++ { // the second sequence has one real key: the bins after the first hold none
					mask[s.KLen+j] = 0
				}
				mask[s.KLen+s.KLen/2] = 1
			}
			if c.lseLoss {
				rlt = RandomTensor(rng, 1, s.Batch*s.Heads, s.QLen)
				rl = Float64s(rlt)
			}
			want := histogramReference(s, Float64s(qt), Float64s(kt), Float64s(vt), mask, Float64s(rt), rl)
			got := runHistogram(t, s, qt, kt, vt, mt, rt, rlt)
			if c.masked && !slices.ContainsFunc(want.lse, func(x float64) bool { return math.IsInf(x, -1) }) {
				t.Errorf("no query without a visible key: the padded case is not exercised")
			}
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

// TestHistogramBinSizes: the bins' sizes by the formulas, which the
// layer's score count uses, against counting ranks one by one.
func TestHistogramBinSizes(t *testing.T) {
	for _, n := range []int{1, 5, 10, 17} {
		for _, B := range []int{1, 2, 3, 4, 10, 13} {
			for _, il := range []bool{false, true} {
				want := make([]int, B)
				for r := 0; r < n; r++ {
					if il {
						want[r%B]++
					} else {
						want[r*B/n]++
					}
				}
				if got := HistogramBinSizes(n, B, il); !slices.Equal(got, want) {
					t.Errorf("T=%d B=%d interleaved=%v: %v, want %v", n, B, il, got, want)
				}
			}
		}
	}
}

// TestHistogramOneBinIsAttention: with one bin histogram attention is the
// dense core (Attention), outputs and gradients to 1e-10, padded and not,
// GQA.
func TestHistogramOneBinIsAttention(t *testing.T) {
	rng := testRNG(t)
	for _, masked := range []bool{false, true} {
		s := AttentionShape{Batch: 2, QLen: 10, KLen: 10, Heads: 2, KVHeads: 1, HeadDim: 3}
		qt, kt := RandomTensor(rng, 1, 20, 6), RandomTensor(rng, 1, 20, 3)
		vt, rt := RandomTensor(rng, 1, 20, 3), RandomTensor(rng, 1, 20, 6)
		var mt *tensor.Dense
		if masked {
			mt = mask01(rng, 20, 0.3)
		}
		got := runCore(t, func(q, k, v, m *G.Node, s AttentionShape) (*G.Node, error) {
			return HistogramAttention(q, k, v, m, HistogramShape{s, 1, false})
		}, s, qt, kt, vt, mt, rt)
		want := runCore(t, func(q, k, v, m *G.Node, s AttentionShape) (*G.Node, error) {
			return DenseAttention(q, k, v, m, s, nil)
		}, s, qt, kt, vt, mt, rt)
		for _, x := range [][2][]float64{{got.out, want.out}, {got.dq, want.dq}, {got.dk, want.dk}, {got.dv, want.dv}} {
			if d := maxAbsDiff(x[0], x[1]); !(d <= 1e-10) {
				t.Errorf("masked %v: differs from Attention by %g", masked, d)
			}
		}
	}
}

// histogramInputs draws q, k, v (and a mask) until every adjacent pair of
// unpadded intensities is at least 1e-2 apart, so finite-difference steps
// change no rank.
func histogramInputs(t *testing.T, rng *rand.Rand, s HistogramShape, masked bool) (qt, kt, vt, mt *tensor.Dense) {
	t.Helper()
	for try := 0; ; try++ {
		if try == 200 {
			t.Fatal("no input without near ties in 200 draws")
		}
		qt = RandomTensor(rng, 2, s.Batch*s.QLen, s.Heads*s.HeadDim)
		kt = RandomTensor(rng, 2, s.Batch*s.KLen, s.KVHeads*s.HeadDim)
		vt = RandomTensor(rng, 1, s.Batch*s.KLen, s.KVHeads*s.VDim())
		var mask []float64
		if masked {
			mt = mask01(rng, s.Batch*s.KLen, 0.3)
			mask = mt.Data().([]float64)
		}
		ref := histogramReference(s, Float64s(qt), Float64s(kt), Float64s(vt), mask, make([]float64, s.Batch*s.QLen*s.Heads*s.VDim()), nil)
		if ref.gap > 1e-2 && !slices.ContainsFunc(ref.lse, func(x float64) bool { return math.IsInf(x, -1) }) {
			return qt, kt, vt, mt
		}
	}
}

// TestHistogramGradCheck: finite differences through the op (output and
// logsumexp) agree with its backward, both groupings, padded, GQA, ALiBi,
// on inputs whose intensities have a clear margin (histogramInputs).
func TestHistogramGradCheck(t *testing.T) {
	rng := testRNG(t)
	for _, c := range []struct {
		name   string
		s      HistogramShape
		masked bool
	}{
		{"contiguous/gqa/B3", HistogramShape{AttentionShape{Batch: 1, QLen: 9, KLen: 9, Heads: 2, KVHeads: 1, HeadDim: 3}, 3, false}, false},
		{"interleaved/padded/B2", HistogramShape{AttentionShape{Batch: 2, QLen: 7, KLen: 7, Heads: 2, KVHeads: 2, HeadDim: 3}, 2, true}, true},
		{"interleaved/alibi/B3", HistogramShape{AttentionShape{Batch: 1, QLen: 8, KLen: 8, Heads: 2, KVHeads: 2, HeadDim: 2, ALiBi: true}, 3, true}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.s
			qt, kt, vt, mt := histogramInputs(t, rng, s, c.masked)
			gradCheckCore(t, func(q, k, v, m *G.Node) (*G.Node, *G.Node, error) { return HistogramAttentionLSE(q, k, v, m, s) }, qt, kt, vt, mt)
		})
	}
}

// TestHistogramFloat32: the float32 kernels agree with the float64
// reference to float32 precision (output and gradients), both groupings,
// on inputs with a clear intensity margin.
func TestHistogramFloat32(t *testing.T) {
	rng := testRNG(t)
	for _, il := range []bool{false, true} {
		s := HistogramShape{AttentionShape{Batch: 2, QLen: 9, KLen: 9, Heads: 2, KVHeads: 1, HeadDim: 4}, 3, il}
		qt, kt, vt, _ := histogramInputs(t, rng, s, false)
		rt := RandomTensor(rng, 1, 18, 8)
		want := histogramReference(s, Float64s(qt), Float64s(kt), Float64s(vt), nil, Float64s(rt), nil)
		checkFloat32Core(t, fmt.Sprintf("interleaved %v: ", il), func(q, k, v *G.Node) (*G.Node, error) { return HistogramAttention(q, k, v, nil, s) }, qt, kt, vt, rt,
			coreRun{out: want.out, dq: want.dq, dk: want.dk, dv: want.dv})
	}
}

// TestHistogramRejects: impossible shapes are errors: no bins, causal,
// cross-attention, bad head grouping.
func TestHistogramRejects(t *testing.T) {
	g := G.NewGraph()
	x := Variable(g, "x", tensor.New(tensor.WithShape(4, 2), tensor.Of(tensor.Float64)))
	base := AttentionShape{Batch: 1, QLen: 4, KLen: 4, Heads: 1, KVHeads: 1, HeadDim: 2}
	causal, cross := base, base
	causal.Causal = true
	cross.QLen, cross.KLen = 2, 4
	for _, s := range []HistogramShape{{base, 0, false}, {base, -1, true}, {causal, 2, false}, {cross, 2, false},
		{AttentionShape{Batch: 1, QLen: 4, KLen: 4, Heads: 2, KVHeads: 3, HeadDim: 1}, 2, false}} {
		if _, err := HistogramAttention(x, x, x, nil, s); err == nil {
			t.Errorf("%+v: no error", s)
		}
		if _, err := HistogramWeights(x, x, nil, s); err == nil {
			t.Errorf("weights %+v: no error", s)
		}
	}
	// A wrong input shape is an error too.
	if _, err := HistogramAttention(x, x, x, nil, HistogramShape{AttentionShape{Batch: 1, QLen: 3, KLen: 3, Heads: 1, KVHeads: 1, HeadDim: 2}, 2, false}); err == nil {
		t.Errorf("q [4, 2] for T=3: no error")
	}
}
