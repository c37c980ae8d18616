package graph

import (
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Gorgonia names a node by a 32-bit hash of its op, type, shape and its
// children's hashes. Unpatched, v0.9.18 merges two nodes whose hashes
// collide: the graph returns the earlier node when the op, type, shape and
// number of children agree (children not compared), and the tape compiler
// replaces any later node of the same hash by the earlier one (nothing
// compared). With tens of thousands of nodes a collision is likely: a
// 256-segment HMT graph (83,000 nodes) had one, and trained on a wrong
// program. third_party/gorgonia carries the fix.
//
// The two input names below were found by a search (2x3 float64 matrices
// named x0, x1, ...): their negations' hashes collide.
func TestHashCollisionsDoNotMergeNodes(t *testing.T) {
	g := G.NewGraph()
	a := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 3), G.WithName("x90243"))
	b := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 3), G.WithName("x108317"))
	na := G.Must(G.Neg(a))
	nb := G.Must(G.Neg(b))
	if na.Hashcode() != nb.Hashcode() {
		t.Fatalf("the test's premise is gone: -a and -b no longer share a hash (%x, %x); search for another pair", na.Hashcode(), nb.Hashcode())
	}
	if na == nb {
		t.Fatal("the graph merged -a and -b: same op and shape, other children")
	}
	out := G.Must(G.Sub(na, nb)) // b - a
	av := []float64{1, 2, 3, 4, 5, 6}
	bv := []float64{10, 20, 30, 40, 50, 60}
	if err := G.Let(a, tensor.New(tensor.WithShape(2, 3), tensor.WithBacking(av))); err != nil {
		t.Fatal(err)
	}
	if err := G.Let(b, tensor.New(tensor.WithShape(2, 3), tensor.WithBacking(bv))); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	got := out.Value().Data().([]float64)
	for i := range got {
		if want := bv[i] - av[i]; got[i] != want {
			t.Fatalf("(-a) - (-b) [%d] = %v, want %v: the compiled program read one node for the other", i, got[i], want)
		}
	}
}
