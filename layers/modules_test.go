package layers

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// The block add-on modules (modules.go, se.go, cbam.go, range_conv.go):
// gradients inside a block, causality in decoder form, the plain block
// when there are none, reference values, and config errors naming the key.

// moduleLists are the module lists the tests build: each kind alone with
// non-default options where they matter, and all three together.
var moduleLists = map[string][]config.Component{
	"se":         {{Kind: "se", Options: map[string]any{"reduction": 2}}},
	"cbam":       {{Kind: "cbam", Options: map[string]any{"reduction": 2, "kernel": 3}}},
	"range_conv": {{Kind: "range_conv", Options: map[string]any{"kernel": 2, "dilations": []any{1, 3}}}},
	"all": {{Kind: "se", Options: map[string]any{"reduction": 2}}, {Kind: "cbam", Options: map[string]any{"kernel": 4}},
		{Kind: "range_conv", Options: map[string]any{}}},
}

var moduleSettings = []CheckSetting{
	{Name: "causal", Causal: true, Batch: 2, SeqLen: 6, DModel: 8, Heads: 2},
	{Name: "bidirectional", Batch: 2, SeqLen: 6, DModel: 8, Heads: 2},
	{Name: "causal-padded", Causal: true, Padded: true, Batch: 2, SeqLen: 6, DModel: 8, Heads: 2},
	{Name: "bidirectional-padded", Padded: true, Batch: 2, SeqLen: 6, DModel: 8, Heads: 2},
}

func newTestModules(t *testing.T, cs []config.Component, st CheckSetting) []BlockModule {
	t.Helper()
	ms, err := NewModules(cs, ModuleSpec{DModel: st.DModel, Causal: st.Causal, Padded: st.Padded})
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// TestModuleGradients gradient-checks each module alone on its input, and
// all three inside a whole block (standard attention), causal and bidirectional,
// with and without padding: float64 central differences against the
// hand-written backward passes, random parameters in +-0.5.
func TestModuleGradients(t *testing.T) {
	for name, cs := range moduleLists {
		for _, st := range moduleSettings {
			t.Run(name+"/"+st.Name, func(t *testing.T) {
				ms := newTestModules(t, cs, st)
				a, err := declaredAttention("standard", st)
				if err != nil {
					t.Fatal(err)
				}
				wheres := []string{"alone"}
				if name == "all" { // one block check covers the three (a block check costs ~0.5 s)
					wheres = append(wheres, "block")
				}
				for _, where := range wheres {
					seed := rand.Uint64()
					res, err := checkLayer(st, seed, func(s Scope, x *G.Node, c Context) (*G.Node, error) {
						if where == "alone" {
							return applyModules(s, ms, x, c)
						}
						return Block(s, x, c, BlockSpec{DModel: st.DModel, DFF: 2 * st.DModel, NLayers: 2, Norm: "layernorm",
							Activation: graph.GELU, Attention: a, Modules: ms})
					})
					if err != nil {
						t.Fatal(err)
					}
					if !res.Pass {
						t.Errorf("%s: gradient check failed: %v", where, res)
					}
				}
			})
		}
	}
}

// moduleRun builds layer on random float64 parameters (uniform in +-0.5)
// and returns a function that evaluates it on an input x [Batch*SeqLen,
// DModel], and the key mask it uses (nil unless st.Padded).
func moduleRun(t *testing.T, st CheckSetting, seed uint64, layer func(Scope, *G.Node, Context) (*G.Node, error)) (func(x []float64) []float64, []float64, *graph.Store) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 3))
	store, err := graph.NewStore(tensor.Float64, seed)
	if err != nil {
		t.Fatal(err)
	}
	g := G.NewGraph()
	b := store.Bind(g)
	sh := Shape{Batch: st.Batch, SeqLen: st.SeqLen, DModel: st.DModel}
	xt := graph.RandomTensor(rng, 1, sh.Rows(), sh.DModel)
	x := graph.Variable(g, "x", xt)
	c := Context{Shape: sh, Causal: st.Causal}
	var mask []float64
	if st.Padded {
		c.KeyMask = b.Input("key_mask", sh.Rows())
		mask = make([]float64, sh.Rows())
		for i := range mask {
			if i%sh.SeqLen == 0 || rng.Float64() < 0.6 {
				mask[i] = 1
			}
		}
		if err := graph.SetValues(c.KeyMask, mask); err != nil {
			t.Fatal(err)
		}
	}
	out, err := layer(NewScope(b), x, c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range store.Params() {
		d := p.Value.Data().([]float64)
		for i := range d {
			d[i] = rng.Float64() - 0.5
		}
	}
	m := G.NewTapeMachine(g)
	t.Cleanup(func() { m.Close() })
	return func(in []float64) []float64 {
		copy(xt.Data().([]float64), in)
		m.Reset()
		if err := m.RunAll(); err != nil {
			t.Fatal(err)
		}
		return graph.Float64s(out.Value())
	}, mask, store
}

