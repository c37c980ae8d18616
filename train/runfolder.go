package train

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/internal/atomicfile"
	"github.com/attnlab/attnlab/internal/runlock"
)

// A run folder belongs to one run and is written by one process at a time.
// Run checks everything before it writes anything there (a refused start
// must leave the folder as it was, resumable and evaluable), and it only
// writes while it holds the folder's lock (package runlock), from before
// its first write until it returns.
//
// "One of our runs" is a folder holding RunMarkerFile (written when a run
// starts) or a checkpoint (folders written before the marker existed). A
// new run (no resume) may write an absent folder, an empty one, or a run
// folder without a checkpoint (a run that never saved one, or one a sweep
// prepared); any other non-empty folder is refused, so that --out beside a
// user's files never overwrites them, and a folder holding a checkpoint
// must be continued with resume.

// RunMarkerFile marks a folder as a run folder (see above).
const RunMarkerFile = ".attnlab-run"

const runMarker = "attnlab run folder: trainer train writes here (this file tells it the folder is a run's, not yours)\n"

// ResumeChangeable are the config keys a resume may change: none of them
// changes the training trajectory (weights, losses) of the steps both runs
// take. train.steps changes the schedule's length: with schedule cosine or
// linear the steps before the resume followed the old length's curve, so
// the run is not the one an uninterrupted run of the new length would be
// (with constant it is). The other keys change only what is logged,
// evaluated or saved from the resume on.
var ResumeChangeable = []string{"train.steps", "train.eval_every", "train.eval_examples", "train.checkpoint_every", "train.log_every", "device"}

// MarkRunFolder writes dir's RunMarkerFile, for a process that prepares a
// run folder for a new run that another process trains (a sweep).
func MarkRunFolder(dir string) error {
	return atomicfile.WriteBytes(filepath.Join(dir, RunMarkerFile), []byte(runMarker), 0o644)
}

// runFolder is a run folder whose lock this process holds.
type runFolder struct {
	dir    string
	resume bool
	lock   *runlock.Lock
}

// openRunFolder checks that exp may run in dir (see checkRunFolder),
// creates dir for a new run, takes its lock, checks again under the lock
// (another process may have written it meanwhile) and removes the temporary
// files of writes interrupted by a kill. It writes nothing else; commit
// does, once the checkpoint has been checked too. Messages (a stale lock
// taken over, temporary files removed) go to log, which may be nil. Its
// errors are bad-input errors.
func openRunFolder(dir string, resume bool, exp config.Experiment, log io.Writer) (*runFolder, error) {
	logf := func(format string, args ...any) {
		if log != nil {
			fmt.Fprintf(log, format+"\n", args...)
		}
	}
	if err := checkRunFolder(dir, resume, exp); err != nil {
		return nil, badInput(err)
	}
	if !resume {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, badInput(fmt.Errorf("run folder: %w", err))
		}
	}
	lock, err := runlock.Acquire(dir, logf)
	if err != nil {
		var held *runlock.LockedError
		if errors.As(err, &held) {
			return nil, badInput(fmt.Errorf("%w; another process is writing this run folder", err))
		}
		return nil, badInput(fmt.Errorf("run folder: %w", err))
	}
	rf := &runFolder{dir: dir, resume: resume, lock: lock}
	if err := checkRunFolder(dir, resume, exp); err != nil {
		rf.close()
		return nil, badInput(err)
	}
	removed, err := removeStaleTemps(dir)
	if err != nil {
		rf.close()
		return nil, badInput(fmt.Errorf("run folder: %w", err))
	}
	if len(removed) > 0 {
		logf("removed %d temporary file(s) of writes interrupted earlier: %s", len(removed), strings.Join(removed, ", "))
	}
	return rf, nil
}

// commit writes the run marker and config.yaml: every check has passed.
// step is the checkpoint's step on resume.
func (rf *runFolder) commit(exp config.Experiment, step int) error {
	if rf.resume && step > exp.Train.Steps {
		return badInput(fmt.Errorf("train.steps (%d) is below the step of the checkpoint in %s (%d): a resume can only extend a run", exp.Train.Steps, rf.dir, step))
	}
	text, err := exp.Marshal()
	if err != nil {
		return err
	}
	if !runFileExists(filepath.Join(rf.dir, RunMarkerFile)) {
		if err := MarkRunFolder(rf.dir); err != nil {
			return badInput(fmt.Errorf("run folder: %w", err))
		}
	}
	if err := atomicfile.WriteBytes(filepath.Join(rf.dir, ConfigFile), text, 0o644); err != nil {
		return badInput(fmt.Errorf("run folder: %w", err))
	}
	return nil
}

// close releases the lock.
func (rf *runFolder) close() error { return rf.lock.Release() }

