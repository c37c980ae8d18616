package sweep

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/internal/atomicfile"
	"github.com/attnlab/attnlab/internal/runlock"
	"github.com/attnlab/attnlab/train"
)

// The files of a sweep folder, and those a sweep adds to each run folder
// (besides train's config.yaml, metrics.jsonl, summary.json and checkpoint):
//
//	DIR/sweep.json               the whole grid: keys, values, seeds, run names
//	DIR/runs/NAME/run.json       the run's grid values, seed and thread count
//	DIR/runs/NAME/train.log      the run's output (appended at each start)
//	DIR/runs/NAME/failure.json   why the run's last attempt failed
//	DIR/runs/NAME/lock           held while a process works on the run (host, pid, start): the sweep, then the trainer
//	DIR/runs/NAME/.attnlab-run   train's run marker (train.RunMarkerFile), written as a run starts afresh
const (
	SweepFile   = "sweep.json"
	RunsDir     = "runs"
	RunInfoFile = "run.json"
	LogFile     = "train.log"
	FailureFile = "failure.json"
	LockFile    = runlock.FileName
)

// RunInfo is run.json: what a run folder is, so that a report can read the
// grid values back without the sweep file.
type RunInfo struct {
	Sweep   string  `json:"sweep"`
	Name    string  `json:"name"`
	Index   int     `json:"index"`
	Params  []Param `json:"params"`
	Seed    uint64  `json:"seed"`
	Threads int     `json:"threads"` // GOMAXPROCS of the run's process (its last start)
	// SeqLen is the task's sequence length (absent when the sweep was run
	// without building its runs, and in folders written before it existed).
	SeqLen int `json:"seq_len,omitempty"`
}

// Failure is failure.json: the last attempt of a run failed.
type Failure struct {
	Error    string `json:"error"`
	ExitCode int    `json:"exit_code"`
	Time     string `json:"time"`
}

// Info is sweep.json: the whole grid of a sweep, whatever shard wrote it.
type Info struct {
	Name   string     `json:"name"`
	Source string     `json:"source"`
	Base   string     `json:"base"`
	Grid   []AxisInfo `json:"grid"`
	Seeds  []uint64   `json:"seeds"`
	Runs   []string   `json:"runs"` // every run's name, in index order
}

// AxisInfo is one grid key and the labels of its values.
type AxisInfo struct {
	Key    string   `json:"key"`
	Values []string `json:"values"`
}

// Info describes the sweep and its expanded runs.
func (s *Sweep) Info(runs []Run) Info {
	in := Info{Name: s.Name, Source: s.Source, Base: s.BaseFrom, Seeds: s.Seeds, Grid: []AxisInfo{}, Runs: []string{}}
	for _, ax := range s.Grid {
		a := AxisInfo{Key: ax.Key}
		for _, v := range ax.Values {
			a.Values = append(a.Values, v.Label)
		}
		in.Grid = append(in.Grid, a)
	}
	for _, r := range runs {
		in.Runs = append(in.Runs, r.Name)
	}
	return in
}

// RunDir is the folder of the run called name in the sweep folder dir.
func RunDir(dir, name string) string { return filepath.Join(dir, RunsDir, name) }

// Job is one run handed to a Launcher.
type Job struct {
	Dir     string    // the run folder; config.yaml there is the run's experiment
	Resume  bool      // continue from the checkpoint in Dir
	Threads int       // GOMAXPROCS of the run's process
	Output  io.Writer // where the run's output goes
	// Env is added to the process's environment: the hand-over of the
	// run's lock (runlock.Lock.HandOver), so that the process takes it over.
	Env []string
}

// Launcher trains one run to completion. It returns nil when the run
// wrote its summary.json, an error wrapping train.ErrInterrupted when the
// run stopped after saving a checkpoint (ctx was cancelled), one wrapping
// ErrKilled when ctx was cancelled and the run ended without saving one,
// and any other error when the run failed.
type Launcher interface {
	Launch(ctx context.Context, j Job) error
}

// ErrKilled is wrapped by the error of a run that the cancellation of a
// sweep stopped before it saved a checkpoint: it did not exit within the
// grace period after SIGTERM and was killed, or the signal ended it before
// it could handle it. It is not a failure of the run: a restart resumes it
// from its last periodic checkpoint (train.checkpoint_every), or starts it
// afresh if it has none.
var ErrKilled = errors.New("stopped without saving a checkpoint")

