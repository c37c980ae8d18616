package layers

import (
	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// ToST is token statistics self-attention (TSSA; Wu et al. 2024, "Token
// Statistics Transformer: Linear-Time Attention via Variational Rate
// Reduction"): one projection w = x U, no separate queries, keys and
// values, and no pairwise scores. Per sequence, token t, head k (of H) and
// head dim c (of p = D/H), with w_tk in R^p head k's columns of w_t:
//
//	pi_tk  = softmax_k(tau_k ||w_tk||^2 / p)                 membership
//	P_tk   = sum_{s in V(t)} pi_sk                            head mass
//	m_tkc  = sum_{s in V(t)} pi_sk w_skc^2 / (P_tk + 1e-8)    second moment
//	o_tkc  = -pi_tk w_tkc / (1 + m_tkc)
//	out    = o Wo
//
// with tau a learned temperature per head (initialized to 1), V(t) the
// unpadded tokens s <= t (causal, prefix sums over time) or all unpadded
// tokens (bidirectional, one total per sequence) (graph.TokenStatistics).
// As in the paper, each token is softly assigned to the heads (the
// paper's groups, each a subspace U_k) whose projection captures most of
// its energy; each head's membership-weighted second moment of its
// projections is a statistic of the whole (visible) token set, and the
// output shrinks every coordinate by 1 / (1 + its moment), so directions
// along which a group's tokens spread widely are compressed most: one
// gradient step on the paper's variational rate-reduction objective, the
// step's scale absorbed by Wo.
//
// Relation to the public code (RobinWu218/ToST): the statistics, the gain
// and the output are the code's (its 1e-8, its -w pi / (1 + moment)); the
// membership's argument differs. The vision code L2-normalizes each
// column of w over the tokens before squaring, and the causal language
// code divides w^2 by its cumulative sum over time and adds a learned
// bias per head and position (a [H, block_size] parameter). Both make
// the argument about p/T per token, so that memberships drift towards
// uniform as sequences grow unless tau grows with T; the latter also
// fixes a maximum length, and a decoder would have to carry the running
// sums of w^2 as well. Here pi is a function of the token alone, the same
// in both directions, and dividing by p keeps its argument of order tau at
// initialization whatever the head size.
//
// Time O(T D) per sequence for the operator (O(T D^2) for the two
// projections), memory O(T D); a decoder's state is P and M per head,
// H (p + 1) numbers. Position schemes act before the layer only: with no
// query-key product there is nothing for rope to rotate or alibi to bias.
type ToST struct {
	spec Spec
	bias bool
}

func init() {
	Register("tost", "token statistics self-attention (ToST, Wu et al. 2024): one projection, tokens softly assigned to heads, each head's weighted second moment gates the projection by 1/(1 + moment); prefix sums when causal; O(T d), no pairwise scores",
		Support{Causal: true, Bidirectional: true, Padding: true, Positions: []string{"learned", "sinusoidal", "none"},
			Why: Refusals{Positions: "it forms no query-key scores, so there is nothing to rotate or bias by distance"}},
		[]config.OptionSpec{
			{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the projection U and the output projection (the public code has none in U)"},
		},
		func(s Spec) (Attention, error) {
			return &ToST{spec: s, bias: s.Options.Bool("bias")}, nil
		})
}

// StateElems implements RecurrentState: per head the running membership
// mass P and second moments M (p of them) of the causal prefix sums.
func (a *ToST) StateElems() int {
	return a.spec.Heads * (a.spec.HeadDim() + 1)
}

// Forward implements Attention.
func (a *ToST) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	d, H := a.spec.DModel, a.spec.Heads
	w, err := Project(s, "wu", x, d, d, a.bias)
	if err != nil {
		return nil, err
	}
	tau, err := s.Param("tau", []int{H}, graph.Constant(1))
	if err != nil {
		return nil, err
	}
	sh := graph.TokenStatsShape{Batch: c.Batch, SeqLen: c.SeqLen, Heads: H, HeadDim: d / H, Causal: c.Causal}
	if c.Maps != nil {
		pi, err := graph.TokenMembership(w, tau, sh)
		if err != nil {
			return nil, err
		}
		as := graph.AttentionShape{Batch: c.Batch, QLen: c.SeqLen, KLen: H, Heads: 1, KVHeads: 1, HeadDim: d / H, Causal: c.Causal}
		if _, err := c.RecordMap(MapSpec{Label: "membership", Weights: pi, Shape: as, Cols: AxisHead,
			Note: "no token-to-token weights: each row is a token's membership pi over the heads (a softmax of tau_k ||w_tk||^2 / p); padded rows are computed but add nothing to the statistics"}); err != nil {
			return nil, err
		}
	}
	o, err := graph.TokenStatistics(w, tau, c.KeyMask, sh)
	if err != nil {
		return nil, err
	}
	return Project(s, "wo", o, d, d, a.bias)
}
