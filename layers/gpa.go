package layers

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// GeneralizedProbabilistic is dual-attention generalized probabilistic
// attention (Heo and Choi 2024, "Generalized Probabilistic Attention
// Mechanism in Transformers", daGPAM): each head mixes two softmax maps
// with an affine combination whose weights sum to one,
//
//	A = (1 + lambda) softmax(Q1 K1^T / sqrt(d)) - lambda softmax(Q2 K2^T / sqrt(d))
//	head_h = A_h V_h,  out = concat(heads) Wo
//
// so rows of A still sum to 1 but weights may be negative, which the paper
// argues eases rank collapse and gradient vanishing. lambda is a fixed
// hyper-parameter here. Computed as (1+lambda) O1 - lambda O2 with two flash
// cores sharing V: time 2x standard's, memory O(T D); the KV cache holds two
// keys and a value, 3 D per token per layer. lambda = 0 is standard
// attention.
//
// The subtracted map has its own full query and key projections, wq2 and
// wk2 [D, D] with biases, at the full head size: the layer holds 6 D x D
// matrices to standard attention's 4 (2 D^2 + 2 D more parameters per
// layer), and the second score map costs as much as the first. Cheaper
// ways to get the second map (sharing Wq or Wk between the two, or
// splitting each head's query and key in two halves as differential
// attention does) are not provided, so a comparison at equal parameter
// count must give gpa's competitors the difference elsewhere.
type GeneralizedProbabilistic struct {
	spec   Spec
	lambda float64
	bias   bool
}

func init() {
	Register("gpa", "dual-attention generalized probabilistic attention (Heo and Choi 2024): (1+lambda) softmax(S1) - lambda softmax(S2)",
		Support{Causal: true, Bidirectional: true, Padding: true, Positions: Positions},
		[]config.OptionSpec{
			{Name: "lambda", Kind: config.Float, Default: 0.2, Help: "weight lambda >= 0 of the subtracted map"},
			{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the projections"},
		},
		func(s Spec) (Attention, error) {
			l := s.Options.Float("lambda")
			if l < 0 || math.IsNaN(l) || math.IsInf(l, 0) {
				return nil, fmt.Errorf("model.attention.lambda: must be a finite number >= 0, got %g", l)
			}
			return &GeneralizedProbabilistic{spec: s, lambda: l, bias: s.Options.Bool("bias")}, nil
		})
}

// Forward implements Attention.
func (a *GeneralizedProbabilistic) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	D := a.spec.DModel
	heads := Heads{Heads: a.spec.Heads, HeadDim: a.spec.HeadDim()}
	proj := func(name string) (*G.Node, error) { return Project(s, name, x, D, D, a.bias) }
	q1, err := proj("wq")
	if err != nil {
		return nil, err
	}
	k1, err := proj("wk")
	if err != nil {
		return nil, err
	}
	v, err := proj("wv")
	if err != nil {
		return nil, err
	}
	q2, err := proj("wq2")
	if err != nil {
		return nil, err
	}
	k2, err := proj("wk2")
	if err != nil {
		return nil, err
	}
	o1, err := SelfAttention(q1, k1, v, c.WithMapLabel("p1", "softmax(S1), weighted 1+lambda"), a.spec.Pos, CoreSpec{Heads: heads})
	if err != nil {
		return nil, err
	}
	var p1 *AttentionMap
	if c.Maps != nil {
		p1 = c.Maps.Last()
	}
	o2, err := SelfAttention(q2, k2, v, c.WithMapLabel("p2", "softmax(S2), weighted -lambda"), a.spec.Pos, CoreSpec{Heads: heads})
	if err != nil {
		return nil, err
	}
	if c.Maps != nil {
		note := fmt.Sprintf("(1+lambda) p1 - lambda p2 with lambda %g, the map applied to V; rows sum to 1, weights may be negative", a.lambda)
		if err := c.RecordCombined("combined", note, p1, c.Maps.Last(), 1+a.lambda, -a.lambda); err != nil {
			return nil, err
		}
	}
	o, err := graph.Combine(o1, o2, 1+a.lambda, -a.lambda)
	if err != nil {
		return nil, err
	}
	return Project(s, "wo", o, D, D, a.bias)
}

// KVCacheElems implements KVCache: two keys and one value of D each.
func (a *GeneralizedProbabilistic) KVCacheElems() int { return 3 * a.spec.DModel }
