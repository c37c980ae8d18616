// Package runlock keeps a run folder to one writer at a time.
//
// Two processes writing one run folder mix it up beyond repair: the config
// and metrics of one beside the checkpoint and summary of the other. That
// happens easily: a second `trainer train --resume` of a folder still
// training, two compare processes given the same --out, a Kubernetes
// replacement pod started while the old one still saves its checkpoints, a
// Slurm requeue of a task whose first incarnation is still running. So
// whatever writes a run folder first takes DIR/lock (created with O_EXCL, so
// only one process can), refreshes its modification time every 30 s while
// it works, and removes it when it is done. A process that finds a fresh lock
// leaves the folder to its holder. A lock not refreshed for Lease is stale
// (its holder was killed, or its machine lost) and is taken over, as is a
// lock of this host whose process is gone.
//
// The lock names the process that writes. A process that prepares a folder
// and then starts another to do the writing (compare starting `trainer
// train`) hands its lock over: it passes HandOver's environment entry to the
// child, and the child's Acquire, finding the lock it was handed, rewrites it
// to name itself. A kill of the parent then leaves a lock naming the live
// child, and no restarted parent can take the folder while the child writes.
// When the child is done it hands the lock back (rewrites the parent's
// content) rather than removing it, so that the parent, which may write the
// folder after its child (a failure record), still holds it; the parent's
// Release removes it.
//
// "Its process is gone" is decided only for a lock taken in this process's
// own PID namespace on this host: containers that share a host name (host
// networking) number their processes separately, so a pid there says nothing
// here, and such a lock goes stale only by its lease.
package runlock

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/attnlab/attnlab/internal/atomicfile"
)

// FileName is the lock's name in the folder it guards.
const FileName = "lock"

// Lease is how long a lock stays fresh without a refresh; after it the lock
// is stale and may be taken over.
const Lease = 5 * time.Minute

// refreshEvery is how often a holder renews its lock's modification time
// (a variable so that tests can shorten it).
var refreshEvery = 30 * time.Second

// HandOverEnv is the environment variable through which a holder hands its
// lock to a child process it starts (see Lock.HandOver).
const HandOverEnv = "ATTNLAB_RUNLOCK_HANDOVER"

// Info is the content of a lock file.
type Info struct {
	Host  string `json:"host"`
	PID   int    `json:"pid"`
	Start string `json:"start"` // when the holder took it, RFC 3339 with nanoseconds
	// PIDNamespace identifies the holder's PID namespace (Linux:
	// /proc/self/ns/pid, e.g. "pid:[4026531836]"); empty where unknown.
	PIDNamespace string `json:"pid_ns,omitempty"`
}

// LockedError is a folder whose lock another process holds.
type LockedError struct {
	Dir  string
	Host string
	PID  int
	Age  time.Duration // since the holder last refreshed the lock
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("%s: locked by %s pid %d (refreshed %s ago)", e.Dir, e.Host, e.PID, e.Age.Round(time.Second))
}

// heldLocks holds the paths of the locks this process holds, so that a lock
// of this host and pid is known to be live.
var heldLocks sync.Map

// Lock is a lock this process holds.
type Lock struct {
	path     string
	content  []byte
	handBack []byte // the parent's content, when the lock was handed over
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
}

// Hostname is the host name locks record ("unknown-host" if there is none).
func Hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "unknown-host"
	}
	return h
}

// Acquire takes the lock of the folder dir, which must exist. It returns a
// *LockedError when another process holds a fresh lock. logf (which may be
// nil) tells of a stale lock taken over.
func Acquire(dir string, logf func(string, ...any)) (*Lock, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	p := filepath.Join(dir, FileName)
	content, err := json.Marshal(Info{Host: Hostname(), PID: os.Getpid(), Start: time.Now().UTC().Format(time.RFC3339Nano), PIDNamespace: pidNamespace()})
	if err != nil {
		return nil, err
	}
	content = append(content, '\n')
	for attempt := 0; ; attempt++ {
		err := createLock(p, content)
		if err == nil {
			return hold(p, content), nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("lock: %w", err)
		}
		if attempt == 3 { // taken over and re-created by others each time: leave it to them
			return nil, fmt.Errorf("lock %s: contended; try again", p)
		}
		info, raw, age, err := readLock(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // released meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("lock: %w", err)
		}
		if handedOver(raw, info) {
			// Our parent holds it for us: make it name us. The parent does
			// not release it while we run, so nobody else can meanwhile.
			if err := atomicfile.WriteBytes(p, content, 0o644); err != nil {
				return nil, fmt.Errorf("lock: take over from the parent process: %w", err)
			}
			l := hold(p, content)
			l.handBack = raw
			return l, nil
		}
		why := staleness(p, info, age)
		if why == "" {
			return nil, &LockedError{Dir: dir, Host: info.Host, PID: info.PID, Age: age}
		}
		// Take it over: move it aside (only one process can), make sure what
		// was moved is still the stale lock, and create ours.
		aside := fmt.Sprintf("%s.stale.%s.%d.%d", p, Hostname(), os.Getpid(), time.Now().UnixNano())
		if err := os.Rename(p, aside); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("lock: take over: %w", err)
		}
		info2, _, age2, err := readLock(aside)
		if err == nil && staleness(p, info2, age2) == "" {
			// A fresh lock, created since we looked: put it back.
			if lerr := os.Link(aside, p); lerr == nil || errors.Is(lerr, fs.ErrExist) {
				os.Remove(aside)
			} else if _, serr := os.Stat(p); serr != nil {
				os.Rename(aside, p)
			}
			return nil, &LockedError{Dir: dir, Host: info2.Host, PID: info2.PID, Age: age2}
		}
		os.Remove(aside)
		logf("took over the stale lock of %s pid %d (%s)", info.Host, info.PID, why)
	}
}

