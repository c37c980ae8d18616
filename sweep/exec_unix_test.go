//go:build unix

package sweep

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/attnlab/attnlab/internal/runlock"
	"github.com/attnlab/attnlab/train"
)

// The test binary doubles as a stand-in trainer: with
// GO_WANT_HELPER_PROCESS=1 it acts as "trainer train ... --out DIR" in the
// way HELPER_MODE says, so that Exec.Launch meets real processes and
// signals.
func TestMain(m *testing.M) {
	if os.Getenv("GO_WANT_HELPER_PROCESS") == "1" {
		os.Exit(helperProcess(os.Getenv("HELPER_MODE"), os.Args[1:]))
	}
	os.Exit(m.Run())
}

// helperProcess writes DIR/ready once its signal handling is set up, then
//
//	exit130: on SIGTERM, says it saved a checkpoint and exits 130 (as the trainer does)
//	ignore:  ignores SIGTERM and sleeps
//	exit0:   on SIGTERM, exits 0 (it finished just then)
//	exit1:   on SIGTERM, fails with an error line and exits 1
//	selfkill: kills itself with SIGKILL (the OOM killer, say), unasked
//	grandchild: starts a process of its own ("sleep", pid in DIR/grandchild), then does as exit130
//	sleep:   sleeps, SIGTERM's default action ending it
func helperProcess(mode string, args []string) int {
	if mode == "sleep" {
		time.Sleep(time.Minute)
		return 0
	}
	dir := ""
	for i, a := range args {
		if (a == "--out" || a == "--resume") && i+1 < len(args) {
			dir = args[i+1]
		}
	}
	term := make(chan os.Signal, 1)
	if mode == "ignore" {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(term, syscall.SIGTERM)
	}
	if mode == "grandchild" { // ready once the grandchild runs
		gc := exec.Command(os.Args[0])
		gc.Env = append(os.Environ(), "HELPER_MODE=sleep")
		if err := gc.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			return 3
		}
		os.WriteFile(filepath.Join(dir, "grandchild"), []byte(strconv.Itoa(gc.Process.Pid)), 0o644)
	}
	if err := os.WriteFile(filepath.Join(dir, "ready"), nil, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 3
	}
	switch mode {
	case "grandchild":
		<-term
		return 130
	case "exit130":
		<-term
		fmt.Fprintln(os.Stderr, "interrupted after step 1; checkpoint saved")
		return 130
	case "exit0":
		<-term
		return 0
	case "exit1":
		<-term
		fmt.Fprintln(os.Stderr, "error: step 2: loss is NaN")
		return 1
	case "ignore":
		time.Sleep(time.Minute)
		return 0
	case "selfkill":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Minute)
	}
	return 4
}

// launchHelper launches a helper process in mode through Exec and, if
// cancel is set, cancels the sweep's context once the helper is ready.
func launchHelper(t *testing.T, mode string, grace time.Duration, cancel bool) error {
	t.Helper()
	return launchHelperIn(t, t.TempDir(), mode, grace, cancel)
}

// launchHelperIn is launchHelper with the run folder dir.
func launchHelperIn(t *testing.T, dir, mode string, grace time.Duration, cancel bool) error {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	e := Exec{Path: os.Args[0], Env: append(os.Environ(), "GO_WANT_HELPER_PROCESS=1", "HELPER_MODE="+mode), Grace: grace}
	errc := make(chan error, 1)
	go func() { errc <- e.Launch(ctx, Job{Dir: dir}) }()
	if cancel {
		for !fileExists(filepath.Join(dir, "ready")) {
			select {
			case err := <-errc:
				t.Fatalf("the helper ended before it was ready: %v", err)
			case <-time.After(5 * time.Millisecond):
			}
		}
		stop()
	}
	select {
	case err := <-errc:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Launch did not return")
	}
	return nil
}

