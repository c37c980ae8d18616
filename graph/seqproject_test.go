package graph

import (
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// SeqProject against its definition, and its gradients by finite
// differences, with and without a key mask.
func TestSeqProject(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 9))
	const B, T, K, D = 2, 5, 3, 4
	for _, masked := range []bool{false, true} {
		g := G.NewGraph()
		e := Variable(g, "e", RandomTensor(rng, 1, K, T))
		x := Variable(g, "x", RandomTensor(rng, 1, B*T, D))
		var m *G.Node
		mask := []float64{1, 1, 0, 1, 0, 1, 0, 1, 1, 1}
		if masked {
			m = Variable(g, "m", tensor.New(tensor.WithShape(B*T), tensor.WithBacking(mask)))
		}
		y, err := SeqProject(e, x, m, B, T)
		if err != nil {
			t.Fatal(err)
		}
		vm := G.NewTapeMachine(g)
		if err := vm.RunAll(); err != nil {
			t.Fatal(err)
		}
		ev, xv, yv := Float64s(e.Value()), Float64s(x.Value()), Float64s(y.Value())
		for b := 0; b < B; b++ {
			for i := 0; i < K; i++ {
				for c := 0; c < D; c++ {
					want := 0.0
					for p := 0; p < T; p++ {
						if !masked || mask[b*T+p] != 0 {
							want += ev[i*T+p] * xv[(b*T+p)*D+c]
						}
					}
					if got := yv[(b*K+i)*D+c]; got-want > 1e-12 || want-got > 1e-12 {
						t.Fatalf("masked %v: y[%d,%d,%d] = %g, want %g", masked, b, i, c, got, want)
					}
				}
			}
		}
		vm.Close()
		res, err := GradCheck{MaxPerInput: -1}.Run(g, y, []*G.Node{e, x})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Pass {
			t.Errorf("masked %v: %s", masked, res)
		}
	}
}
