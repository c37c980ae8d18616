package layers

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// Flash is standard multi-head attention computed by FlashAttention (Dao et
// al. 2022, "FlashAttention: Fast and Memory-Efficient Exact Attention with
// IO-Awareness"; Dao 2023, FlashAttention-2): the same function and
// parameters as Standard, but the core (graph.FlashAttention) walks
// block x block tiles with an online softmax and keeps only the output and
// each row's logsumexp; its backward recomputes the tiles. O(T^2 D) time,
// half of it for causal models (tiles above the diagonal are skipped);
// O(T D) memory plus O(block^2) per thread, never T x T.
type Flash struct {
	spec  Spec
	bias  bool
	block int
}

func init() {
	Register("flash", "standard attention as a tiled, online-softmax custom op (Dao et al. 2022); exact, O(T) memory",
		Support{Causal: true, Bidirectional: true, Padding: true, Positions: Positions},
		[]config.OptionSpec{
			{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the q, k, v and output projections"},
			{Name: "block", Kind: config.Int, Default: graph.DefaultFlashBlock, Help: "tile size: queries and keys per tile"},
		},
		func(s Spec) (Attention, error) {
			b := s.Options.Int("block")
			if b < 1 {
				return nil, fmt.Errorf("model.attention.block: must be positive, got %d", b)
			}
			return &Flash{spec: s, bias: s.Options.Bool("bias"), block: b}, nil
		})
}

// Forward implements Attention.
func (a *Flash) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	return multiHead(s, x, c, a.spec, a.spec.Heads, a.bias, CoreSpec{Block: a.block})
}

// KVCacheElems implements KVCache: a key and a value of D per token.
func (a *Flash) KVCacheElems() int { return 2 * a.spec.DModel }