// TestModulesCausal: in decoder form, changing the input at positions > t
// leaves every output at positions <= t exactly as it was, for every
// module alone and for a whole block with all three (and a padded batch).
func TestModulesCausal(t *testing.T) {
	for name, cs := range moduleLists {
		for _, st := range []CheckSetting{moduleSettings[0], moduleSettings[2]} {
			t.Run(name+"/"+st.Name, func(t *testing.T) {
				ms := newTestModules(t, cs, st)
				a, err := declaredAttention("standard", st)
				if err != nil {
					t.Fatal(err)
				}
				layers := map[string]func(Scope, *G.Node, Context) (*G.Node, error){
					"alone": func(s Scope, x *G.Node, c Context) (*G.Node, error) { return applyModules(s, ms, x, c) },
					"block": func(s Scope, x *G.Node, c Context) (*G.Node, error) {
						return Block(s, x, c, BlockSpec{DModel: st.DModel, DFF: 2 * st.DModel, NLayers: 2, Norm: "layernorm",
							Activation: graph.GELU, Attention: a, Modules: ms})
					},
				}
				for where, layer := range layers {
					seed := rand.Uint64()
					run, _, _ := moduleRun(t, st, seed, layer)
					rng := rand.New(rand.NewPCG(seed, 9))
					d := st.DModel
					x := graph.RandomTensor(rng, 1, st.Batch*st.SeqLen, d).Data().([]float64)
					base := run(x)
					for cut := 0; cut < st.SeqLen-1; cut++ {
						y := append([]float64(nil), x...)
						for b := 0; b < st.Batch; b++ {
							for p := cut + 1; p < st.SeqLen; p++ {
								for j := 0; j < d; j++ {
									y[(b*st.SeqLen+p)*d+j] += 3 * (rng.Float64() - 0.5)
								}
							}
						}
						got := run(y)
						changed := false
						for b := 0; b < st.Batch; b++ {
							for p := 0; p < st.SeqLen; p++ {
								for j := 0; j < d; j++ {
									i := (b*st.SeqLen+p)*d + j
									diff := math.Abs(got[i] - base[i])
									if p <= cut && diff > 1e-12 {
										t.Fatalf("%s: input changed after position %d moved output at position %d (sequence %d) by %.3g", where, cut, p, b, diff)
									}
									changed = changed || diff > 1e-9
								}
							}
						}
						if !changed {
							t.Fatalf("%s: changing positions > %d changed nothing (the test tests nothing)", where, cut)
						}
					}
				}
			})
		}
	}
}

// TestNoModulesIsThePlainBlock: with no modules (nil or an empty list)
// Block is the pre-norm block as it was written before modules existed,
// term by term: the same parameters and identical outputs.
func TestNoModulesIsThePlainBlock(t *testing.T) {
	for _, st := range moduleSettings {
		t.Run(st.Name, func(t *testing.T) {
			a, err := declaredAttention("standard", st)
			if err != nil {
				t.Fatal(err)
			}
			seed := rand.Uint64()
			plain := func(s Scope, x *G.Node, c Context) (*G.Node, error) {
				h, err := Norm(s.Sub("norm1"), "layernorm", x, st.DModel)
				if err != nil {
					return nil, err
				}
				if h, err = a.Forward(s.Sub("attn"), h, c); err != nil {
					return nil, err
				}
				if x, err = G.Add(x, h); err != nil {
					return nil, err
				}
				if h, err = Norm(s.Sub("norm2"), "layernorm", x, st.DModel); err != nil {
					return nil, err
				}
				if h, err = FFN(s.Sub("ffn"), h, st.DModel, 2*st.DModel, 2, graph.GELU); err != nil {
					return nil, err
				}
				return G.Add(x, h)
			}
			run0, _, store0 := moduleRun(t, st, seed, plain)
			x := graph.RandomTensor(rand.New(rand.NewPCG(seed, 5)), 1, st.Batch*st.SeqLen, st.DModel).Data().([]float64)
			want := run0(x)
			for _, ms := range [][]BlockModule{nil, newTestModules(t, nil, st), newTestModules(t, []config.Component{}, st)} {
				run, _, store := moduleRun(t, st, seed, func(s Scope, x *G.Node, c Context) (*G.Node, error) {
					return Block(s, x, c, BlockSpec{DModel: st.DModel, DFF: 2 * st.DModel, NLayers: 2, Norm: "layernorm",
						Activation: graph.GELU, Attention: a, Modules: ms})
				})
				if n0, n := paramNames(store0), paramNames(store); n != n0 {
					t.Fatalf("parameters %s, want %s", n, n0)
				}
				got := run(x)
				for i := range want {
					if got[i] != want[i] {
						t.Fatalf("output %d: %v, want %v (identical)", i, got[i], want[i])
					}
				}
			}
		})
	}
}

