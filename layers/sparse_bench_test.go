package layers

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/graph"
	"github.com/attnlab/attnlab/graph/blockmask"
)

var sparseBenchT = flag.Int("sparse.T", 4096, "sequence length of BenchmarkSparseCores")

// BenchmarkSparseCores times the attention cores alone (no projections,
// no loss: the output's gradient is a random input), forward and
// backward, float32, batch 1, 4 causal heads of 32, at
// -sparse.T positions: flash first, then each fixed pattern with the
// variants' default sizes (sliding_window with window 256), reporting
// share (the scores it computes over flash's, graph.ScoresComputed) and
// x_flash_share (its time over flash's time x share: 1 = no cost beyond
// the visited tiles, the bound is 1.5). Run with -benchtime 1x:
//
//	go test ./layers -run '^$' -bench SparseCores -benchtime 3x -sparse.T 16384
func BenchmarkSparseCores(b *testing.B) {
	T, H, d := *sparseBenchT, 4, 32
	s := graph.AttentionShape{Batch: 1, QLen: T, KLen: T, Heads: H, KVHeads: H, HeadDim: d, Causal: true}
	tile := graph.DefaultFlashBlock
	nb := (T + tile - 1) / tile
	random := blockmask.RandomBlocks(nb, 3, 2, 3, rand.New(rand.NewPCG(1, 2)))
	type pair struct{ w, r int }
	cases := []struct {
		name    string
		pattern []PatternFunc // several: merged by logsumexp (dilated)
	}{
		{"flash", []PatternFunc{nil}},
		{"sliding_window(256)", []PatternFunc{SlidingWindowPattern(256, 0)}},
		{"sliding_window(0)", []PatternFunc{SlidingWindowPattern(0, 0)}},
		{"bigbird(64,3,3,2)", []PatternFunc{BigBirdPattern(3, 2, random)}},
		{"strided(32)", []PatternFunc{StridedPattern(H, false, 32, 8)}},
		{"strided(128)", []PatternFunc{StridedPattern(H, false, 128, 32)}},
		{"fixed(128,32)", []PatternFunc{StridedPattern(H, true, 128, 32)}},
		{"dilated(64:1,256:4,1024:16)", []PatternFunc{DilatedPattern(H, []int{64, 256, 1024}, []int{1, 4, 16})}},
	}
	var flashNs float64
	var flashScores int64
	for _, c := range cases {
		b.Run(fmt.Sprintf("%s/T=%d", c.name, T), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(3, 4))
			g := G.NewGraph()
			input := func(name string) *G.Node {
				t := tensor.New(tensor.WithShape(T, H*d), tensor.Of(tensor.Float32))
				for i, x := 0, t.Data().([]float32); i < len(x); i++ {
					x[i] = float32(rng.NormFloat64())
				}
				return graph.Variable(g, name, t)
			}
			q, k, v := input("q"), input("k"), input("v")
			var outs, lses []*G.Node
			var scores int64
			for _, pf := range c.pattern {
				var p *graph.Pattern
				if pf != nil {
					var err error
					if p, err = pf(T, tile); err != nil {
						b.Fatal(err)
					}
				}
				o, l, err := graph.TiledAttentionLSE(q, k, v, nil, s, p)
				if err != nil {
					b.Fatal(err)
				}
				outs, lses = append(outs, o), append(lses, l)
				scores += graph.ScoresComputed(s, p, tile)
			}
			out, err := graph.MergeAttention(outs, lses, s)
			if err != nil {
				b.Fatal(err)
			}
			// The output's gradient is an input, as a projection's
			// backward would hand it: no loss op in the timing.
			if _, err := G.Backpropagate(G.Nodes{out}, G.Nodes{input("dout")}, G.Nodes{q, k, v}); err != nil {
				b.Fatal(err)
			}
			vm := G.NewTapeMachine(g) // the gradients are computed; nothing copies them out
			defer vm.Close()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				vm.Reset()
				if err := vm.RunAll(); err != nil {
					b.Fatal(err)
				}
			}
			ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			if c.pattern[0] == nil {
				flashNs, flashScores = ns, scores
			}
			if flashScores > 0 {
				share := float64(scores) / float64(flashScores)
				b.ReportMetric(share, "share")
				b.ReportMetric(ns/(flashNs*share), "x_flash_share")
				b.ReportMetric(flashNs/ns, "speedup")
			}
		})
	}
}
