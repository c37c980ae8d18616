package layers

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// causalLayerOutput runs one causal layer of variant kind (its
// CheckOptions) on x [batch*T, d] with parameters from store.
func causalLayerOutput(t *testing.T, kind string, store *graph.Store, pos string, batch, T, d, heads int, x []float64) []float64 {
	t.Helper()
	sup, err := SupportOf(kind)
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAttention(config.Component{Kind: kind, Options: sup.CheckOptions},
		Spec{DModel: d, Heads: heads, NLayers: 1, Causal: true, Pos: CheckSetting{Positional: pos}.Position()})
	if err != nil {
		t.Fatal(err)
	}
	g := G.NewGraph()
	xn := graph.Variable(g, "x", tensor.New(tensor.WithShape(batch*T, d), tensor.WithBacking(append([]float64(nil), x...))))
	out, err := a.Forward(NewScope(store.Bind(g)).Sub("attn"), xn, Context{Shape: Shape{Batch: batch, SeqLen: T, DModel: d}, Causal: true, Tile: 4})
	if err != nil {
		t.Fatal(err)
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	return append([]float64(nil), graph.Float64s(out.Value())...)
}

// TestCausalVariantsAreCausal: every variant that declares causal support
// is causal through its whole layer: replacing the input at positions > p
// changes no output at positions <= p (beyond rounding, 1e-12 of the
// output's scale), for every p, over several tiles (Tile 4, T 14);
// changing position p itself changes the output at p, or the test could
// not see a leak.
func TestCausalVariantsAreCausal(t *testing.T) {
	const batch, T, d, heads = 2, 14, 8, 2
	for _, v := range Variants() {
		sup, err := SupportOf(v.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !sup.Causal {
			continue
		}
		t.Run(v.Name, func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, 11))
			pos := "none"
			if (Position{Kind: pos}).Allow(v.Name, "", sup.Positions...) != nil {
				pos = sup.Positions[0]
			}
			store, err := graph.NewStore(tensor.Float64, seed)
			if err != nil {
				t.Fatal(err)
			}
			x := graph.Float64s(graph.RandomTensor(rng, 1, batch*T, d))
			base := causalLayerOutput(t, v.Name, store, pos, batch, T, d, heads, x)
			scale := 0.0
			for _, o := range base {
				scale = max(scale, math.Abs(o))
			}
			for p := 0; p < T-1; p++ {
				y := append([]float64(nil), x...)
				for b := 0; b < batch; b++ {
					for i := p + 1; i < T; i++ {
						for c := 0; c < d; c++ {
							y[(b*T+i)*d+c] = 2*rng.Float64() - 1
						}
					}
				}
				got := causalLayerOutput(t, v.Name, store, pos, batch, T, d, heads, y)
				for b := 0; b < batch; b++ {
					for i := 0; i <= p; i++ {
						for c := 0; c < d; c++ {
							if r := (b*T+i)*d + c; math.Abs(got[r]-base[r]) > 1e-12*scale {
								t.Fatalf("changing positions > %d changed the output at %d (sequence %d) by %g", p, i, b, got[r]-base[r])
							}
						}
					}
				}
			}
			y := append([]float64(nil), x...)
			for c := 0; c < d; c++ {
				y[3*d+c] += 0.5
			}
			got := causalLayerOutput(t, v.Name, store, pos, batch, T, d, heads, y)
			diff := 0.0
			for c := 0; c < d; c++ {
				diff += math.Abs(got[3*d+c] - base[3*d+c])
			}
			if diff == 0 {
				t.Error("changing position 3 left its output unchanged: the comparison cannot see a leak")
			}
		})
	}
}