// checkRunFolder checks, without writing, that a run of exp may start in
// dir: on resume, that dir holds a checkpoint and that exp differs from its
// config.yaml only in ResumeChangeable keys; for a new run, that dir is
// absent, empty or a run folder without a checkpoint.
func checkRunFolder(dir string, resume bool, exp config.Experiment) error {
	if resume {
		if !runFileExists(filepath.Join(dir, CheckpointFile)) {
			return fmt.Errorf("--resume %s: no %s there, nothing to resume", dir, CheckpointFile)
		}
		return checkResumeConfig(dir, exp)
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("run folder: %w", err)
	}
	var names []string
	marked := false
	for _, e := range entries {
		switch e.Name() {
		case CheckpointFile:
			return fmt.Errorf("--out %s already holds a run; continue it with --resume %s or pick another folder", dir, dir)
		case RunMarkerFile:
			marked = true
		case runlock.FileName: // another process about to start a run here: its lock decides
		default:
			names = append(names, e.Name())
		}
	}
	if marked || len(names) == 0 {
		return nil
	}
	if len(names) > 3 {
		names = append(names[:3], fmt.Sprintf("and %d more", len(names)-3))
	}
	return fmt.Errorf("--out %s: the folder is not empty (%s) and is not a run folder (no %s or %s), so a run would overwrite its files; pick a new or empty folder",
		dir, strings.Join(names, ", "), RunMarkerFile, CheckpointFile)
}

// checkResumeConfig checks that exp, the config a resume of the run in dir
// would continue with, differs from the run's config.yaml only in
// ResumeChangeable keys.
func checkResumeConfig(dir string, exp config.Experiment) error {
	p := filepath.Join(dir, ConfigFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("--resume %s: %w", dir, err)
	}
	old, err := config.Parse(p, b)
	if err != nil {
		return fmt.Errorf("--resume %s: %w", dir, err)
	}
	diffs, err := configDiff(old, exp)
	if err != nil {
		return fmt.Errorf("--resume %s: %w", dir, err)
	}
	var refused []string
	for _, d := range diffs {
		if !slices.Contains(ResumeChangeable, d.key) {
			refused = append(refused, fmt.Sprintf("%s (%s -> %s)", d.key, d.old, d.new))
		}
	}
	if len(refused) == 0 {
		return nil
	}
	what := "differs"
	if len(refused) > 1 {
		what = "differ"
	}
	return fmt.Errorf("--resume %s: %s %s from the run's %s; a resume may change only %s (start a new run with --out to train another config)",
		dir, strings.Join(refused, ", "), what, ConfigFile, strings.Join(ResumeChangeable, ", "))
}

// keyDiff is one config key whose value differs between two configs.
type keyDiff struct{ key, old, new string }

// configDiff lists the dotted keys (components' options included) whose
// values differ between a and b, in key order; a key one of them lacks
// shows as "(none)" there.
func configDiff(a, b config.Experiment) ([]keyDiff, error) {
	fa, err := flatConfig(a)
	if err != nil {
		return nil, err
	}
	fb, err := flatConfig(b)
	if err != nil {
		return nil, err
	}
	var keys []string
	for k := range fa {
		keys = append(keys, k)
	}
	for k := range fb {
		if _, ok := fa[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var out []keyDiff
	for _, k := range keys {
		va, oka := fa[k]
		vb, okb := fb[k]
		if oka && okb && va == vb {
			continue
		}
		if !oka {
			va = "(none)"
		}
		if !okb {
			vb = "(none)"
		}
		out = append(out, keyDiff{k, va, vb})
	}
	return out, nil
}

// flatConfig is exp as written to config.yaml, each value under its dotted
// key.
func flatConfig(exp config.Experiment) (map[string]string, error) {
	text, err := exp.Marshal()
	if err != nil {
		return nil, err
	}
	var tree map[string]any
	if err := yaml.Unmarshal(text, &tree); err != nil {
		return nil, fmt.Errorf("config: %v", err)
	}
	out := map[string]string{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		if m, ok := v.(map[string]any); ok {
			for k, sub := range m {
				walk(prefix+k+".", sub)
			}
			return
		}
		out[strings.TrimSuffix(prefix, ".")] = fmt.Sprint(v)
	}
	walk("", tree)
	return out, nil
}

// removeStaleTemps removes the temporary files (internal/atomicfile names
// them "." + base + ".tmp" + a suffix) that writes of the run folder's files
// left when a kill interrupted them: each checkpoint's is a whole
// checkpoint. Only the lock holder calls it, so no live write's file is
// removed. It returns the names removed.
func removeStaleTemps(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		if !isTempOfRunFile(e.Name()) || e.IsDir() {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, err
		}
		removed = append(removed, e.Name())
	}
	return removed, nil
}

// isTempOfRunFile reports whether name is an atomicfile temporary file of
// one of the files a run writes.
func isTempOfRunFile(name string) bool {
	for _, base := range []string{CheckpointFile, ConfigFile, MetricsFile, SummaryFile, RunMarkerFile} {
		if strings.HasPrefix(name, "."+base+".tmp") {
			return true
		}
	}
	return false
}

func runFileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
