package sweep

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attnlab/attnlab/internal/runlock"
	"github.com/attnlab/attnlab/train"
)

const conflictBase = "base: {name: b, task: {kind: assoc_recall, seq_len: 16, vocab: 32, kv_pairs: 2}, model: {d_model: 16, n_heads: 2, d_ff: 32, n_layers: 1}, train: {steps: 2, warmup_steps: 1}}\n"

// A fixed override that a grid value would replace is an error naming both
// keys, in the file's set: and in --set; overrides the grid leaves alone
// are kept.
func TestSetGridConflicts(t *testing.T) {
	for _, c := range []struct {
		name, text string
		want       []string
	}{
		{"set is a grid key", conflictBase + "set: [train.lr=0.1]\ngrid:\n  train.lr: [0.1, 0.2]\n",
			[]string{"line 2", "set.train.lr", "grid.train.lr, line 4"}},
		{"set mapping is a grid key", conflictBase + "set:\n  train.lr: 0.1\ngrid:\n  train.lr: [0.2]\n",
			[]string{"line 3", "set.train.lr", "grid.train.lr"}},
		{"set under a task component", conflictBase + "set: {task.seq_len: 32}\ngrid:\n  task: [{kind: assoc_recall, seq_len: 16, vocab: 32, kv_pairs: 2}]\n",
			[]string{"line 2", "set.task.seq_len", "grid key task", "grid.task, line 4"}},
		{"set under an attention component", conflictBase + "set: [model.attention.kind=flash]\ngrid:\n  model.attention: [{kind: gqa, kv_heads: 1}]\n",
			[]string{"set.model.attention.kind", "grid key model.attention"}},
		{"set seed", conflictBase + "set: [seed=3]\n", []string{"set.seed", "seeds:"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("s.yaml", []byte(c.text), nil)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "s.yaml: ") {
				t.Errorf("error %q: want one line starting with the file", msg)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not name %q", msg, w)
				}
			}
		})
	}

	s, err := Parse("s.yaml", []byte(conflictBase+"grid:\n  model.attention: [{kind: gqa, kv_heads: 1}]\n  train.lr: [0.1]\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"model.attention.kv_heads=2", "model.attention.kind=flash", "train.lr=0.3", "seed=4"} {
		err := s.AddSet(a)
		if err == nil {
			t.Errorf("--set %s: no error", a)
			continue
		}
		key, _, _ := strings.Cut(a, "=")
		if msg := err.Error(); strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "--set "+a+": ") || !strings.Contains(msg, key) {
			t.Errorf("--set %s: error %q: want one line naming the assignment and the key", a, msg)
		}
		if key != "seed" && !strings.Contains(err.Error(), "grid."+strings.Split(key, ".")[0]) {
			t.Errorf("--set %s: error %q does not name the grid key", a, err)
		}
	}
	if len(s.Set) != 0 {
		t.Errorf("refused overrides were added: %+v", s.Set)
	}

	// Keys the grid does not replace are fine, and survive into the runs:
	// a grid key that is not a whole component (task.kind) keeps the
	// component's other options.
	s, err = Parse("s.yaml", []byte(conflictBase+"set: [task.seq_len=32]\ngrid:\n  task.kind: [assoc_recall]\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddSet("task.vocab=64"); err != nil {
		t.Fatal(err)
	}
	runs, err := s.Expand(nil)
	if err != nil {
		t.Fatal(err)
	}
	if o := runs[0].Exp.Task.Options; o["seq_len"] != 32 || o["vocab"] != 64 {
		t.Errorf("task options %v, want seq_len 32 and vocab 64", o)
	}
}

