// Package version says which build of attnlab is running: the module version
// and the VCS commit Go stamps into binaries built from a checkout, so that
// `trainer --version` and every summary.json name the code behind a figure.
package version

import (
	"runtime/debug"
	"strings"
)

// String is the build's version, e.g. "attnlab (devel) commit 3ad37e4c1f20
// 2026-11-30T10:00:00Z, modified, go1.26.8". Without build information (a
// test binary, say) it says "attnlab (unknown build)".
func String() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "attnlab (unknown build)"
	}
	return describe(bi)
}

// Commit is the VCS revision the binary was built from, with "+modified"
// when the work tree had uncommitted changes; "" when Go recorded none
// (go test, go run, or a build outside a checkout).
func Commit() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	rev, _, modified := vcs(bi)
	if rev != "" && modified {
		rev += "+modified"
	}
	return rev
}

func vcs(bi *debug.BuildInfo) (rev, when string, modified bool) {
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	return rev, when, modified
}

func describe(bi *debug.BuildInfo) string {
	parts := []string{"attnlab " + bi.Main.Version}
	rev, when, modified := vcs(bi)
	if rev != "" {
		c := "commit " + rev[:min(12, len(rev))]
		if when != "" {
			c += " " + when
		}
		parts = append(parts, c)
		if modified {
			parts = append(parts, "modified")
		}
	} else {
		parts = append(parts, "no commit recorded")
	}
	parts = append(parts, bi.GoVersion)
	return strings.Join(parts, ", ")
}
