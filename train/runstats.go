package train

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
)

// The windows of recent figures a run carries across processes, so that a
// summary written by a process that trained few steps (or none: resuming a
// finished run, or one killed during its final evaluation) reports the
// run's figures, not zeros.
const (
	recentLossWindow = 20   // train_loss: the mean of the last 20 steps
	stepTimeWindow   = 1024 // step_ms_median: the median of the last 1024 steps
)

// runStats are the recent training figures of a run: the losses and step
// times of its last steps, whichever process ran them. They are saved in the
// checkpoint's metadata ("recent_loss", "step_ms") as JSON arrays.
type runStats struct {
	RecentLoss []float64 // the last recentLossWindow losses, oldest first
	StepMs     []float64 // the last stepTimeWindow step times in ms, oldest first
}

// add records one step.
func (r *runStats) add(loss, stepMs float64) {
	r.RecentLoss = appendWindow(r.RecentLoss, loss, recentLossWindow)
	r.StepMs = appendWindow(r.StepMs, stepMs, stepTimeWindow)
}

func appendWindow(xs []float64, x float64, n int) []float64 {
	xs = append(xs, x)
	if len(xs) > n {
		xs = slices.Delete(xs, 0, len(xs)-n)
	}
	return xs
}

// trainLoss is the mean of the recent losses (0 before any step).
func (r *runStats) trainLoss() float64 { return mean(r.RecentLoss) }

// stepMsMedian is the median of the recent step times (0 before any step).
func (r *runStats) stepMsMedian() float64 { return median(r.StepMs) }

// encode writes r into checkpoint metadata.
func (r *runStats) encode(meta map[string]string) {
	for key, xs := range map[string][]float64{"recent_loss": r.RecentLoss, "step_ms": r.StepMs} {
		finite := make([]float64, 0, len(xs))
		for _, x := range xs {
			if !math.IsNaN(x) && !math.IsInf(x, 0) {
				finite = append(finite, x)
			}
		}
		b, _ := json.Marshal(finite) // finite float64s always marshal
		meta[key] = string(b)
	}
}

// decode reads r from checkpoint metadata. Checkpoints written before these
// keys existed have none: r is then empty.
func (r *runStats) decode(meta map[string]string) error {
	for key, dst := range map[string]*[]float64{"recent_loss": &r.RecentLoss, "step_ms": &r.StepMs} {
		s, ok := meta[key]
		if !ok {
			continue
		}
		if err := json.Unmarshal([]byte(s), dst); err != nil {
			return fmt.Errorf("bad %s in metadata: %w", key, err)
		}
	}
	return nil
}
