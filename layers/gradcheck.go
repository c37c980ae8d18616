package layers

import (
	"errors"
	"fmt"
	"math/rand/v2"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// CheckSetting is one configuration a variant is gradient-checked in.
type CheckSetting struct {
	Name   string
	Causal bool
	Padded bool // random key-padding mask
	Batch  int
	SeqLen int
	DModel int
	Heads  int
	// Positional is the position scheme ("" = none); only the schemes that
	// act inside attention matter here.
	Positional string
	Options    map[string]any // variant options (nil: the variant's Support.CheckOptions, or its defaults)
	// FlashBlock, when not 0, is the tile size of every flash core in the
	// layer (graph.DefaultFlashBlock otherwise): smaller than SeqLen, and
	// not dividing it, the check covers several tiles and a ragged last one.
	FlashBlock int
}

// ErrNotApplicable marks a setting a variant does not declare (Support): a
// bidirectional-only variant in a causal setting, a position scheme it
// cannot take. CheckAttention and CheckBlock wrap the declaration's refusal
// with it; any other error, a factory's included, is a failure.
var ErrNotApplicable = errors.New("setting not applicable")

// Setting is what of st a variant declares support for.
func (st CheckSetting) Setting() Setting {
	return Setting{Causal: st.Causal, Padded: st.Padded, Positional: st.Positional}
}

// Position returns the position scheme of the setting with the model
// defaults for its parameters.
func (st CheckSetting) Position() Position {
	kind := st.Positional
	if kind == "" {
		kind = "none"
	}
	return Position{Kind: kind, RopeBase: 10000, RopeFraction: 0.5, XPosScaleBase: 4}
}

func (st CheckSetting) spec() Spec {
	return Spec{DModel: st.DModel, Heads: st.Heads, NLayers: 2, Causal: st.Causal, Padded: st.Padded, Pos: st.Position()}
}

// CheckSettings are the settings `trainer gradcheck` and the tests use: tiny
// sizes, float64. Between them they cover, for every variant, each thing it
// may declare (causal, bidirectional, padding, and each position scheme
// that acts inside attention in a direction the variant takes), and the
// "tiles" ones run the flash cores with 4 x 4 tiles over 9 positions (two
// full tiles and a ragged one), where the rest fit in one tile
// (TestCheckSettingsCoverDeclarations).
func CheckSettings() []CheckSetting {
	return []CheckSetting{
		{Name: "causal", Causal: true, Batch: 2, SeqLen: 5, DModel: 8, Heads: 2},
		{Name: "bidirectional", Batch: 2, SeqLen: 5, DModel: 8, Heads: 2},
		{Name: "bidirectional-padded", Padded: true, Batch: 2, SeqLen: 5, DModel: 8, Heads: 2},
		{Name: "causal-padded", Causal: true, Padded: true, Batch: 2, SeqLen: 4, DModel: 8, Heads: 2},
		{Name: "causal-rope", Causal: true, Batch: 1, SeqLen: 5, DModel: 8, Heads: 2, Positional: "rope"},
		{Name: "causal-xpos", Causal: true, Batch: 1, SeqLen: 5, DModel: 8, Heads: 2, Positional: "xpos"},
		{Name: "bidirectional-partial_rope-padded", Padded: true, Batch: 2, SeqLen: 4, DModel: 8, Heads: 2, Positional: "partial_rope"},
		{Name: "causal-alibi", Causal: true, Batch: 1, SeqLen: 5, DModel: 8, Heads: 2, Positional: "alibi"},
		{Name: "bidirectional-rope", Batch: 1, SeqLen: 5, DModel: 8, Heads: 2, Positional: "rope"},
		{Name: "bidirectional-xpos-padded", Padded: true, Batch: 2, SeqLen: 5, DModel: 8, Heads: 2, Positional: "xpos"},
		{Name: "causal-padded-tiles", Causal: true, Padded: true, Batch: 2, SeqLen: 9, DModel: 8, Heads: 2, FlashBlock: 4},
		{Name: "bidirectional-padded-tiles", Padded: true, Batch: 2, SeqLen: 9, DModel: 8, Heads: 2, FlashBlock: 4},
		{Name: "causal-rope-tiles", Causal: true, Batch: 1, SeqLen: 9, DModel: 8, Heads: 2, Positional: "rope", FlashBlock: 4},
	}
}

// CheckAttention gradient-checks one layer of variant kind in setting st
// (retrying a failure with two more seeds for a variant that is not
// smooth everywhere, Support.NonSmooth, whose checks can cross a tie or a
// kink):
// random input, random parameters (uniform in +-0.5, so the function is far
// from linear), gradients with respect to the input and every parameter.
// A setting the variant does not declare is ErrNotApplicable; an error in
// one it declares is a failure like a wrong gradient.
func CheckAttention(kind string, st CheckSetting, seed uint64) (graph.GradResult, error) {
	a, err := declaredAttention(kind, st)
	if err != nil {
		return graph.GradResult{}, err
	}
	layer := func(s Scope, x *G.Node, c Context) (*G.Node, error) {
		return a.Forward(s.Sub("attn"), x, c)
	}
	res, err := checkLayer(st, seed, layer)
	if err != nil || res.Pass {
		return res, err
	}
	if sup, _ := SupportOf(kind); sup.NonSmooth {
		// A tie or kink crossed by the finite-difference step fails one
		// seed; a wrong gradient fails every seed (Support.NonSmooth).
		for retry := uint64(1); retry <= 2; retry++ {
			again, err := checkLayer(st, seed+retry*0x9e3779b97f4a7c15, layer)
			if err != nil || again.Pass {
				return again, err
			}
		}
	}
	return res, nil
}

// CheckBlock gradient-checks a whole pre-norm block with variant kind.
func CheckBlock(kind, norm string, st CheckSetting, seed uint64) (graph.GradResult, error) {
	a, err := declaredAttention(kind, st)
	if err != nil {
		return graph.GradResult{}, err
	}
	return checkLayer(st, seed, func(s Scope, x *G.Node, c Context) (*G.Node, error) {
		return Block(s, x, c, BlockSpec{DModel: st.DModel, DFF: 2 * st.DModel, NLayers: 2, Norm: norm, Activation: graph.GELU, Attention: a})
	})
}

// declaredAttention builds variant kind for st: ErrNotApplicable when the
// variant's declaration refuses st, a plain error when it declares st and
// still fails to build.
func declaredAttention(kind string, st CheckSetting) (Attention, error) {
	sup, err := SupportOf(kind)
	if err != nil {
		return nil, err
	}
	if err := sup.Allows(st.Setting()); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotApplicable, err)
	}
	opts := st.Options
	if opts == nil {
		opts = sup.CheckOptions
	}
	a, err := NewAttention(config.Component{Kind: kind, Options: opts}, st.spec())
	if err != nil {
		return nil, fmt.Errorf("%s: %s declares this setting (%s) but refuses it: %w", st.Name, kind, sup, err)
	}
	return a, nil
}

