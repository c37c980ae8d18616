package graph

import (
	"fmt"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/graph/blockmask"
)

// Benchmarks of the hot ops at the shapes of the reference model
// (shared/bench/torch_ref.py: batch 8 x T 256 = 2048 rows, d_model 128, 4
// heads of 32, FFN 512, vocabulary 64), float32, each op alone in a graph
// run by a tape machine as in training; "fwd" runs the op, "fwdbwd" also
// the backward of sum(op) with respect to every input. Small enough that
//
//	go test -run '^$' -bench . ./graph
//
// takes about a minute on 2 cores; -benchtime 1x smoke-tests them. Compare
// with the whole step: trainer bench --config configs/bench/ref-t256.yaml.
const benchRows = 8 * 256

// randNode32 is a float32 node of g with N(0, 1) values.
func randNode32(g *G.ExprGraph, rng *rand.Rand, name string, shape ...int) *G.Node {
	t := tensor.New(tensor.WithShape(shape...), tensor.Of(tensor.Float32))
	for i, d := 0, t.Data().([]float32); i < len(d); i++ {
		d[i] = float32(rng.NormFloat64())
	}
	return G.NewTensor(g, tensor.Float32, len(shape), G.WithShape(shape...), G.WithName(name), G.WithValue(t))
}

// constNode32 is a float32 node of g holding vals.
func constNode32(g *G.ExprGraph, name string, vals []float32) *G.Node {
	t := tensor.New(tensor.WithShape(len(vals)), tensor.WithBacking(vals))
	return G.NewTensor(g, tensor.Float32, 1, G.WithShape(len(vals)), G.WithName(name), G.WithValue(t))
}

// benchOp times one run of the graph build makes: out's op forward, or
// with backward also the gradients of sum(out) (out itself if scalar) with
// respect to wrt. flops, if positive, is the work of one run, reported as
// GFLOP/s.
func benchOp(b *testing.B, backward bool, flops float64, build func(g *G.ExprGraph, rng *rand.Rand) (out *G.Node, wrt []*G.Node, err error)) {
	b.Helper()
	g := G.NewGraph()
	out, wrt, err := build(g, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		b.Fatal(err)
	}
	var vm G.VM
	if backward {
		loss := out
		if !out.IsScalar() {
			if loss, err = G.Sum(out); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := G.Grad(loss, wrt...); err != nil {
			b.Fatal(err)
		}
		vm = G.NewTapeMachine(g, G.BindDualValues(wrt...))
	} else {
		vm = G.NewTapeMachine(g)
	}
	defer vm.Close()
	if err := vm.RunAll(); err != nil { // warm-up
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		vm.Reset()
		if err := vm.RunAll(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if flops > 0 {
		b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	}
}

var benchPasses = []struct {
	name     string
	backward bool
}{{"fwd", false}, {"fwdbwd", true}}

// BenchmarkLinear: x W + b at the model's projections (qkv, FFN in, FFN out).
func BenchmarkLinear(b *testing.B) {
	for _, s := range []struct {
		name    string
		in, out int
	}{{"qkv", 128, 384}, {"ffn-in", 128, 512}, {"ffn-out", 512, 128}} {
		for _, p := range benchPasses {
			b.Run(fmt.Sprintf("%s-%dx%dx%d/%s", s.name, benchRows, s.in, s.out, p.name), func(b *testing.B) {
				flops := 2 * float64(benchRows*s.in*s.out)
				if p.backward {
					flops *= 3 // dx = dy W^T and dW = x^T dy
				}
				benchOp(b, p.backward, flops, func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
					x, w, bias := randNode32(g, rng, "x", benchRows, s.in), randNode32(g, rng, "w", s.in, s.out), randNode32(g, rng, "b", s.out)
					y, err := Linear(x, w, bias)
					return y, []*G.Node{x, w, bias}, err
				})
			})
		}
	}
}

// BenchmarkLayerNorm: LayerNorm over the residual stream [2048, 128].
func BenchmarkLayerNorm(b *testing.B) {
	for _, p := range benchPasses {
		b.Run(fmt.Sprintf("%dx128/%s", benchRows, p.name), func(b *testing.B) {
			benchOp(b, p.backward, 0, func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
				x, gamma, beta := randNode32(g, rng, "x", benchRows, 128), randNode32(g, rng, "gamma", 128), randNode32(g, rng, "beta", 128)
				y, err := LayerNorm(x, gamma, beta, 1e-5)
				return y, []*G.Node{x, gamma, beta}, err
			})
		})
	}
}

// BenchmarkSoftmaxCrossEntropy: the loss over [2048, 64] logits, every
// position scored.
func BenchmarkSoftmaxCrossEntropy(b *testing.B) {
	for _, p := range benchPasses {
		b.Run(fmt.Sprintf("%dx64/%s", benchRows, p.name), func(b *testing.B) {
			benchOp(b, p.backward, 0, func(g *G.ExprGraph, rng *rand.Rand) (*G.Node, []*G.Node, error) {
				logits := randNode32(g, rng, "logits", benchRows, 64)
				targets, weights := make([]float32, benchRows), make([]float32, benchRows)
				for i := range targets {
					targets[i], weights[i] = float32(rng.IntN(64)), 1
				}
				loss, err := SoftmaxCrossEntropy(logits, constNode32(g, "targets", targets), constNode32(g, "weights", weights))
				return loss, []*G.Node{logits}, err
			})
		})
	}
}

// normals32 returns a maker of float32 slices of standard normal values
// drawn from rng.
func normals32(rng *rand.Rand) func(n int) []float32 {
	return func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		return x
	}
}

