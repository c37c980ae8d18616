package graph

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// DefaultFlashBlock is the tile size of FlashAttention when none is given:
// 64 queries by 64 keys, so one score tile of float64 is 32 KiB and stays in
// L1/L2 next to the query, key and value tiles it is made from.
const DefaultFlashBlock = 64

// FlashAttention computes exactly what Attention computes (same inputs,
// layout, masks, ALiBi and GQA grouping) the way FlashAttention does (Dao
// et al. 2022; loop order of Dao 2023, FlashAttention-2): it is the tiled
// core (TiledAttention) with the full or causal pattern in tiles of block
// queries by block keys. Causal tiles above the diagonal are not visited
// (half the work); no buffer larger than block x block is allocated.
func FlashAttention(q, k, v, keyMask *G.Node, s AttentionShape, block int) (*G.Node, error) {
	if block <= 0 {
		return nil, fmt.Errorf("flash attention: block must be positive, got %d", block)
	}
	out, _, err := tiledAttention(q, k, v, keyMask, s, nil, block)
	return out, err
}

// Slice returns a copy of the rows x cols matrix stored in the flat vector
// packed from offset on. Unlike View it is differentiable: the gradient of
// packed is zero outside the slice. It copies because Gorgonia overwrites
// an elementwise op's input in place at its last use, unaware of aliasing:
// a view of a core's packed output O|L, scaled in place, would corrupt the
// O and L the core's backward reads (caught by TestTiledMatchesDensePattern,
// whose loss is elementwise in L).
func Slice(packed *G.Node, offset, rows, cols int) (*G.Node, error) {
	name := fmt.Sprintf("Slice(%d,%dx%d)", offset, rows, cols)
	return apply(&op{
		name:  name,
		arity: 1,
		typ:   fnType(1, 2),
		shape: viewShape(name, offset, rows, cols),
		do: func(in []G.Value) (G.Value, error) {
			v, err := viewDo(name, offset, rows, cols)(in)
			if err != nil {
				return nil, err
			}
			return v.(*tensor.Dense).Clone().(*tensor.Dense), nil
		},
		diffWRT: []bool{true},
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			n := in[0].Shape().TotalSize()
			d, err := place(grad, offset, n)
			return G.Nodes{d}, err
		},
		gpu: copyKernel(offset, false),
	}, packed)
}

// place writes the matrix x into a zero vector of n elements from offset on.
func place(x *G.Node, offset, n int) (*G.Node, error) {
	name := fmt.Sprintf("Place(%d,%d)", offset, n)
	return apply(&op{
		name:  name,
		arity: 1,
		typ:   fnType(2, 1),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if offset+in[0].TotalSize() > n {
				return nil, shapeErr(name, "%v does not fit", in[0])
			}
			return tensor.Shape{n}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			out := newTensor(in[0].Dtype(), n)
			switch d := in[0].Data().(type) {
			case []float32:
				copy(data[float32](out)[offset:], d)
			case []float64:
				copy(data[float64](out)[offset:], d)
			default:
				return nil, fmt.Errorf("%s: unsupported dtype %v", name, in[0].Dtype())
			}
			return out, nil
		},
		gpu: copyKernel(offset, true),
	}, x)
}
