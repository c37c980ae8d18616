package train

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/attnlab/attnlab/data"
	"github.com/attnlab/attnlab/graph"
)

// The update in the graph (device cuda's step, run here on the CPU) trains
// as the host's AdamW does: same losses and gradient norms step by step,
// clipping active, and after SyncToHost the same parameters and moments
// (to float32 rounding: its moments are float32).
func TestGraphUpdateMatchesHostUpdate(t *testing.T) {
	for _, clip := range []string{"0", "0.05"} {
		t.Run("clip="+clip, func(t *testing.T) {
			exp := tinyExperiment(t, "train.grad_clip="+clip, "train.lr=1e-2")
			host, err := Build(exp)
			if err != nil {
				t.Fatal(err)
			}
			inGraph, err := Build(exp)
			if err != nil {
				t.Fatal(err)
			}
			ht, err := newTrainer(host, false, false)
			if err != nil {
				t.Fatal(err)
			}
			defer ht.Close()
			gt, err := newTrainer(inGraph, true, false)
			if err != nil {
				t.Fatal(err)
			}
			defer gt.Close()
			batch := data.NewBatch(host.Task, exp.Train.BatchSize)
			clipped := 0
			for step := 1; step <= 8; step++ {
				host.Task.Fill(batch, data.Train, uint64(step*exp.Train.BatchSize))
				var res [2]StepResult
				for i, tr := range []*Trainer{ht, gt} {
					if err := tr.Setup.Train.Feed(batch); err != nil {
						t.Fatal(err)
					}
					if res[i], err = tr.Step(3e-3, batch); err != nil {
						t.Fatalf("step %d: %v", step, err)
					}
				}
				h, g := res[0], res[1]
				if rel(g.Loss, h.Loss) > 1e-5 || rel(g.GradNorm, h.GradNorm) > 1e-4 || g.Accuracy != h.Accuracy {
					t.Errorf("step %d: in the graph loss %.7g norm %.7g accuracy %g, on the host %.7g %.7g %g", step, g.Loss, g.GradNorm, g.Accuracy, h.Loss, h.GradNorm, h.Accuracy)
				}
				if c := exp.Train.GradClip; c > 0 && h.GradNorm > c {
					clipped++
				}
			}
			if exp.Train.GradClip > 0 && clipped == 0 {
				t.Fatal("no step was clipped: the test does not cover clipping")
			}
			if err := gt.SyncToHost(); err != nil {
				t.Fatal(err)
			}
			if gt.Opt.Step != ht.Opt.Step {
				t.Errorf("optimizer step %d in the graph, %d on the host", gt.Opt.Step, ht.Opt.Step)
			}
			hp, gp := host.Store.Params(), inGraph.Store.Params()
			for i := range hp {
				if strings.HasSuffix(hp[i].Name, ".wk_b") {
					// The key bias's gradient is zero but for rounding (a
					// shift of every score of a row leaves the softmax
					// unchanged), and Adam scales rounding noise up to
					// steps of lr: no two summation orders agree there.
					continue
				}
				if d := maxRel(graph.Float64s(gp[i].Value), graph.Float64s(hp[i].Value)); d > 1e-4 {
					t.Errorf("%s: relative difference %.2g", hp[i].Name, d)
				}
				if d := maxRel(gt.Opt.m[i], ht.Opt.m[i]); d > 1e-3 {
					t.Errorf("%s first moment: relative difference %.2g", hp[i].Name, d)
				}
			}
		})
	}
}

func rel(a, b float64) float64 { return math.Abs(a-b) / math.Max(math.Abs(b), 1e-12) }

// maxRel is max |a - b| over max |b|.
func maxRel(a, b []float64) float64 {
	var d, s float64
	for i := range a {
		d = math.Max(d, math.Abs(a[i]-b[i]))
		s = math.Max(s, math.Abs(b[i]))
	}
	return d / math.Max(s, 1e-12)
}

// Device cuda's run (the update in the graph, the evaluation read back),
// here on the CPU, resumes exactly: the moments travel through the
// checkpoint (SyncToHost before it is written, SyncFromHost after it is
// loaded), and its figures are the host update's to float32 rounding.
func TestGraphUpdateRunResumesExactly(t *testing.T) {
	// A constant learning rate, so that stopping at step 3 changes no
	// schedule.
	sets := []string{"train.schedule=constant", "train.warmup_steps=0"}
	exp := tinyExperiment(t, sets...)
	stopped := tinyExperiment(t, append(sets, "train.steps=3")...)
	whole, parted := t.TempDir(), t.TempDir()
	ctx := context.Background()
	ws, err := Run(ctx, exp, Options{Dir: whole, graphUpdate: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, stopped, Options{Dir: parted, graphUpdate: true}); err != nil {
		t.Fatal(err)
	}
	rs, err := Run(ctx, exp, Options{Dir: parted, Resume: true, graphUpdate: true})
	if err != nil {
		t.Fatal(err)
	}
	sameEnd(t, checkpointTensors(t, whole), checkpointTensors(t, parted), ws, rs)
	hs, err := Run(ctx, exp, Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if rel(ws.EvalLoss, hs.EvalLoss) > 1e-4 || ws.EvalAccuracy != hs.EvalAccuracy {
		t.Errorf("evaluation after the update in the graph: loss %v accuracy %v; after the host's: %v %v", ws.EvalLoss, ws.EvalAccuracy, hs.EvalLoss, hs.EvalAccuracy)
	}
}
