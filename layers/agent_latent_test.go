package layers

import (
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// TestAgentLatentRefusals: agent and latent refuse decoder models, the
// position schemes they cannot use and impossible sizes, with errors that
// name the config key; they accept the rest.
func TestAgentLatentRefusals(t *testing.T) {
	spec := func(causal bool, pos string) Spec {
		return Spec{DModel: 8, Heads: 2, NLayers: 2, Causal: causal, Pos: CheckSetting{Positional: pos}.Position()}
	}
	for _, c := range []struct {
		kind    string
		options map[string]any
		spec    Spec
		key     string // "" = accepted
	}{
		{"agent", nil, spec(true, "none"), "model.kind"},
		{"agent", nil, spec(true, "rope"), "model.kind"},
		{"agent", nil, spec(false, "alibi"), "model.positional"},
		{"agent", map[string]any{"agents": 0}, spec(false, "none"), "model.attention.agents"},
		{"agent", nil, spec(false, "none"), ""},
		{"agent", nil, spec(false, "learned"), ""},
		{"agent", nil, spec(false, "sinusoidal"), ""},
		{"agent", nil, spec(false, "rope"), ""},
		{"agent", nil, spec(false, "partial_rope"), ""},
		{"agent", nil, spec(false, "xpos"), ""},
		{"latent", nil, spec(true, "none"), "model.kind"},
		{"latent", nil, spec(false, "rope"), "model.positional"},
		{"latent", nil, spec(false, "partial_rope"), "model.positional"},
		{"latent", nil, spec(false, "xpos"), "model.positional"},
		{"latent", nil, spec(false, "alibi"), "model.positional"},
		{"latent", map[string]any{"latents": -1}, spec(false, "none"), "model.attention.latents"},
		{"latent", nil, spec(false, "none"), ""},
		{"latent", nil, spec(false, "learned"), ""},
		{"latent", nil, spec(false, "sinusoidal"), ""},
	} {
		_, err := NewAttention(config.Component{Kind: c.kind, Options: c.options}, c.spec)
		what := c.kind + " causal=" + map[bool]string{true: "true", false: "false"}[c.spec.Causal] + " " + c.spec.Pos.Kind
		switch {
		case c.key == "" && err != nil:
			t.Errorf("%s %v: %v", what, c.options, err)
		case c.key != "" && err == nil:
			t.Errorf("%s %v: no error, want one naming %s", what, c.options, c.key)
		case c.key != "" && !strings.Contains(err.Error(), c.key+":"):
			t.Errorf("%s %v: error %q does not name %s", what, c.options, err, c.key)
		}
	}

	// More agents than positions is known only when the layer is built.
	a, err := NewAttention(config.Component{Kind: "agent", Options: map[string]any{"agents": 6}}, spec(false, "none"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := graph.NewStore(tensor.Float64, 1)
	if err != nil {
		t.Fatal(err)
	}
	b := store.Bind(G.NewGraph())
	x := b.Input("x", 2*5, 8)
	_, err = a.Forward(NewScope(b), x, Context{Shape: Shape{Batch: 2, SeqLen: 5, DModel: 8}})
	if err == nil || !strings.Contains(err.Error(), "model.attention.agents:") {
		t.Errorf("6 agents over 5 positions: error %v, want one naming model.attention.agents", err)
	}
}

// forwardLayer runs variant c once in float64 on the given input and key
// mask (nil: no padding), with every parameter filled from an rng seeded by
// (seed, its name), and returns the output and the parameters by name
// (without the scope prefix).
func forwardLayer(t *testing.T, c config.Component, st CheckSetting, seed uint64, x, mask []float64) ([]float64, map[string][]float64) {
	t.Helper()
	return forwardLayerDtype(t, tensor.Float64, c, st, seed, x, mask)
}

// forwardLayerDtype is forwardLayer in dtype dt.
func forwardLayerDtype(t *testing.T, dt tensor.Dtype, c config.Component, st CheckSetting, seed uint64, x, mask []float64) ([]float64, map[string][]float64) {
	t.Helper()
	f := newLayerFixture(t, dt, c, st, seed, x, mask)
	m := G.NewTapeMachine(f.g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	return graph.Float64s(f.out.Value()), f.params
}

// layerFixture is one attention layer built for a test: variant c in
// setting st (its direction; padded when mask is not nil) in dtype dt, on
// the input x [Batch*SeqLen, DModel], with every parameter filled uniformly
// in +-0.5 from an rng seeded by (seed, its name), so that variants sharing
// parameter names get identical weights.
type layerFixture struct {
	g      *G.ExprGraph
	x, out *G.Node
	params map[string][]float64 // by name without the "attn." scope, as float64
}

func newLayerFixture(t *testing.T, dt tensor.Dtype, c config.Component, st CheckSetting, seed uint64, x, mask []float64) layerFixture {
	t.Helper()
	st.Padded = mask != nil
	store, err := graph.NewStore(dt, seed)
	if err != nil {
		t.Fatal(err)
	}
	g := G.NewGraph()
	b := store.Bind(g)
	sh := Shape{Batch: st.Batch, SeqLen: st.SeqLen, DModel: st.DModel}
	xn := b.Input("x", sh.Rows(), sh.DModel)
	if err := graph.SetValues(xn, x); err != nil {
		t.Fatal(err)
	}
	ctx := Context{Shape: sh, Causal: st.Causal}
	if mask != nil {
		ctx.KeyMask = b.Input("key_mask", sh.Rows())
		if err := graph.SetValues(ctx.KeyMask, mask); err != nil {
			t.Fatal(err)
		}
	}
	a, err := NewAttention(c, st.spec())
	if err != nil {
		t.Fatal(err)
	}
	out, err := a.Forward(NewScope(b).Sub("attn"), xn, ctx)
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]*G.Node{}
	for _, n := range b.Nodes() {
		nodes[n.Name()] = n
	}
	params := map[string][]float64{}
	for _, p := range store.Params() {
		h := fnv.New64a()
		h.Write([]byte(p.Name))
		prng := rand.New(rand.NewPCG(seed, h.Sum64()))
		d := make([]float64, p.Value.Shape().TotalSize())
		for i := range d {
			d[i] = prng.Float64() - 0.5
		}
		if err := graph.SetValues(nodes[p.Name], d); err != nil {
			t.Fatal(err)
		}
		params[strings.TrimPrefix(p.Name, "attn.")] = d
	}
	return layerFixture{g: g, x: xn, out: out, params: params}
}

// paddingMask is 1 at every position of sequence 0, at the first half of
// sequence 1 and at the first position of sequence 2 (so that some agents'
// segments are padding only), 0 elsewhere.
func paddingMask(seqLen int) []float64 {
	m := make([]float64, 3*seqLen)
	for t := 0; t < seqLen; t++ {
		m[t] = 1
		if t < seqLen/2 {
			m[seqLen+t] = 1
		}
	}
	m[2*seqLen] = 1
	return m
}

// TestAgentLatentPadding: the outputs at real positions do not depend on
// the inputs at padded positions.
func TestAgentLatentPadding(t *testing.T) {
	for _, c := range []struct {
		name string
		comp config.Component
		pos  string
	}{
		{"agent", config.Component{Kind: "agent", Options: map[string]any{"agents": 3}}, ""},
		{"agent-rope", config.Component{Kind: "agent", Options: map[string]any{"agents": 3}}, "rope"},
		{"agent-xpos", config.Component{Kind: "agent", Options: map[string]any{"agents": 2}}, "xpos"},
		{"latent", config.Component{Kind: "latent", Options: map[string]any{"latents": 3}}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, 11))
			st := CheckSetting{Batch: 3, SeqLen: 7, DModel: 8, Heads: 2, Positional: c.pos}
			mask := paddingMask(st.SeqLen)
			x1 := graph.RandomTensor(rng, 1, st.Batch*st.SeqLen, st.DModel).Data().([]float64)
			x2 := append([]float64(nil), x1...)
			for i, m := range mask {
				if m == 0 {
					for j := 0; j < st.DModel; j++ {
						x2[i*st.DModel+j] = 100 * (rng.Float64() - 0.5)
					}
				}
			}
			out1, _ := forwardLayer(t, c.comp, st, seed, x1, mask)
			out2, _ := forwardLayer(t, c.comp, st, seed, x2, mask)
			for i, m := range mask {
				if m == 0 {
					continue
				}
				r1, r2 := out1[i*st.DModel:(i+1)*st.DModel], out2[i*st.DModel:(i+1)*st.DModel]
				if d := relDiff(r1, r2); d > 1e-12 {
					t.Errorf("row %d (sequence %d, position %d): output changed with the padding, relative difference %g",
						i, i/st.SeqLen, i%st.SeqLen, d)
				}
			}
		})
	}
}

