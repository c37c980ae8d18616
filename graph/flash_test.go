package graph

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// coreResult is a core's output and its gradients for a fixed random
// cotangent R (loss = sum(out * R)).
type coreResult struct{ out, dq, dk, dv []float64 }

// runCore builds core on copies of the given q, k, v, mask and returns its
// output and gradients.
func runCore(t *testing.T, core func(q, k, v, m *G.Node, s AttentionShape) (*G.Node, error), s AttentionShape,
	qt, kt, vt, mt, rt *tensor.Dense) coreResult {
	t.Helper()
	g := G.NewGraph()
	q, k, v := Variable(g, "q", qt.Clone().(*tensor.Dense)), Variable(g, "k", kt.Clone().(*tensor.Dense)), Variable(g, "v", vt.Clone().(*tensor.Dense))
	var m *G.Node
	if mt != nil {
		m = Variable(g, "mask", mt.Clone().(*tensor.Dense))
	}
	out, err := core(q, k, v, m, s)
	if err != nil {
		t.Fatal(err)
	}
	r := Variable(g, "r", rt.Clone().(*tensor.Dense))
	vm := runWeightedSum(t, g, out, r, q, k, v)
	defer vm.Close()
	grad := func(n *G.Node) []float64 {
		gv, err := n.Grad()
		if err != nil {
			t.Fatal(err)
		}
		return append([]float64(nil), Float64s(gv)...)
	}
	return coreResult{append([]float64(nil), Float64s(out.Value())...), grad(q), grad(k), grad(v)}
}

// TestFlashMatchesStandard: flash computes the standard core's function and
// gradients to 1e-10 in float64, over tile-aligned and ragged lengths.
func TestFlashMatchesStandard(t *testing.T) {
	rng := testRNG(t)
	const block = 4
	for _, c := range []struct {
		name   string
		s      AttentionShape
		masked bool
		block  int
	}{
		{"causal", AttentionShape{Batch: 2, QLen: 16, KLen: 16, Heads: 2, KVHeads: 2, HeadDim: 3, Causal: true}, false, block},
		{"bidirectional", AttentionShape{Batch: 2, QLen: 16, KLen: 16, Heads: 2, KVHeads: 2, HeadDim: 3}, false, block},
		{"causal-padded", AttentionShape{Batch: 2, QLen: 13, KLen: 13, Heads: 2, KVHeads: 2, HeadDim: 3, Causal: true}, true, block},
		{"bidirectional-padded", AttentionShape{Batch: 2, QLen: 13, KLen: 13, Heads: 2, KVHeads: 2, HeadDim: 3}, true, block},
		{"T=1", AttentionShape{Batch: 3, QLen: 1, KLen: 1, Heads: 2, KVHeads: 2, HeadDim: 3, Causal: true}, false, block},
		{"T=1-bidirectional", AttentionShape{Batch: 3, QLen: 1, KLen: 1, Heads: 2, KVHeads: 2, HeadDim: 3}, false, block},
		{"ragged", AttentionShape{Batch: 1, QLen: 10, KLen: 10, Heads: 2, KVHeads: 2, HeadDim: 4, Causal: true}, false, block},
		{"4-tiles+3-causal", AttentionShape{Batch: 2, QLen: 4*block + 3, KLen: 4*block + 3, Heads: 2, KVHeads: 1, HeadDim: 3, Causal: true}, true, block},
		{"4-tiles+3-bidirectional", AttentionShape{Batch: 2, QLen: 4*block + 3, KLen: 4*block + 3, Heads: 2, KVHeads: 2, HeadDim: 3}, true, block},
		{"4-default-tiles+3", AttentionShape{Batch: 1, QLen: 4*DefaultFlashBlock + 3, KLen: 4*DefaultFlashBlock + 3, Heads: 2, KVHeads: 1, HeadDim: 4, Causal: true}, true, DefaultFlashBlock},
		{"grouped-alibi", AttentionShape{Batch: 1, QLen: 11, KLen: 11, Heads: 4, KVHeads: 2, HeadDim: 3, Causal: true, ALiBi: true}, false, block},
		{"value-dim", AttentionShape{Batch: 2, QLen: 9, KLen: 9, Heads: 2, KVHeads: 2, HeadDim: 3, ValueDim: 5}, true, block},
		{"cross", AttentionShape{Batch: 2, QLen: 5, KLen: 14, Heads: 2, KVHeads: 2, HeadDim: 3}, true, block},
		{"causal-cross", AttentionShape{Batch: 1, QLen: 6, KLen: 14, Heads: 2, KVHeads: 2, HeadDim: 3, Causal: true}, false, block},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.s
			qt := RandomTensor(rng, 1, s.Batch*s.QLen, s.Heads*s.HeadDim)
			kt := RandomTensor(rng, 1, s.Batch*s.KLen, s.KVHeads*s.HeadDim)
			vt := RandomTensor(rng, 1, s.Batch*s.KLen, s.KVHeads*s.VDim())
			rt := RandomTensor(rng, 1, s.Batch*s.QLen, s.Heads*s.VDim())
			var mt *tensor.Dense
			if c.masked {
				mt = mask01(rng, s.Batch*s.KLen, 0.3)
			}
			want := runCore(t, Attention, s, qt, kt, vt, mt, rt)
			got := runCore(t, func(q, k, v, m *G.Node, s AttentionShape) (*G.Node, error) {
				return FlashAttention(q, k, v, m, s, c.block)
			}, s, qt, kt, vt, mt, rt)
			for _, p := range []struct {
				name      string
				got, want []float64
			}{{"out", got.out, want.out}, {"dq", got.dq, want.dq}, {"dk", got.dk, want.dk}, {"dv", got.dv, want.dv}} {
				if d := maxRelDiff(p.got, p.want); d > 1e-10 {
					t.Errorf("%s: relative difference %g", p.name, d)
				}
			}
		})
	}
}

