package layers

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// nPerformer is a Performer layer's reference, by loops over float64
// slices from the equations of the variant's doc comment: q, k, v = x Wq,
// x Wk, x Wv (+ biases); per sequence and head phi from its definition
// (no stabilizer: it cancels), a_ij = phi(q_i) . phi(k_j) over the
// visible unpadded keys (j <= i when causal), out_i = sum_j a_ij v_j /
// (sum_j a_ij + eps) (eps = graph.LinearEps for relu, 0 for softmax, a
// row with sum 0 giving 0), y = out Wo + bo. It returns y and the
// gradients of sum(y * R) with respect to x and every parameter, derived
// pair by pair: with dO = R Wo^T, u_i = dO_i / den_i and g_i = -(dO_i .
// out_i) / den_i, each visible pair has G_ij = u_i . v_j + g_i, so dv_j
// += a_ij u_i, dphi(q_i) += G_ij phi(k_j), dphi(k_j) += G_ij phi(q_i);
// then through phi (softmax: d log phi_f / dx' = w_f - x'; relu:
// [w_f . x' > 0] w_f / sqrt(m); dx'/dx = 1 / d^(1/4)) and the
// projections.
type nPerformer struct {
	batch, seqLen, dModel, heads, m int
	causal                          bool
	relu                            bool
	mask                            []float64 // [batch*seqLen] or nil
	w                               []float64 // [m, d]
}

// phi is the feature map of one head row x (d values) and, for the
// gradient, the Jacobian-vector product taking dphi (m values) to dx.
func (r nPerformer) phi(x []float64) (f []float64, back func(dphi []float64) []float64) {
	d := len(x)
	sc := 1 / math.Pow(float64(d), 0.25)
	xs := make([]float64, d)
	var sq float64
	for c := range x {
		xs[c] = x[c] * sc
		sq += xs[c] * xs[c]
	}
	f = make([]float64, r.m)
	proj := make([]float64, r.m)
	for i := range f {
		for c := 0; c < d; c++ {
			proj[i] += r.w[i*d+c] * xs[c]
		}
		if r.relu {
			f[i] = math.Max(proj[i], 0) / math.Sqrt(float64(r.m))
		} else {
			f[i] = math.Exp(proj[i]-sq/2) / math.Sqrt(float64(r.m))
		}
	}
	back = func(dphi []float64) []float64 {
		dx := make([]float64, d)
		for i := range f {
			for c := 0; c < d; c++ {
				if r.relu {
					if proj[i] > 0 {
						dx[c] += dphi[i] * r.w[i*d+c] / math.Sqrt(float64(r.m)) * sc
					}
				} else {
					dx[c] += dphi[i] * f[i] * (r.w[i*d+c] - xs[c]) * sc
				}
			}
		}
		return dx
	}
	return f, back
}

// run computes y and the gradients for input x, parameters p and output
// weights R.
func (r nPerformer) run(p params, x, R []float64) (y, dx []float64, dp map[string][]float64) {
	D, H, T := r.dModel, r.heads, r.seqLen
	d := D / H
	q, k, v := p.lin(x, D, "wq", D), p.lin(x, D, "wk", D), p.lin(x, D, "wv", D)
	out := make([]float64, len(v))
	dO := mulBT(R, p["wo"], D, D) // R Wo^T
	dq, dk, dv := make([]float64, len(q)), make([]float64, len(k)), make([]float64, len(v))
	eps := 0.0
	if r.relu {
		eps = graph.LinearEps
	}
	for b := 0; b < r.batch; b++ {
		for h := 0; h < H; h++ {
			at := func(z []float64, i int) []float64 { return z[(b*T+i)*D+h*d : (b*T+i)*D+(h+1)*d] }
			sees := func(i, j int) bool { return (r.mask == nil || r.mask[b*T+j] != 0) && (!r.causal || j <= i) }
			fq, fk := make([][]float64, T), make([][]float64, T)
			bq, bk := make([]func([]float64) []float64, T), make([]func([]float64) []float64, T)
			for i := 0; i < T; i++ {
				fq[i], bq[i] = r.phi(at(q, i))
				fk[i], bk[i] = r.phi(at(k, i))
			}
			a := func(i, j int) float64 {
				var s float64
				for f := range fq[i] {
					s += fq[i][f] * fk[j][f]
				}
				return s
			}
			den := make([]float64, T)
			for i := 0; i < T; i++ {
				den[i] = eps
				o := at(out, i)
				for j := 0; j < T; j++ {
					if sees(i, j) {
						den[i] += a(i, j)
						for c, vj := range at(v, j) {
							o[c] += a(i, j) * vj
						}
					}
				}
				inv := 1 / den[i]
				if den[i] == 0 {
					inv = 0
				}
				for c := range o {
					o[c] *= inv
				}
				den[i] = 1 / inv // +Inf for a row that sees nothing: no gradient
			}
			dfq, dfk := make([][]float64, T), make([][]float64, T)
			for i := range dfq {
				dfq[i], dfk[i] = make([]float64, r.m), make([]float64, r.m)
			}
			for i := 0; i < T; i++ {
				doi, oi := at(dO, i), at(out, i)
				g := 0.0
				for c := range doi {
					g -= doi[c] * oi[c] / den[i]
				}
				for j := 0; j < T; j++ {
					if !sees(i, j) {
						continue
					}
					G := g
					for c, vj := range at(v, j) {
						G += doi[c] / den[i] * vj
						at(dv, j)[c] += a(i, j) * doi[c] / den[i]
					}
					for f := 0; f < r.m; f++ {
						dfq[i][f] += G * fk[j][f]
						dfk[j][f] += G * fq[i][f]
					}
				}
			}
			for i := 0; i < T; i++ {
				copy(at(dq, i), bq[i](dfq[i]))
				copy(at(dk, i), bk[i](dfk[i]))
			}
		}
	}
	y = p.lin(out, D, "wo", D)
	dp = map[string][]float64{"wo": mulAT(out, R, D, D), "wo_b": colSums(R, D)}
	dx = make([]float64, len(x))
	for _, pr := range []struct {
		name string
		g    []float64
	}{{"wq", dq}, {"wk", dk}, {"wv", dv}} {
		dp[pr.name] = mulAT(x, pr.g, D, D)
		dp[pr.name+"_b"] = colSums(pr.g, D)
		for i, z := range mulBT(pr.g, p[pr.name], D, D) {
			dx[i] += z
		}
	}
	return y, dx, dp
}

