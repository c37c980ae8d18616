package layers

import (
	"fmt"
	"math/rand/v2"
	"slices"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
	"github.com/attnlab/attnlab/graph/blockmask"
)

// BigBird is block-sparse attention from window, random and global blocks
// (Zaheer et al. 2020, "Big Bird: Transformers for Longer Sequences", the
// ITC construction). With positions cut into blocks of b, query block I
// sees key block J when
//
//	|I - J| <= (window_blocks - 1) / 2            (the sliding block window)
//	J < global_blocks or I < global_blocks        (global blocks see and are seen by all)
//	J in R(I)                                     (random_blocks random blocks)
//
// and softmax attention runs over the keys of the visible blocks. R(I) is
// drawn once per layer from the model's seed (among the blocks outside the
// window and the global ones; in causal models among the earlier ones)
// and saved with the model (a store buffer, checked on resume). The tiled
// core, with the block as its tile, visits O(T / b x (window + random +
// global)) tiles: O(T b (w + r + g) D) time and O(T D) memory, plus the
// global rows' O(g b T D).
type BigBird struct {
	spec                          Spec
	block, window, random, global int
	bias                          bool
}

func init() {
	Register("bigbird", "block-sparse attention from window, random and global blocks (BigBird, Zaheer et al. 2020); random blocks drawn once per layer and saved; O(T)",
		Support{Causal: true, Bidirectional: true, Padding: true, Positions: Positions,
			CheckOptions: map[string]any{"window_blocks": 1, "random_blocks": 1, "global_blocks": 1}},
		[]config.OptionSpec{
			{Name: "block", Kind: config.Int, Default: 64, Help: "b: positions per block (the attention tile)"},
			{Name: "window_blocks", Kind: config.Int, Default: 3, Help: "w: blocks in the sliding window, odd (3 = the block and one each side)"},
			{Name: "random_blocks", Kind: config.Int, Default: 3, Help: "r: random key blocks per query block"},
			{Name: "global_blocks", Kind: config.Int, Default: 2, Help: "g: the first g blocks attend to and are attended by all"},
			{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the q, k, v and output projections"},
		},
		func(s Spec) (Attention, error) {
			a := &BigBird{spec: s, block: s.Options.Int("block"), window: s.Options.Int("window_blocks"),
				random: s.Options.Int("random_blocks"), global: s.Options.Int("global_blocks"), bias: s.Options.Bool("bias")}
			switch {
			case a.block < 1:
				return nil, fmt.Errorf("model.attention.block: must be at least 1, got %d", a.block)
			case a.window < 1 || a.window%2 == 0:
				return nil, fmt.Errorf("model.attention.window_blocks: must be odd and positive (the block and as many each side), got %d", a.window)
			case a.random < 0:
				return nil, fmt.Errorf("model.attention.random_blocks: must not be negative, got %d", a.random)
			case a.global < 0:
				return nil, fmt.Errorf("model.attention.global_blocks: must not be negative, got %d", a.global)
			}
			return a, nil
		})
}

// Forward implements Attention.
func (a *BigBird) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	pattern := func(t, tile int) (*graph.Pattern, error) {
		random, err := a.randomBlocks(s, t, tile, c.Causal)
		if err != nil {
			return nil, err
		}
		return BigBirdPattern(a.window, a.global, random)(t, tile)
	}
	return multiHead(s, x, c, a.spec, a.spec.Heads, a.bias, CoreSpec{Pattern: pattern, Block: a.block})
}

// BigBirdPattern is bigbird's pattern with the given random blocks (one
// list per block of tile positions, or nil).
func BigBirdPattern(window, global int, random [][]int32) PatternFunc {
	return func(t, tile int) (*graph.Pattern, error) {
		if random != nil && len(random) != (t+tile-1)/tile {
			return nil, fmt.Errorf("bigbird: %d random lists for %d blocks", len(random), (t+tile-1)/tile)
		}
		return graph.MaskPattern(blockmask.BigBird(t, tile, window, global, random)), nil
	}
}

// randomBlocks are the layer's random blocks for t positions in blocks of
// tile: drawn into the store buffer "random_blocks" [blocks, random] (-1
// pads a row with fewer) the first time, read from it after.
func (a *BigBird) randomBlocks(s Scope, t, tile int, causal bool) ([][]int32, error) {
	nb := (t + tile - 1) / tile
	if a.random == 0 {
		return nil, nil
	}
	width := min(a.random, nb) // no block has more candidates than there are blocks
	buf, err := s.Binder().Store().Buffer(s.Name("random_blocks"), []int{nb, width}, func(rng *rand.Rand, vals []float64) {
		var rows [][]int32
		if causal {
			rows = earlierRandomBlocks(nb, a.window, a.global, width, rng)
		} else {
			rows = blockmask.RandomBlocks(nb, a.window, a.global, width, rng)
		}
		for i := range vals {
			vals[i] = -1
		}
		for qt, row := range rows {
			for j, kt := range row {
				vals[qt*width+j] = float64(kt)
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("model.attention (bigbird): %w", err)
	}
	vals := buf.Value.Data().([]float64)
	out := make([][]int32, nb)
	for qt := range out {
		for _, v := range vals[qt*width : (qt+1)*width] {
			if v >= 0 {
				out[qt] = append(out[qt], int32(v))
			}
		}
	}
	return out, nil
}

// earlierRandomBlocks draws, for each query block qt, random distinct key
// blocks among the earlier ones outside its window and the global blocks,
// [global, qt - window/2), ascending: the blocks a causal model can use.
func earlierRandomBlocks(nb, window, global, random int, rng *rand.Rand) [][]int32 {
	out := make([][]int32, nb)
	for qt := global; qt < nb; qt++ {
		n := qt - window/2 - global
		if n <= 0 {
			continue
		}
		perm := rng.Perm(n)[:min(random, n)]
		row := make([]int32, len(perm))
		for i, x := range perm {
			row[i] = int32(global + x)
		}
		slices.Sort(row)
		out[qt] = row
	}
	return out
}

// KVCacheElems implements KVCache: a key and a value of D per token.
func (a *BigBird) KVCacheElems() int { return 2 * a.spec.DModel }
