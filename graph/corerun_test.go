package graph

import (
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// coreRun is what a content-based core op gives for one set of inputs:
// its output, logsumexp and map, and the q, k and v gradients of the
// loss sum(out * r) + sum(lse * rl).
type coreRun struct {
	out, lse, weights, dq, dk, dv []float64
}

// coreOps builds a core and its map over the graph's q, k, v and key mask
// (nil: none), as TopKAttentionLSE and TopKWeights do.
type coreOps struct {
	attend  func(q, k, v, mask *G.Node) (out, lse *G.Node, err error)
	weights func(q, k, mask *G.Node) (*G.Node, error)
}

// runMappedCore runs ops on copies of the inputs with loss sum(out * r) +
// sum(lse * rl) (rlt nil: no lse term) and returns the values and the
// gradients of q, k and v; the reference tests of topk, routing and
// histogram compare it with their slow references.
func runMappedCore(t *testing.T, ops coreOps, qt, kt, vt, mt, rt, rlt *tensor.Dense) coreRun {
	t.Helper()
	g := G.NewGraph()
	q, k, v := Variable(g, "q", qt.Clone().(*tensor.Dense)), Variable(g, "k", kt.Clone().(*tensor.Dense)), Variable(g, "v", vt.Clone().(*tensor.Dense))
	var m *G.Node
	if mt != nil {
		m = Variable(g, "mask", mt.Clone().(*tensor.Dense))
	}
	out, lse, err := ops.attend(q, k, v, m)
	if err != nil {
		t.Fatal(err)
	}
	w, err := ops.weights(q, k, m)
	if err != nil {
		t.Fatal(err)
	}
	prod, err := G.HadamardProd(out, Variable(g, "r", rt.Clone().(*tensor.Dense)))
	if err != nil {
		t.Fatal(err)
	}
	loss, err := G.Sum(prod)
	if err != nil {
		t.Fatal(err)
	}
	if rlt != nil {
		lp, err := G.HadamardProd(lse, Variable(g, "rl", rlt.Clone().(*tensor.Dense)))
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
	if _, err := G.Grad(loss, q, k, v); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g, G.BindDualValues(q, k, v))
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	val := func(n *G.Node) []float64 { return append([]float64(nil), Float64s(n.Value())...) }
	grad := func(n *G.Node) []float64 {
		gv, err := n.Grad()
		if err != nil {
			t.Fatal(err)
		}
		return append([]float64(nil), Float64s(gv)...)
	}
	return coreRun{out: val(out), lse: val(lse), weights: val(w), dq: grad(q), dk: grad(k), dv: grad(v)}
}

// gradCheckCore finite-difference checks the q, k and v gradients of a
// core's output and, separately, of its logsumexp, on copies of the
// inputs (mt nil: no key mask).
func gradCheckCore(t *testing.T, attend func(q, k, v, mask *G.Node) (out, lse *G.Node, err error), qt, kt, vt, mt *tensor.Dense) {
	t.Helper()
	for _, lse := range []bool{false, true} {
		g := G.NewGraph()
		q, k, v := Variable(g, "q", qt.Clone().(*tensor.Dense)), Variable(g, "k", kt.Clone().(*tensor.Dense)), Variable(g, "v", vt.Clone().(*tensor.Dense))
		var m *G.Node
		if mt != nil {
			m = Variable(g, "mask", mt.Clone().(*tensor.Dense))
		}
		out, l, err := attend(q, k, v, m)
		if err != nil {
			t.Fatal(err)
		}
		if lse {
			out = l
		}
		res, err := GradCheck{}.Run(g, out, []*G.Node{q, k, v})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Pass {
			t.Errorf("lse %v: %s", lse, res)
		}
	}
}

// toFloat32 is a float32 copy of x.
// runWeightedSum differentiates loss = sum(out * r) with respect to wrt
// and runs the graph once: the tests' usual way to send a random upstream
// gradient r into an op. The caller closes the returned machine.
func runWeightedSum(t *testing.T, g *G.ExprGraph, out, r *G.Node, wrt ...*G.Node) G.VM {
	t.Helper()
	prod, err := G.HadamardProd(out, r)
	if err != nil {
		t.Fatal(err)
	}
	loss, err := G.Sum(prod)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := G.Grad(loss, wrt...); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g, G.BindDualValues(wrt...))
	if err := vm.RunAll(); err != nil {
		vm.Close()
		t.Fatal(err)
	}
	return vm
}

func toFloat32(x *tensor.Dense) *tensor.Dense {
	d := Float64s(x)
	out := make([]float32, len(d))
	for i, v := range d {
		out[i] = float32(v)
	}
	return tensor.New(tensor.WithShape(x.Shape().Clone()...), tensor.WithBacking(out))
}

// checkFloat32Core runs a core in float32 on the inputs (no key mask)
// with loss sum(out * r) and fails where its output or q, k, v gradients
// differ from the float64 reference want by more than 1e-4.
func checkFloat32Core(t *testing.T, what string, attend func(q, k, v *G.Node) (*G.Node, error), qt, kt, vt, rt *tensor.Dense, want coreRun) {
	t.Helper()
	g := G.NewGraph()
	q, k, v := Variable(g, "q", toFloat32(qt)), Variable(g, "k", toFloat32(kt)), Variable(g, "v", toFloat32(vt))
	out, err := attend(q, k, v)
	if err != nil {
		t.Fatal(err)
	}
	vm := runWeightedSum(t, g, out, Variable(g, "r", toFloat32(rt)), q, k, v)
	defer vm.Close()
	for _, x := range []struct {
		name string
		n    *G.Node
		want []float64
		grad bool
	}{{"output", out, want.out, false}, {"dq", q, want.dq, true}, {"dk", k, want.dk, true}, {"dv", v, want.dv, true}} {
		val := x.n.Value()
		if x.grad {
			if val, err = x.n.Grad(); err != nil {
				t.Fatal(err)
			}
		}
		if d := maxAbsDiff(Float64s(val), x.want); !(d <= 1e-4) {
			t.Errorf("%s%s differs from the reference by %g", what, x.name, d)
		}
	}
}
