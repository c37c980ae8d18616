package train

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/data"
	"github.com/attnlab/attnlab/graph"
	"github.com/attnlab/attnlab/models"
)

// An rmt run resumes exactly: 4 steps in one run, and 2 steps, a
// checkpoint and a resumed run to 4, end with identical checkpoints and
// final evaluations (the memory is unrolled inside each example's graph,
// so no carried state needs saving). Constant learning rate, so that
// stopping at step 2 changes no schedule.
func TestRMTResumeIsExact(t *testing.T) {
	sets := func(more ...string) []string {
		return append([]string{"model.memory.kind=rmt", "model.memory.segment=4", "model.memory.memory_tokens=2",
			"train.schedule=constant", "train.warmup_steps=0", "train.steps=4", "train.eval_every=2", "train.checkpoint_every=2"}, more...)
	}
	exp := tinyExperiment(t, sets()...)
	whole, parted, ws, rs := resumeRuns(t, exp, tinyExperiment(t, sets("train.steps=2")...))
	tensors := func(dir string) map[string]ckptTensor { return checkpointTensors(t, dir) }
	want, got := tensors(whole), tensors(parted)
	if _, ok := want["memory.init"]; !ok {
		t.Fatal("no memory.init in the checkpoint")
	}
	sameEnd(t, want, got, ws, rs)
}

// Sampling and attention maps work on memory models: the sampler's
// next-token logits after a prefix of n tokens equal the training graph's
// logits at position n-1 of the whole example, for prefixes ending in
// every segment, for rmt, memformer and hmt; the maps are one per layer
// and segment (for hmt also one per layer for each summary pass, of
// segments 1 and 2), labelled with the segment, in the order they run.
func TestMemoryInspection(t *testing.T) {
	corpus := t.TempDir()
	if err := os.WriteFile(filepath.Join(corpus, "a.txt"), []byte(strings.Repeat("alpha beta gamma delta\n", 40)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		mem    config.Component
		labels []string // per pass, one map per layer each
	}{
		{config.Component{Kind: "rmt", Options: map[string]any{"segment": 4, "memory_tokens": 2}}, []string{"segment 0", "segment 1", "segment 2"}},
		{config.Component{Kind: "memformer", Options: map[string]any{"segment": 4, "slots": 2}}, []string{"segment 0", "segment 1", "segment 2"}},
		{config.Component{Kind: "hmt", Options: map[string]any{"segment": 4, "summary": 2, "carry": 2, "recall": 2}},
			[]string{"segment 0", "segment 1 summary", "segment 1", "segment 2 summary", "segment 2"}},
	} {
		mem := c.mem
		t.Run(mem.Kind, func(t *testing.T) {
			exp := config.Default()
			exp.Name = "tinytext"
			exp.Task = config.Component{Kind: "text", Options: map[string]any{"path": corpus, "seq_len": 12, "tokenizer": "char"}}
			exp.Model.DModel, exp.Model.NLayers, exp.Model.NHeads, exp.Model.DFF = 16, 2, 2, 32
			exp.Model.Memory = mem
			exp.Train.Steps, exp.Train.BatchSize, exp.Train.WarmupSteps = 2, 4, 1
			exp.Train.EvalEvery, exp.Train.EvalExamples, exp.Train.LogEvery = 2, 8, 1
			dir := filepath.Join(t.TempDir(), "run")
			if _, err := Run(context.Background(), exp, Options{Dir: dir}); err != nil {
				t.Fatal(err)
			}
			ckpt := filepath.Join(dir, CheckpointFile)

			task, store, err := prepare(exp)
			if err != nil {
				t.Fatal(err)
			}
			m, err := models.Build(exp.Model, task, store, 1)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := loadCheckpoint(ckpt, store, NewAdamW(store, 0, 0, 0, 0), tokenizerSpec(task)); err != nil {
				t.Fatal(err)
			}
			b := data.NewBatch(task, 1)
			task.Fill(b, data.Eval, 0)
			if err := m.Feed(b); err != nil {
				t.Fatal(err)
			}
			vm := G.NewTapeMachine(m.Graph)
			defer vm.Close()
			if err := vm.RunAll(); err != nil {
				t.Fatal(err)
			}
			full := graph.Float64s(m.Logits.Value())
			s, err := LoadSampler(exp, ckpt)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			V := s.Tokenizer.Vocab()
			for _, n := range []int{1, 3, 5, 8, 12} {
				got, err := s.Logits(b.Inputs[:n])
				if err != nil {
					t.Fatal(err)
				}
				for i, x := range got {
					if d := math.Abs(x - full[(n-1)*V+i]); d > 1e-6 {
						t.Fatalf("prefix %d: sampler logit %d is %v, the training graph's %v", n, i, x, full[(n-1)*V+i])
					}
				}
			}
			am, err := LoadAttentionMaps(exp, ckpt, data.Eval, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(am.Maps) != 2*len(c.labels) {
				t.Fatalf("%d maps, want %d (2 layers x %d passes)", len(am.Maps), 2*len(c.labels), len(c.labels))
			}
			for i, mp := range am.Maps {
				if want := c.labels[i/2]; mp.Label != want { // the standard variant keeps the memory model's label
					t.Errorf("map %d (layer %d): label %q, want %q", i, mp.Layer, mp.Label, want)
				}
			}
		})
	}
}
