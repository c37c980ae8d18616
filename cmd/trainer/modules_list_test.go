package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// trainer list shows the block modules (model.block_modules) with their
// options and defaults, in text and in JSON.
func TestListShowsBlockModules(t *testing.T) {
	code, out, e := runCLI("list")
	if code != 0 {
		t.Fatalf("list: exit %d: %s", code, e)
	}
	for _, want := range []string{"BLOCK MODULES (model.block_modules)", "  se ", "  cbam ", "  range_conv ",
		"reduction: ", "kernel: ", "(list of integers, default [1,2,4])"} {
		if !strings.Contains(out, want) {
			t.Errorf("trainer list does not show %q:\n%s", want, out)
		}
	}
	_, js, _ := runCLI("list", "--json")
	var l struct {
		Modules []struct {
			Name    string
			Options []struct{ Name string }
		} `json:"block_modules"`
	}
	if err := json.Unmarshal([]byte(js), &l); err != nil || len(l.Modules) != 3 || l.Modules[0].Name != "cbam" || len(l.Modules[0].Options) != 2 {
		t.Errorf("list --json block_modules: %+v (%v)", l.Modules, err)
	}
}