// Exec launches each run as a child process of the trainer binary at Path:
// "train --config DIR/config.yaml --out DIR", or "train --resume DIR". A
// process of its own per run keeps runs from sharing a heap, so each run's
// peak RSS in summary.json is its own, and a crash stays in its run. The
// process runs in a process group of its own and, on Linux, gets SIGTERM
// when the sweep's process dies (see childAttr); it takes the run's lock
// over from the sweep (Job.Env) as it starts.
type Exec struct {
	Path string   // the trainer binary (os.Executable() for the trainer itself)
	Env  []string // the environment; nil means os.Environ()
	// Grace is how long a run may take to save its checkpoint after SIGTERM
	// before it is killed (default DefaultGrace).
	Grace time.Duration
}

// DefaultGrace is Exec's default Grace. Whatever stops a sweep must allow
// more than this between its SIGTERM and its SIGKILL (Slurm's --signal
// margin, Kubernetes' terminationGracePeriodSeconds), so that the runs save
// their checkpoints and the sweep writes its results.
const DefaultGrace = 2 * time.Minute

// exitInterrupted is the status of "trainer train" when a signal stopped
// it after it saved a checkpoint.
const exitInterrupted = 130

// RunError is a run process that failed.
type RunError struct {
	ExitCode int
	Msg      string // the process's last "error: ..." line, or its last line
}

func (e *RunError) Error() string {
	if e.Msg == "" {
		return fmt.Sprintf("exit status %d", e.ExitCode)
	}
	return fmt.Sprintf("exit status %d: %s", e.ExitCode, e.Msg)
}

// Launch runs the job's process and waits for it. When ctx is cancelled the
// process gets SIGTERM (the trainer then finishes its step, saves a
// checkpoint and exits with status 130), and is killed if it has not
// exited after Grace. The result follows from how the process ended, not
// from ctx: status 0 is a finished run (even if ctx was cancelled as it
// finished), 130 an interrupted one (checkpoint saved), death by a signal
// after the SIGTERM a killed one (ErrKilled), and anything else a failure
// (*RunError).
func (e Exec) Launch(ctx context.Context, j Job) error {
	args := []string{"train", "--config", filepath.Join(j.Dir, train.ConfigFile), "--out", j.Dir}
	if j.Resume {
		args = []string{"train", "--resume", j.Dir}
	}
	cmd := exec.CommandContext(ctx, e.Path, args...)
	env := e.Env
	if env == nil {
		env = os.Environ()
	}
	if j.Threads > 0 {
		n := strconv.Itoa(j.Threads)
		env = append(env[:len(env):len(env)], "GOMAXPROCS="+n, "OPENBLAS_NUM_THREADS="+n)
	}
	env = append(env[:len(env):len(env)], j.Env...)
	cmd.Env = env
	cmd.SysProcAttr = childAttr()
	out := j.Output
	if out == nil {
		out = io.Discard
	}
	tail := &tailBuffer{max: 16 << 10}
	cmd.Stdout = out
	cmd.Stderr = io.MultiWriter(out, tail)
	var termSent atomic.Bool
	cmd.Cancel = func() error {
		termSent.Store(true)
		return terminate(cmd.Process)
	}
	grace := e.Grace
	if grace <= 0 {
		grace = DefaultGrace
	}
	cmd.WaitDelay = grace
	// The parent-death signal is sent when the thread that started the
	// process ends, not the process: keep this goroutine on its thread
	// until the process has been waited for.
	runtime.LockOSThread()
	err := cmd.Run()
	runtime.UnlockOSThread()
	ps := cmd.ProcessState
	if ps == nil { // it never started
		return &RunError{ExitCode: -1, Msg: oneLine(err.Error())}
	}
	if ps.Success() {
		// Run reports the cancellation even when the process exited 0 after
		// the SIGTERM: the run finished and wrote its summary.json.
		return nil
	}
	code := ps.ExitCode()
	if code == exitInterrupted {
		return fmt.Errorf("%s: %w", j.Dir, train.ErrInterrupted)
	}
	ws, _ := ps.Sys().(syscall.WaitStatus)
	if ws.Signaled() && termSent.Load() {
		if ws.Signal() == syscall.SIGKILL {
			return fmt.Errorf("%s: killed after the %s grace period that followed SIGTERM, %w; a restart resumes it from its last periodic checkpoint", j.Dir, grace, ErrKilled)
		}
		return fmt.Errorf("%s: ended by %s before it could save a checkpoint, %w; a restart resumes it from its last periodic checkpoint", j.Dir, ws.Signal(), ErrKilled)
	}
	msg := tail.lastError()
	if code == -1 { // killed by a signal: say which (SIGKILL is often the OOM killer)
		msg = strings.TrimSpace(ps.String() + "; last output: " + msg)
	}
	return &RunError{ExitCode: code, Msg: msg}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

// lastError returns the last line starting with "error: " (the trainer's
// one-line error), or the last non-empty line.
func (t *tailBuffer) lastError() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(string(t.buf)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if msg, ok := strings.CutPrefix(strings.TrimSpace(lines[i]), "error: "); ok {
			return msg
		}
	}
	return strings.TrimSpace(lines[len(lines)-1])
}

