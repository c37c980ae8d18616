package layers

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/graph"
)

// NormEps is the epsilon inside the square root of both norms (PyTorch's
// LayerNorm default).
const NormEps = 1e-5

// Norm applies the normalization called kind ("layernorm": gain "gamma" and
// shift "beta"; "rmsnorm": gain "gamma") over the last dimension of x [N, d].
func Norm(s Scope, kind string, x *G.Node, d int) (*G.Node, error) {
	gamma, err := s.Param("gamma", []int{d}, graph.Constant(1))
	if err != nil {
		return nil, err
	}
	switch kind {
	case "layernorm":
		beta, err := s.Param("beta", []int{d}, graph.Constant(0))
		if err != nil {
			return nil, err
		}
		return graph.LayerNorm(x, gamma, beta, NormEps)
	case "rmsnorm":
		return graph.RMSNorm(x, gamma, NormEps)
	}
	return nil, fmt.Errorf("model.norm: unknown norm %q (known: layernorm, rmsnorm)", kind)
}

// FFN is the position-wise feed-forward network act(x W1 + b1) W2 + b2 with
// hidden width dFF.
func FFN(s Scope, x *G.Node, d, dFF, nLayers int, act graph.Activation) (*G.Node, error) {
	h, err := Project(s, "w1", x, d, dFF, true)
	if err != nil {
		return nil, err
	}
	if h, err = graph.Activate(h, act); err != nil {
		return nil, err
	}
	return Project(s, "w2", h, dFF, d, true)
}

// BlockSpec describes one pre-norm Transformer block.
type BlockSpec struct {
	DModel, DFF, NLayers int
	Norm                 string
	Activation           graph.Activation
	Attention            Attention
	// Modules are the block add-on modules (modules.go), applied in order
	// to the attention output before the residual add; none: the plain block.
	Modules []BlockModule
}

// Block is the pre-norm residual block (as GPT-2; Xiong et al. 2020):
//
//	x = x + M_k(...M_1(Attention(Norm1(x))))   (the modules, if any)
//	x = x + FFN(Norm2(x))
func Block(s Scope, x *G.Node, c Context, b BlockSpec) (*G.Node, error) {
	h, err := Norm(s.Sub("norm1"), b.Norm, x, b.DModel)
	if err != nil {
		return nil, err
	}
	if h, err = b.Attention.Forward(s.Sub("attn"), h, c); err != nil {
		return nil, err
	}
	if h, err = applyModules(s, b.Modules, h, c); err != nil {
		return nil, err
	}
	if x, err = G.Add(x, h); err != nil {
		return nil, err
	}
	if h, err = Norm(s.Sub("norm2"), b.Norm, x, b.DModel); err != nil {
		return nil, err
	}
	if h, err = FFN(s.Sub("ffn"), h, b.DModel, b.DFF, b.NLayers, b.Activation); err != nil {
		return nil, err
	}
	return G.Add(x, h)
}
