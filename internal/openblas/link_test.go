package openblas_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// The openblas build links with the plain command, without CGO_LDFLAGS.
// Skipped where OpenBLAS is not installed (CI's fresh machine) and in -short.
func TestPlainOpenBLASBuildLinks(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the trainer")
	}
	libs, _ := filepath.Glob("/usr/lib/*/libopenblas.so")
	if more, _ := filepath.Glob("/usr/lib/libopenblas.so"); len(more) > 0 {
		libs = append(libs, more...)
	}
	if len(libs) == 0 || runtime.GOOS != "linux" {
		t.Skip("libopenblas.so not installed (apt-get install libopenblas-dev)")
	}
	out := filepath.Join(t.TempDir(), "trainer")
	cmd := exec.Command("go", "build", "-tags", "openblas", "-o", out, "github.com/attnlab/attnlab/cmd/trainer")
	env := []string{}
	for _, kv := range os.Environ() {
		if len(kv) < 12 || kv[:12] != "CGO_LDFLAGS=" {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags openblas: %v\n%s", err, b)
	}
}