func paramNames(s *graph.Store) string {
	var ns []string
	for _, p := range s.Params() {
		ns = append(ns, p.Name)
	}
	return strings.Join(ns, ",")
}

// refModules is a slow float64 reference of the modules, written from the
// equations in their doc comments, on y [batch*seqLen, d] with the
// parameters of store under prefix.
func refModules(t *testing.T, kind string, opts config.Values, store *graph.Store, prefix string, y, mask []float64, batch, seqLen, d int, causal bool) []float64 {
	t.Helper()
	param := func(name string) []float64 {
		p := store.Get(prefix + "." + name)
		if p == nil {
			t.Fatalf("no parameter %s.%s", prefix, name)
		}
		return p.Value.Data().([]float64)
	}
	real := func(b, s int) bool { return mask == nil || mask[b*seqLen+s] != 0 }
	at := func(v []float64, b, s, j int) float64 { return v[(b*seqLen+s)*d+j] }
	// stat over the real positions s of sequence b visible from t
	stat := func(v []float64, b, t, j int, isMax bool) float64 {
		n, sum, mx := 0, 0.0, math.Inf(-1)
		for s := 0; s < seqLen; s++ {
			if (causal && s > t) || !real(b, s) {
				continue
			}
			n++
			sum += at(v, b, s, j)
			mx = math.Max(mx, at(v, b, s, j))
		}
		switch {
		case n == 0:
			return 0
		case isMax:
			return mx
		}
		return sum / float64(n)
	}
	sigmoid := func(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
	mlp := func(scope string, z []float64) []float64 {
		w1, w2 := param(scope+"w1"), param(scope+"w2")
		hid := len(w1) / d
		h := make([]float64, hid)
		for k := range h {
			for j := 0; j < d; j++ {
				h[k] += z[j] * w1[j*hid+k]
			}
			h[k] = math.Max(h[k], 0)
		}
		out := make([]float64, d)
		for j := range out {
			for k := range h {
				out[j] += h[k] * w2[k*d+j]
			}
		}
		return out
	}
	offsets := func(k, r int) []int {
		o := make([]int, k)
		for i := range o {
			if causal {
				o[i] = -i * r
			} else {
				o[i] = (i - k/2) * r
			}
		}
		return o
	}
	out := make([]float64, len(y))
	for b := 0; b < batch; b++ {
		for tt := 0; tt < seqLen; tt++ {
			row := (b*seqLen + tt) * d
			switch kind {
			case "se":
				z := make([]float64, d)
				for j := range z {
					z[j] = stat(y, b, tt, j, false)
				}
				s := mlp("", z)
				for j := 0; j < d; j++ {
					out[row+j] = y[row+j] * sigmoid(s[j])
				}
			case "range_conv":
				w := param("w")
				tap := 0
				copy(out[row:row+d], y[row:row+d])
				for _, r := range opts.Ints("dilations") {
					for _, o := range offsets(opts.Int("kernel"), r) {
						if s := tt + o; s >= 0 && s < seqLen && real(b, s) {
							for j := 0; j < d; j++ {
								out[row+j] += w[tap*d+j] * at(y, b, s, j)
							}
						}
						tap++
					}
				}
			}
		}
	}
	if kind != "cbam" {
		return out
	}
	// cbam: the channel gate on every row, then the positional gate
	y1 := make([]float64, len(y))
	for b := 0; b < batch; b++ {
		for tt := 0; tt < seqLen; tt++ {
			avg, mx := make([]float64, d), make([]float64, d)
			for j := 0; j < d; j++ {
				avg[j], mx[j] = stat(y, b, tt, j, false), stat(y, b, tt, j, true)
			}
			ga, gm := mlp("channel.", avg), mlp("channel.", mx)
			for j := 0; j < d; j++ {
				i := (b*seqLen+tt)*d + j
				y1[i] = y[i] * sigmoid(ga[j]+gm[j])
			}
		}
	}
	u, v := param("conv_mean"), param("conv_max")
	offs := offsets(opts.Int("kernel"), 1)
	for b := 0; b < batch; b++ {
		for tt := 0; tt < seqLen; tt++ {
			pre := 0.0
			for i, o := range offs {
				s := tt + o
				if s < 0 || s >= seqLen || !real(b, s) {
					continue
				}
				mean, mx := 0.0, math.Inf(-1)
				for j := 0; j < d; j++ {
					mean += at(y1, b, s, j) / float64(d)
					mx = math.Max(mx, at(y1, b, s, j))
				}
				pre += u[i]*mean + v[i]*mx
			}
			for j := 0; j < d; j++ {
				i := (b*seqLen+tt)*d + j
				out[i] = y1[i] * sigmoid(pre)
			}
		}
	}
	return out
}

// TestModulesMatchReference: each module equals a slow reference written
// from its documented equations, to 1e-10, in every setting.
func TestModulesMatchReference(t *testing.T) {
	for _, name := range []string{"se", "cbam", "range_conv"} {
		cs := moduleLists[name]
		for _, st := range moduleSettings {
			t.Run(name+"/"+st.Name, func(t *testing.T) {
				ms := newTestModules(t, cs, st)
				_, opts, err := modules.Resolve("test", cs[0])
				if err != nil {
					t.Fatal(err)
				}
				seed := rand.Uint64()
				run, mask, store := moduleRun(t, st, seed, func(s Scope, x *G.Node, c Context) (*G.Node, error) {
					return applyModules(s, ms, x, c)
				})
				x := graph.RandomTensor(rand.New(rand.NewPCG(seed, 11)), 1, st.Batch*st.SeqLen, st.DModel).Data().([]float64)
				got := run(x)
				want := refModules(t, name, opts, store, "modules.0", x, mask, st.Batch, st.SeqLen, st.DModel, st.Causal)
				for i := range want {
					if d := math.Abs(got[i] - want[i]); d > 1e-10 {
						t.Fatalf("output %d: %v, reference %v (off by %.3g)", i, got[i], want[i], d)
					}
				}
			})
		}
	}
}

// TestModuleConfig: module lists from YAML and --set (bare names and
// mappings), and one-line errors naming the key for bad kinds and options.
func TestModuleConfig(t *testing.T) {
	e, err := config.Parse("x.yaml", []byte("model:\n  block_modules: [se, {kind: cbam, kernel: 5}, range_conv]\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := e.Model.BlockModules
	if len(got) != 3 || got[0].Kind != "se" || got[1].Kind != "cbam" || got[1].Options["kernel"] != 5 || got[2].Kind != "range_conv" {
		t.Fatalf("parsed %+v", got)
	}
	ms, err := NewModules(got, ModuleSpec{DModel: 8, Causal: true})
	if err != nil || len(ms) != 3 {
		t.Fatalf("NewModules: %v, %d modules", err, len(ms))
	}
	// Marshal and parse back
	out, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := config.Parse("back.yaml", out)
	if err != nil {
		t.Fatalf("%v in\n%s", err, out)
	}
	if len(back.Model.BlockModules) != 3 || back.Model.BlockModules[1].Options["kernel"] != 5 {
		t.Errorf("round trip gave %+v from\n%s", back.Model.BlockModules, out)
	}
	// the default is none, and an empty list is none
	if d := config.Default(); d.Model.BlockModules != nil {
		t.Errorf("default block_modules %v, want none", d.Model.BlockModules)
	}
	if e, err := config.Parse("x.yaml", []byte("model:\n  block_modules: []\n")); err != nil || e.Model.BlockModules != nil {
		t.Errorf("empty list: %v, %v", e.Model.BlockModules, err)
	}
	// --set
	d := config.Default()
	if err := d.Set("model.block_modules=[se,{kind: range_conv, dilations: [1, 8]}]"); err != nil {
		t.Fatal(err)
	}
	if bm := d.Model.BlockModules; len(bm) != 2 || bm[1].Kind != "range_conv" {
		t.Fatalf("--set gave %+v", bm)
	}
	if _, err := NewModules(d.Model.BlockModules, ModuleSpec{DModel: 8}); err != nil {
		t.Fatal(err)
	}
	if err := d.Set("model.block_modules=[]"); err != nil || d.Model.BlockModules != nil {
		t.Fatalf("--set to []: %v, %v", d.Model.BlockModules, err)
	}

	for _, c := range []struct{ yaml, want string }{
		{"model:\n  block_modules: se\n", `model.block_modules: want a list like [se, {kind: cbam, kernel: 7}], got "se"`},
		{"model:\n  block_modules: [se, 3]\n", "model.block_modules[1]: want a kind name or a mapping"},
		{"model:\n  block_modules: [se, {kind: [x]}]\n", "model.block_modules[1].kind: want a name"},
	} {
		if _, err := config.Parse("x.yaml", []byte(c.yaml)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want it to contain %q", c.yaml, err, c.want)
		}
	}
	for _, c := range []struct{ set, want string }{
		{"model.block_modules.kind=se", "model.block_modules is a list; set it whole"},
		{"model.block_modules=se", "model.block_modules: want a list"},
		{"model.block_modules=[se, [1]]", "model.block_modules[1]: want a kind name or a mapping"},
	} {
		d := config.Default()
		if err := d.Set(c.set); err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("--set %s: error %v, want one line containing %q", c.set, err, c.want)
		}
	}

	for _, c := range []struct {
		cs   []config.Component
		want string
	}{
		{[]config.Component{{Kind: "se"}, {Kind: "sse"}}, `model.block_modules[1].kind: unknown block module kind "sse" (known: cbam, range_conv, se)`},
		{[]config.Component{{Kind: "se"}, {Kind: "cbam", Options: map[string]any{"kernal": 3}}}, "model.block_modules[1].kernal: unknown option for block_modules[1] \"cbam\" (known: reduction, kernel)"},
		{[]config.Component{{Kind: "cbam", Options: map[string]any{"kernel": "big"}}}, `model.block_modules[0].kernel: want an integer, got "big"`},
		{[]config.Component{{Kind: "cbam", Options: map[string]any{"kernel": 0}}}, "model.block_modules[0].kernel: must be positive, got 0"},
		{[]config.Component{{Kind: "se", Options: map[string]any{"reduction": 3}}}, "model.block_modules[0].reduction: must be a positive divisor of model.d_model (8), got 3"},
		{[]config.Component{{Kind: "range_conv", Options: map[string]any{"dilations": []any{}}}}, "model.block_modules[0].dilations: must list at least one rate"},
		{[]config.Component{{Kind: "range_conv", Options: map[string]any{"dilations": []any{1, 0}}}}, "model.block_modules[0].dilations: rates must be positive, got [1 0]"},
	} {
		_, err := NewModules(c.cs, ModuleSpec{DModel: 8, Causal: true})
		if err == nil || err.Error() != c.want {
			t.Errorf("%+v: error %v, want %q", c.cs, err, c.want)
		}
	}
}

// TestModuleCostCountsParams: each module's Cost (what models.EstimateCost
// adds per block) counts exactly the parameters its Forward makes.
func TestModuleCostCountsParams(t *testing.T) {
	for name, cs := range moduleLists {
		for _, st := range []CheckSetting{moduleSettings[0], moduleSettings[1]} {
			ms := newTestModules(t, cs, st)
			_, _, store := moduleRun(t, st, 1, func(s Scope, x *G.Node, c Context) (*G.Node, error) {
				return applyModules(s, ms, x, c)
			})
			want := 0
			for _, m := range ms {
				p, _ := m.Cost()
				want += p
			}
			if got := store.NumElements(); got != want {
				t.Errorf("%s/%s: Forward makes %d parameters, Cost says %d", name, st.Name, got, want)
			}
		}
	}
}
