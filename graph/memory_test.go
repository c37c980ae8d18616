package graph

import (
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// GatherRows from two sources, one row taken twice and one never, passes
// the float64 gradient check, and its forward is the plain copy.
func TestGatherRowsGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	g := G.NewGraph()
	a := Variable(g, "a", RandomTensor(rng, 1, 2, 3))
	b := Variable(g, "b", RandomTensor(rng, 1, 4, 3))
	refs := []RowRef{{1, 3}, {0, 1}, {1, 0}, {0, 1}, {1, 2}}
	y, err := GatherRows(G.Nodes{a, b}, refs)
	if err != nil {
		t.Fatal(err)
	}
	res, err := GradCheck{Seed: 5, Tol: 1e-7}.Run(g, y, []*G.Node{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Pass {
		t.Fatal(res)
	}
	// The check's last run had a perturbed input: run again as it is.
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	got := Float64s(y.Value())
	src := [][]float64{Float64s(a.Value()), Float64s(b.Value())}
	for i, r := range refs {
		for c := 0; c < 3; c++ {
			if got[i*3+c] != src[r.Src][r.Row*3+c] {
				t.Fatalf("row %d col %d: %v, want %v", i, c, got[i*3+c], src[r.Src][r.Row*3+c])
			}
		}
	}
	if _, err := GatherRows(G.Nodes{a}, []RowRef{{0, 2}}); err == nil {
		t.Error("an out-of-range row was accepted")
	}
}

// StopGradient copies its input forward and passes no gradient: x's
// gradient through y = x*x + StopGradient(x)*x is 2x + sg(x) = 3x in value
// but must come out as x + x (only the unstopped uses).
func TestStopGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	g := G.NewGraph()
	x := Variable(g, "x", RandomTensor(rng, 1, 2, 3))
	s, err := StopGradient(x)
	if err != nil {
		t.Fatal(err)
	}
	y := G.Must(G.Sum(G.Must(G.HadamardProd(s, x))))
	if _, err := G.Grad(y, x); err != nil {
		t.Fatal(err)
	}
	m := G.NewTapeMachine(g, G.BindDualValues(x))
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	gv, _ := x.Grad()
	xs, sv, gs := Float64s(x.Value()), Float64s(s.Value()), Float64s(gv)
	for i := range xs {
		if sv[i] != xs[i] || gs[i] != xs[i] {
			t.Fatalf("element %d: copy %v, grad %v, want %v and %v", i, sv[i], gs[i], xs[i], xs[i])
		}
	}
}

// SlotWrite passes the float64 gradient check in every input, and a slot
// whose own score dominates keeps its content.
func TestSlotWrite(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const batch, slots, seqLen, c = 2, 3, 4, 5
	g := G.NewGraph()
	in := make([]*G.Node, 5)
	for i, name := range []string{"q", "ks", "m", "k", "v"} {
		rows := batch * slots
		if i >= 3 {
			rows = batch * seqLen
		}
		in[i] = Variable(g, name, RandomTensor(rng, 1, rows, c))
	}
	y, err := SlotWrite(in[0], in[1], in[2], in[3], in[4], batch, slots, seqLen)
	if err != nil {
		t.Fatal(err)
	}
	res, err := GradCheck{Seed: 7, Tol: 1e-6, MaxPerInput: -1}.Run(g, y, in)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Pass {
		t.Fatal(res)
	}

	// Own key = 1000 q, token keys = 0: a_i0 is 1 to machine precision.
	g2 := G.NewGraph()
	q := RandomTensor(rng, 1, slots, c)
	ks := q.Clone().(*tensor.Dense)
	for i, d := 0, ks.Data().([]float64); i < len(d); i++ {
		d[i] *= 1000
	}
	mem := RandomTensor(rng, 1, slots, c)
	n := []*G.Node{Variable(g2, "q", q), Variable(g2, "ks", ks), Variable(g2, "m", mem),
		Variable(g2, "k", tensor.New(tensor.WithShape(seqLen, c), tensor.Of(tensor.Float64))), Variable(g2, "v", RandomTensor(rng, 1, seqLen, c))}
	y2, err := SlotWrite(n[0], n[1], n[2], n[3], n[4], 1, slots, seqLen)
	if err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g2)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	got, want := Float64s(y2.Value()), mem.Data().([]float64)
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-10 {
			t.Fatalf("element %d: %v, want the slot's content %v", i, got[i], want[i])
		}
	}
}