// DefaultThreads is the GOMAXPROCS each of workers concurrent runs gets:
// the CPUs this process may use (runtime.GOMAXPROCS, which follows the
// container's CPU limit) shared evenly, at least 1.
func DefaultThreads(workers int) int {
	return max(1, runtime.GOMAXPROCS(0)/max(1, workers))
}

// Options says where and how Execute runs a sweep.
type Options struct {
	Dir      string // the sweep folder; runs go to Dir/runs/NAME
	Shard    Shard  // the runs to run here
	Workers  int    // runs at a time (at least 1)
	Threads  int    // GOMAXPROCS of each run (0: DefaultThreads(Workers))
	Launcher Launcher
	Log      io.Writer // one line per run started, finished, skipped or failed; nil for none
}

// Outcome is what Execute did, run names in index order.
type Outcome struct {
	Skipped     []string // finished in an earlier start (or by another process meanwhile): not run again
	Done        []string // finished now
	Failed      []string // failed now (failure.json written)
	Interrupted []string // stopped by the cancellation, checkpoint saved
	Killed      []string // stopped by the cancellation before saving a checkpoint (ErrKilled)
	Locked      []string // being run by another process (its lock is fresh): left to it
}

// result is what runOne did with a run.
type result int

const (
	resNotRun      result = iota // the sweep was cancelled before the run started
	resDone                      // finished now
	resFailed                    // failed (failure.json written)
	resInterrupted               // stopped, checkpoint saved
	resKilled                    // stopped without a checkpoint
	resLocked                    // another process holds its lock
	resSkipped                   // found finished once its lock was taken
)

// action is what Execute does with a run.
type action int

const (
	actSkip   action = iota // summary.json present: finished
	actResume               // checkpoint of the same config present
	actFresh                // start from scratch (clearing what an earlier attempt left)
)

// plan decides each run's action from its folder. A finished run whose
// config.yaml differs from the run's resolved config is an error: its
// numbers would be reported for a config the sweep no longer asks for.
func plan(dir string, runs []Run) ([]action, error) {
	acts := make([]action, len(runs))
	var probs []string
	for i, r := range runs {
		act, err := planOne(RunDir(dir, r.Name), r)
		if err != nil {
			probs = append(probs, err.Error())
			continue
		}
		acts[i] = act
	}
	if len(probs) > 0 {
		if len(probs) > 3 {
			probs = append(probs[:3], fmt.Sprintf("and %d more", len(probs)-3))
		}
		return nil, &train.BadInputError{Err: errors.New(strings.Join(probs, "; "))}
	}
	return acts, nil
}

// planOne decides a run's action from its folder rd (see plan).
func planOne(rd string, r Run) (action, error) {
	same, exists, err := sameConfig(rd, r.Exp)
	if err != nil {
		return actFresh, err
	}
	switch {
	case fileExists(filepath.Join(rd, train.SummaryFile)):
		if exists && !same {
			return actSkip, fmt.Errorf("%s: finished with a different config than the sweep now gives it (compare its config.yaml); delete the folder to rerun it, or write to another --out", rd)
		}
		return actSkip, nil
	case same && fileExists(filepath.Join(rd, train.CheckpointFile)):
		return actResume, nil
	}
	return actFresh, nil
}

