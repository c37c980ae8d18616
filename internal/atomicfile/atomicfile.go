// Package atomicfile writes files so that nothing the tool writes is ever
// half-written.
//
// A checkpoint, a config or a report that is interrupted mid-write (an error,
// a full disk, Ctrl-C, kill -9, a power cut) must not leave a truncated file
// where a good one used to be: the next run would load garbage or refuse to
// start. WriteFile therefore writes the new content to a temporary file in the
// same directory, flushes it to stable storage, and only then renames it over
// the destination. Rename within one directory is atomic on POSIX file
// systems, so any reader, and any process that starts after a crash, sees
// either the complete old file or the complete new one, never a mixture.
package atomicfile

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
)

// bufSize is the size of the buffer placed between the write callback and the
// temporary file, so that callbacks issuing many small writes stay cheap.
const bufSize = 256 << 10

// WriteFile writes a file so that readers (and a crash, kill -9 included) see
// either the old content or the whole new one: it writes to a temporary file
// in the same directory (name starting with "." + base + ".tmp"), fsyncs it,
// sets perm, renames it over path, and fsyncs the directory.
//
// write receives a buffered writer onto the temporary file; WriteFile flushes
// it. perm is applied exactly (it is not filtered through the umask). If path
// is a symbolic link, the link itself is replaced by a regular file.
//
// On any error the temporary file is removed and the error says which path
// failed. The temporary file is also removed if write panics; the panic then
// continues.
func WriteFile(path string, perm os.FileMode, write func(w io.Writer) error) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if base == "" {
		return fmt.Errorf("%s: not a file name", path)
	}
	f, tmp, err := createTemp(dir, base)
	if err != nil {
		return fmt.Errorf("%s: create temporary file: %w", path, err)
	}
	closed, renamed := false, false
	defer func() {
		// Runs on every return and on panic; after a successful rename there
		// is nothing left to clean up.
		if !closed {
			f.Close()
		}
		if !renamed {
			os.Remove(tmp)
		}
	}()

	bw := bufio.NewWriterSize(f, bufSize)
	if err := write(bw); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("%s: write temporary file: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("%s: set permissions: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("%s: sync temporary file: %w", path, err)
	}
	closed = true
	if err := f.Close(); err != nil {
		return fmt.Errorf("%s: close temporary file: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("%s: rename temporary file into place: %w", path, err)
	}
	renamed = true
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("%s: written, but syncing directory %s failed: %w", path, dir, err)
	}
	return nil
}

// WriteBytes atomically replaces the file at path with data, like WriteFile.
func WriteBytes(path string, data []byte, perm os.FileMode) error {
	return WriteFile(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// createTemp creates a new file named "." + base + ".tmp" + a random suffix in
// dir. (os.CreateTemp is not used because it treats a '*' in base specially.)
func createTemp(dir, base string) (*os.File, string, error) {
	for try := 0; ; try++ {
		name := filepath.Join(dir, "."+base+".tmp"+strconv.FormatUint(uint64(rand.Uint32()), 36))
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			return f, name, nil
		}
		if !errors.Is(err, fs.ErrExist) || try >= 100 {
			return nil, "", err
		}
	}
}

// syncDir fsyncs a directory so that a rename inside it survives a crash.
// Platforms and file systems that cannot sync a directory are tolerated.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, errors.ErrUnsupported) || errors.Is(err, syscall.EINVAL) {
		return nil
	}
	return err
}
