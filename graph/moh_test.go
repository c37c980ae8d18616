package graph

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// routerLogits returns MoH router logits [n, MoHRouterWidth(heads, shared)]
// uniform in +-3, redrawing rows until every two routed logits are at least
// 0.05 apart, so that no finite-difference step changes the top-k choice.
func routerLogits(rng *rand.Rand, n, heads, shared int) *tensor.Dense {
	w := MoHRouterWidth(heads, shared)
	t := RandomTensor(rng, 3, n, w)
	d := t.Data().([]float64)
	for r := 0; r < n; r++ {
		row := d[r*w : (r+1)*w]
		for !spread(row[shared:heads], 0.05) {
			for i := range row {
				row[i] = 3 * (2*rng.Float64() - 1)
			}
		}
	}
	return t
}

func spread(z []float64, gap float64) bool {
	for i := range z {
		for j := range i {
			if math.Abs(z[i]-z[j]) < gap {
				return false
			}
		}
	}
	return true
}

// mohSettings are the routing configurations the MoH ops are checked in:
// no shared heads, some, all; top-k below, at and (trivially) at one routed
// head; softmax and none gates.
func mohSettings() []mohRouting {
	return []mohRouting{
		{heads: 4, shared: 0, topK: 2, softmax: true},
		{heads: 4, shared: 0, topK: 4, softmax: true},
		{heads: 4, shared: 1, topK: 2, softmax: true},
		{heads: 5, shared: 2, topK: 1, softmax: true},
		{heads: 2, shared: 1, topK: 1, softmax: true},
		{heads: 3, shared: 3, topK: 0, softmax: true},
		{heads: 1, shared: 0, topK: 1, softmax: true},
		{heads: 4, shared: 1, topK: 2, softmax: false},
	}
}

func TestMoHGradients(t *testing.T) {
	rng := testRNG(t)
	for _, m := range mohSettings() {
		t.Run("Gates/"+m.String(), func(t *testing.T) {
			g := G.NewGraph()
			z := Variable(g, "z", routerLogits(rng, 6, m.heads, m.shared))
			out, err := MoHGates(z, m.heads, m.shared, m.topK, m.softmax)
			if err != nil {
				t.Fatal(err)
			}
			res, err := GradCheck{MaxPerInput: -1}.Run(g, out, []*G.Node{z})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Pass {
				t.Errorf("gradient check failed: %v", res)
			}
		})
		t.Run("ScaledHeads/"+m.String(), func(t *testing.T) {
			g := G.NewGraph()
			z := Variable(g, "z", routerLogits(rng, 6, m.heads, m.shared))
			o := Variable(g, "o", RandomTensor(rng, 1, 6, m.heads*3))
			gates, err := MoHGates(z, m.heads, m.shared, m.topK, m.softmax)
			if err != nil {
				t.Fatal(err)
			}
			out, err := ScaleHeads(o, gates)
			if err != nil {
				t.Fatal(err)
			}
			res, err := GradCheck{MaxPerInput: -1}.Run(g, out, []*G.Node{o, z})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Pass {
				t.Errorf("gradient check failed: %v", res)
			}
		})
	}
	t.Run("ScaleHeads", func(t *testing.T) {
		g := G.NewGraph()
		o, gt := Variable(g, "o", RandomTensor(rng, 1, 5, 3*4)), Variable(g, "g", RandomTensor(rng, 1, 5, 3))
		out, err := ScaleHeads(o, gt)
		if err != nil {
			t.Fatal(err)
		}
		res, err := GradCheck{MaxPerInput: -1}.Run(g, out, []*G.Node{o, gt})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Pass {
			t.Errorf("gradient check failed: %v", res)
		}
	})
}

// The none gate's router gets exactly zero gradient.
func TestMoHGatesNoneHasNoGradient(t *testing.T) {
	rng := testRNG(t)
	g := G.NewGraph()
	z := Variable(g, "z", routerLogits(rng, 6, 4, 1))
	o := Variable(g, "o", RandomTensor(rng, 1, 6, 4*2))
	gates, err := MoHGates(z, 4, 1, 2, false)
	if err != nil {
		t.Fatal(err)
	}
	out, err := ScaleHeads(o, gates)
	if err != nil {
		t.Fatal(err)
	}
	loss, err := G.Sum(out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := G.Grad(loss, z); err != nil {
		t.Fatal(err)
	}
	m := G.NewTapeMachine(g, G.BindDualValues(z))
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	dz, err := z.Grad()
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range Float64s(dz) {
		if x != 0 {
			t.Fatalf("dz[%d] = %g, want 0", i, x)
		}
	}
}

// runMoH evaluates ScaleHeads(o, MoHGates(z)) and the gradients of
// sum(out * r) with respect to o and z in dtype dt.
func runMoH(t *testing.T, dt tensor.Dtype, m mohRouting, zt, ot, rt *tensor.Dense) (out, do, dz []float64) {
	t.Helper()
	conv := func(src *tensor.Dense) *tensor.Dense {
		if dt == tensor.Float64 {
			return src.Clone().(*tensor.Dense)
		}
		d := src.Data().([]float64)
		f := make([]float32, len(d))
		for i, x := range d {
			f[i] = float32(x)
		}
		return tensor.New(tensor.WithShape(src.Shape().Clone()...), tensor.WithBacking(f))
	}
	g := G.NewGraph()
	z, o, r := Variable(g, "z", conv(zt)), Variable(g, "o", conv(ot)), Variable(g, "r", conv(rt))
	gates, err := MoHGates(z, m.heads, m.shared, m.topK, m.softmax)
	if err != nil {
		t.Fatal(err)
	}
	y, err := ScaleHeads(o, gates)
	if err != nil {
		t.Fatal(err)
	}
	prod, err := G.HadamardProd(y, r)
	if err != nil {
		t.Fatal(err)
	}
	loss, err := G.Sum(prod)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := G.Grad(loss, o, z); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g, G.BindDualValues(o, z))
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	gov, err := o.Grad()
	if err != nil {
		t.Fatal(err)
	}
	gzv, err := z.Grad()
	if err != nil {
		t.Fatal(err)
	}
	return Float64s(y.Value()), Float64s(gov), Float64s(gzv)
}

