package train

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/attnlab/attnlab/config"
)

// resumeRuns trains exp without a stop in one folder, and in another
// trains stopped (exp ending earlier), then resumes it to exp's end:
// both folders and both final summaries.
func resumeRuns(t *testing.T, exp, stopped config.Experiment) (whole, parted string, ws, rs *Summary) {
	t.Helper()
	whole, parted = t.TempDir(), t.TempDir()
	ws, err := Run(context.Background(), exp, Options{Dir: whole})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), stopped, Options{Dir: parted}); err != nil {
		t.Fatal(err)
	}
	if rs, err = Run(context.Background(), exp, Options{Dir: parted, Resume: true}); err != nil {
		t.Fatal(err)
	}
	return whole, parted, ws, rs
}

// ckptTensor is one tensor of a checkpoint.
type ckptTensor struct {
	shape []int
	data  any
}

// checkpointTensors is every tensor of dir's checkpoint, by name.
func checkpointTensors(t *testing.T, dir string) map[string]ckptTensor {
	t.Helper()
	f, err := readCheckpoint(filepath.Join(dir, CheckpointFile))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]ckptTensor{}
	for _, ts := range f.Tensors {
		out[ts.Name] = ckptTensor{ts.Shape, ts.Data}
	}
	return out
}

// sameEnd fails t unless got holds every tensor of want, equal, and the
// resumed run's final evaluation (rs) is the uninterrupted one's (ws).
func sameEnd(t *testing.T, want, got map[string]ckptTensor, ws, rs *Summary) {
	t.Helper()
	for name, w := range want {
		if !reflect.DeepEqual(got[name], w) {
			t.Errorf("%s: the resumed run ends with other values than the uninterrupted one", name)
		}
	}
	if rs.EvalLoss != ws.EvalLoss || rs.EvalAccuracy != ws.EvalAccuracy {
		t.Errorf("final evaluation: resumed %v/%v, uninterrupted %v/%v", rs.EvalLoss, rs.EvalAccuracy, ws.EvalLoss, ws.EvalAccuracy)
	}
}
