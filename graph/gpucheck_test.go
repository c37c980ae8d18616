package graph

import (
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/graph/blockmask"
)

// The GPU checks' graphs and float64 references (Gorgonia's ops and the
// package's), run on the CPU's float32 ops: every case must pass there with gpucheck's bound (1e-5 relative),
// so a wrong reference or case fails here and not on the device.
func TestGPUCasesOnTheCPU(t *testing.T) {
	rng := testRNG(t)
	for _, c := range append(GorgoniaGPUCases(), GPUCases()...) {
		t.Run(c.Name+" "+c.Shape, func(t *testing.T) {
			g := G.NewGraph()
			outs, refs, err := c.Build(g, rng)
			if err != nil {
				t.Fatal(err)
			}
			vals := make([]G.Value, len(outs))
			for i, o := range outs {
				if !IsInPlace(o) {
					G.Read(o, &vals[i])
				}
			}
			vm := G.NewTapeMachine(g)
			defer vm.Close()
			if err := vm.RunAll(); err != nil {
				t.Fatal(err)
			}
			for i, o := range outs {
				if IsInPlace(o) {
					vals[i] = o.Value()
				}
			}
			for i, v := range vals {
				got, err := GPUFloats(v)
				if err != nil {
					t.Fatalf("output %d: %v", i, err)
				}
				if e := GPURelErr(got, refs[i]); !(e <= 1e-5) {
					t.Errorf("output %d: relative error %.2e over 1e-5", i, e)
				}
			}
		})
	}
}

// Which cores have a GPU path: the dense core and the tiled core with the
// full pattern (as layers pass it: FullPattern, or none), for the head
// dims the kernels are instantiated for; a sparse pattern has none.
func TestAttentionGPUPaths(t *testing.T) {
	s := AttentionShape{Batch: 1, QLen: 40, KLen: 40, Heads: 2, KVHeads: 2, HeadDim: 32, Causal: true}
	odd := s
	odd.HeadDim = 24
	for _, c := range []struct {
		name string
		s    AttentionShape
		core func(q, k, v *G.Node, s AttentionShape) (*G.Node, *G.Node, error)
		want bool
	}{
		{"dense", s, func(q, k, v *G.Node, s AttentionShape) (*G.Node, *G.Node, error) {
			return DenseAttentionLSE(q, k, v, nil, s, nil)
		}, true},
		{"tiled, no pattern", s, func(q, k, v *G.Node, s AttentionShape) (*G.Node, *G.Node, error) {
			return TiledAttentionLSE(q, k, v, nil, s, nil)
		}, true},
		{"tiled, FullPattern", s, func(q, k, v *G.Node, s AttentionShape) (*G.Node, *G.Node, error) {
			return TiledAttentionLSE(q, k, v, nil, s, FullPattern(s, 16))
		}, true},
		{"tiled, sliding window", s, func(q, k, v *G.Node, s AttentionShape) (*G.Node, *G.Node, error) {
			return TiledAttentionLSE(q, k, v, nil, s, MaskPattern(blockmask.SlidingWindow(s.QLen, 16, 8, true)))
		}, false},
		{"dense, head dim 24", odd, func(q, k, v *G.Node, s AttentionShape) (*G.Node, *G.Node, error) {
			return DenseAttentionLSE(q, k, v, nil, s, nil)
		}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := G.NewGraph()
			cols := c.s.Heads * c.s.HeadDim
			q := inputF32(g, "q", make([]float32, 40*cols), 40, cols)
			k := inputF32(g, "k", make([]float32, 40*cols), 40, cols)
			v := inputF32(g, "v", make([]float32, 40*cols), 40, cols)
			if _, _, err := c.core(q, k, v, c.s); err != nil {
				t.Fatal(err)
			}
			got := false
			for _, n := range g.AllNodes() {
				if o, ok := n.Op().(*op); ok && strings.Contains(o.name, "Attention(") && !strings.HasPrefix(o.name, "Grad") {
					got = o.gpu != nil
				}
			}
			if got != c.want {
				t.Errorf("GPU path %t, want %t", got, c.want)
			}
		})
	}
}