// A sweep cancelled before its runs are dispatched starts none and touches
// no run folder.
func TestExecuteCancelledBeforeDispatch(t *testing.T) {
	s := mustParse(t, tinySweep)
	runs, _ := s.Expand(nil)
	dir := t.TempDir()
	rd := RunDir(dir, runs[0].Name)
	if err := os.MkdirAll(rd, 0o755); err != nil {
		t.Fatal(err)
	}
	old := []byte(`{"error": "earlier"}`)
	os.WriteFile(filepath.Join(rd, FailureFile), old, 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := 0; i < 20; i++ {
		l := &fakeLauncher{}
		out, err := Execute(ctx, s, runs, Options{Dir: dir, Workers: 4, Threads: 1, Launcher: l})
		if !errors.Is(err, train.ErrInterrupted) || len(l.started) != 0 || len(out.Done)+len(out.Failed)+len(out.Interrupted)+len(out.Locked) != 0 {
			t.Fatalf("try %d: err %v, started %v, outcome %+v", i, err, l.started, out)
		}
		entries, _ := os.ReadDir(filepath.Join(dir, RunsDir))
		if len(entries) != 1 {
			t.Fatalf("try %d: run folders %v, want only the earlier one", i, entries)
		}
		inside, _ := os.ReadDir(rd)
		b, _ := os.ReadFile(filepath.Join(rd, FailureFile))
		if len(inside) != 1 || string(b) != string(old) {
			t.Fatalf("try %d: the earlier run folder changed: %v, failure.json %s", i, inside, b)
		}
	}
	// A worker handed a run just before the cancellation leaves it alone too.
	if res := runOne(ctx, dir, s.Name, runs[1], 1, &fakeLauncher{}, "[2/8]", func(string, ...any) {}); res != resNotRun {
		t.Errorf("runOne after the cancellation: %v", res)
	}
	if _, err := os.Stat(RunDir(dir, runs[1].Name)); err == nil {
		t.Errorf("runOne after the cancellation created the run folder")
	}
}

// A new attempt of a run removes the failure.json of the last one as it
// starts, so that an attempt interrupted in turn is not reported failed.
func TestNewAttemptClearsFailure(t *testing.T) {
	s := mustParse(t, tinySweep)
	runs, _ := s.Expand(nil)
	dir := t.TempDir()
	only := Shard{0, 8} // runs[0]
	execute(t, s, runs, dir, only, &fakeLauncher{fail: map[string]bool{runs[0].Name: true}})
	failure := filepath.Join(RunDir(dir, runs[0].Name), FailureFile)
	if !fileExists(failure) {
		t.Fatal("no failure.json after the failure")
	}
	var seen atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	l := &fakeLauncher{block: make(chan struct{}), onStart: func(j Job) {
		seen.Store(fileExists(filepath.Join(j.Dir, FailureFile)))
		cancel()
	}}
	out, err := Execute(ctx, s, runs, Options{Dir: dir, Shard: only, Launcher: l})
	if !errors.Is(err, train.ErrInterrupted) || len(out.Interrupted) != 1 {
		t.Fatalf("err %v, outcome %+v", err, out)
	}
	if seen.Load() || fileExists(failure) {
		t.Errorf("failure.json of the earlier attempt left in place (at the start: %v)", seen.Load())
	}
	c, err := Collect(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Rows) != 0 || !reflect.DeepEqual(c.Unfinished, []string{runs[0].Name}) {
		t.Errorf("rows %+v, unfinished %v: want the interrupted run unfinished, not failed", c.Rows, c.Unfinished)
	}
}

// run.json records each run's sequence length, and Collect reads it there
// rather than rebuilding the task (which it still does for a run.json
// without it).
func TestSeqLenFromRunInfo(t *testing.T) {
	s := mustParse(t, tinySweep)
	runs, err := s.Expand(build)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		if want := r.Exp.Task.Options["seq_len"]; r.SeqLen != want {
			t.Fatalf("run %s: SeqLen %d, want %v", r.Name, r.SeqLen, want)
		}
	}
	dir := t.TempDir()
	execute(t, s, runs, dir, Shard{}, &fakeLauncher{})
	read := func(r Run) RunInfo {
		var info RunInfo
		b, err := os.ReadFile(filepath.Join(RunDir(dir, r.Name), RunInfoFile))
		if err == nil {
			err = json.Unmarshal(b, &info)
		}
		if err != nil {
			t.Fatal(err)
		}
		return info
	}
	if info := read(runs[2]); info.SeqLen != 32 {
		t.Fatalf("run.json of %s: seq_len %d, want 32", runs[2].Name, info.SeqLen)
	}
	// A value only run.json holds shows that Collect reads it from there.
	info := read(runs[0])
	info.SeqLen = 999
	writeJSON(filepath.Join(RunDir(dir, runs[0].Name), RunInfoFile), info)
	// An older run.json, without seq_len: the task tells.
	info = read(runs[1])
	info.SeqLen = 0
	writeJSON(filepath.Join(RunDir(dir, runs[1].Name), RunInfoFile), info)
	if b, _ := os.ReadFile(filepath.Join(RunDir(dir, runs[1].Name), RunInfoFile)); strings.Contains(string(b), `"seq_len"`) {
		t.Fatalf("run.json with seq_len 0: %s", b)
	}
	c, err := Collect(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.Rows[0].SeqLen != 999 || c.Rows[1].SeqLen != 16 || c.Rows[2].SeqLen != 32 {
		t.Errorf("seq lens %d, %d, %d; want 999 (from run.json), 16 (from the task), 32", c.Rows[0].SeqLen, c.Rows[1].SeqLen, c.Rows[2].SeqLen)
	}
}

func writeLock(t *testing.T, rd, host string, pid int, age time.Duration) string {
	t.Helper()
	if err := os.MkdirAll(rd, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(rd, LockFile)
	b, _ := json.Marshal(runlock.Info{Host: host, PID: pid, Start: time.Now().Add(-age).UTC().Format(time.RFC3339Nano), PIDNamespace: runlock.PIDNamespace()})
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	mt := time.Now().Add(-age)
	if err := os.Chtimes(p, mt, mt); err != nil {
		t.Fatal(err)
	}
	return p
}

// A run whose lock another process holds is left to it; a stale lock is
// taken over.
func TestRunLock(t *testing.T) {
	s := mustParse(t, tinySweep)
	runs, _ := s.Expand(nil)
	dir := t.TempDir()
	only := Shard{0, 8} // runs[0]
	rd := RunDir(dir, runs[0].Name)
	p := writeLock(t, rd, "other-host.example", 4242, time.Minute)
	before, _ := os.ReadFile(p)

	l := &fakeLauncher{}
	out, log := execute(t, s, runs, dir, only, l)
	if len(l.started) != 0 || !reflect.DeepEqual(out.Locked, []string{runs[0].Name}) || len(out.Done) != 0 {
		t.Fatalf("a locked run: started %v, outcome %+v\n%s", l.started, out, log)
	}
	if !strings.Contains(log, runs[0].Name+": locked by other-host.example pid 4242; skipped") {
		t.Errorf("log does not say who holds the lock:\n%s", log)
	}
	if after, _ := os.ReadFile(p); string(after) != string(before) {
		t.Errorf("the held lock changed: %s", after)
	}
	if entries, _ := os.ReadDir(rd); len(entries) != 1 {
		t.Errorf("the locked run's folder was touched: %v", entries)
	}

	// Not refreshed for longer than the lease: its holder is gone.
	old := time.Now().Add(-runlock.Lease - time.Minute)
	os.Chtimes(p, old, old)
	l = &fakeLauncher{}
	out, log = execute(t, s, runs, dir, only, l)
	if !reflect.DeepEqual(l.started, []string{runs[0].Name}) || !reflect.DeepEqual(out.Done, []string{runs[0].Name}) {
		t.Fatalf("a stale lock: started %v, outcome %+v\n%s", l.started, out, log)
	}
	if !strings.Contains(log, "took over the stale lock of other-host.example pid 4242 (not refreshed for") {
		t.Errorf("log does not tell of the take-over:\n%s", log)
	}
	if fileExists(p) {
		t.Errorf("lock left after the run ended")
	}
}

// While a run trains it holds its lock, which names this process, and
// another taker in this process is refused; the lock is handed to the run's
// process (Job.Env) and removed when the run ends. (The refresh is tested
// in package runlock.)
func TestRunLockHeldAndReleased(t *testing.T) {
	s := mustParse(t, tinySweep)
	runs, _ := s.Expand(nil)
	dir := t.TempDir()
	var refused, handed atomic.Bool
	l := &fakeLauncher{onStart: func(j Job) {
		p := filepath.Join(j.Dir, LockFile)
		var info runlock.Info
		b, _ := os.ReadFile(p)
		if json.Unmarshal(b, &info) != nil || info.Host != runlock.Hostname() || info.PID != os.Getpid() {
			t.Errorf("lock content %s", b)
		}
		var le *LockedError
		if _, err := runlock.Acquire(j.Dir, t.Logf); errors.As(err, &le) && le.PID == os.Getpid() {
			refused.Store(true)
		}
		handed.Store(len(j.Env) == 1 && j.Env[0] == runlock.HandOverEnv+"="+strings.TrimSpace(string(b)))
	}}
	execute(t, s, runs, dir, Shard{0, 8}, l)
	if !refused.Load() || !handed.Load() {
		t.Errorf("a second taker refused %v, the lock handed to the run's process %v", refused.Load(), handed.Load())
	}
	if fileExists(filepath.Join(RunDir(dir, runs[0].Name), LockFile)) {
		t.Errorf("lock left after the run ended")
	}
}
