package layers

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
	"github.com/attnlab/attnlab/graph/blockmask"
)

// Strided is the Sparse Transformer's factorized attention (Child et al.
// 2019, "Generating Long Sequences with Sparse Transformers"): the heads
// are split in two halves, and each half attends along one of two
// patterns A(1), A(2) whose composition reaches every earlier position in
// two steps (the paper's "split across heads"). With stride l:
//
//	strided: A(1)_i = {j : |i - j| < l}            (the previous l)
//	         A(2)_i = {j : (i - j) mod l = 0}      (every l-th)
//	fixed:   A(1)_i = {j : floor(j / l) = floor(i / l)}   (own block)
//	         A(2)_i = {j : j mod l >= l - c}       (the c summary positions of every block)
//
// (causal models keep j <= i). Even heads use A(1), odd heads A(2).
// Strided A(2) is l gathered streams, one per residue mod l, each dense
// over T / l positions, so the tiled core does no wasted work: time
// O(T l D + T^2 D / l), O(T sqrt(T) D) at l = sqrt(T) as in the paper.
// Fixed A(1) is block-diagonal, O(T l D); fixed A(2) visits every tile
// holding summary positions, O(T^2 D / l x tile / c) where the paper
// counts O(T^2 D c / l^2): the kernel computes whole tiles, so c << tile
// wastes tile / c. Memory O(T D) for both.
type Strided struct {
	spec            Spec
	fixed           bool
	stride, summary int
	bias            bool
}

func init() {
	Register("strided", "Sparse Transformer factorized attention (Child et al. 2019): half the heads local, half strided (mode strided) or block plus summary positions (mode fixed); O(T sqrt T)",
		Support{Causal: true, Bidirectional: true, Padding: true, Positions: Positions,
			CheckOptions: map[string]any{"stride": 3, "summary": 1}},
		[]config.OptionSpec{
			{Name: "mode", Kind: config.String, Default: "strided", Help: "strided (previous l, every l-th) or fixed (own block of l, the last c of every block)"},
			{Name: "stride", Kind: config.Int, Default: 32, Help: "l: the stride and local extent (the paper: about sqrt(T))"},
			{Name: "summary", Kind: config.Int, Default: 8, Help: "c: summary positions per block of l (fixed mode)"},
			{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the q, k, v and output projections"},
		},
		func(s Spec) (Attention, error) {
			a := &Strided{spec: s, stride: s.Options.Int("stride"), summary: s.Options.Int("summary"), bias: s.Options.Bool("bias")}
			switch m := s.Options.String("mode"); m {
			case "strided":
			case "fixed":
				a.fixed = true
			default:
				return nil, fmt.Errorf("model.attention.mode: want strided or fixed, got %q", m)
			}
			if a.stride < 1 {
				return nil, fmt.Errorf("model.attention.stride: must be at least 1, got %d", a.stride)
			}
			if a.fixed && (a.summary < 1 || a.summary > a.stride) {
				return nil, fmt.Errorf("model.attention.summary: must be in [1, stride %d], got %d", a.stride, a.summary)
			}
			if s.Heads < 2 {
				return nil, fmt.Errorf("model.n_heads: strided attention splits its two patterns across heads and needs at least 2, got %d", s.Heads)
			}
			return a, nil
		})
}

// Forward implements Attention.
func (a *Strided) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	return multiHead(s, x, c, a.spec, a.spec.Heads, a.bias, CoreSpec{Pattern: StridedPattern(a.spec.Heads, a.fixed, a.stride, a.summary)})
}

// StridedPattern is strided's pattern over heads heads: even heads A(1),
// odd heads A(2), of the strided (fixed false) or fixed pattern with
// stride l and c summary positions.
func StridedPattern(heads int, fixed bool, l, c int) PatternFunc {
	return func(t, tile int) (*graph.Pattern, error) { return stridedPattern(heads, fixed, l, c, t, tile), nil }
}

func stridedPattern(heads int, fixed bool, l, c, t, tile int) *graph.Pattern {
	var first, second []graph.Stream
	if fixed {
		first = []graph.Stream{{Offset: 0, Stride: 1, Mask: blockmask.Segments(t, tile, l)}}
		second = []graph.Stream{{Offset: 0, Stride: 1, Mask: blockmask.Summary(t, tile, l, c)}}
	} else {
		// A stride of T or more sees the same keys as a stride of T (the
		// window covers everything, the residues only the query itself),
		// and keeps the gathered rows' leading dimension from overflowing.
		l = min(l, t)
		first = []graph.Stream{{Offset: 0, Stride: 1, Mask: blockmask.SlidingWindow(t, tile, l-1, false)}}
		for o := 0; o < min(l, t); o++ {
			n := (t-1-o)/l + 1 // positions o, o+l, ...: every key of the same residue
			second = append(second, graph.Stream{Offset: o, Stride: l, Mask: blockmask.Dense(n, n, tile)})
		}
	}
	p := &graph.Pattern{Heads: make([][]graph.Stream, heads)}
	for h := range p.Heads {
		p.Heads[h] = first
		if h%2 == 1 {
			p.Heads[h] = second
		}
	}
	return p
}

// KVCacheElems implements KVCache: a key and a value of D per token.
func (a *Strided) KVCacheElems() int { return 2 * a.spec.DModel }
