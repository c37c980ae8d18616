package layers

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// MixtureOfHeads is Mixture-of-Head attention (Jin, Zhu, Ning and Yan 2024,
// "MoH: Multi-Head Attention as Mixture-of-Head Attention"). Multi-head
// attention's output projection is a sum over heads,
// concat(head_1..head_H) Wo = sum_h head_h Wo_h; MoH turns that sum into a
// mixture whose weights a router picks per token t:
//
//	out_t = sum_h g_{t,h} head_{t,h} Wo_h
//
// The first S heads are shared, always on; of the R = H - S routed heads
// each token uses its top K. With one router z_t = x_t Wr [D -> H (+2)]
// split into shared logits z_s (S), routed logits z_r (R) and two balance
// logits z_b:
//
//	g_{t,h} = alpha1 softmax(z_s)_h                 h < S
//	g_{t,h} = alpha2 softmax(z_r)_h  if h in TopK(softmax(z_r)), else 0
//	[alpha1, alpha2] = softmax(z_b)
//
// (alpha2 = 1 without shared heads, alpha1 = 1 without routed ones; there
// are no balance logits then). The routed softmax is over all R heads and
// is not renormalized after the top-K cut; ties go to the lower head. The
// gradient reaches the router through the selected gates' values, not
// through the selection (graph.MoHGates). The router has no bias, as in the
// paper's gate equations. The paper's load-balance loss on the routed heads
// is not implemented here: the trainer has no auxiliary-loss hook.
//
// Gate scale: these are the paper's equations as printed, not the official
// code (SkyworkAI/MoH, MoH-ViT and MoH-LLaMA3), which renormalizes the K
// selected routed gates to sum to 1 and then multiplies the routed gates by
// K, the shared ones by S and the balance pair by 2, so that every active
// head weighs about 1 when the logits are about equal (as at
// initialization) and the gates sum to about S + K, as many as multi-head
// attention's active heads. Here they sum to alpha1 + alpha2 (routed mass
// kept) <= 1: about 1/2 + K/(2R) at equal logits, 2/3 against the official
// 2 with the defaults (4 heads, S = 1, K = 1): a third of the official size,
// each shared head at 1/2 and each routed one at 1/6 of theirs. Without the
// renormalization a routed gate also shrinks as the unselected heads'
// logits grow. This is kept on purpose: it is the function the paper
// writes down, graph.MoHGates implements and tests it (MoH's reference in
// naive_test.go follows it), and changing it would change every moh result
// already recorded; the scale is mostly a factor on the attention branch
// that Wo can learn. The official scaling would be a new gate mode of
// graph.MoHGates (renormalize, then x K, x S, x 2), with its own reference.
//
// gate "none" sets every active gate to 1 (an ablation of the gate values,
// with the router still selecting but never trained); with S = 0, K = H or
// S = H it is exactly multi-head attention.
//
// Cost: the attention core is the flash core over all H heads, and every
// head is computed for every token: the layout is the dense 2-D
// [Batch*SeqLen, H d], and routing only zeroes the unselected heads'
// contributions before Wo. So there is no FLOP saving here, only the
// function of the paper: O(T^2 D) time as in multi-head attention, plus
// O(T D H) for the router and O(T D) for the gating; O(T D) memory (no
// T x T matrix). The KV cache is 2 D per token per layer, all heads' keys
// and values, since later tokens may route to any head.
type MixtureOfHeads struct {
	spec         Spec
	shared, topK int
	softmax      bool
	bias         bool
}

func init() {
	Register("moh", "mixture-of-head attention (Jin et al. 2024): a router weighs shared heads and picks each token's top-k routed heads",
		Support{Causal: true, Bidirectional: true, Padding: true, Positions: Positions, NonSmooth: true},
		[]config.OptionSpec{
			{Name: "shared_heads", Kind: config.Int, Default: 1, Help: "heads every token uses, in [0, n_heads]; the rest are routed"},
			{Name: "top_k", Kind: config.Int, Default: 1, Help: "routed heads each token uses, in [1, n_heads - shared_heads] (ignored without routed heads)"},
			{Name: "gate", Kind: config.String, Default: "softmax", Help: "softmax (the paper's weighted gates) or none (active heads weigh 1; the router only selects and is not trained)"},
			{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the q, k, v and output projections (the router has none)"},
		},
		newMixtureOfHeads)
}

func newMixtureOfHeads(s Spec) (Attention, error) {
	a := &MixtureOfHeads{spec: s, shared: s.Options.Int("shared_heads"), topK: s.Options.Int("top_k"), bias: s.Options.Bool("bias")}
	if a.shared < 0 || a.shared > s.Heads {
		return nil, fmt.Errorf("model.attention.shared_heads: must be in [0, model.n_heads = %d], got %d", s.Heads, a.shared)
	}
	if r := s.Heads - a.shared; r > 0 && (a.topK < 1 || a.topK > r) {
		return nil, fmt.Errorf("model.attention.top_k: must be in [1, %d] (the routed heads, n_heads %d - shared_heads %d), got %d", r, s.Heads, a.shared, a.topK)
	}
	switch g := s.Options.String("gate"); g {
	case "softmax":
		a.softmax = true
	case "none":
	default:
		return nil, fmt.Errorf("model.attention.gate: unknown gate %q (want softmax or none)", g)
	}
	return a, nil
}

// Forward implements Attention.
func (a *MixtureOfHeads) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	d, h, dh := a.spec.DModel, a.spec.Heads, a.spec.HeadDim()
	q, k, v, err := ProjectQKV(s, x, d, d, d, d, a.bias)
	if err != nil {
		return nil, err
	}
	o, err := SelfAttention(q, k, v, c.WithMapLabel(DefaultMapLabel, "every head's map; the router then weighs each head per token, or drops it (gates not drawn)"), a.spec.Pos, CoreSpec{Heads: Heads{Heads: h, HeadDim: dh}})
	if err != nil {
		return nil, err
	}
	z, err := Project(s, "router", x, d, graph.MoHRouterWidth(h, a.shared), false)
	if err != nil {
		return nil, err
	}
	gates, err := graph.MoHGates(z, h, a.shared, a.topK, a.softmax)
	if err != nil {
		return nil, err
	}
	if o, err = graph.ScaleHeads(o, gates); err != nil {
		return nil, err
	}
	return Project(s, "wo", o, d, d, a.bias)
}

// KVCacheElems implements KVCache: a key and a value of D per token, every
// head's, since different tokens route to different heads.
func (a *MixtureOfHeads) KVCacheElems() int { return 2 * a.spec.DModel }
