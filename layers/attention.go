package layers

import (
	"fmt"
	"slices"
	"strings"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
)

// Attention is one attention layer: it maps x [Batch*SeqLen, DModel] to the
// same shape, mixing information across the positions of each sequence.
//
// Attention cores: a variant runs every softmax attention it computes
// through Context.Attend (or SelfAttention, which applies the position
// scheme first), giving the heads and, for a sparse variant, its pattern;
// the context picks the core (dense or tiled) and the tile size and
// records the attention map. No variant names a kernel or a tile.
//
// Attention maps: when c.Maps is not nil (trainer attnmap; never in
// training), Forward must record the weights of every attention core it
// runs, labelled when there is more than one (agent: "agents<-keys" and
// "queries<-agents"; gpa: "p1", "p2" and their combination). Attend records
// for its callers, pattern included; a variant whose weights are not a
// softmax of Q K^T (linear or low-rank attention) records them itself with
// c.RecordMap and MapSpec.Weights. With c.Maps nil nothing is added, so the
// training graph is unchanged. TestEveryVariantRecordsMaps fails for a
// registered variant that records no map.
type Attention interface {
	Forward(s Scope, x *G.Node, c Context) (*G.Node, error)
}

// Context is what an attention layer needs to know besides its input.
type Context struct {
	Shape
	// Causal restricts position i to positions j <= i (decoder models).
	Causal bool
	// KeyMask, if not nil, is [Batch*SeqLen] with 1 for real tokens and 0
	// for padding, which no position may attend to.
	KeyMask *G.Node
	// Layer is the index of the block the layer is in (0 first); it
	// labels recorded maps.
	Layer int
	// Maps, if not nil, collects the layer's attention maps (see
	// Attention); nil when training.
	Maps *MapRecorder
	// Tile, when not 0, is the tile size of every tiled core of the layer
	// (Attend): gradient checks set it small so that their short sequences
	// span several tiles. 0 is the variant's configured tile or
	// graph.DefaultFlashBlock.
	Tile int
	// Cores, if not nil, logs every core call Attend makes (trainer bench
	// attention reports the scores computed).
	Cores *CoreLog
	// Steps, if not nil, collects the layer's step inputs (see StepInput):
	// graph inputs whose value changes as training advances, such as
	// Performer's redrawn random features, which the model refills before
	// each step (models.Model.SetStep). A layer adds each through
	// AddStepInput, which fills it for step 0 at once; with Steps nil
	// (layer tests, gradient checks, trainer bench attention) that step-0
	// value is the input's for good.
	Steps *StepInputs
	// SequenceParallel, above 1, runs the full-pattern tiled core (flash
	// and the exact variants that use it) with that many sequence-parallel
	// workers (graph.SequenceParallelAttention); Attend refuses it for any
	// other core.
	SequenceParallel int

	oracle bool // tests: run every pattern on the dense core (graph.DenseAttention)

	mapLabel, mapNote string // what SelfAttention labels its map (WithMapLabel)
}

// Spec is what a variant's factory is given: the model's sizes and the
// variant's own options, already checked against its declared options.
type Spec struct {
	DModel  int
	Heads   int
	NLayers int      // for depth-scaled initialization of output projections
	Causal  bool     // the model is a decoder: position i sees positions j <= i only
	Pos     Position // the model's position scheme
	// Padded says the batches carry a key-padding mask; NewAttention
	// refuses it for a variant that does not declare Padding.
	Padded  bool
	Options config.Values
}

// KVCache is implemented by variants that can decode with a key/value
// cache: KVCacheElems is the number of cached elements per token per layer
// (bytes = elements x the dtype's size).
type KVCache interface {
	KVCacheElems() int
}

// RecurrentState is implemented by variants that decode with a state of
// fixed size instead of a KV cache (linear attention's d x d per head):
// StateElems is the number of elements one layer keeps per sequence,
// whatever its length.
type RecurrentState interface {
	StateElems() int
}

// HeadDim is DModel / Heads.
func (s Spec) HeadDim() int { return s.DModel / s.Heads }

// Factory builds an attention layer from a spec; it reports impossible
// combinations of sizes and options as errors naming the option.
type Factory func(Spec) (Attention, error)

var variants = config.NewRegistry[Factory]("attention kind")

// Register makes a variant available by name; each variant's file calls it
// from init. support declares the settings it works in (NewAttention
// refuses the others, so its factory never sees them); options lists every
// option it takes (any other option in a config is an error). An incomplete
// declaration panics: it is a programming error caught at init.
func Register(name, description string, support Support, options []config.OptionSpec, f Factory) {
	if err := support.check(); err != nil {
		panic(fmt.Sprintf("layers: attention kind %q %v", name, err))
	}
	variants.Register(config.Entry[Factory]{Name: name, Description: description, Options: options, Factory: f})
	support.name = name
	support.Positions = slices.Clone(support.Positions)
	supportMu.Lock()
	defer supportMu.Unlock()
	supports[name] = support
}

// Variants returns the registered variants in name order.
func Variants() []config.Entry[Factory] { return variants.Entries() }

// NewAttention builds the variant a config names. Errors name the config key
// ("model.attention.kind: unknown attention kind ..."). A setting (causal or
// not, padded, position scheme) the variant does not declare is refused
// here, from its declaration (Support.Allows).
func NewAttention(c config.Component, spec Spec) (Attention, error) {
	e, vals, err := variants.Resolve("model.attention", c)
	if err != nil {
		return nil, err
	}
	sup, err := SupportOf(c.Kind)
	if err != nil {
		return nil, err
	}
	if err := sup.Allows(Setting{Causal: spec.Causal, Padded: spec.Padded, Positional: spec.Pos.Kind}); err != nil {
		return nil, err
	}
	spec.Options = vals
	if err := spec.Pos.Check(spec.HeadDim()); err != nil {
		return nil, err
	}
	a, err := e.Factory(spec)
	if err != nil {
		if strings.HasPrefix(err.Error(), "model.") { // already names its key
			return nil, err
		}
		return nil, fmt.Errorf("model.attention (%s): %w", c.Kind, err)
	}
	return a, nil
}