func TestALiBiSlopes(t *testing.T) {
	for _, c := range []struct {
		heads int
		want  []float64
	}{
		{1, []float64{1.0 / 256}},
		{4, []float64{1.0 / 4, 1.0 / 16, 1.0 / 64, 1.0 / 256}},
		{8, []float64{1.0 / 2, 1.0 / 4, 1.0 / 8, 1.0 / 16, 1.0 / 32, 1.0 / 64, 1.0 / 128, 1.0 / 256}},
		// 6 heads: the 4-head sequence, then every other slope of the 8-head one
		{6, []float64{1.0 / 4, 1.0 / 16, 1.0 / 64, 1.0 / 256, 1.0 / 2, 1.0 / 8}},
	} {
		got := ALiBiSlopes(c.heads)
		if maxRelDiff(got, c.want) > 1e-15 || len(got) != len(c.want) {
			t.Errorf("ALiBiSlopes(%d) = %v, want %v", c.heads, got, c.want)
		}
	}
}

// attentionAllocs returns the bytes one forward+backward of an attention
// core allocates (Go heap, as counted by runtime.MemStats.TotalAlloc),
// after one warm-up run.
func attentionAllocs(core func(q, k, v, m *G.Node, s AttentionShape) (*G.Node, error), s AttentionShape, runs int) (uint64, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	g := G.NewGraph()
	mk := func(name string, rows, cols int) *G.Node {
		t := tensor.New(tensor.WithShape(rows, cols), tensor.Of(tensor.Float32))
		for i, d := 0, t.Data().([]float32); i < len(d); i++ {
			d[i] = float32(rng.NormFloat64())
		}
		return G.NewTensor(g, tensor.Float32, 2, G.WithShape(rows, cols), G.WithName(name), G.WithValue(t))
	}
	q, k, v := mk("q", s.Batch*s.QLen, s.Heads*s.HeadDim), mk("k", s.Batch*s.KLen, s.KVHeads*s.HeadDim), mk("v", s.Batch*s.KLen, s.KVHeads*s.VDim())
	out, err := core(q, k, v, nil, s)
	if err != nil {
		return 0, err
	}
	loss, err := G.Sum(out)
	if err != nil {
		return 0, err
	}
	if _, err := G.Grad(loss, q, k, v); err != nil {
		return 0, err
	}
	m := G.NewTapeMachine(g, G.BindDualValues(q, k, v))
	defer m.Close()
	if err := m.RunAll(); err != nil {
		return 0, err
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < runs; i++ {
		m.Reset()
		if err := m.RunAll(); err != nil {
			return 0, err
		}
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(runs), nil
}

func flashCore(q, k, v, m *G.Node, s AttentionShape) (*G.Node, error) {
	return FlashAttention(q, k, v, m, s, DefaultFlashBlock)
}

// TestFlashMemoryGrowsLinearly: the bytes flash allocates per
// forward+backward at most ~double when T doubles, while the dense core's
// grow faster than linearly (T x T buffers). The acceptance figures over T =
// 1024..8192 come from BenchmarkAttentionAllocs.
func TestFlashMemoryGrowsLinearly(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation measurement")
	}
	shape := func(T int) AttentionShape {
		return AttentionShape{Batch: 1, QLen: T, KLen: T, Heads: 4, KVHeads: 4, HeadDim: 32, Causal: true}
	}
	var prevFlash, prevDense uint64
	for _, T := range []int{256, 512, 1024} {
		f, err := attentionAllocs(flashCore, shape(T), 1)
		if err != nil {
			t.Fatal(err)
		}
		d, err := attentionAllocs(Attention, shape(T), 1)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("T=%d: flash %d bytes, dense %d bytes", T, f, d)
		if prevFlash > 0 {
			if r := float64(f) / float64(prevFlash); r > 2.3 {
				t.Errorf("T=%d: flash allocations grew %.2fx when T doubled, want <= 2.3x", T, r)
			}
			if r := float64(d) / float64(prevDense); r < 2.5 {
				t.Errorf("T=%d: dense allocations grew only %.2fx when T doubled; is the measurement broken?", T, r)
			}
		}
		prevFlash, prevDense = f, d
	}
}

// attnBenchT is the sequence lengths of BenchmarkAttentionAllocs: small by
// default, so that go test -bench . ./graph stays short.
var attnBenchT = flag.String("attn-T", "256,1024", "sequence lengths of BenchmarkAttentionAllocs, comma-separated")

// BenchmarkAttentionAllocs reports, per core and T, the time and bytes of
// one forward+backward (batch 1, 4 heads of 32, causal, float32). The
// acceptance figures over T = 1024..8192:
//
//	go test -run '^$' -bench AttentionAllocs -benchtime 1x ./graph -args -attn-T 1024,2048,4096,8192
//
// (trainer bench attention measures the same per layer, with plots.)
func BenchmarkAttentionAllocs(b *testing.B) {
	var seqLens []int
	for _, f := range strings.Split(*attnBenchT, ",") {
		T, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || T < 1 {
			b.Fatalf("-attn-T %q: want positive integers, comma-separated", *attnBenchT)
		}
		seqLens = append(seqLens, T)
	}
	for _, core := range []struct {
		name string
		f    func(q, k, v, m *G.Node, s AttentionShape) (*G.Node, error)
	}{{"flash", flashCore}, {"standard", Attention}} {
		for _, T := range seqLens {
			b.Run(fmt.Sprintf("%s/T=%d", core.name, T), func(b *testing.B) {
				s := AttentionShape{Batch: 1, QLen: T, KLen: T, Heads: 4, KVHeads: 4, HeadDim: 32, Causal: true}
				bytes, err := attentionAllocs(core.f, s, b.N)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(bytes), "alloc-bytes/op")
				b.ReportMetric(float64(bytes)/float64(T), "alloc-bytes/token")
			})
		}
	}
}
