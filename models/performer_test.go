package models

import (
	"slices"
	"testing"

	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/data"
	"github.com/attnlab/attnlab/graph"
)

// Build collects every performer layer's feature draw as a step input,
// and SetStep refills them: a training model and an evaluation model of
// another batch size built from one store hold the same draws at every
// step (the evaluation sees what training used), the layers' draws differ
// from each other, a redraw window keeps its draw and the next changes
// it. A model without step inputs takes SetStep as a no-op.
func TestSetStepRedrawsPerformerFeatures(t *testing.T) {
	mc, tc := tinyModel("decoder", "copy", map[string]any{"seq_len": 6, "vocab": 5})
	mc.Attention = config.Component{Kind: "performer", Options: map[string]any{"redraw": 2, "features": 3}}
	task, err := data.New(tc, 1)
	if err != nil {
		t.Fatal(err)
	}
	store, err := graph.NewStore(tensor.Float32, 9)
	if err != nil {
		t.Fatal(err)
	}
	train, err := Build(mc, task, store, 2)
	if err != nil {
		t.Fatal(err)
	}
	eval, err := Build(mc, task, store, 3)
	if err != nil {
		t.Fatal(err)
	}
	draws := func(m *Model) [][]float64 {
		var out [][]float64
		for _, in := range m.StepInputs.Inputs() {
			out = append(out, graph.Float64s(in.Node.Value()))
		}
		return out
	}
	names := func(m *Model) []string {
		var out []string
		for _, in := range m.StepInputs.Inputs() {
			out = append(out, in.Node.Name())
		}
		return out
	}
	if want := []string{"blocks.0.attn.features", "blocks.1.attn.features"}; !slices.Equal(names(train), want) {
		t.Fatalf("step inputs %v, want %v", names(train), want)
	}
	equal := func(a, b [][]float64) bool {
		return slices.EqualFunc(a, b, func(x, y []float64) bool { return slices.Equal(x, y) })
	}
	first := draws(train)
	if slices.Equal(first[0], first[1]) {
		t.Error("both layers hold the same draw")
	}
	var prev [][]float64
	for step := 0; step <= 5; step++ {
		if err := train.SetStep(step); err != nil {
			t.Fatal(err)
		}
		if err := eval.SetStep(step); err != nil {
			t.Fatal(err)
		}
		now := draws(train)
		if !equal(now, draws(eval)) {
			t.Errorf("step %d: the training and evaluation models hold different draws", step)
		}
		switch {
		case step == 0 && !equal(now, first):
			t.Error("SetStep(0) changed Build's draws")
		case step%2 == 1 && !equal(now, prev):
			t.Errorf("step %d redrew within its window", step)
		case step > 0 && step%2 == 0 && (slices.Equal(now[0], prev[0]) || slices.Equal(now[1], prev[1])):
			t.Errorf("step %d did not redraw", step)
		}
		prev = now
	}
	mc.Attention = config.Component{Kind: "linear"}
	plain, err := Build(mc, task, store, 2)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(plain.StepInputs.Inputs()); n != 0 || plain.SetStep(7) != nil {
		t.Errorf("linear attention: %d step inputs, SetStep %v", n, plain.SetStep(7))
	}
}
