package sweep

import (
	"io/fs"
	"slices"
	"strings"
	"testing"

	"github.com/attnlab/attnlab/configs"
)

// FuzzParseSweep checks that the sweep parser never panics and that its
// errors are one line, whatever the sweep file and whatever a further
// --set (AddSet) on what it accepts; and that an accepted sweep is well
// formed: grid keys sorted and distinct, each with values, seeds distinct.
// Bases resolve in the embedded configs, as for an embedded sweep file.
func FuzzParseSweep(f *testing.F) {
	err := fs.WalkDir(configs.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") {
			return err
		}
		text, err := configs.FS.ReadFile(p)
		if err == nil {
			f.Add(text, "train.steps=20")
		}
		return err
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("base: quickstart.yaml\ngrid:\n  model.attention: [{kind: gqa, kv_heads: 1}, standard]\n  train.lr: [1e-3, 3e-3]\nseeds: [1, 2]\n"), "task.seq_len=64")
	f.Add([]byte("name: inline\nbase:\n  task: {kind: copy, seq_len: 16}\n  train: {steps: 10, warmup_steps: 1}\nset: [train.lr=0.01, model.d_model=32]\n"), "model.attention.kind=flash")
	f.Add([]byte("base: ../quickstart.yaml\nset:\n  task: {kind: copy}\n"), "seed=3")

	fsys := embeddedBase{dir: "sweeps", fsys: configs.FS}
	f.Fuzz(func(t *testing.T, text []byte, assignment string) {
		s, err := Parse("fuzz.yaml", text, fsys)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		if !slices.IsSortedFunc(s.Grid, func(a, b Axis) int { return strings.Compare(a.Key, b.Key) }) {
			t.Fatalf("grid keys not sorted: %+v", s.Grid)
		}
		for i, ax := range s.Grid {
			if len(ax.Values) == 0 || (i > 0 && s.Grid[i-1].Key == ax.Key) {
				t.Fatalf("grid axis %q: %d values, or a duplicate key", ax.Key, len(ax.Values))
			}
		}
		if len(s.Seeds) == 0 || len(slices.Compact(slices.Sorted(slices.Values(s.Seeds)))) != len(s.Seeds) {
			t.Fatalf("seeds %v: empty or repeated", s.Seeds)
		}
		if err := s.AddSet(assignment); err != nil && strings.ContainsAny(err.Error(), "\r\n") {
			t.Fatalf("AddSet error is not one line: %q", err)
		}
	})
}
