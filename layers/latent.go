package layers

import (
	"errors"
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// Latent is Perceiver-style latent attention (Jaegle et al. 2021,
// "Perceiver: General Perception with Iterative Attention"; the decoder of
// Jaegle et al. 2021, "Perceiver IO: A General Architecture for Structured
// Inputs & Outputs"): a learned array of N latents reads the sequence, mixes
// within itself, and is read back by every position, so no position attends
// to another directly:
//
//	L                                          learned latents [N, D] ("latents"), shared by every sequence
//	Z = L + CrossAttn_e(LN_e(L), x)            encode: N queries, T keys (padding masked)
//	Z = Z + SelfAttn_p(LN_p(Z))                process: N x N, bidirectional
//	out = CrossAttn_d(x, LN_d(Z))              decode: T queries, N keys
//
// with CrossAttn(y, z) = concat_h softmax(Q_h K_h^T / sqrt(d)) V_h Wo for
// Q = y Wq, K = z Wk, V = z Wv over H heads of d = D/H (projections wq_e,
// wk_e, wv_e, wo_e for encode, wq_p ... for process, wq_d ... for decode)
// and LN a LayerNorm with its own gain and shift (ln_e, ln_p, ln_d). This
// is Perceiver's pre-norm cross-attend / self-attend / Perceiver IO's
// query-based decode, kept minimal: one latent self-attention per layer,
// no latent MLP and no LayerNorm on the token side inside the layer (the
// enclosing block already pre-norms x and follows with its own FFN on the
// positions). The latents start N(0, 1) like embeddings.
//
// Each layer rebuilds its latents: every layer has its own table L and
// starts from it, and its Z is dropped after the decode, so between layers
// information flows only through the token stream (the next layer encodes
// the updated tokens afresh). Perceiver instead carries one latent array
// through its blocks (the latents are the trunk, re-reading the input by
// cross-attention), refining the same Z layer after layer; that would need
// a latent state passed between blocks, which the Attention interface (x in,
// x out) does not have.
//
// Padded positions are masked as keys in the encode, so Z, and hence the
// outputs at real positions, do not depend on padded inputs.
//
// The latents read the whole sequence, and every position reads them back,
// so any position sees every other (the future included): the layer is not
// causal, and decoder models are refused. A causal form needs latents that
// summarize a prefix only; Perceiver AR (Hawthorne et al. 2022) gets them
// by tying the latents to the last N positions under a causal cross-
// attention mask, a different architecture (outputs at those N positions
// only) that is not provided here. Position schemes: learned, sinusoidal or none (added to x
// before the layer); rope, partial_rope, xpos and alibi are refused: the
// latents have no position to rotate by or measure distance from.
//
// Time O(T N D + N^2 D) per sequence for the three attentions (plus
// O((T + N) D^2) for the projections), memory O((T + N) D).
type Latent struct {
	spec    Spec
	latents int
	bias    bool
}

func init() {
	Register("latent", "Perceiver latent attention (Jaegle et al. 2021): N learned latents encode the sequence, self-attend and are decoded by every position; O(T N), bidirectional",
		Support{Bidirectional: true, Padding: true, Positions: []string{"learned", "sinusoidal", "none"},
			Why: Refusals{Causal: "encodes the whole sequence into its latents", Positions: "the latents have no position"}},
		[]config.OptionSpec{
			{Name: "latents", Kind: config.Int, Default: 8, Help: "learned latent tokens N"},
			{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the q, k, v and output projections"},
		},
		func(s Spec) (Attention, error) {
			n := s.Options.Int("latents")
			if n < 1 {
				return nil, fmt.Errorf("model.attention.latents: must be positive, got %d", n)
			}
			return &Latent{spec: s, latents: n, bias: s.Options.Bool("bias")}, nil
		})
}

// Forward implements Attention.
func (a *Latent) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	if c.Causal {
		return nil, errors.New("model.kind: latent attention cannot be causal; use it in encoder models")
	}
	d, n := a.spec.DModel, a.latents
	table, err := s.Param("latents", []int{n, d}, graph.Normal(EmbedStd))
	if err != nil {
		return nil, err
	}
	// Tile L to [Batch*N, D]: row b*N + i is latent i.
	ids := s.Binder().Input(s.Name("latent_ids"), c.Batch*n)
	idx := make([]int, c.Batch*n)
	for i := range idx {
		idx[i] = i % n
	}
	if err := graph.SetInts(ids, idx); err != nil {
		return nil, err
	}
	lat, err := graph.Embedding(ids, table)
	if err != nil {
		return nil, err
	}

	// Encode: latents attend to the sequence.
	ln, err := Norm(s.Sub("ln_e"), "layernorm", lat, d)
	if err != nil {
		return nil, err
	}
	enc, err := a.attend(s, c, "e", ln, x, n, c.SeqLen, c.KeyMask,
		MapSpec{Label: "latents<-tokens", Note: "encode: the latents read the sequence", Rows: AxisLatent})
	if err != nil {
		return nil, err
	}
	z, err := G.Add(lat, enc)
	if err != nil {
		return nil, err
	}

	// Process: latents attend to each other.
	if ln, err = Norm(s.Sub("ln_p"), "layernorm", z, d); err != nil {
		return nil, err
	}
	proc, err := a.attend(s, c, "p", ln, ln, n, n, nil,
		MapSpec{Label: "latents<-latents", Note: "process: the latents attend to each other", Rows: AxisLatent, Cols: AxisLatent})
	if err != nil {
		return nil, err
	}
	if z, err = G.Add(z, proc); err != nil {
		return nil, err
	}

	// Decode: every position attends to the latents.
	if ln, err = Norm(s.Sub("ln_d"), "layernorm", z, d); err != nil {
		return nil, err
	}
	return a.attend(s, c, "d", x, ln, c.SeqLen, n, nil,
		MapSpec{Label: "tokens<-latents", Note: "decode: every position reads the latents", Cols: AxisLatent})
}

// attend is multi-head attention of queries from y [Batch*qLen, D] to keys
// and values from z [Batch*kLen, D] with key mask keyMask [Batch*kLen] (nil:
// none), through projections wq_<tag>, wk_<tag>, wv_<tag> and wo_<tag>; m
// labels its map.
func (a *Latent) attend(s Scope, c Context, tag string, y, z *G.Node, qLen, kLen int, keyMask *G.Node, m MapSpec) (*G.Node, error) {
	d, dh := a.spec.DModel, a.spec.HeadDim()
	q, err := Project(s, "wq_"+tag, y, d, d, a.bias)
	if err != nil {
		return nil, err
	}
	k, err := Project(s, "wk_"+tag, z, d, d, a.bias)
	if err != nil {
		return nil, err
	}
	v, err := Project(s, "wv_"+tag, z, d, d, a.bias)
	if err != nil {
		return nil, err
	}
	o, _, err := c.Attend(q, k, v, CoreSpec{Heads: Heads{Heads: a.spec.Heads, HeadDim: dh},
		Shape: graph.AttentionShape{Batch: c.Batch, QLen: qLen, KLen: kLen}, KeyMask: keyMask, Map: m})
	if err != nil {
		return nil, err
	}
	return Project(s, "wo_"+tag, o, d, d, a.bias)
}
