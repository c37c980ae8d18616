package train

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/graph"
)

// A routing run resumes exactly, centroids included: 6 steps in one run,
// and 3 steps, a checkpoint and a resumed run to 6, end with identical
// checkpoints (weights, optimizer moments and the k-means centroid
// buffers), because checkpoints save the centroids and a resume restores
// them in place (graph.Store.StateBuffer). The centroids did move during
// training (they differ from their initial draw, so the EMA update runs
// and a resume that redrew them would fail), and evaluating does not move
// them: a run that evaluates after every step ends with the same
// checkpoint as one that evaluates only at the end. (A constant learning
// rate, so that stopping at step 3 changes no schedule.)
func TestRoutingResumeIsExact(t *testing.T) {
	sets := func(more ...string) []string {
		return append([]string{"model.attention.kind=routing", "model.attention.clusters=2", "model.attention.window=4",
			"model.attention.decay=0.5", "train.schedule=constant", "train.warmup_steps=0"}, more...)
	}
	exp := tinyExperiment(t, sets()...)
	whole, parted, ws, rs := resumeRuns(t, exp, tinyExperiment(t, sets("train.steps=3")...))
	tensors := func(dir string) map[string]ckptTensor { return checkpointTensors(t, dir) }
	want := tensors(whole)
	var centroids []string
	for name := range want {
		if strings.HasPrefix(name, bufferPrefix) && strings.HasSuffix(name, "centroids") {
			centroids = append(centroids, name)
		}
	}
	if len(centroids) == 0 {
		t.Fatal("no centroid buffer in the checkpoint")
	}
	got := tensors(parted)
	sameEnd(t, want, got, ws, rs)

	// The centroids moved from their initial draw (a store of the run's
	// seed draws them as the model did).
	fresh, err := graph.NewStore(tensor.Float64, exp.Seed)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range centroids {
		w := want[name]
		init, err := fresh.StateBuffer(strings.TrimPrefix(name, bufferPrefix), w.shape, graph.Normal(1))
		if err != nil {
			t.Fatal(err)
		}
		if reflect.DeepEqual(init.Value.Data(), w.data) {
			t.Errorf("%s: still the initial draw after 6 steps: the EMA update never ran", name)
		}
	}

	// Evaluating after every step trains to the same checkpoint as
	// evaluating only at the end: the evaluation model's forward passes
	// move no centroid.
	often := t.TempDir()
	if _, err := Run(context.Background(), tinyExperiment(t, sets("train.eval_every=1")...), Options{Dir: often}); err != nil {
		t.Fatal(err)
	}
	rarely := t.TempDir()
	if _, err := Run(context.Background(), tinyExperiment(t, sets("train.eval_every=6")...), Options{Dir: rarely}); err != nil {
		t.Fatal(err)
	}
	o, r := tensors(often), tensors(rarely)
	for _, name := range centroids {
		if !reflect.DeepEqual(o[name], r[name]) {
			t.Errorf("%s: evaluating after every step ends with other centroids than evaluating at the end", name)
		}
	}
	for name, w := range r {
		if !reflect.DeepEqual(o[name], w) {
			t.Errorf("%s: evaluating after every step ends with other values than evaluating at the end", name)
		}
	}
	ev, err := Evaluate(exp, filepath.Join(whole, CheckpointFile))
	if err != nil {
		t.Fatal(err)
	}
	if ev.EvalLoss != ws.EvalLoss {
		t.Errorf("Evaluate of the final checkpoint: loss %v, the run's final evaluation %v", ev.EvalLoss, ws.EvalLoss)
	}
}
