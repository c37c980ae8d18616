package config_test

import (
	"maps"
	"slices"
	"testing"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/configs"
	"github.com/attnlab/attnlab/data"
	_ "github.com/attnlab/attnlab/layers" // the attention registry
)

func quickstart(t *testing.T) config.Experiment {
	t.Helper()
	text, err := configs.FS.ReadFile(configs.Quickstart)
	if err != nil {
		t.Fatal(err)
	}
	e, err := config.Parse("quickstart.yaml", text)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestSetKindDropsForeignOptions checks that switching a component's kind
// with --set drops the options the new kind does not take, with a note,
// against the real task and attention registries.
func TestSetKindDropsForeignOptions(t *testing.T) {
	tests := []struct {
		name      string
		sets      []string
		component func(*config.Experiment) *config.Component
		wantKind  string
		wantOpts  []string // the option names left
		wantNotes []string // one per set
	}{
		{
			name:      "task kind, options of both kept",
			sets:      []string{"task.kind=copy"},
			component: func(e *config.Experiment) *config.Component { return &e.Task },
			wantKind:  "copy",
			wantOpts:  []string{"seq_len", "vocab"},
			wantNotes: []string{"task.kind=copy: dropped option kv_pairs (not options of copy)"},
		},
		{
			name:      "options set for the old kind are dropped too",
			sets:      []string{"task.key_fraction=0.25", "task.power_a=0.1", "task.kind=copy", "task.seq_len=16"},
			component: func(e *config.Experiment) *config.Component { return &e.Task },
			wantKind:  "copy",
			wantOpts:  []string{"seq_len", "vocab"},
			wantNotes: []string{"", "", "task.kind=copy: dropped options key_fraction, kv_pairs, power_a (not options of copy)", ""},
		},
		{
			name:      "the same kind keeps everything",
			sets:      []string{"task.kind=assoc_recall"},
			component: func(e *config.Experiment) *config.Component { return &e.Task },
			wantKind:  "assoc_recall",
			wantOpts:  []string{"kv_pairs", "seq_len", "vocab"},
			wantNotes: []string{""},
		},
		{
			name:      "an unknown kind keeps everything, for Resolve to report",
			sets:      []string{"task.kind=nosuch"},
			component: func(e *config.Experiment) *config.Component { return &e.Task },
			wantKind:  "nosuch",
			wantOpts:  []string{"kv_pairs", "seq_len", "vocab"},
			wantNotes: []string{""},
		},
		{
			name:      "attention kind",
			sets:      []string{"model.attention.kind=gqa", "model.attention.kv_heads=2", "model.attention.bias=false", "model.attention.kind=mqa"},
			component: func(e *config.Experiment) *config.Component { return &e.Model.Attention },
			wantKind:  "mqa",
			wantOpts:  []string{"bias"},
			wantNotes: []string{"", "", "", "model.attention.kind=mqa: dropped option kv_heads (not options of mqa)"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := quickstart(t)
			for i, s := range tc.sets {
				note, err := e.SetNoted(s)
				if err != nil {
					t.Fatalf("SetNoted(%q): %v", s, err)
				}
				if note != tc.wantNotes[i] {
					t.Errorf("SetNoted(%q) note = %q, want %q", s, note, tc.wantNotes[i])
				}
			}
			c := tc.component(&e)
			if got := slices.Sorted(maps.Keys(c.Options)); c.Kind != tc.wantKind || !slices.Equal(got, tc.wantOpts) {
				t.Errorf("component = %s %v, want %s %v", c.Kind, got, tc.wantKind, tc.wantOpts)
			}
			if tc.wantKind != "nosuch" {
				if _, err := data.Options(e.Task); err != nil {
					t.Errorf("the task does not resolve: %v", err)
				}
			}
		})
	}

	// Set does the same, without the note.
	e := quickstart(t)
	if err := e.Set("task.kind=copy"); err != nil {
		t.Fatal(err)
	}
	if _, err := data.Options(e.Task); err != nil {
		t.Errorf("after Set(task.kind=copy): %v", err)
	}
}
