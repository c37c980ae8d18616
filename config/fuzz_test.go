package config

import (
	"bytes"
	"io/fs"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/attnlab/attnlab/configs"
)

// shippedFiles returns the YAML files shipped in configs.FS: the
// experiments and (as seeds of what else a user may hand Parse) the sweeps.
func shippedFiles(tb testing.TB) map[string][]byte {
	tb.Helper()
	files := map[string][]byte{}
	err := fs.WalkDir(configs.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") {
			return err
		}
		files[p], err = configs.FS.ReadFile(p)
		return err
	})
	if err != nil || len(files) == 0 {
		tb.Fatalf("reading the shipped configs: %d files, %v", len(files), err)
	}
	return files
}

// checkRoundTrip checks that e survives Marshal and Parse: Marshal of the
// parsed text gives the same text again (text, not the structs, so that a
// NaN compares equal to itself).
func checkRoundTrip(t *testing.T, e Experiment) {
	t.Helper()
	text, err := e.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	back, err := Parse("marshalled.yaml", text)
	if err != nil {
		t.Fatalf("Parse of Marshal output: %v\n%s", err, text)
	}
	again, err := back.Marshal()
	if err != nil {
		t.Fatalf("Marshal of the parsed text: %v", err)
	}
	if !bytes.Equal(again, text) {
		t.Fatalf("Marshal/Parse is not a fixed point:\n%s\nthen\n%s", text, again)
	}
}

func checkOneLine(t *testing.T, err error) {
	t.Helper()
	if strings.ContainsAny(err.Error(), "\r\n") {
		t.Fatalf("error is not one line: %q", err)
	}
}

// FuzzParse checks that Parse never panics, that its errors are one line,
// and that what it accepts round-trips through Marshal.
func FuzzParse(f *testing.F) {
	for _, text := range shippedFiles(f) {
		f.Add(text)
	}
	f.Add([]byte(fullFile))
	f.Add([]byte("name: a\nseed: 1\nmodel: a: b\n"))
	f.Add([]byte("task: {kind: x\nmodel:\n  d_model: 4\n"))
	f.Add([]byte("a: &x 1\nb: *x\n---\nc: 2\n"))
	f.Fuzz(func(t *testing.T, text []byte) {
		e, err := Parse("fuzz.yaml", text)
		if err != nil {
			checkOneLine(t, err)
			return
		}
		checkRoundTrip(t, e)
	})
}

// setSeeds returns KEY=VALUE assignments of every scalar of the shipped
// experiment files, and some that switch kinds.
func setSeeds(tb testing.TB) []string {
	out := []string{"task.kind=copy", "model.attention.kind=gqa", "model.attention.kv_heads=2", "seed=7", "train.lr=1e-3", "name=x y", "task.seq_len=[1, 2]", "dtype=", "=1", "train"}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				key := n.Content[i].Value
				if path != "" {
					key = path + "." + key
				}
				walk(n.Content[i+1], key)
			}
		case yaml.ScalarNode:
			out = append(out, path+"="+n.Value)
		}
	}
	for name, text := range shippedFiles(tb) {
		if strings.HasPrefix(name, "sweeps/") || strings.HasPrefix(name, "paper/") {
			continue
		}
		var doc yaml.Node
		if err := yaml.Unmarshal(text, &doc); err != nil {
			tb.Fatalf("%s: %v", name, err)
		}
		walk(&doc, "")
	}
	return out
}

// FuzzSet checks that Experiment.Set on the quickstart never panics, that
// its errors are one line naming the assignment, and that a successful Set
// round-trips through Marshal and Parse.
func FuzzSet(f *testing.F) {
	text, err := configs.FS.ReadFile(configs.Quickstart)
	if err != nil {
		f.Fatal(err)
	}
	base, err := Parse("quickstart.yaml", text)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range setSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, assignment string) {
		e := base
		e.Task.Options = cloneOptions(base.Task.Options)
		e.Model.Attention.Options = cloneOptions(base.Model.Attention.Options)
		note, err := e.SetNoted(assignment)
		if err != nil {
			checkOneLine(t, err)
			if !strings.HasPrefix(err.Error(), "--set ") {
				t.Fatalf("error %q does not start with --set", err)
			}
			return
		}
		if strings.ContainsAny(note, "\r\n") {
			t.Fatalf("note is not one line: %q", note)
		}
		checkRoundTrip(t, e)
	})
}

func cloneOptions(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
