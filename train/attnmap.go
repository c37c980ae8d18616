package train

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/data"
	"github.com/attnlab/attnlab/layers"
	"github.com/attnlab/attnlab/models"
)

// AttentionMaps are the attention weights a trained model puts on one
// example, every layer's, as layers.MapRecorder records them.
type AttentionMaps struct {
	Step      int         // the training step of the checkpoint
	Stream    data.Stream // the stream the example comes from
	Example   uint64      // its index in the stream
	Inputs    []int       // its tokens
	KeyMask   []float64   // 1 = token, 0 = padding; nil when the task does not pad
	Tokenizer data.Tokenizer
	Maps      []layers.MapValues
}

// LoadAttentionMaps builds the model exp describes for one sequence, with
// every layer's attention maps recorded (models.BuildRecording), loads the
// checkpoint at path into it as Evaluate does (step inputs, such as
// Performer's features, set for the checkpoint's step), runs example
// `example` of stream s through it, and returns the maps. The training
// graph is not involved: only this inspection graph materializes the
// maps. Errors from the config or the checkpoint are bad-input errors.
func LoadAttentionMaps(exp config.Experiment, path string, s data.Stream, example uint64) (*AttentionMaps, error) {
	task, store, err := prepare(exp)
	if err != nil {
		return nil, err
	}
	rec := &layers.MapRecorder{}
	m, err := models.BuildRecording(exp.Model, task, store, 1, rec)
	if err != nil {
		return nil, badInput(err)
	}
	st, err := loadCheckpoint(path, store, NewAdamW(store, 0, 0, 0, 0), tokenizerSpec(task))
	if err != nil {
		return nil, badInput(err)
	}
	if err := m.SetStep(st.Step); err != nil { // the draw of the checkpoint's step
		return nil, err
	}
	b := data.NewBatch(task, 1)
	task.Fill(b, s, example)
	if err := m.Feed(b); err != nil {
		return nil, err
	}
	vm := G.NewTapeMachine(m.Graph)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		return nil, fmt.Errorf("attention maps: %w", err)
	}
	maps, err := rec.Read(0)
	if err != nil {
		return nil, fmt.Errorf("attention maps: %w", err)
	}
	return &AttentionMaps{Step: st.Step, Stream: s, Example: example, Inputs: b.Inputs, KeyMask: b.KeyMask,
		Tokenizer: data.TokenizerOf(task), Maps: maps}, nil
}