// TestAgentNaive compares agent attention with its naive reference
// (refAgent, naive_test.go) over more sequences and segmentations than
// TestNaiveReferences: per head, agents are the segment means of the real
// queries, they attend to the real keys, and the queries attend to the
// agents whose segments hold a real position; three sequences, so that some
// agents' segments are padding only.
func TestAgentNaive(t *testing.T) {
	for _, c := range []struct {
		name           string
		seqLen, n      int
		masked, noBias bool
		pos            string
	}{
		{"divisible", 6, 3, false, false, ""},
		{"ragged-padded", 7, 3, true, false, ""},
		{"one-agent-padded", 5, 1, true, true, ""},
		{"agent-per-position-padded", 4, 4, true, false, ""},
		{"ragged-padded-rope", 7, 3, true, false, "rope"},
		{"ragged-padded-xpos", 8, 3, true, false, "xpos"},
	} {
		t.Run(c.name, func(t *testing.T) {
			const seed = 5
			rng := rand.New(rand.NewPCG(seed, 5))
			st := CheckSetting{Batch: 3, SeqLen: c.seqLen, DModel: 8, Heads: 2, Positional: c.pos}
			var mask []float64
			if c.masked {
				mask = paddingMask(c.seqLen)
			}
			x := graph.RandomTensor(rng, 1, st.Batch*st.SeqLen, st.DModel).Data().([]float64)
			comp := config.Component{Kind: "agent", Options: map[string]any{"agents": c.n, "bias": !c.noBias}}
			got, p := forwardLayer(t, comp, st, seed, x, mask)
			m := refModel{batch: st.Batch, seqLen: st.SeqLen, d: st.DModel, heads: st.Heads, mask: mask, pos: refPos(c.pos)}
			want := refAgent(c.n)(m, p, x)
			if d := relDiff(got, want); d > refTol {
				t.Errorf("relative difference %g\ngot  %v\nwant %v", d, got, want)
			}
		})
	}
}