// BenchmarkFlash times the flash kernels themselves, forward and backward
// separately (batch 1, 4 heads of 32, causal, float32, default tiles),
// without a graph around them.
func BenchmarkFlash(b *testing.B) {
	for _, T := range []int{256, 1024} {
		s := AttentionShape{Batch: 1, QLen: T, KLen: T, Heads: 4, KVHeads: 4, HeadDim: 32, Causal: true}
		rnd := normals32(rand.New(rand.NewPCG(1, 2)))
		nq, nk, nv := s.gradSizes()
		q, k, v := rnd(nq), rnd(nk), rnd(nv)
		nOut := s.Batch * s.QLen * s.Heads * s.VDim()
		out, lse := make([]float32, nOut), make([]float32, s.Batch*s.Heads*s.QLen)
		do, dlse := rnd(nOut), make([]float32, s.Batch*s.Heads*s.QLen)
		pat := (*Pattern)(nil).withCausal(s, DefaultFlashBlock)
		// Causal: half of the T x T scores, QK^T and PV (forward), and
		// recomputed QK^T plus four products (backward).
		pairs := float64(T) * float64(T) / 2 * float64(s.Heads)
		b.Run(fmt.Sprintf("forward/T=%d", T), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				tiledForward(s, pat, q, k, v, nil, out, lse)
			}
			b.ReportMetric(2*2*pairs*float64(s.HeadDim)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		tiledForward(s, pat, q, k, v, nil, out, lse)
		dq, dk, dv := make([]float32, nq), make([]float32, nk), make([]float32, nv)
		b.Run(fmt.Sprintf("backward/T=%d", T), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				clear(dq)
				clear(dk)
				clear(dv)
				tiledBackward(s, pat, q, k, v, nil, out, lse, do, dlse, dq, dk, dv)
			}
			b.ReportMetric(5*2*pairs*float64(s.HeadDim)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkTiledKernel times the tiled kernels alone (no graph, no
// per-call copies), forward and backward, batch 1, 4 causal heads of 32,
// float32, tiles of 64, at T = 8192, for the full pattern (flash) and
// fixed patterns, reporting ns per computed score (ScoresComputed): equal
// to flash's means the kernel pays nothing for the tiles it skips.
//
//	go test ./graph -run '^$' -bench TiledKernel -benchtime 3x
func BenchmarkTiledKernel(b *testing.B) {
	const T, block = 8192, 64
	s := AttentionShape{Batch: 1, QLen: T, KLen: T, Heads: 4, KVHeads: 4, HeadDim: 32, Causal: true}
	rnd := normals32(rand.New(rand.NewPCG(1, 2)))
	nq, nk, nv := s.gradSizes()
	q, k, v := rnd(nq), rnd(nk), rnd(nv)
	nOut := T * s.Heads * s.HeadDim
	out, lse := make([]float32, nOut), make([]float32, s.Heads*T)
	do, dl := rnd(nOut), make([]float32, s.Heads*T)
	dq, dk, dv := make([]float32, nq), make([]float32, nk), make([]float32, nv)
	segments := &Pattern{Heads: [][]Stream{{{Offset: 0, Stride: 1, Mask: blockmask.Segments(T, block, 1024)}}}}
	for _, c := range []struct {
		name string
		p    *Pattern
	}{
		{"flash", nil},
		{"sliding_window(256)", MaskPattern(blockmask.SlidingWindow(T, block, 256, false))},
		{"segments(1024)", segments},
		{"bigbird(3,3,2)", MaskPattern(blockmask.BigBird(T, block, 3, 2, blockmask.RandomBlocks(T/block, 3, 2, 3, rand.New(rand.NewPCG(1, 2)))))},
	} {
		run := c.p.withCausal(s, block)
		scores := float64(ScoresComputed(s, c.p, block))
		b.Run(c.name+"/forward", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				tiledForward(s, run, q, k, v, nil, out, lse)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/scores, "ns/score")
		})
		tiledForward(s, run, q, k, v, nil, out, lse)
		b.Run(c.name+"/backward", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				clear(dq)
				clear(dk)
				clear(dv)
				tiledBackward(s, run, q, k, v, nil, out, lse, do, dl, dq, dk, dv)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/scores, "ns/score")
		})
	}
}
