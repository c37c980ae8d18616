package train

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/data"
)

// A performer run that redraws its random features every 2 steps resumes
// exactly: 6 steps in one run, and 3 steps, a checkpoint and a resumed run
// to 6, end with bit-identical checkpoints (weights and optimizer moments)
// and the same final evaluation, because each step's draw is a function of
// the step alone (models.Model.SetStep). Evaluate of the final checkpoint
// reproduces the run's final evaluation (it sets the checkpoint's step,
// window 3). The redraws matter: the same run with redraw 0 ends with
// other weights, and evaluating the final weights with window 0's draw
// gives another loss, so a run or an evaluation that drew for the wrong
// step would fail here. (A constant learning rate, so that stopping at
// step 3 changes no schedule.)
func TestPerformerResumeIsExact(t *testing.T) {
	sets := func(redraw string, more ...string) []string {
		return append([]string{"model.attention.kind=performer", "model.attention.features=8", "model.attention.redraw=" + redraw,
			"train.schedule=constant", "train.warmup_steps=0"}, more...)
	}
	exp := tinyExperiment(t, sets("2")...)
	whole, parted, ws, rs := resumeRuns(t, exp, tinyExperiment(t, sets("2", "train.steps=3")...))
	tensors := func(dir string) map[string]ckptTensor { return checkpointTensors(t, dir) }
	want := tensors(whole)
	if len(want) < 10 {
		t.Fatalf("%d tensors in the checkpoint", len(want))
	}
	got := tensors(parted)
	sameEnd(t, want, got, ws, rs)
	ev, err := Evaluate(exp, filepath.Join(whole, CheckpointFile))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Step != 6 || ev.EvalLoss != ws.EvalLoss {
		t.Errorf("Evaluate of the final checkpoint: step %d loss %v, the run's final evaluation %v", ev.Step, ev.EvalLoss, ws.EvalLoss)
	}

	fixed := t.TempDir()
	if _, err := Run(context.Background(), tinyExperiment(t, sets("0")...), Options{Dir: fixed}); err != nil {
		t.Fatal(err)
	}
	if reflect.DeepEqual(tensors(fixed), want) {
		t.Error("redraw 0 trains to the same weights as redraw 2: the comparison cannot see a wrong draw")
	}
	ev0, err := Evaluate(tinyExperiment(t, sets("0")...), filepath.Join(whole, CheckpointFile))
	if err != nil {
		t.Fatal(err)
	}
	if ev0.EvalLoss == ws.EvalLoss {
		t.Error("the final weights evaluate to the same loss with window 0's draw: the comparison cannot see a wrong draw")
	}
}

// The sampler and the attention maps use the draw of the checkpoint's
// step: a character decoder trained 3 steps with performer features
// redrawn every step (window 3 at the checkpoint) gives other logits and
// other maps when loaded with redraw 0 (window 0), and loaded with redraw
// 1000 (window 0 at step 3, the same draw) the logits and maps of redraw
// 0 exactly. A loader that ignored the checkpoint's step would give
// redraw 1 the window-0 draw and fail the first comparison.
func TestPerformerInspectionUsesCheckpointStep(t *testing.T) {
	corpus := t.TempDir()
	if err := os.WriteFile(filepath.Join(corpus, "a.txt"), []byte(strings.Repeat("alpha beta gamma delta\n", 40)), 0o644); err != nil {
		t.Fatal(err)
	}
	withRedraw := func(redraw int) config.Experiment {
		exp := config.Default()
		exp.Name = "tinytext"
		exp.Task = config.Component{Kind: "text", Options: map[string]any{"path": corpus, "seq_len": 12, "tokenizer": "char"}}
		exp.Model.DModel, exp.Model.NLayers, exp.Model.NHeads, exp.Model.DFF = 16, 1, 2, 32
		exp.Model.Attention = config.Component{Kind: "performer", Options: map[string]any{"features": 8, "redraw": redraw}}
		exp.Train.Steps, exp.Train.BatchSize, exp.Train.WarmupSteps = 3, 4, 1
		exp.Train.EvalEvery, exp.Train.EvalExamples, exp.Train.LogEvery = 3, 8, 1
		return exp
	}
	dir := filepath.Join(t.TempDir(), "run")
	if _, err := Run(context.Background(), withRedraw(1), Options{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	ckpt := filepath.Join(dir, CheckpointFile)
	type seen struct{ logits, maps []float64 }
	load := func(redraw int) seen {
		t.Helper()
		exp := withRedraw(redraw)
		s, err := LoadSampler(exp, ckpt)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if s.Step != 3 {
			t.Fatalf("sampler at step %d, want the checkpoint's 3", s.Step)
		}
		logits, err := s.Logits(s.Tokenizer.Encode("beta g"))
		if err != nil {
			t.Fatal(err)
		}
		am, err := LoadAttentionMaps(exp, ckpt, data.Eval, 0)
		if err != nil {
			t.Fatal(err)
		}
		var maps []float64
		for _, m := range am.Maps {
			maps = append(maps, m.Weights...)
		}
		return seen{logits, maps}
	}
	trained, never, late := load(1), load(0), load(1000)
	if slices.Equal(trained.logits, never.logits) || slices.Equal(trained.maps, never.maps) {
		t.Error("the sampler or the maps of redraw 1 at step 3 use window 0's draw")
	}
	if !slices.Equal(late.logits, never.logits) || !slices.Equal(late.maps, never.maps) {
		t.Error("redraw 1000 at step 3 (window 0) differs from redraw 0")
	}
}