// TestAgentLatentFloat32: the float32 layers compute the float64 ones to
// float32 resolution.
func TestAgentLatentFloat32(t *testing.T) {
	for _, comp := range []config.Component{
		{Kind: "agent", Options: map[string]any{"agents": 3}},
		{Kind: "latent", Options: map[string]any{"latents": 4}},
	} {
		t.Run(comp.Kind, func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			st := CheckSetting{Batch: 3, SeqLen: 7, DModel: 8, Heads: 2}
			x := graph.RandomTensor(rand.New(rand.NewPCG(seed, 13)), 1, st.Batch*st.SeqLen, st.DModel).Data().([]float64)
			mask := paddingMask(st.SeqLen)
			want, _ := forwardLayerDtype(t, tensor.Float64, comp, st, seed, x, mask)
			got, _ := forwardLayerDtype(t, tensor.Float32, comp, st, seed, x, mask)
			if d := relDiff(got, want); d > 1e-5 {
				t.Errorf("float32 vs float64: relative difference %g", d)
			}
		})
	}
}

// TestAgentXPosGradients: xpos pools agents twice (query and key side);
// gradient-check it in an encoder, padded, which the shared settings do not
// cover.
func TestAgentXPosGradients(t *testing.T) {
	st := CheckSetting{Name: "bidirectional-xpos-padded", Padded: true, Batch: 2, SeqLen: 5, DModel: 8, Heads: 2,
		Positional: "xpos", Options: map[string]any{"agents": 2}}
	res, err := CheckAttention("agent", st, uint64(time.Now().UnixNano()))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Pass {
		t.Errorf("%v", res)
	}
}
