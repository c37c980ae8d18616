package layers

import (
	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// se is Squeeze-and-Excitation (Hu, Shen and Sun, 2018, "Squeeze-and-
// Excitation Networks", CVPR; the journal version adds Albanie and Sun),
// a block module (modules.go) gating the attention output's channels.
//
// The paper squeezes a feature map by global average pooling, z = mean_t y_t
// (its eq. 2), excites with a bottleneck MLP, s = sigmoid(W2 relu(W1 z))
// (eq. 3), and rescales the channels, out_t = y_t * s (eq. 4). Here, with y
// the attention output [Batch*SeqLen, D]:
//
//	z_t   = (1/n_t) sum_{s <= t, s real} y_s     (decoder: running mean over the prefix)
//	z_t   = (1/n)   sum_{s real} y_s             (encoder: the paper's mean, the same for every t)
//	s_t   = sigmoid(relu(z_t W1) W2),   W1 [D, D/r], W2 [D/r, D]
//	out_t = y_t * s_t                            (per channel)
//
// with r the option reduction (default 4; the paper's r = 16 is meant for
// hundreds of channels) and n_t the count of real (unpadded) positions.
// Time O(N D^2 / r) for the MLP plus O(N D) for the squeeze and the gate,
// N = Batch*SeqLen; memory O(N D) (one squeeze, hidden and gate per row).
//
// Departures from the paper: the decoder form squeezes the prefix only (a
// gate per position instead of one per sequence), so that the module is
// causal; the MLP has no biases, as in eq. 3 (the authors' Caffe models
// have them); the squeeze skips padding.
type se struct {
	d, hidden int
}

func init() {
	RegisterModule("se", "Squeeze-and-Excitation (Hu et al. 2018): channel gates sigmoid(W2 relu(W1 z)) from the mean z over positions (decoders: the running mean over the prefix)",
		[]config.OptionSpec{
			{Name: "reduction", Kind: config.Int, Default: 4, Help: "r: the gate MLP's hidden width is d_model / r"},
		},
		func(spec ModuleSpec) (BlockModule, error) {
			h, err := moduleReduction(spec)
			if err != nil {
				return nil, err
			}
			return &se{d: spec.DModel, hidden: h}, nil
		})
}

func (m *se) Forward(s Scope, y *G.Node, c Context) (*G.Node, error) {
	z, err := graph.PrefixMean(y, c.KeyMask, c.Batch, c.SeqLen, c.Causal)
	if err != nil {
		return nil, err
	}
	gate, err := channelMLP(s, z, m.d, m.hidden)
	if err != nil {
		return nil, err
	}
	if gate, err = G.Sigmoid(gate); err != nil {
		return nil, err
	}
	return G.HadamardProd(y, gate)
}

// channelMLP is relu(z W1) W2 with W1 "w1" [d, hidden] and W2 "w2"
// [hidden, d], no biases (se and cbam's shared MLP).
func channelMLP(s Scope, z *G.Node, d, hidden int) (*G.Node, error) {
	h, err := Project(s, "w1", z, d, hidden, false)
	if err != nil {
		return nil, err
	}
	if h, err = graph.Activate(h, graph.ReLU); err != nil {
		return nil, err
	}
	return Project(s, "w2", h, hidden, d, false)
}

func (m *se) Cost() (params, perRow int) { return 2 * m.d * m.hidden, 4*m.d + m.hidden }
