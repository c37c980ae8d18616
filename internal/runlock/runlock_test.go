package runlock

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The test binary doubles as a child process that takes the lock of
// RUNLOCK_DIR, prints "held PID" or "error ...", and releases the lock
// once its stdin closes.
func TestMain(m *testing.M) {
	if dir := os.Getenv("RUNLOCK_HELPER_DIR"); dir != "" {
		l, err := Acquire(dir, nil)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		fmt.Println("held", os.Getpid())
		bufio.NewReader(os.Stdin).ReadString('\n')
		l.Release()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func writeLock(t *testing.T, dir string, info Info, age time.Duration) {
	t.Helper()
	b, _ := json.Marshal(info)
	p := filepath.Join(dir, FileName)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	mt := time.Now().Add(-age)
	if err := os.Chtimes(p, mt, mt); err != nil {
		t.Fatal(err)
	}
}

// startHelper starts a child that takes dir's lock; env is added to its
// environment. It returns the child, its stdin (close it to end the child)
// and its first line.
func startHelper(t *testing.T, dir string, env ...string) (*exec.Cmd, func(), string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "RUNLOCK_HELPER_DIR="+dir), env...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	end := func() { in.Close(); cmd.Wait() }
	t.Cleanup(end)
	return cmd, end, strings.TrimSpace(line)
}

// Who may take a lock: nobody while its holder refreshes it; anybody once
// it is older than the lease or (this host) its process is gone.
func TestAcquire(t *testing.T) {
	const gone = 1 << 30 // above any pid_max
	for _, c := range []struct {
		name   string
		info   Info
		age    time.Duration
		locked bool
		log    string
	}{
		{"other host, fresh", Info{Host: "other.example", PID: 4242}, time.Minute, true, ""},
		{"other host, past the lease", Info{Host: "other.example", PID: 4242}, Lease + time.Minute, false, "took over the stale lock of other.example pid 4242 (not refreshed for"},
		{"this host, process gone", Info{Host: Hostname(), PID: gone, PIDNamespace: pidNamespace()}, 0, false, fmt.Sprintf("took over the stale lock of %s pid %d (its process is gone)", Hostname(), gone)},
		{"this host, process alive", Info{Host: Hostname(), PID: os.Getppid(), PIDNamespace: pidNamespace()}, 0, true, ""},
		// Another PID namespace (a container sharing the host name): its
		// pid means nothing here, so only the lease makes it stale.
		{"this host, other pid namespace", Info{Host: Hostname(), PID: gone, PIDNamespace: "pid:[1]"}, 0, true, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeLock(t, dir, c.info, c.age)
			var log strings.Builder
			l, err := Acquire(dir, func(f string, a ...any) { fmt.Fprintf(&log, f+"\n", a...) })
			var le *LockedError
			if c.locked {
				if !errors.As(err, &le) || le.PID != c.info.PID || le.Host != c.info.Host {
					t.Fatalf("err %v: want locked by %s pid %d", err, c.info.Host, c.info.PID)
				}
				if msg := err.Error(); !strings.Contains(msg, fmt.Sprintf("%s: locked by %s pid %d (refreshed ", dir, c.info.Host, c.info.PID)) {
					t.Errorf("error %q", msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(log.String(), c.log) {
				t.Errorf("log %q: want %q", log.String(), c.log)
			}
			info, _, err := Read(dir)
			if err != nil || info.PID != os.Getpid() {
				t.Errorf("lock %+v %v: want this process", info, err)
			}
			if err := l.Release(); err != nil {
				t.Fatal(err)
			}
			if _, _, err := Read(dir); err == nil {
				t.Errorf("lock left after Release")
			}
		})
	}
}

// An exited child not yet reaped (a zombie: an orphan under an init that
// does not reap) holds no lock.
func TestZombieHolderIsGone(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	pid := cmd.Process.Pid
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && strings.HasPrefix(string(b[i:]), ") Z") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the child did not exit")
		}
	}
	if processAlive(pid) {
		t.Errorf("a zombie counts as alive")
	}
	dir := t.TempDir()
	writeLock(t, dir, Info{Host: Hostname(), PID: pid, PIDNamespace: pidNamespace()}, 0)
	l, err := Acquire(dir, nil)
	if err != nil {
		t.Fatalf("the lock of a zombie: %v", err)
	}
	l.Release()
}

// A lock handed to a child names the child while it holds it; a child not
// handed it is refused; done, the child hands the lock back to the parent, whose
// Release removes it.
func TestHandOver(t *testing.T) {
	dir := t.TempDir()
	l, err := Acquire(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if _, _, line := startHelper(t, dir); !strings.HasPrefix(line, "error ") || !strings.Contains(line, fmt.Sprintf("locked by %s pid %d", Hostname(), os.Getpid())) {
		t.Fatalf("a child without the hand-over: %q, want it refused", line)
	}
	if _, _, line := startHelper(t, dir, HandOverEnv+`={"host":"x","pid":1,"start":"y"}`); !strings.HasPrefix(line, "error ") {
		t.Fatalf("a child handed another lock: %q, want it refused", line)
	}
	cmd, end, line := startHelper(t, dir, l.HandOver())
	if line != fmt.Sprintf("held %d", cmd.Process.Pid) {
		t.Fatalf("the child handed the lock: %q", line)
	}
	info, _, err := Read(dir)
	if err != nil || info.PID != cmd.Process.Pid {
		t.Fatalf("lock %+v %v: want it to name the child %d", info, err, cmd.Process.Pid)
	}
	if _, err := Acquire(dir, nil); err == nil {
		t.Fatalf("a second taker got the child's lock")
	}
	end()
	// Done, the child hands the lock back: the parent, which may still
	// write the folder, holds it until its own Release.
	if info, _, err := Read(dir); err != nil || info.PID != os.Getpid() {
		t.Errorf("after the child: lock %+v %v, want it to name the parent %d again", info, err, os.Getpid())
	}
	if _, err := Acquire(dir, nil); err == nil {
		t.Errorf("a second taker got the lock between the child and the parent")
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Read(dir); err == nil {
		t.Errorf("the parent's Release left the lock")
	}
}

// A holder renews its lock's modification time, so that it stays fresh.
func TestRefresh(t *testing.T) {
	defer func(r time.Duration) { refreshEvery = r }(refreshEvery)
	refreshEvery = 10 * time.Millisecond
	dir := t.TempDir()
	l, err := Acquire(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	p := filepath.Join(dir, FileName)
	old := time.Now().Add(-time.Hour)
	os.Chtimes(p, old, old)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if st, err := os.Stat(p); err == nil && time.Since(st.ModTime()) < time.Minute {
			return
		}
	}
	t.Errorf("the lock was not refreshed")
}
