package train

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/attnlab/attnlab/config"
)

// Which folders a new run may write: absent, empty (but for a lock) or a
// run's without a checkpoint; never a folder of other files nor a run with
// a checkpoint.
func TestCheckRunFolderNewRun(t *testing.T) {
	exp := config.Default()
	for _, c := range []struct {
		name  string
		files []string
		want  string // substring of the error; "" for none
	}{
		{"absent", nil, ""},
		{"empty", []string{}, ""},
		{"only a lock", []string{"lock"}, ""},
		{"run without checkpoint", []string{RunMarkerFile, ConfigFile, MetricsFile}, ""},
		{"sweep-prepared", []string{RunMarkerFile, ConfigFile, "run.json", "train.log", "lock"}, ""},
		{"user's config", []string{ConfigFile}, "is not a run folder"},
		{"user's files", []string{"a", "b", "c", "d", "e"}, "(a, b, c, and 2 more)"},
		{"run with checkpoint", []string{ConfigFile, CheckpointFile}, "already holds a run; continue it with --resume"},
		{"old run folder", []string{CheckpointFile, MetricsFile, SummaryFile}, "already holds a run"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "run")
			if c.files != nil {
				os.MkdirAll(dir, 0o755)
			}
			for _, f := range c.files {
				os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644)
			}
			err := checkRunFolder(dir, false, exp)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("err %v, want one saying %q", err, c.want)
			}
		})
	}
}

// configDiff names every key whose value changed, options of components
// included.
func TestConfigDiff(t *testing.T) {
	a := config.Default()
	b := config.Default()
	b.Seed = 9
	b.Train.Steps = 2000
	b.Model.Attention.Options = map[string]any{"window": 16}
	d, err := configDiff(a, b)
	if err != nil {
		t.Fatal(err)
	}
	want := []keyDiff{{"model.attention.window", "(none)", "16"}, {"seed", "1", "9"}, {"train.steps", "1000", "2000"}}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("diff %v, want %v", d, want)
	}
	if d, _ := configDiff(a, config.Default()); len(d) != 0 {
		t.Errorf("diff of equal configs: %v", d)
	}
}

// Only the temporary files of the run's own files go.
func TestRemoveStaleTemps(t *testing.T) {
	dir := t.TempDir()
	stale := []string{".checkpoint.safetensors.tmp1a2b", ".config.yaml.tmpzz", ".summary.json.tmp0", ".metrics.jsonl.tmp9"}
	kept := []string{CheckpointFile, ConfigFile, ".notes.txt.tmp1", "checkpoint.safetensors.tmp", ".lock.tmp5", "lock"}
	for _, f := range append(slices.Clone(stale), kept...) {
		os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644)
	}
	removed, err := removeStaleTemps(dir)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	slices.Sort(stale)
	if !slices.Equal(removed, stale) {
		t.Errorf("removed %v, want %v", removed, stale)
	}
	for _, f := range kept {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s removed", f)
		}
	}
}
