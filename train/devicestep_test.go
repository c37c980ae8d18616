package train

import (
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