// hold registers the lock p (holding content) as this process's and starts
// its refresh.
func hold(p string, content []byte) *Lock {
	l := &Lock{path: p, content: content, stop: make(chan struct{}), done: make(chan struct{})}
	heldLocks.Store(p, true)
	go l.refresh()
	return l
}

// HandOver is the environment entry (KEY=VALUE) that lets one child process
// of this one take the lock over (see the package doc). The child must be
// started while this process holds the lock; Release afterwards removes the
// lock only if the child has not taken it.
func (l *Lock) HandOver() string {
	return HandOverEnv + "=" + string(bytes.TrimSpace(l.content))
}

// handedOver reports whether the lock with content raw (info) is the one
// this process's parent handed it through HandOverEnv.
func handedOver(raw []byte, info Info) bool {
	want := os.Getenv(HandOverEnv)
	return want != "" && want == string(bytes.TrimSpace(raw)) &&
		info.Host == Hostname() && info.PID == os.Getppid()
}

// createLock creates the lock file p holding content; it fails with an
// error wrapping fs.ErrExist if p exists.
func createLock(p string, content []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, werr := f.Write(content)
	cerr := f.Close()
	if werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(p)
		return werr
	}
	return nil
}

// Read reads the lock of the folder dir: its holder and how long ago it
// was last refreshed. A missing lock is an error wrapping fs.ErrNotExist.
func Read(dir string) (Info, time.Duration, error) {
	info, _, age, err := readLock(filepath.Join(dir, FileName))
	return info, age, err
}

// readLock reads the lock file p, its raw content and how long ago it was
// last refreshed. A lock whose content cannot be read (its holder may be
// writing it) has the zero Info.
func readLock(p string) (Info, []byte, time.Duration, error) {
	st, err := os.Stat(p)
	if err != nil {
		return Info{}, nil, 0, err
	}
	var info Info
	b, err := os.ReadFile(p)
	if err == nil {
		json.Unmarshal(b, &info)
	} else if errors.Is(err, fs.ErrNotExist) {
		return Info{}, nil, 0, err
	}
	if info.Host == "" {
		info.Host = "an unknown host"
	}
	return info, b, time.Since(st.ModTime()), nil
}

// staleness says why the lock p (info, refreshed age ago) is stale, or ""
// if it is not.
func staleness(p string, info Info, age time.Duration) string {
	if age > Lease {
		return fmt.Sprintf("not refreshed for %s", age.Round(time.Second))
	}
	if info.Host == Hostname() && info.PID > 0 && info.PIDNamespace == pidNamespace() {
		if _, mine := heldLocks.Load(p); !mine && info.PID != os.Getpid() && !processAlive(info.PID) {
			return "its process is gone"
		}
	}
	return ""
}

// refresh renews the lock's modification time every refreshEvery until
// Release.
func (l *Lock) refresh() {
	defer close(l.done)
	t := time.NewTicker(refreshEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			now := time.Now()
			os.Chtimes(l.path, now, now) // a failure shows as a stale lock to others
		}
	}
}

// Release stops the refresh and removes the lock if it is still this
// process's (a process that found it stale may have taken it over, or a
// child it was handed to may hold it now). Calls after the first do
// nothing.
func (l *Lock) Release() error {
	var err error
	l.once.Do(func() { err = l.release() })
	return err
}

func (l *Lock) release() error {
	close(l.stop)
	<-l.done
	heldLocks.Delete(l.path)
	b, err := os.ReadFile(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("unlock: %w", err)
	}
	if !bytes.Equal(b, l.content) {
		return nil
	}
	if l.handBack != nil { // the parent still holds it: give it back
		if err := atomicfile.WriteBytes(l.path, l.handBack, 0o644); err != nil {
			return fmt.Errorf("unlock: hand back to the parent process: %w", err)
		}
		return nil
	}
	if err := os.Remove(l.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("unlock: %w", err)
	}
	return nil
}

// PIDNamespace is this process's PID namespace as locks record it
// (Info.PIDNamespace).
func PIDNamespace() string { return pidNamespace() }
