package layers

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// rangeConv is the "dynamic range convolution" after attention that one of
// the sources names (a convolution over non-adjacent positions, widening
// the block's receptive field), a block module (modules.go). The source
// gives no equations, so this is our definition: a multi-rate dilated
// depthwise convolution, dilated convolutions being those of Yu and Koltun
// (2016, "Multi-Scale Context Aggregation by Dilated Convolutions", ICLR),
// with one depthwise k-tap filter per dilation rate, summed and added to
// its input:
//
//	out_{t,c} = y_{t,c} + sum_{r in dilations} sum_{i<k} w_{r,i,c} y_{t+o(r,i), c}
//
// with o(r, i) = -i r (decoder: causal, positions <= t) or
// o(r, i) = (i - floor(k/2)) r (encoder: centred; an even k has one more
// tap on the left). Positions outside the sequence and padded positions
// contribute 0. Options: kernel k (default 3), dilations (default [1, 2, 4]:
// a causal receptive field of 1 + (k-1) max(dilations) = 9 positions).
// Every rate has its own tap at offset 0 (they add up). The weights start
// at 0, so the module starts as the identity. Parameters |dilations| k D;
// time O(N D k |dilations|), N = Batch*SeqLen; memory O(N D).
//
// Departures: the definition is ours (the source names the idea, not a
// formula); the rates are fixed by configuration, not chosen per input
// (nothing here is "dynamic" beyond the multi-rate mixture).
type rangeConv struct {
	d, taps int
	offsets []int
}

func init() {
	RegisterModule("range_conv", "dynamic range convolution, as we define it: a multi-rate dilated depthwise convolution over positions added to the attention output (Yu and Koltun 2016 dilations; decoders: causal)",
		[]config.OptionSpec{
			{Name: "kernel", Kind: config.Int, Default: 3, Help: "taps per dilation rate"},
			{Name: "dilations", Kind: config.IntList, Default: []int{1, 2, 4}, Help: "dilation rates, one depthwise filter each"},
		},
		func(spec ModuleSpec) (BlockModule, error) {
			k := spec.Options.Int("kernel")
			if k < 1 {
				return nil, fmt.Errorf("%s.kernel: must be positive, got %d", spec.Path, k)
			}
			ds := spec.Options.Ints("dilations")
			if len(ds) == 0 {
				return nil, fmt.Errorf("%s.dilations: must list at least one rate", spec.Path)
			}
			var offs []int
			for _, r := range ds {
				if r < 1 {
					return nil, fmt.Errorf("%s.dilations: rates must be positive, got %v", spec.Path, ds)
				}
				offs = append(offs, convOffsets(k, r, spec.Causal)...)
			}
			return &rangeConv{d: spec.DModel, taps: len(offs), offsets: offs}, nil
		})
}

func (m *rangeConv) Forward(s Scope, y *G.Node, c Context) (*G.Node, error) {
	w, err := s.Param("w", []int{m.taps, m.d}, graph.Constant(0))
	if err != nil {
		return nil, err
	}
	conv, err := graph.SeqConv(y, w, c.KeyMask, c.Batch, c.SeqLen, m.offsets)
	if err != nil {
		return nil, err
	}
	return G.Add(y, conv)
}

func (m *rangeConv) Cost() (params, perRow int) { return m.taps * m.d, 2 * m.d }