// mulBT is A B^T for A [n, out] and a weight B [in, out]: [n, in] (a
// gradient back through the projection B).
func mulBT(a, b []float64, in, out int) []float64 {
	n := len(a) / out
	c := make([]float64, n*in)
	for i := 0; i < n; i++ {
		for j := 0; j < in; j++ {
			for l := 0; l < out; l++ {
				c[i*in+j] += a[i*out+l] * b[j*out+l]
			}
		}
	}
	return c
}

// mulAT is A^T B for A [n, in], B [n, out]: [in, out].
func mulAT(a, b []float64, in, out int) []float64 {
	n := len(a) / in
	c := make([]float64, in*out)
	for r := 0; r < n; r++ {
		for i := 0; i < in; i++ {
			for j := 0; j < out; j++ {
				c[i*out+j] += a[r*in+i] * b[r*out+j]
			}
		}
	}
	return c
}

func colSums(a []float64, cols int) []float64 {
	s := make([]float64, cols)
	for i, x := range a {
		s[i%cols] += x
	}
	return s
}

// performerRun builds a performer layer of options opts in float64 in
// setting st (key mask mask, nil for none), with every parameter uniform
// in +-0.5 from (seed, its name), on x; it runs forward and backward of
// sum(out * R) and returns the output, the gradients of x and of each
// parameter (by name without "attn."), the parameters, and the layer's
// feature draw w as the graph holds it.
func performerRun(t *testing.T, opts map[string]any, st CheckSetting, seed uint64, x, mask, R []float64) (out, dx []float64, dp map[string][]float64, p params, w []float64) {
	t.Helper()
	store, err := graph.NewStore(tensor.Float64, seed)
	if err != nil {
		t.Fatal(err)
	}
	g := G.NewGraph()
	b := store.Bind(g)
	sh := Shape{Batch: st.Batch, SeqLen: st.SeqLen, DModel: st.DModel}
	xn := graph.Variable(g, "x", tensor.New(tensor.WithShape(sh.Rows(), sh.DModel), tensor.WithBacking(append([]float64(nil), x...))))
	steps := &StepInputs{}
	ctx := Context{Shape: sh, Causal: st.Causal, Steps: steps}
	if mask != nil {
		st.Padded = true
		ctx.KeyMask = b.Input("key_mask", sh.Rows())
		if err := graph.SetValues(ctx.KeyMask, mask); err != nil {
			t.Fatal(err)
		}
	}
	a, err := NewAttention(config.Component{Kind: "performer", Options: opts}, st.spec())
	if err != nil {
		t.Fatal(err)
	}
	y, err := a.Forward(NewScope(b).Sub("attn"), xn, ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(steps.Inputs()); n != 1 {
		t.Fatalf("the layer added %d step inputs, want 1 (its features)", n)
	}
	w = graph.Float64s(steps.Inputs()[0].Node.Value())
	p = params{}
	for _, prm := range store.Params() {
		h := fnv.New64a()
		h.Write([]byte(prm.Name))
		prng := rand.New(rand.NewPCG(seed, h.Sum64()))
		d := prm.Value.Data().([]float64)
		for i := range d {
			d[i] = prng.Float64() - 0.5
		}
		p[strings.TrimPrefix(prm.Name, "attn.")] = append([]float64(nil), d...)
	}
	prod, err := G.HadamardProd(y, graph.Variable(g, "r", tensor.New(tensor.WithShape(sh.Rows(), sh.DModel), tensor.WithBacking(append([]float64(nil), R...)))))
	if err != nil {
		t.Fatal(err)
	}
	loss, err := G.Sum(prod)
	if err != nil {
		t.Fatal(err)
	}
	wrt := append([]*G.Node{xn}, b.Nodes()...)
	if _, err := G.Grad(loss, wrt...); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g, G.BindDualValues(wrt...))
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	grad := func(n *G.Node) []float64 {
		gv, err := n.Grad()
		if err != nil {
			t.Fatal(err)
		}
		return graph.Float64s(gv)
	}
	dp = map[string][]float64{}
	for _, n := range b.Nodes() {
		dp[strings.TrimPrefix(n.Name(), "attn.")] = grad(n)
	}
	return graph.Float64s(y.Value()), grad(xn), dp, p, w
}

