package graph

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestSumAll: SumAll's value and gradient equal Gorgonia's Sum's, and its
// gradient passes the finite-difference check, for matrices and 3-d
// tensors.
func TestSumAll(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	for _, shape := range [][]int{{5, 7}, {2, 3, 4}} {
		t.Run(fmt.Sprint(shape), func(t *testing.T) {
			xt := RandomTensor(rng, 1, shape...)
			g := G.NewGraph()
			x := Variable(g, "x", xt.Clone().(*tensor.Dense))
			out, err := SumAll(x)
			if err != nil {
				t.Fatal(err)
			}
			res, err := GradCheck{Seed: 5}.Run(g, out, []*G.Node{x})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Pass {
				t.Error(res)
			}
			// against G.Sum, through 3 * sum so that the upstream gradient is not 1
			sums := make([]float64, 2)
			grads := make([][]float64, 2)
			for i, sum := range []func(*G.Node) (*G.Node, error){SumAll, func(n *G.Node) (*G.Node, error) { return G.Sum(n) }} {
				g := G.NewGraph()
				xi := Variable(g, "x", xt.Clone().(*tensor.Dense))
				s, err := sum(xi)
				if err != nil {
					t.Fatal(err)
				}
				l := G.Must(G.Mul(s, G.NewConstant(3.0)))
				if _, err := G.Grad(l, xi); err != nil {
					t.Fatal(err)
				}
				vm := G.NewTapeMachine(g, G.BindDualValues(xi))
				if err := vm.RunAll(); err != nil {
					t.Fatal(err)
				}
				sums[i] = s.Value().Data().(float64)
				gv, _ := xi.Grad()
				grads[i] = append([]float64(nil), gv.Data().([]float64)...)
				vm.Close()
			}
			if math.Abs(sums[0]-sums[1]) > 1e-12 {
				t.Errorf("sum %v, Gorgonia's %v", sums[0], sums[1])
			}
			for j := range grads[0] {
				if grads[0][j] != 3 || grads[1][j] != 3 {
					t.Fatalf("gradient %d: %v, Gorgonia's %v, want 3", j, grads[0][j], grads[1][j])
				}
			}
		})
	}
}