// The float32 path computes what the float64 path does, to float32
// resolution.
func TestMoHFloat32(t *testing.T) {
	rng := testRNG(t)
	for _, m := range mohSettings() {
		t.Run(m.String(), func(t *testing.T) {
			zt := routerLogits(rng, 7, m.heads, m.shared)
			ot, rt := RandomTensor(rng, 1, 7, m.heads*4), RandomTensor(rng, 1, 7, m.heads*4)
			o64, do64, dz64 := runMoH(t, tensor.Float64, m, zt, ot, rt)
			o32, do32, dz32 := runMoH(t, tensor.Float32, m, zt, ot, rt)
			for _, c := range []struct {
				name     string
				got, ref []float64
			}{{"output", o32, o64}, {"do", do32, do64}, {"dz", dz32, dz64}} {
				for i := range c.ref {
					if d := math.Abs(c.got[i] - c.ref[i]); d > 1e-5*math.Max(1, math.Abs(c.ref[i])) {
						t.Fatalf("%s[%d]: float32 %g, float64 %g", c.name, i, c.got[i], c.ref[i])
					}
				}
			}
		})
	}
}

// Ties among routed heads go to the lower index.
func TestMoHGatesTies(t *testing.T) {
	g := G.NewGraph()
	// 4 heads, 1 shared: routed logits (2, 2, 2) and (0, 1, 1), top 2.
	zt := tensor.New(tensor.WithShape(2, 6), tensor.WithBacking([]float64{
		0, 2, 2, 2, 0, 0,
		0, 0, 1, 1, 0, 0,
	}))
	z := Variable(g, "z", zt)
	out, err := MoHGates(z, 4, 1, 2, false)
	if err != nil {
		t.Fatal(err)
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	got := Float64s(out.Value())
	want := []float64{1, 1, 1, 0, 1, 0, 1, 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("gates %v, want %v", got, want)
	}
}

func TestMoHGatesErrors(t *testing.T) {
	for _, c := range []struct {
		heads, shared, topK, width int
	}{
		{0, 0, 1, 0},  // no heads
		{4, 5, 1, 4},  // more shared heads than heads
		{4, -1, 1, 4}, // negative shared
		{4, 1, 0, 6},  // top-k below 1
		{4, 1, 4, 6},  // top-k above the 3 routed heads
		{4, 1, 2, 4},  // balance logits missing
		{4, 0, 2, 6},  // balance logits where there are none
	} {
		g := G.NewGraph()
		z := Variable(g, "z", tensor.New(tensor.WithShape(3, max(c.width, 1)), tensor.Of(tensor.Float64)))
		if _, err := MoHGates(z, c.heads, c.shared, c.topK, true); err == nil {
			t.Errorf("heads %d shared %d top-k %d width %d: no error", c.heads, c.shared, c.topK, c.width)
		}
	}
	g := G.NewGraph()
	o, gt := Variable(g, "o", RandomTensor(rand.New(rand.NewPCG(1, 2)), 1, 3, 7)), Variable(g, "g", RandomTensor(rand.New(rand.NewPCG(1, 2)), 1, 3, 2))
	if _, err := ScaleHeads(o, gt); err == nil {
		t.Error("ScaleHeads: 7 columns in 2 heads: no error")
	}
}

// TestMoHGatesEqualLogits pins the gate scale layers/moh.go documents: at
// equal router logits (about where a router starts) each shared gate is
// alpha1/S and each selected routed gate alpha2/R, with alpha1 = alpha2 =
// 1/2 when there are both kinds, so the gates sum to 1/2 + K/(2R) (not
// renormalized over the top K nor scaled by K, S and 2 as the official code
// does, which would give S + K).
func TestMoHGatesEqualLogits(t *testing.T) {
	for _, c := range []struct {
		heads, shared, topK int
		sum                 float64
	}{
		{4, 1, 1, 1.0/2 + 1.0/6}, // the defaults with 4 heads: 2/3, a third of the official 2
		{4, 1, 2, 1.0/2 + 2.0/6},
		{6, 2, 2, 1.0/2 + 2.0/8},
		{4, 0, 2, 2.0 / 4},
		{3, 3, 0, 1},
	} {
		w := MoHRouterWidth(c.heads, c.shared)
		g := G.NewGraph()
		z := Variable(g, "z", tensor.New(tensor.WithShape(1, w), tensor.Of(tensor.Float64)))
		gates, err := MoHGates(z, c.heads, c.shared, c.topK, true)
		if err != nil {
			t.Fatal(err)
		}
		var sum float64
		for _, x := range runForward(t, g, gates) {
			sum += x
		}
		if math.Abs(sum-c.sum) > 1e-12 {
			t.Errorf("%d heads, %d shared, top %d: gates sum to %g at equal logits, want %g", c.heads, c.shared, c.topK, sum, c.sum)
		}
	}
}
