package train

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Resume keeps every line of metrics.jsonl up to the checkpoint's step,
// whatever its length, keeps lines that are not rows as they are, and drops
// only the rows after the checkpoint and an unterminated (torn) last line,
// saying so.
func TestResumeKeepsMetricsLines(t *testing.T) {
	huge := `{"step":2,"loss":1,"note":"` + strings.Repeat("x", 17<<20) + `"}`
	cases := []struct {
		name      string
		old, want string
		notes     []string
	}{
		{"rows after the checkpoint", "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n", "{\"step\":1}\n{\"step\":2}\n", []string{"dropped 1 row(s) after the checkpoint's step 2"}},
		{"a line over 16 MiB", "{\"step\":1}\n" + huge + "\n{\"step\":2}\n", "{\"step\":1}\n" + huge + "\n{\"step\":2}\n", nil},
		{"a middle line that is not a row", "{\"step\":1}\nhand-written note\n{\"step\":2}\n", "{\"step\":1}\nhand-written note\n{\"step\":2}\n", []string{"kept 1 line(s) that are not metrics rows as they are (line 2)"}},
		{"a torn last line", "{\"step\":1}\n{\"step\":2,\"lo", "{\"step\":1}\n", []string{"dropped an unterminated last line"}},
		{"nothing to do", "{\"step\":1}\n", "{\"step\":1}\n", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), MetricsFile)
			if err := os.WriteFile(path, []byte(c.old), 0o644); err != nil {
				t.Fatal(err)
			}
			m, err := openMetrics(path, 2, true)
			if err != nil {
				t.Fatal(err)
			}
			m.close()
			got, _ := os.ReadFile(path)
			if !bytes.Equal(got, []byte(c.want)) {
				t.Errorf("kept %d bytes, want %d: %.200q", len(got), len(c.want), got)
			}
			if len(m.notes) != len(c.notes) {
				t.Fatalf("notes %q, want %q", m.notes, c.notes)
			}
			for i, n := range c.notes {
				if !strings.Contains(m.notes[i], n) {
					t.Errorf("note %q, want one containing %q", m.notes[i], n)
				}
			}
		})
	}
}
