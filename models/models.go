// Package models stacks layers into whole Transformers from a config: a
// decoder-only language model (causal, next-token loss over the positions the
// task scores) and an encoder classifier (bidirectional, mean or CLS
// pooling). Build makes one fixed-shape graph; call it again with another
// batch size and the same parameter store for an evaluation graph that shares
// the weights.
//
// EstimateCost sizes a config without building it: its exact parameter
// count and the approximate peak memory of training it (calibrated against
// measured runs; see estimate.go), and CheckLimits refuses sizes no machine
// should build (a tensor over 2^31 elements, over 2^33 parameters, over
// 1024 layers), so that callers can refuse a config before allocating it.
package models

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/data"
	"github.com/attnlab/attnlab/graph"
	"github.com/attnlab/attnlab/layers"
)

// Model is one built graph of a model for a fixed batch size.
type Model struct {
	Graph  *G.ExprGraph
	Params []*G.Node // the parameter nodes, in creation order

	Inputs  *G.Node // [Batch*SeqLen] token ids
	Targets *G.Node // [Batch*SeqLen] next tokens (decoder) or [Batch] classes (encoder)
	Weights *G.Node // the loss mask, same shape as Targets
	KeyMask *G.Node // [Batch*SeqLen], 1 = token, 0 = padding; nil if the task never pads

	Logits *G.Node // [Batch*SeqLen, Vocab] or [Batch, Classes]
	Loss   *G.Node // scalar: mean cross-entropy over scored positions

	Batch, SeqLen int
	Outputs       int // vocabulary size (decoder) or number of classes (encoder)

	// KVCacheElems is the number of elements one layer caches per token
	// when decoding, or -1 when the attention variant has no KV cache.
	KVCacheElems int
	// StateElems is the number of elements one layer's recurrent state
	// holds per sequence (layers.RecurrentState), or -1 without one.
	StateElems int

	// StepInputs are the graph's inputs that change with the training step
	// (layers.StepInput: Performer's redrawn random features), empty for
	// most variants. Build leaves them filled for step 0; SetStep refills
	// them.
	StepInputs *layers.StepInputs
}

// Build makes the graph of the model cfg describes for batch examples of
// task, taking parameters from store (creating them on first use). Config
// errors name the key.
func Build(cfg config.Model, task data.Task, store *graph.Store, batch int) (*Model, error) {
	return BuildRecording(cfg, task, store, batch, nil)
}

// BuildRecording is Build with every layer's attention maps recorded into
// maps (see layers.MapRecorder), for inspecting a trained model; with maps
// nil it is Build, and the graph has no extra node.
func BuildRecording(cfg config.Model, task data.Task, store *graph.Store, batch int, maps *layers.MapRecorder) (*Model, error) {
	classes := task.Classes()
	switch {
	case cfg.Kind == "decoder" && classes > 0:
		return nil, fmt.Errorf("model.kind: decoder needs a language-model task, and this task classifies sequences (use model.kind: encoder)")
	case cfg.Kind == "encoder" && classes == 0:
		return nil, fmt.Errorf("model.kind: encoder needs a classification task, and this task is a language-model task (use model.kind: decoder)")
	case cfg.Kind != "decoder" && cfg.Kind != "encoder":
		return nil, fmt.Errorf("model.kind: unknown kind %q (known: decoder, encoder)", cfg.Kind)
	}
	if cfg.DModel%cfg.NHeads != 0 {
		return nil, fmt.Errorf("model.d_model (%d) is not divisible by model.n_heads (%d)", cfg.DModel, cfg.NHeads)
	}
	aspec := attentionSpec(cfg, task)
	attn, err := layers.NewAttention(cfg.Attention, aspec)
	if err != nil {
		return nil, err
	}
	mods, err := blockModules(cfg, aspec)
	if err != nil {
		return nil, err
	}
	if memoryOn(cfg) { // segment recurrence (memory.go)
		return buildMemory(cfg, task, store, batch, maps, attn, aspec, mods)
	}
	g := graph.NewGraph(store.Placement)
	b := store.Bind(g)
	root := layers.NewScope(b)
	sh := layers.Shape{Batch: batch, SeqLen: task.SeqLen(), DModel: cfg.DModel}
	m := &Model{Graph: g, Batch: batch, SeqLen: sh.SeqLen, KVCacheElems: -1, StateElems: -1, StepInputs: &layers.StepInputs{}}
	if kv, ok := attn.(layers.KVCache); ok {
		m.KVCacheElems = kv.KVCacheElems()
	}
	if st, ok := attn.(layers.RecurrentState); ok {
		m.StateElems = st.StateElems()
	}

	m.Inputs = b.Input("inputs", sh.Rows())
	if aspec.Padded {
		m.KeyMask = b.Input("key_mask", sh.Rows())
	}
	emb, err := root.Param("embed.tokens", []int{task.Vocab(), cfg.DModel}, graph.Normal(layers.EmbedStd))
	if err != nil {
		return nil, err
	}
	x, err := graph.Embedding(m.Inputs, emb)
	if err != nil {
		return nil, err
	}
	if x, err = layers.AddPositions(root.Sub("embed"), aspec.Pos, x, sh); err != nil {
		return nil, err
	}
	ctx := layers.Context{Shape: sh, Causal: cfg.Kind == "decoder", KeyMask: m.KeyMask, Maps: maps, Steps: m.StepInputs, SequenceParallel: cfg.SequenceParallel}
	spec := layers.BlockSpec{DModel: cfg.DModel, DFF: cfg.DFF, NLayers: cfg.NLayers, Norm: cfg.Norm,
		Activation: graph.Activation(cfg.Activation), Attention: attn, Modules: mods}
	for i := 0; i < cfg.NLayers; i++ {
		ctx.Layer = i
		if x, err = layers.Block(root.Sub(fmt.Sprintf("blocks.%d", i)), x, ctx, spec); err != nil {
			return nil, err
		}
	}
	if x, err = layers.Norm(root.Sub("final_norm"), cfg.Norm, x, cfg.DModel); err != nil {
		return nil, err
	}
	if classes > 0 {
		mask := m.KeyMask
		if mask == nil { // every position is real
			mask = b.Input("all_positions", sh.Rows())
			ones := make([]float64, sh.Rows())
			for i := range ones {
				ones[i] = 1
			}
			if err := graph.SetValues(mask, ones); err != nil {
				return nil, err
			}
		}
		if x, err = graph.Pool(x, mask, batch, sh.SeqLen, graph.Pooling(cfg.Pooling)); err != nil {
			return nil, fmt.Errorf("model.pooling: %w", err)
		}
		m.Outputs = classes
		m.Targets = b.Input("targets", batch)
		m.Weights = b.Input("loss_mask", batch)
	} else {
		m.Outputs = task.Vocab()
		m.Targets = b.Input("targets", sh.Rows())
		m.Weights = b.Input("loss_mask", sh.Rows())
	}
	if m.Logits, err = layers.Project(root, "head", x, cfg.DModel, m.Outputs, true); err != nil {
		return nil, err
	}
	if m.Loss, err = graph.SoftmaxCrossEntropy(m.Logits, m.Targets, m.Weights); err != nil {
		return nil, err
	}
	m.Params = b.Nodes()
	// Every step input holds its step-0 value (layers fill them as they
	// add them); setting step 0 again makes that Build's contract rather
	// than each layer's.
	if err := m.SetStep(0); err != nil {
		return nil, err
	}
	return m, nil
}