// TestPerformerMatchesQuadraticForm: with the draw it holds fixed, a
// performer layer computes its quadratic-form reference (nPerformer): the
// output and the gradients of the input and of every parameter to 1e-10
// (relDiff) in float64 on random inputs (a fresh seed per case from a
// fixed one, logged); both kernels, causal and
// bidirectional, padded (refMask: holes and a padded tail) and not, T = 7
// over chunks of 3 (a ragged last chunk), m = 5 over heads of 4 dims (an
// orthogonal block and a truncated one), orthogonal and i.i.d. draws.
func TestPerformerMatchesQuadraticForm(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	for _, kernel := range []string{graph.KernelSoftmax, graph.KernelReLU} {
		for _, causal := range []bool{true, false} {
			for _, padded := range []bool{false, true} {
				for _, orth := range []bool{true, false} {
					name := fmt.Sprintf("%s/causal=%v/padded=%v/orthogonal=%v", kernel, causal, padded, orth)
					t.Run(name, func(t *testing.T) {
						seed := rng.Uint64()
						t.Logf("seed %d", seed)
						in := rand.New(rand.NewPCG(seed, 1))
						st := CheckSetting{Causal: causal, Batch: 2, SeqLen: 7, DModel: 8, Heads: 2}
						n := st.Batch * st.SeqLen * st.DModel
						x := graph.Float64s(graph.RandomTensor(in, 1, n))
						R := graph.Float64s(graph.RandomTensor(in, 1, n))
						var mask []float64
						if padded {
							mask = refMask(st.Batch, st.SeqLen)
						}
						opts := map[string]any{"features": 5, "chunk": 3, "kernel": kernel, "orthogonal": orth}
						out, dx, dp, p, w := performerRun(t, opts, st, seed, x, mask, R)
						ref := nPerformer{batch: st.Batch, seqLen: st.SeqLen, dModel: st.DModel, heads: st.Heads, m: 5,
							causal: causal, relu: kernel == graph.KernelReLU, mask: mask, w: w}
						wy, wdx, wdp := ref.run(p, x, R)
						check := func(what string, got, want []float64) {
							t.Helper()
							if d := relDiff(got, want); !(d <= 1e-10) {
								t.Errorf("%s differs from the reference by %.3g", what, d)
							}
						}
						check("output", out, wy)
						check("input gradient", dx, wdx)
						if len(dp) != 8 {
							t.Errorf("%d parameters, want 8 (four projections with biases)", len(dp))
						}
						for name, g := range dp {
							check("gradient of "+name, g, wdp[name])
						}
					})
				}
			}
		}
	}
}