// sameConfig reports whether the run folder rd holds a config.yaml
// (exists) equal to exp once both are resolved the same way (same).
func sameConfig(rd string, exp config.Experiment) (same, exists bool, err error) {
	b, err := os.ReadFile(filepath.Join(rd, train.ConfigFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("%s: %v", rd, err)
	}
	old, err := config.Parse(filepath.Join(rd, train.ConfigFile), b)
	if err != nil {
		return false, true, nil // unreadable: not the same; a finished run is reported above
	}
	a, err1 := old.Marshal()
	c, err2 := exp.Marshal()
	if err1 != nil || err2 != nil {
		return false, true, nil
	}
	return bytes.Equal(a, c), true, nil
}

// Execute runs the runs of o.Shard among runs (the sweep's whole expansion),
// o.Workers at a time, each through o.Launcher. A run whose folder holds
// summary.json is finished and is skipped; one whose folder holds a
// checkpoint written for the same config is resumed (train --resume
// continues exactly); any other starts from scratch. Before anything runs,
// every run folder is checked and sweep.json written.
//
// A run is only touched under its lock (DIR/runs/NAME/lock): a run whose
// lock another process holds is left to it (Outcome.Locked), a stale lock
// is taken over, and the run's action is decided again once the lock is
// held. The run's process takes the lock over from this one while it runs
// (Job.Env), so that the lock names the process that writes the folder.
//
// A failed run is recorded (failure.json, removed when a new attempt
// starts) and the others go on. When ctx is cancelled no further run
// starts, the running ones are stopped (they save a checkpoint, or are
// killed after the grace period) and Execute returns an error wrapping
// train.ErrInterrupted along with the outcome so far.
func Execute(ctx context.Context, s *Sweep, runs []Run, o Options) (*Outcome, error) {
	if o.Launcher == nil || o.Dir == "" {
		return nil, errors.New("sweep: Execute needs a Dir and a Launcher")
	}
	workers := max(1, o.Workers)
	threads := o.Threads
	if threads <= 0 {
		threads = DefaultThreads(workers)
	}
	mine := o.Shard.Select(runs)
	acts, err := plan(o.Dir, mine)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(o.Dir, RunsDir), 0o755); err != nil {
		return nil, &train.BadInputError{Err: fmt.Errorf("--out: %w", err)}
	}
	if err := writeJSON(filepath.Join(o.Dir, SweepFile), s.Info(runs)); err != nil {
		return nil, &train.BadInputError{Err: fmt.Errorf("--out: %w", err)}
	}
	var lmu sync.Mutex
	logf := func(format string, args ...any) {
		if o.Log == nil {
			return
		}
		lmu.Lock()
		defer lmu.Unlock()
		fmt.Fprintf(o.Log, format+"\n", args...)
	}
	count := [3]int{}
	for _, a := range acts {
		count[a]++
	}
	logf("sweep %s: %d runs in the grid; shard %s: %d runs (%d finished, %d to resume, %d to start); %d at a time, GOMAXPROCS=%d each; writing %s",
		s.Name, len(runs), o.Shard, len(mine), count[actSkip], count[actResume], count[actFresh], workers, threads, o.Dir)

	out := &Outcome{}
	results := make([]result, len(mine)) // resNotRun unless a worker ran it
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				r := mine[i]
				tag := fmt.Sprintf("[%d/%d]", r.Index+1, len(runs))
				results[i] = runOne(ctx, o.Dir, s.Name, r, threads, o.Launcher, tag, logf)
			}
		}()
	}
dispatch:
	for i, r := range mine {
		if acts[i] == actSkip {
			logf("[%d/%d] skip %s: finished earlier (summary.json present)", r.Index+1, len(runs), r.Name)
			continue
		}
		// select picks at random among ready cases: without this check a
		// run could still start after the cancellation.
		if ctx.Err() != nil {
			break
		}
		select {
		case jobs <- i:
		case <-ctx.Done():
			break dispatch
		}
	}
	close(jobs)
	wg.Wait()

	for i, r := range mine {
		if acts[i] == actSkip {
			out.Skipped = append(out.Skipped, r.Name)
			continue
		}
		switch results[i] {
		case resDone:
			out.Done = append(out.Done, r.Name)
		case resFailed:
			out.Failed = append(out.Failed, r.Name)
		case resInterrupted:
			out.Interrupted = append(out.Interrupted, r.Name)
		case resKilled:
			out.Killed = append(out.Killed, r.Name)
		case resLocked:
			out.Locked = append(out.Locked, r.Name)
		case resSkipped:
			out.Skipped = append(out.Skipped, r.Name)
		}
	}
	if ctx.Err() != nil {
		return out, fmt.Errorf("sweep %s: %w", s.Name, train.ErrInterrupted)
	}
	return out, nil
}

