package train

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/configs"
	"github.com/attnlab/attnlab/data"
	"github.com/attnlab/attnlab/layers"
)

// tinyExperiment is the quickstart shrunk to run in well under a second.
func tinyExperiment(t *testing.T, sets ...string) config.Experiment {
	t.Helper()
	text, err := configs.FS.ReadFile(configs.Quickstart)
	if err != nil {
		t.Fatal(err)
	}
	exp, err := config.Parse("quickstart.yaml", text)
	if err != nil {
		t.Fatal(err)
	}
	base := []string{"task.seq_len=16", "model.d_model=16", "model.d_ff=32", "model.n_layers=1", "model.n_heads=2",
		"train.batch_size=4", "train.steps=6", "train.warmup_steps=2", "train.eval_every=3", "train.eval_examples=8", "train.checkpoint_every=3"}
	for _, s := range append(base, sets...) {
		if err := exp.Set(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := exp.Validate(); err != nil {
		t.Fatal(err)
	}
	return exp
}

func readSummary(t *testing.T, dir string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, SummaryFile))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// Resuming a finished run (and so a run killed during its final
// evaluation, whose checkpoint is the last step's) rewrites summary.json
// with the run's training figures, not zeros: they travel in the checkpoint.
func TestResumeFinishedRunKeepsTrainingFigures(t *testing.T) {
	dir := t.TempDir()
	exp := tinyExperiment(t)
	first, err := Run(context.Background(), exp, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if first.TrainLoss <= 0 || first.StepMsMedian <= 0 || first.TrainTokensPerSec <= 0 {
		t.Fatalf("first run: train_loss %v step_ms_median %v tokens/s %v", first.TrainLoss, first.StepMsMedian, first.TrainTokensPerSec)
	}
	var log bytes.Buffer
	again, err := Run(context.Background(), exp, Options{Dir: dir, Resume: true, Progress: &log})
	if err != nil {
		t.Fatal(err)
	}
	if again.TrainLoss != first.TrainLoss || again.StepMsMedian != first.StepMsMedian || again.TrainTokensPerSec != first.TrainTokensPerSec {
		t.Errorf("resumed finished run: train_loss %v step_ms_median %v tokens/s %v, want %v %v %v",
			again.TrainLoss, again.StepMsMedian, again.TrainTokensPerSec, first.TrainLoss, first.StepMsMedian, first.TrainTokensPerSec)
	}
	if again.EvalLoss != first.EvalLoss || again.EvalAccuracy != first.EvalAccuracy {
		t.Errorf("resumed finished run evaluates to %v/%v, want %v/%v", again.EvalLoss, again.EvalAccuracy, first.EvalLoss, first.EvalAccuracy)
	}
	if m := readSummary(t, dir); m["train_loss"] == 0.0 || m["step_ms_median"] == 0.0 {
		t.Errorf("summary.json: %v", m)
	}
}

// A run resumed part-way reports the mean loss of the run's last steps,
// whichever process ran them: the same figure as an uninterrupted run (a
// constant rate, so that stopping at step 3 changes no schedule).
func TestTrainLossSpansResumes(t *testing.T) {
	constant := []string{"train.schedule=constant", "train.warmup_steps=0"}
	whole, err := Run(context.Background(), tinyExperiment(t, constant...), Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	d := t.TempDir()
	if _, err := Run(context.Background(), tinyExperiment(t, append(constant, "train.steps=3")...), Options{Dir: d}); err != nil {
		t.Fatal(err)
	}
	resumed, err := Run(context.Background(), tinyExperiment(t, constant...), Options{Dir: d, Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	if whole.TrainLoss != resumed.TrainLoss {
		t.Errorf("train_loss: uninterrupted %v, resumed at step 3 %v", whole.TrainLoss, resumed.TrainLoss)
	}
}

// A warm-up longer than the run is capped at the run's length, with a note.
func TestWarmupLongerThanRun(t *testing.T) {
	var log bytes.Buffer
	if _, err := Run(context.Background(), tinyExperiment(t, "train.warmup_steps=100"), Options{Dir: t.TempDir(), Progress: &log}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "note: train.warmup_steps (100) is more than train.steps (6)") {
		t.Errorf("log has no note on the warm-up:\n%s", log.String())
	}
}

// After an evaluation neither graph holds the activations of its last run,
// so evaluating adds nothing to training's peak memory: only the nodes that
// held values before any run (inputs, parameters, constants) still do.
func TestEvaluationReleasesActivations(t *testing.T) {
	s, err := Build(tinyExperiment(t))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTrainer(s)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	evm, err := newEvalMachine(s, false)
	if err != nil {
		t.Fatal(err)
	}
	defer evm.Close()
	held := func(g *G.ExprGraph) int {
		n := 0
		for _, node := range g.AllNodes() {
			if node.Value() != nil {
				n++
			}
		}
		return n
	}
	before := map[*G.ExprGraph]int{s.Train.Graph: held(s.Train.Graph), s.Eval.Graph: held(s.Eval.Graph)}
	batch := data.NewBatch(s.Task, s.Exp.Train.BatchSize)
	s.Task.Fill(batch, data.Train, 0)
	if err := s.Train.Feed(batch); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Step(1e-3, nil); err != nil {
		t.Fatal(err)
	}
	if held(s.Train.Graph) == before[s.Train.Graph] {
		t.Fatal("a training step bound no values: the test cannot see a release")
	}
	if _, err := evaluateAfterTraining(s, evm); err != nil {
		t.Fatal(err)
	}
	for g, want := range before {
		if got := held(g); got != want {
			t.Errorf("%d nodes hold values after the evaluation, %d before any run", got, want)
		}
	}
}

func TestIntactCheckpoint(t *testing.T) {
	for _, c := range []struct {
		step, first, every int
		want               string
	}{
		{19, 0, 5, "the checkpoint of step 15 is intact"},
		{3, 0, 5, "no checkpoint was written yet"},
		{3, 0, 0, "no checkpoint was written yet"},
		{12, 10, 0, "the checkpoint of step 10 is intact"},
		{12, 10, 5, "the checkpoint of step 10 is intact"},
	} {
		if got := intactCheckpoint(c.step, c.first, c.every); got != c.want {
			t.Errorf("intactCheckpoint(%d, %d, %d) = %q, want %q", c.step, c.first, c.every, got, c.want)
		}
	}
}

// On a terminal the redrawn progress line fits the width Options.Columns
// gives, so that it never wraps.
func TestRunProgressFitsColumns(t *testing.T) {
	var out bytes.Buffer
	exp := tinyExperiment(t, "train.steps=30", "train.eval_every=0")
	if _, err := Run(context.Background(), exp, Options{Dir: t.TempDir(), Progress: &out, TTY: true, Columns: func() int { return 40 }}); err != nil {
		t.Fatal(err)
	}
	drawn := 0
	for _, seg := range strings.FieldsFunc(out.String(), func(r rune) bool { return r == '\r' || r == '\n' }) {
		seg = strings.ReplaceAll(seg, "\x1b[K", "")
		if strings.Contains(seg, "/30") {
			drawn++
			if len(seg) > 39 {
				t.Errorf("%d characters on a 40-column terminal: %q", len(seg), seg)
			}
		}
	}
	if drawn == 0 {
		t.Fatalf("no progress line drawn:\n%q", out.String())
	}
}

// A variant that does not declare key padding is refused for a task that
// pads, from its declaration: the model builder passes whether the task
// pads. (Every shipped variant handles padding; this one exists only here.)
func init() {
	layers.Register("test_nopadding", "standard attention declared without padding support (train tests only)",
		layers.Support{Causal: true, Bidirectional: true, Positions: []string{"learned", "sinusoidal", "none"},
			Why: layers.Refusals{Padding: "it is a test variant declared without padding", Positions: "a test variant"}},
		nil, func(s layers.Spec) (layers.Attention, error) {
			return layers.NewAttention(config.Component{Kind: "standard"}, s)
		})
}

func TestBuildPassesPaddingToTheDeclaration(t *testing.T) {
	text, err := configs.FS.ReadFile("majority.yaml") // an encoder task with a key mask
	if err != nil {
		t.Fatal(err)
	}
	exp, err := config.Parse("majority.yaml", text)
	if err != nil {
		t.Fatal(err)
	}
	if err := exp.Set("model.attention.kind=test_nopadding"); err != nil {
		t.Fatal(err)
	}
	_, err = Build(exp)
	if err == nil || !strings.Contains(err.Error(), "declared without padding") {
		t.Errorf("Build of a padded task with a variant without padding: %v", err)
	}
}

// The final weights are evaluated once: by the loop at the last step, or,
// when the loop ran no step (a finished run resumed), after it.
func TestFinalEvaluationRunsOnce(t *testing.T) {
	dir := t.TempDir()
	exp := tinyExperiment(t) // 6 steps, eval_every 3
	for _, resume := range []bool{false, true} {
		var log bytes.Buffer
		if _, err := Run(context.Background(), exp, Options{Dir: dir, Resume: resume, Progress: &log}); err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(log.String(), "eval step 6:"); n != 1 {
			t.Errorf("resume %v: the last step evaluated %d times:\n%s", resume, n, log.String())
		}
	}
}

// EvaluateTensors lists what the store loaded from the checkpoint: every
// parameter and buffer, by its checkpoint name, with the loaded values
// (scripts/check-safetensors.py compares them with Python's reading).
func TestEvaluateTensors(t *testing.T) {
	exp := tinyExperiment(t, "model.attention.kind=bigbird", "model.attention.block=4", "model.attention.random_blocks=1")
	dir := t.TempDir()
	if _, err := Run(context.Background(), exp, Options{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	res, err := EvaluateTensors(exp, filepath.Join(dir, CheckpointFile))
	if err != nil {
		t.Fatal(err)
	}
	f, err := readCheckpoint(filepath.Join(dir, CheckpointFile))
	if err != nil {
		t.Fatal(err)
	}
	buffers := 0
	for _, ts := range res.Tensors {
		ct, ok := f.Get(ts.Name)
		if !ok {
			t.Fatalf("%s is not in the checkpoint", ts.Name)
		}
		var first float64
		switch d := ct.Data.(type) {
		case []float32:
			first = float64(d[0])
		case []float64:
			first = d[0]
		}
		if !slices.Equal(ct.Shape, ts.Shape) || len(ts.First) == 0 || ts.First[0] != first {
			t.Errorf("%s: shape %v first %v, the file has %v and %v", ts.Name, ts.Shape, ts.First, ct.Shape, first)
		}
		if strings.HasPrefix(ts.Name, bufferPrefix) {
			buffers++
		}
	}
	if buffers != 1 || len(res.Tensors) < 10 {
		t.Errorf("%d tensors, %d buffers: want every parameter and bigbird's buffer", len(res.Tensors), buffers)
	}
}