func checkLayer(st CheckSetting, seed uint64, build func(Scope, *G.Node, Context) (*G.Node, error)) (graph.GradResult, error) {
	rng := rand.New(rand.NewPCG(seed, 7))
	store, err := graph.NewStore(tensor.Float64, seed)
	if err != nil {
		return graph.GradResult{}, err
	}
	g := G.NewGraph()
	b := store.Bind(g)
	sh := Shape{Batch: st.Batch, SeqLen: st.SeqLen, DModel: st.DModel}
	x := graph.Variable(g, "x", graph.RandomTensor(rng, 1, sh.Rows(), sh.DModel))
	c := Context{Shape: sh, Causal: st.Causal, Tile: st.FlashBlock}
	if st.Padded {
		c.KeyMask = b.Input("key_mask", sh.Rows())
		m := make([]float64, sh.Rows())
		for i := range m {
			// every sequence keeps its first position; the rest are padding at random
			if i%sh.SeqLen == 0 || rng.Float64() < 0.6 {
				m[i] = 1
			}
		}
		if err := graph.SetValues(c.KeyMask, m); err != nil {
			return graph.GradResult{}, err
		}
	}
	out, err := build(NewScope(b), x, c)
	if err != nil {
		return graph.GradResult{}, err
	}
	for _, p := range store.Params() {
		d := p.Value.Data().([]float64)
		for i := range d {
			d[i] = rng.Float64() - 0.5
		}
	}
	wrt := append([]*G.Node{x}, b.Nodes()...)
	res, err := graph.GradCheck{Seed: seed}.Run(g, out, wrt)
	if err != nil {
		return res, fmt.Errorf("%s: %w", st.Name, err)
	}
	return res, nil
}
