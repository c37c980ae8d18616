package layers

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
	"github.com/attnlab/attnlab/graph/blockmask"
)

// SlidingWindow is local attention in a window around each position, with
// optional global tokens (Beltagy et al. 2020, "Longformer: The
// Long-Document Transformer"):
//
//	head_h(i) = sum_{j in N(i)} softmax_j(q_i . k_j / sqrt(d)) v_j
//	N(i) = {j : |i - j| <= w}            (bidirectional)
//	N(i) = {j : i - w <= j <= i}         (causal)
//	N(i) = every j, for i < g;  j in N(i) for every i when j < g (global)
//
// Only the tiles the band (and the global rows and columns) touch are
// computed, by the tiled core: O(T (w + g) D) time and O(T D) memory
// (plus the global rows' O(g T D)); with window >= T it is standard
// attention.
type SlidingWindow struct {
	spec           Spec
	window, global int
	bias           bool
}

func init() {
	Register("sliding_window", "local attention in a window of w positions each side (causal: w before), with g global tokens (Longformer, Beltagy et al. 2020); O(T w)",
		Support{Causal: true, Bidirectional: true, Padding: true, Positions: Positions,
			CheckOptions: map[string]any{"window": 2, "global_tokens": 1}},
		[]config.OptionSpec{
			{Name: "window", Kind: config.Int, Default: 128, Help: "w: keys within w positions of the query (causal: the w before it and itself)"},
			{Name: "global_tokens", Kind: config.Int, Default: 0, Help: "g: the first g positions attend to, and are attended by, every position"},
			{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the q, k, v and output projections"},
		},
		func(s Spec) (Attention, error) {
			a := &SlidingWindow{spec: s, window: s.Options.Int("window"), global: s.Options.Int("global_tokens"), bias: s.Options.Bool("bias")}
			if a.window < 0 {
				return nil, fmt.Errorf("model.attention.window: must not be negative, got %d", a.window)
			}
			if a.global < 0 {
				return nil, fmt.Errorf("model.attention.global_tokens: must not be negative, got %d", a.global)
			}
			return a, nil
		})
}

// Forward implements Attention.
func (a *SlidingWindow) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	return multiHead(s, x, c, a.spec, a.spec.Heads, a.bias, CoreSpec{Pattern: SlidingWindowPattern(a.window, a.global)})
}

// SlidingWindowPattern is sliding_window's pattern: the band of window
// each side (bidirectional: the core composes the causal mask) plus the
// global rows and columns.
func SlidingWindowPattern(window, global int) PatternFunc {
	return func(t, tile int) (*graph.Pattern, error) {
		return graph.MaskPattern(blockmask.WithGlobal(blockmask.SlidingWindow(t, tile, window, false), global)), nil
	}
}

// KVCacheElems implements KVCache: a key and a value of D per token.
func (a *SlidingWindow) KVCacheElems() int { return 2 * a.spec.DModel }
