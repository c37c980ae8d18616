package layers

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// cbam is the Convolutional Block Attention Module (Woo, Park, Lee and
// Kweon, 2018, "CBAM: Convolutional Block Attention Module", ECCV), a block
// module (modules.go): channel gating, then positional gating, of the
// attention output.
//
// The paper's channel attention is M_c = sigmoid(MLP(AvgPool(F)) +
// MLP(MaxPool(F))) with one MLP shared by both pools (its eq. 2), F1 = M_c * F;
// its spatial attention is M_s = sigmoid(f^{7x7}([AvgPool_c(F1); MaxPool_c(F1)]))
// over the 2-channel map of the mean and max across channels (eq. 3),
// F2 = M_s * F1. Over a sequence y [Batch*SeqLen, D]:
//
//	a_t = mean_{s <= t real} y_s,  m_t = max_{s <= t real} y_s        (decoder: running statistics)
//	a_t = mean_{s real} y_s,       m_t = max_{s real} y_s             (encoder: the paper's pools)
//	y'_t  = y_t * sigmoid(MLP(a_t) + MLP(m_t)),  MLP(z) = relu(z W1) W2, W1 [D, D/r], W2 [D/r, D]
//	p_t = mean_c y'_{t,c},  q_t = max_c y'_{t,c}
//	g_t = sigmoid(sum_{i<k} (u_i p_{t+o_i} + v_i q_{t+o_i}))
//	out_t = y'_t * g_t
//
// with the k-tap convolution's offsets o_i = -i (decoder: the convolution
// sees positions <= t, zero-padded on the left) or o_i = i - floor(k/2)
// (encoder: centred; an even k has one more tap on the left). Options:
// reduction r (default 4), kernel k (default 7, the paper's 7x7 made 1-D).
// Padded positions are left out of the pooled statistics and contribute 0
// to the convolution. The running max's gradient goes to the position of
// the maximum (the earliest on ties). Time O(N D^2 / r + N D + N k),
// N = Batch*SeqLen; memory O(N D).
//
// Departures from the paper: the spatial 2-D convolution becomes a 1-D one
// over positions; the decoder form uses running statistics (a channel gate
// per position) and a causal convolution; the convolution has no bias and
// no batch normalisation (the authors' code follows it with BatchNorm);
// the MLP has no biases.
type cbam struct {
	d, hidden int
	offsets   []int
}

func init() {
	RegisterModule("cbam", "CBAM (Woo et al. 2018): channel gates from avg and max pooling through a shared MLP, then position gates from a convolution over the per-position channel mean and max (decoders: running pools, causal convolution)",
		[]config.OptionSpec{
			{Name: "reduction", Kind: config.Int, Default: 4, Help: "r: the channel MLP's hidden width is d_model / r"},
			{Name: "kernel", Kind: config.Int, Default: 7, Help: "taps of the positional gate's convolution over positions"},
		},
		func(spec ModuleSpec) (BlockModule, error) {
			h, err := moduleReduction(spec)
			if err != nil {
				return nil, err
			}
			k := spec.Options.Int("kernel")
			if k < 1 {
				return nil, fmt.Errorf("%s.kernel: must be positive, got %d", spec.Path, k)
			}
			return &cbam{d: spec.DModel, hidden: h, offsets: convOffsets(k, 1, spec.Causal)}, nil
		})
}

// convOffsets are the position offsets of a k-tap convolution with
// dilation r: causal -i r, or centred (i - floor(k/2)) r, for i < k.
func convOffsets(k, r int, causal bool) []int {
	offs := make([]int, k)
	for i := range offs {
		if causal {
			offs[i] = -i * r
		} else {
			offs[i] = (i - k/2) * r
		}
	}
	return offs
}

func (m *cbam) Forward(s Scope, y *G.Node, c Context) (*G.Node, error) {
	avg, err := graph.PrefixMean(y, c.KeyMask, c.Batch, c.SeqLen, c.Causal)
	if err != nil {
		return nil, err
	}
	mx, err := graph.PrefixMax(y, c.KeyMask, c.Batch, c.SeqLen, c.Causal)
	if err != nil {
		return nil, err
	}
	ca, err := channelMLP(s.Sub("channel"), avg, m.d, m.hidden)
	if err != nil {
		return nil, err
	}
	cm, err := channelMLP(s.Sub("channel"), mx, m.d, m.hidden) // the shared MLP
	if err != nil {
		return nil, err
	}
	gate, err := G.Add(ca, cm)
	if err != nil {
		return nil, err
	}
	if gate, err = G.Sigmoid(gate); err != nil {
		return nil, err
	}
	if y, err = G.HadamardProd(y, gate); err != nil {
		return nil, err
	}

	rows := c.Rows()
	p, err := G.Mean(y, 1)
	if err != nil {
		return nil, err
	}
	q, err := graph.RowMax(y)
	if err != nil {
		return nil, err
	}
	var pos *G.Node
	for _, in := range []struct {
		name string
		x    *G.Node
	}{{"conv_mean", p}, {"conv_max", q}} {
		w, err := s.Param(in.name, []int{len(m.offsets), 1}, graph.Uniform(1/float64(2*len(m.offsets))))
		if err != nil {
			return nil, err
		}
		x, err := G.Reshape(in.x, []int{rows, 1})
		if err != nil {
			return nil, err
		}
		conv, err := graph.SeqConv(x, w, c.KeyMask, c.Batch, c.SeqLen, m.offsets)
		if err != nil {
			return nil, err
		}
		if pos == nil {
			pos = conv
		} else if pos, err = G.Add(pos, conv); err != nil {
			return nil, err
		}
	}
	if pos, err = G.Sigmoid(pos); err != nil {
		return nil, err
	}
	if pos, err = G.Reshape(pos, []int{rows}); err != nil {
		return nil, err
	}
	return graph.RowScale(y, pos)
}

func (m *cbam) Cost() (params, perRow int) {
	return 2*m.d*m.hidden + 2*len(m.offsets), 8*m.d + 2*m.hidden + 7
}
