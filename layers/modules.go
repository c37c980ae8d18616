package layers

import (
	"fmt"
	"strings"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
)

// Block add-on modules (model.block_modules): small vision-born modules
// the sources put around the attention block, adapted to sequences and
// composable with any attention variant. A model lists them in order,
//
//	model:
//	  block_modules: [se, {kind: cbam, kernel: 7}, range_conv]
//
// (a bare name is the kind with its default options), and every block
// applies them, in list order, to the attention sublayer's output before
// the residual add, so they gate or filter the attention branch only:
//
//	y = Attention(Norm1(x));  y = M_k(...M_1(y));  x = x + y;  x = x + FFN(Norm2(x))
//
// An empty list (the default) adds nothing: the block, its parameters and
// its outputs are exactly those of a model without modules.
//
// In a decoder every module is causal: its output at position t depends on
// the attention outputs at positions <= t only (running statistics over the
// prefix, convolutions that look left); in an encoder each has the paper's
// whole-sequence form. Padded positions (the key mask) are left out of
// every statistic and every convolution. The kinds: se.go, cbam.go,
// range_conv.go.

// BlockModule is one add-on module: Forward maps the attention output y
// [Batch*SeqLen, DModel] to the same shape; c says the direction (Causal)
// and the padding (KeyMask). Its parameters live in scope s.
type BlockModule interface {
	Forward(s Scope, y *G.Node, c Context) (*G.Node, error)
	// Cost is what the module adds to a block, for models.EstimateCost:
	// its parameters, and the values its forward pass keeps per row.
	Cost() (params, perRow int)
}

// ModuleSpec is what a module's factory is given: the model's width and
// direction, and the module's options, already checked against its
// declared options. Path names the module in errors
// ("model.block_modules[1]").
type ModuleSpec struct {
	DModel  int
	Causal  bool
	Padded  bool
	Path    string
	Options config.Values
}

// ModuleFactory builds a module from its spec; impossible options are
// errors naming the key (spec.Path + "." + option).
type ModuleFactory func(ModuleSpec) (BlockModule, error)

var modules = config.NewRegistry[ModuleFactory]("block module kind")

// RegisterModule makes a block module available by name; each module's file
// calls it from init. options lists every option it takes.
func RegisterModule(name, description string, options []config.OptionSpec, f ModuleFactory) {
	modules.Register(config.Entry[ModuleFactory]{Name: name, Description: description, Options: options, Factory: f})
}

// Modules returns the registered block modules in name order.
func Modules() []config.Entry[ModuleFactory] { return modules.Entries() }

// NewModules builds the modules a config lists; spec gives the sizes and
// direction (its Path and Options are set per module). Errors name the
// key: "model.block_modules[1].kernel: ...".
func NewModules(cs []config.Component, spec ModuleSpec) ([]BlockModule, error) {
	var out []BlockModule
	for i, c := range cs {
		path := fmt.Sprintf("model.block_modules[%d]", i)
		e, vals, err := modules.Resolve(path, c)
		if err != nil {
			return nil, err
		}
		spec.Path, spec.Options = path, vals
		m, err := e.Factory(spec)
		if err != nil {
			if strings.HasPrefix(err.Error(), "model.") {
				return nil, err
			}
			return nil, fmt.Errorf("%s (%s): %w", path, c.Kind, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// applyModules runs ms on y in order, module i in scope s.Sub("modules.i").
func applyModules(s Scope, ms []BlockModule, y *G.Node, c Context) (*G.Node, error) {
	for i, m := range ms {
		var err error
		if y, err = m.Forward(s.Sub(fmt.Sprintf("modules.%d", i)), y, c); err != nil {
			return nil, err
		}
	}
	return y, nil
}

// moduleReduction checks a module's reduction option r against the width
// and returns the hidden width DModel / r of its channel MLP.
func moduleReduction(spec ModuleSpec) (int, error) {
	r := spec.Options.Int("reduction")
	if r < 1 || r > spec.DModel || spec.DModel%r != 0 {
		return 0, fmt.Errorf("%s.reduction: must be a positive divisor of model.d_model (%d), got %d", spec.Path, spec.DModel, r)
	}
	return spec.DModel / r, nil
}