// runOne takes the run's lock, prepares its folder, launches it and
// records the result. Its action (resume or start afresh) is decided again
// once the lock is held: another process may have run it meanwhile.
func runOne(ctx context.Context, dir, sweepName string, r Run, threads int, l Launcher, tag string, logf func(string, ...any)) result {
	if ctx.Err() != nil { // cancelled since it was dispatched: leave the folder alone
		return resNotRun
	}
	rd := RunDir(dir, r.Name)
	fail := func(err error, code int) result {
		logf("%s FAILED %s: %s", tag, r.Name, oneLine(err.Error()))
		f := Failure{Error: oneLine(err.Error()), ExitCode: code, Time: time.Now().UTC().Format(time.RFC3339)}
		if werr := writeJSON(filepath.Join(rd, FailureFile), f); werr != nil {
			logf("%s could not record the failure: %v", tag, werr)
		}
		return resFailed
	}
	if err := os.MkdirAll(rd, 0o755); err != nil {
		logf("%s FAILED %s: %v", tag, r.Name, err)
		return resFailed
	}
	lk, err := runlock.Acquire(rd, func(format string, args ...any) {
		logf("%s %s: %s", tag, r.Name, fmt.Sprintf(format, args...))
	})
	if err != nil {
		var held *LockedError
		if errors.As(err, &held) {
			logf("%s %s: locked by %s pid %d; skipped (its lock was refreshed %s ago)", tag, r.Name, held.Host, held.PID, held.Age.Round(time.Second))
			return resLocked
		}
		return fail(err, -1)
	}
	defer func() {
		if err := lk.Release(); err != nil {
			logf("%s %s: %v", tag, r.Name, err)
		}
	}()

	act, err := planOne(rd, r)
	if err != nil && act != actSkip {
		return fail(err, -1)
	}
	if act == actSkip {
		msg := "finished meanwhile by another process (summary.json present)"
		if err != nil {
			msg += "; but " + oneLine(err.Error())
		}
		logf("%s skip %s: %s", tag, r.Name, msg)
		return resSkipped
	}
	resume := act == actResume
	// A new attempt: the failure of an earlier one no longer describes the
	// run (results would report it failed while it runs or resumes).
	if err := os.Remove(filepath.Join(rd, FailureFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fail(err, -1)
	}
	if !resume {
		// Whatever an earlier attempt left (a checkpoint of another config, a
		// partial metrics log) must not mix with this run.
		for _, f := range []string{train.CheckpointFile, train.MetricsFile, train.SummaryFile} {
			if err := os.Remove(filepath.Join(rd, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fail(err, -1)
			}
		}
		text, err := r.Exp.Marshal()
		if err != nil {
			return fail(err, -1)
		}
		// The marker tells the trainer this folder is a run's (it refuses
		// to start a run in a folder of other files).
		if err := train.MarkRunFolder(rd); err != nil {
			return fail(err, -1)
		}
		if err := atomicfile.WriteBytes(filepath.Join(rd, train.ConfigFile), text, 0o644); err != nil {
			return fail(err, -1)
		}
	}
	info := RunInfo{Sweep: sweepName, Name: r.Name, Index: r.Index, Params: r.Params, Seed: r.Seed, Threads: threads, SeqLen: r.SeqLen}
	if info.Params == nil {
		info.Params = []Param{}
	}
	if err := writeJSON(filepath.Join(rd, RunInfoFile), info); err != nil {
		return fail(err, -1)
	}
	logFile, err := os.OpenFile(filepath.Join(rd, LogFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fail(err, -1)
	}
	defer logFile.Close()
	verb := "start"
	if resume {
		verb = "resume"
	}
	if ctx.Err() != nil { // cancelled while the folder was prepared: a process would not start
		return resNotRun
	}
	fmt.Fprintf(logFile, "=== %s %s, GOMAXPROCS=%d, %s\n", verb, r.Name, threads, time.Now().UTC().Format(time.RFC3339))
	logf("%s %s %s", tag, verb, r.Name)
	t0 := time.Now()
	err = l.Launch(ctx, Job{Dir: rd, Resume: resume, Threads: threads, Output: logFile, Env: []string{lk.HandOver()}})
	switch {
	case err == nil:
		var sum train.Summary
		b, rerr := os.ReadFile(filepath.Join(rd, train.SummaryFile))
		if rerr == nil {
			rerr = json.Unmarshal(b, &sum)
		}
		if rerr != nil {
			return fail(fmt.Errorf("the run exited cleanly but its summary.json is unreadable: %v", rerr), 0)
		}
		logf("%s done %s: eval_accuracy %.4f, %.1f ms/step, %.0fs", tag, r.Name, sum.EvalAccuracy, sum.StepMsMedian, time.Since(t0).Seconds())
		return resDone
	case errors.Is(err, train.ErrInterrupted):
		logf("%s interrupted %s (checkpoint saved; a restart resumes it)", tag, r.Name)
		return resInterrupted
	case errors.Is(err, ErrKilled):
		logf("%s killed %s: %s", tag, r.Name, oneLine(err.Error()))
		return resKilled
	}
	code := -1
	var re *RunError
	if errors.As(err, &re) {
		code = re.ExitCode
	}
	return fail(err, code)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(path, append(b, '\n'), 0o644)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