// How a run ended decides what Launch reports, not whether the sweep was
// cancelled.
func TestExecLaunchOutcome(t *testing.T) {
	t.Run("exit 130 on TERM: interrupted", func(t *testing.T) {
		err := launchHelper(t, "exit130", time.Minute, true)
		if !errors.Is(err, train.ErrInterrupted) || errors.Is(err, ErrKilled) {
			t.Errorf("err %v: want train.ErrInterrupted", err)
		}
	})
	t.Run("TERM ignored: killed after the grace", func(t *testing.T) {
		t0 := time.Now()
		err := launchHelper(t, "ignore", 300*time.Millisecond, true)
		var re *RunError
		if !errors.Is(err, ErrKilled) || errors.Is(err, train.ErrInterrupted) || errors.As(err, &re) {
			t.Fatalf("err %v: want ErrKilled", err)
		}
		if msg := err.Error(); !strings.Contains(msg, "killed after the 300ms grace period") || !strings.Contains(msg, "last periodic checkpoint") {
			t.Errorf("err %q: want it to say it was killed after the grace period and resumes from its last periodic checkpoint", msg)
		}
		if d := time.Since(t0); d > 20*time.Second {
			t.Errorf("took %s", d)
		}
	})
	t.Run("exit 0 after TERM: finished", func(t *testing.T) {
		if err := launchHelper(t, "exit0", time.Minute, true); err != nil {
			t.Errorf("err %v: want nil (the run finished)", err)
		}
	})
	t.Run("exit 1 after TERM: failed", func(t *testing.T) {
		err := launchHelper(t, "exit1", time.Minute, true)
		var re *RunError
		if !errors.As(err, &re) || re.ExitCode != 1 || !strings.Contains(re.Msg, "NaN") || errors.Is(err, train.ErrInterrupted) {
			t.Errorf("err %v: want a RunError with exit status 1 and the error line", err)
		}
	})
	t.Run("killed unasked: failed", func(t *testing.T) {
		err := launchHelper(t, "selfkill", time.Minute, false)
		var re *RunError
		if !errors.As(err, &re) || re.ExitCode != -1 || !strings.Contains(re.Msg, "killed") || errors.Is(err, ErrKilled) {
			t.Errorf("err %v: want a RunError saying it was killed", err)
		}
	})
}

// A lock of this host whose process is gone is taken over at once.
func TestRunLockOfDeadProcess(t *testing.T) {
	s := mustParse(t, tinySweep)
	runs, _ := s.Expand(nil)
	dir := t.TempDir()
	const gone = 1 << 30 // above any pid_max
	writeLock(t, RunDir(dir, runs[0].Name), runlock.Hostname(), gone, 0)
	l := &fakeLauncher{}
	out, log := execute(t, s, runs, dir, Shard{0, 8}, l)
	if len(out.Done) != 1 || !strings.Contains(log, fmt.Sprintf("took over the stale lock of %s pid %d (its process is gone)", runlock.Hostname(), gone)) {
		t.Errorf("outcome %+v\n%s", out, log)
	}
}

// gone reports whether pid has exited (a zombie, not yet reaped, has).
func gone(pid int) bool {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && strings.HasPrefix(string(b[i:]), ") Z") {
			return true
		}
	}
	return syscall.Kill(pid, 0) != nil
}

// Cancelling a run signals its whole process group: what the run's process
// started stops too.
func TestExecCancelReachesProcessGroup(t *testing.T) {
	dir := t.TempDir()
	err := launchHelperIn(t, dir, "grandchild", time.Minute, true)
	if !errors.Is(err, train.ErrInterrupted) {
		t.Fatalf("err %v: want train.ErrInterrupted", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "grandchild"))
	pid, _ := strconv.Atoi(string(b))
	if err != nil || pid <= 0 {
		t.Fatalf("grandchild pid %q: %v", b, err)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	for deadline := time.Now().Add(20 * time.Second); !gone(pid); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the run's own process (pid %d) still runs after the cancellation", pid)
		}
	}
}