// TestPerformerRedraw: the layer's draw is that of graph.FeatureRNG(store
// seed, its name, step / redraw): StepInputs.Set gives the same w for
// every step of a redraw window and another one in the next, returns to
// the first for step 0 again (a pure function of the step, not of the
// steps set before), never changes with redraw 0, and stays at the step-0
// draw without a collector.
func TestPerformerRedraw(t *testing.T) {
	const seed = 12
	build := func(opts map[string]any, steps *StepInputs) *G.Node {
		t.Helper()
		store, err := graph.NewStore(tensor.Float32, seed)
		if err != nil {
			t.Fatal(err)
		}
		g := G.NewGraph()
		b := store.Bind(g)
		sh := Shape{Batch: 1, SeqLen: 4, DModel: 8}
		a, err := NewAttention(config.Component{Kind: "performer", Options: opts}, Spec{DModel: 8, Heads: 2, NLayers: 1, Causal: true, Pos: Position{Kind: "none"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Forward(NewScope(b).Sub("blocks.3.attn"), b.Input("x", sh.Rows(), 8), Context{Shape: sh, Causal: true, Steps: steps}); err != nil {
			t.Fatal(err)
		}
		for _, n := range g.AllNodes() {
			if n.Name() == "blocks.3.attn.features" {
				return n
			}
		}
		t.Fatal("no node blocks.3.attn.features")
		return nil
	}
	draw := func(r int, orth bool) []float64 {
		w := graph.DrawFeatures(graph.FeatureRNG(seed, "blocks.3.attn.features", r), 6, 4, orth)
		for i := range w {
			w[i] = float64(float32(w[i]))
		}
		return w
	}
	same := func(a, b []float64) bool { return relDiff(a, b) == 0 }
	for _, orth := range []bool{true, false} {
		steps := &StepInputs{}
		w := build(map[string]any{"features": 6, "redraw": 3, "orthogonal": orth}, steps)
		at := func(step int) []float64 {
			t.Helper()
			if err := steps.Set(step); err != nil {
				t.Fatal(err)
			}
			return graph.Float64s(w.Value())
		}
		if got := graph.Float64s(w.Value()); !same(got, draw(0, orth)) {
			t.Errorf("orthogonal %v: built with another draw than FeatureRNG(seed, name, 0)'s", orth)
		}
		for _, c := range []struct{ step, window int }{{1, 0}, {2, 0}, {3, 1}, {5, 1}, {6, 2}, {0, 0}, {4, 1}, {3001, 1000}} {
			if got := at(c.step); !same(got, draw(c.window, orth)) {
				t.Errorf("orthogonal %v: step %d has not the draw of window %d", orth, c.step, c.window)
			}
		}
		if same(draw(0, orth), draw(1, orth)) {
			t.Fatal("two windows drew the same w: the test cannot see a redraw")
		}
		if err := steps.Set(-1); err == nil {
			t.Error("a negative step was accepted")
		}
	}
	steps := &StepInputs{}
	w := build(map[string]any{"features": 6, "redraw": 0}, steps)
	for _, step := range []int{0, 1, 999, 1000, 123456} {
		if err := steps.Set(step); err != nil {
			t.Fatal(err)
		}
		if got := graph.Float64s(w.Value()); !same(got, draw(0, true)) {
			t.Errorf("redraw 0: step %d changed the draw", step)
		}
	}
	if got := graph.Float64s(build(map[string]any{"features": 6, "redraw": 3}, nil).Value()); !same(got, draw(0, true)) {
		t.Error("without a collector the layer does not hold the step-0 draw")
	}
}

// TestPerformerOptions: the defaults (m = floor(d ln d), the recurrent
// state H (m d + m)), and each option's refusal naming its key.
func TestPerformerOptions(t *testing.T) {
	for _, c := range []struct{ d, features, want int }{{16, 0, 44}, {4, 0, 5}, {64, 0, 266}, {1, 0, 1}, {2, 0, 1}, {16, 7, 7}} {
		if got := PerformerFeatures(c.d, c.features); got != c.want {
			t.Errorf("PerformerFeatures(%d, %d) = %d, want %d", c.d, c.features, got, c.want)
		}
	}
	spec := Spec{DModel: 64, Heads: 4, NLayers: 2, Causal: true, Pos: Position{Kind: "learned"}}
	a, err := NewAttention(config.Component{Kind: "performer"}, spec)
	if err != nil {
		t.Fatal(err)
	}
	st, ok := a.(RecurrentState)
	if !ok || st.StateElems() != 4*(44*16+44) {
		t.Errorf("state %v (%v), want 4 x (44 x 16 + 44)", ok, st)
	}
	if _, kv := a.(KVCache); kv {
		t.Error("performer claims a KV cache")
	}
	for _, c := range []struct {
		opts map[string]any
		want string
	}{
		{map[string]any{"features": -1}, "model.attention.features:"},
		{map[string]any{"redraw": -5}, "model.attention.redraw:"},
		{map[string]any{"kernel": "gauss"}, "model.attention.kernel:"},
		{map[string]any{"chunk": 0}, "model.attention.chunk:"},
	} {
		if _, err := NewAttention(config.Component{Kind: "performer", Options: c.opts}, spec); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one starting %q", c.opts, err, c.want)
		}
	}
}
