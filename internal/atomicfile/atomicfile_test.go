package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// leftovers returns the names of temporary files WriteFile may have left in dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var tmp []string
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			tmp = append(tmp, e.Name())
		}
	}
	return tmp
}

func TestWriteFileContentLands(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.txt")
	for _, content := range []string{"first version\n", "second, longer version\n", ""} {
		err := WriteFile(path, 0o640, func(w io.Writer) error {
			_, err := io.WriteString(w, content)
			return err
		})
		if err != nil {
			t.Fatalf("WriteFile(%q): %v", content, err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != content {
			t.Fatalf("content = %q, want %q", got, content)
		}
	}
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o640 {
			t.Errorf("perm = %v, want %v", fi.Mode().Perm(), os.FileMode(0o640))
		}
	}
	if tmp := leftovers(t, dir); len(tmp) > 0 {
		t.Errorf("temporary files left behind: %v", tmp)
	}
}

func TestWriteBytes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "data.bin")
	data := make([]byte, 1<<20+17) // larger than the internal buffer
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := WriteBytes(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(data) {
		t.Fatal("content mismatch")
	}
}

func TestWriteFileRelativePath(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := WriteBytes("rel.txt", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile("rel.txt"); err != nil || string(got) != "x" {
		t.Fatalf("got %q, %v", got, err)
	}
	if tmp := leftovers(t, "."); len(tmp) > 0 {
		t.Errorf("temporary files left behind: %v", tmp)
	}
}

func TestWriteFileFailingCallbackKeepsOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keep.txt")
	if err := WriteBytes(path, []byte("old content"), 0o644); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := WriteFile(path, 0o644, func(w io.Writer) error {
		// Write more than the buffer so part of it reaches the temp file.
		if _, err := w.Write(make([]byte, 1<<20)); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want it to wrap %v", err, boom)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name %s", err, path)
	}
	got, rerr := os.ReadFile(path)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if string(got) != "old content" {
		t.Errorf("old file changed to %q", got)
	}
	if tmp := leftovers(t, dir); len(tmp) > 0 {
		t.Errorf("temporary files left behind: %v", tmp)
	}
}

func TestWriteFilePanickingCallbackCleansUp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.txt")
	func() {
		defer func() {
			if recover() == nil {
				t.Error("panic was swallowed")
			}
		}()
		WriteFile(path, 0o644, func(w io.Writer) error { panic("callback panic") })
	}()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("destination exists after panic: %v", err)
	}
	if tmp := leftovers(t, dir); len(tmp) > 0 {
		t.Errorf("temporary files left behind: %v", tmp)
	}
}

func TestWriteFileUnwritable(t *testing.T) {
	base := t.TempDir()
	notADir := filepath.Join(base, "file")
	if err := os.WriteFile(notADir, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(base, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	type testCase struct{ name, path string }
	tests := []testCase{
		{"missing directory", filepath.Join(base, "no", "such", "dir", "out.txt")},
		{"parent is a file", filepath.Join(notADir, "out.txt")},
		{"destination is an existing directory", sub},
	}
	// Permission bits do not stop root, so only test them as a normal user.
	if runtime.GOOS != "windows" && os.Geteuid() != 0 {
		ro := filepath.Join(base, "readonly")
		if err := os.Mkdir(ro, 0o500); err != nil {
			t.Fatal(err)
		}
		tests = append(tests, testCase{"read-only directory", filepath.Join(ro, "out.txt")})
	}
	// /proc refuses new files even for root.
	if fi, err := os.Stat("/proc/self"); runtime.GOOS == "linux" && err == nil && fi.IsDir() {
		tests = append(tests, testCase{"directory refusing new files", "/proc/atomicfile-test.txt"})
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := WriteBytes(tc.path, []byte("data"), 0o644)
			if err == nil {
				t.Fatalf("WriteBytes(%s) succeeded", tc.path)
			}
			t.Logf("error: %v", err)
			if !strings.Contains(err.Error(), tc.path) {
				t.Errorf("error %q does not name %s", err, tc.path)
			}
			if fi, serr := os.Stat(tc.path); serr == nil && !fi.IsDir() {
				t.Errorf("%s was created", tc.path)
			}
		})
	}
	for _, dir := range []string{base, sub} {
		if tmp := leftovers(t, dir); len(tmp) > 0 {
			t.Errorf("temporary files left behind in %s: %v", dir, tmp)
		}
	}
}
