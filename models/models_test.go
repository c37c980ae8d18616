package models

import (
	"testing"
	"time"

	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/data"
	"github.com/attnlab/attnlab/graph"
)

func tinyModel(kind, task string, taskOpts map[string]any) (config.Model, config.Component) {
	m := config.Default().Model
	m.Kind, m.DModel, m.NLayers, m.NHeads, m.DFF = kind, 8, 2, 2, 16
	return m, config.Component{Kind: task, Options: taskOpts}
}

// The whole model's loss, gradient-checked against every parameter.
func TestModelGradients(t *testing.T) {
	cases := []struct {
		name, kind, task string
		opts             map[string]any
		pooling          string
		positional       string
	}{
		{"decoder-mqar", "decoder", "assoc_recall", map[string]any{"seq_len": 8, "vocab": 16, "kv_pairs": 2}, "mean", "learned"},
		{"decoder-copy-sinusoidal", "decoder", "copy", map[string]any{"seq_len": 6, "vocab": 5}, "mean", "sinusoidal"},
		{"encoder-majority-mean", "encoder", "majority", map[string]any{"seq_len": 6, "min_len": 1}, "mean", "none"},
		{"encoder-majority-cls", "encoder", "majority", map[string]any{"seq_len": 6, "min_len": 1}, "cls", "learned"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			mc, tc := tinyModel(c.kind, c.task, c.opts)
			mc.Pooling, mc.Positional = c.pooling, c.positional
			task, err := data.New(tc, seed)
			if err != nil {
				t.Fatal(err)
			}
			store, _ := graph.NewStore(tensor.Float64, seed)
			m, err := Build(mc, task, store, 3)
			if err != nil {
				t.Fatal(err)
			}
			b := data.NewBatch(task, 3)
			task.Fill(b, data.Train, 0)
			if err := m.Feed(b); err != nil {
				t.Fatal(err)
			}
			res, err := graph.GradCheck{Seed: seed, MaxPerInput: 16, Eps: 1e-6}.Run(m.Graph, m.Loss, m.Params)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Pass {
				t.Errorf("%v", res)
			}
		})
	}
}
