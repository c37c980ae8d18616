package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestDescribe(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "3ad37e4c1f2000000000"}, {Key: "vcs.time", Value: "2026-11-30T10:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	if got, want := describe(bi), "attnlab (devel), commit 3ad37e4c1f20 2026-11-30T10:00:00Z, modified, go1.26.8"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	bi.Settings = nil
	if got := describe(bi); !strings.Contains(got, "no commit recorded") {
		t.Errorf("got %q", got)
	}
	if String() == "" {
		t.Error("empty version")
	}
}