// SetStep fills the model's step inputs (StepInputs) with their values for
// training step step: call it before the forward pass of training step
// step (the training loop numbers steps from 1) and before evaluating the
// weights of step step, so that the evaluation sees the draw training
// used. Each value is a pure function of the step (layers.StepInput), so a
// model loaded from a checkpoint at step s and set to s computes what the
// model of the uninterrupted run computed. Models without step inputs
// ignore it.
func (m *Model) SetStep(step int) error {
	return m.StepInputs.Set(step)
}

// AfterStep runs the layers' state updates (layers.StepInputs.AddUpdate:
// the Routing Transformer's centroids) after a training step's optimizer
// update; train.Trainer.Step calls it. An evaluation model's updates are
// never run: only the training model moves the state, which the two share
// through the store.
func (m *Model) AfterStep() error {
	return m.StepInputs.AfterStep()
}

// Position is the position scheme a model config names.
func Position(cfg config.Model) layers.Position {
	return layers.Position{Kind: cfg.Positional, RopeBase: cfg.RopeBase, RopeFraction: cfg.RopeFraction, XPosScaleBase: cfg.XPosScaleBase}
}

// Feed writes a batch into the model's input tensors.
func (m *Model) Feed(bt *data.Batch) error {
	if bt.Size != m.Batch || bt.SeqLen != m.SeqLen {
		return fmt.Errorf("batch of %dx%d for a model built for %dx%d", bt.Size, bt.SeqLen, m.Batch, m.SeqLen)
	}
	if err := graph.SetInts(m.Inputs, bt.Inputs); err != nil {
		return err
	}
	if err := graph.SetInts(m.Targets, bt.Targets); err != nil {
		return err
	}
	if err := graph.SetValues(m.Weights, bt.LossMask); err != nil {
		return err
	}
	if m.KeyMask != nil {
		return graph.SetValues(m.KeyMask, bt.KeyMask)
	}
	return nil
}

// blockModules builds the block add-on modules cfg lists
// (model.block_modules; none when empty) for the direction and padding of
// aspec. Errors name the key: "model.block_modules[1].kernel: ...".
func blockModules(cfg config.Model, aspec layers.Spec) ([]layers.BlockModule, error) {
	return layers.NewModules(cfg.BlockModules, layers.ModuleSpec{DModel: cfg.DModel, Causal: aspec.Causal, Padded: aspec.Padded})
}

// blockModulesCost is the parameters and forward values per row that cfg's
// block modules add to each block (EstimateCost).
func blockModulesCost(cfg config.Model, aspec layers.Spec) (params, perRow float64, err error) {
	mods, err := blockModules(cfg, aspec)
	if err != nil {
		return 0, 0, err
	}
	for _, m := range mods {
		p, r := m.Cost()
		params, perRow = params+float64(p), perRow+float64(r)
	}
	return params, perRow, nil
}

// attentionSpec is the attention factory's spec for cfg on task: sizes,
// direction (decoders are causal), whether batches carry a key-padding mask
// (tasks that pad), and the position scheme. The variant's declared support
// is checked against it (layers.NewAttention).
func attentionSpec(cfg config.Model, task data.Task) layers.Spec {
	p, ok := task.(interface{ Pads() bool })
	return layers.Spec{DModel: cfg.DModel, Heads: cfg.NHeads, NLayers: cfg.NLayers,
		Causal: cfg.Kind == "decoder", Padded: ok && p.Pads(), Pos: Position(cfg)}
}
