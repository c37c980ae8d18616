package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/attnlab/attnlab/layers"
	"github.com/attnlab/attnlab/train"
)

// trainer list shows every variant's declaration, in text and in JSON.
func TestListShowsSupport(t *testing.T) {
	code, out, e := runCLI("list", "--json")
	if code != 0 {
		t.Fatalf("list --json: exit %d: %s", code, e)
	}
	var l struct {
		Attention []struct {
			Name    string
			Support *struct {
				Causal, Bidirectional, Padding bool
				Positions                      []string
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatal(err)
	}
	_, text, _ := runCLI("list")
	for _, a := range l.Attention {
		want, err := layers.SupportOf(a.Name)
		if err != nil {
			t.Fatal(err)
		}
		s := a.Support
		if s == nil || s.Causal != want.Causal || s.Bidirectional != want.Bidirectional || s.Padding != want.Padding || !slices.Equal(s.Positions, want.Positions) {
			t.Errorf("%s: list --json support %+v, want %s", a.Name, s, want)
		}
		if !strings.Contains(text, "supports: "+want.String()+"\n") {
			t.Errorf("%s: trainer list does not show %q", a.Name, "supports: "+want.String())
		}
	}
	if len(l.Attention) != len(layers.Variants()) {
		t.Errorf("list --json: %d variants, want %d", len(l.Attention), len(layers.Variants()))
	}
}

// gradcheck runs every setting a variant declares (agent with rope and
// xpos among them) and calls only the undeclared ones n/a.
func TestGradcheckRunsDeclaredSettings(t *testing.T) {
	code, out, e := runCLI("gradcheck", "--variant", "agent", "--json", "--seed", "3")
	if code != 0 {
		t.Fatalf("gradcheck: exit %d: %s", code, e)
	}
	var rows []gradcheckRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatal(err)
	}
	sup, err := layers.SupportOf("agent")
	if err != nil {
		t.Fatal(err)
	}
	ran := map[string]bool{}
	for _, r := range rows {
		ran[r.Setting] = r.Skipped == ""
	}
	for _, st := range layers.CheckSettings() {
		declared := sup.Allows(st.Setting()) == nil
		if ran[st.Name] != declared {
			t.Errorf("%s: ran %t, declared %t", st.Name, ran[st.Name], declared)
		}
	}
	for _, st := range []string{"bidirectional-rope", "bidirectional-xpos-padded", "bidirectional-padded-tiles"} {
		if !ran[st] {
			t.Errorf("agent %s was not checked", st)
		}
	}
}

// bench attention gives undeclared kinds their declared reason and fails
// on a declared kind that refuses the setting anyway.
func TestMergeBenchRows(t *testing.T) {
	figs := &train.AttentionFigures{Reps: 1}
	measured := []train.AttentionBenchRow{
		{Kind: "flash", T: 8, Pass: "fwd", AttentionFigures: figs},
		{Kind: "flash", T: 16, Pass: "fwd", AttentionFigures: figs},
	}
	rows, err := mergeBenchRows([]string{"agent", "flash"}, []int{8, 16}, map[string]string{"agent": "model.kind: no"}, measured)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rows {
		got = append(got, r.Kind+"/"+r.Skipped)
	}
	if want := []string{"agent/model.kind: no", "agent/model.kind: no", "flash/", "flash/"}; !slices.Equal(got, want) {
		t.Errorf("rows %v, want %v", got, want)
	}
	measured = append(measured, train.AttentionBenchRow{Kind: "mla", T: 8, Skipped: "model.positional: refused"})
	if _, err := mergeBenchRows([]string{"flash", "mla"}, []int{8, 16}, nil, measured); err == nil || !strings.Contains(err.Error(), "mla at T=8: refused a setting it declares") {
		t.Errorf("a declared kind's refusal: %v, want an error", err)
	}
}
