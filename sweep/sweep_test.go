package sweep

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/configs"
	"github.com/attnlab/attnlab/train"
)

// tinySweep is 2 variants x 2 lengths x 2 seeds of a model that builds in
// milliseconds.
const tinySweep = `name: tiny
base:
  name: tiny
  task: {kind: assoc_recall, seq_len: 16, vocab: 32, kv_pairs: 2}
  model: {kind: decoder, d_model: 16, n_layers: 1, n_heads: 2, d_ff: 32}
  train: {steps: 3, batch_size: 4, warmup_steps: 1, eval_examples: 8}
set: [train.lr=0.002]
grid:
  task.seq_len: [16, 32]
  model.attention.kind: [standard, flash]
seeds: [1, 2]
`

func mustParse(t *testing.T, text string) *Sweep {
	t.Helper()
	s, err := Parse("tiny.yaml", []byte(text), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func build(e config.Experiment) (int, error) {
	st, err := train.Build(e)
	if err != nil {
		return 0, err
	}
	return st.Task.SeqLen(), nil
}

func TestExpandOrderAndResolution(t *testing.T) {
	s := mustParse(t, tinySweep)
	runs, err := s.Expand(build)
	if err != nil {
		t.Fatal(err)
	}
	// Keys sorted (model.attention.kind before task.seq_len), the first
	// slowest, values as written, seeds innermost.
	want := []string{
		"model.attention.kind=standard,task.seq_len=16,seed=1",
		"model.attention.kind=standard,task.seq_len=16,seed=2",
		"model.attention.kind=standard,task.seq_len=32,seed=1",
		"model.attention.kind=standard,task.seq_len=32,seed=2",
		"model.attention.kind=flash,task.seq_len=16,seed=1",
		"model.attention.kind=flash,task.seq_len=16,seed=2",
		"model.attention.kind=flash,task.seq_len=32,seed=1",
		"model.attention.kind=flash,task.seq_len=32,seed=2",
	}
	if len(runs) != len(want) {
		t.Fatalf("%d runs, want %d", len(runs), len(want))
	}
	for i, r := range runs {
		if r.Name != want[i] || r.Index != i {
			t.Errorf("run %d: %q (index %d), want %q", i, r.Name, r.Index, want[i])
		}
		kind, _ := r.Params[0].Value, r.Params[1].Value
		if r.Exp.Model.Attention.Kind != kind || r.Exp.Seed != r.Seed || r.Exp.Name != "tiny" || r.Exp.Train.LR != 0.002 {
			t.Errorf("run %s: resolved %+v", r.Name, r.Exp)
		}
	}
	if got := runs[2].Exp.Task.Options["seq_len"]; got != 32 {
		t.Errorf("seq_len option %v (%T), want 32", got, got)
	}
	// Expanding again gives the same runs: names are a function of the file.
	again, _ := mustParse(t, tinySweep).Expand(nil)
	for i := range runs {
		if again[i].Name != runs[i].Name {
			t.Errorf("run %d renamed: %s then %s", i, runs[i].Name, again[i].Name)
		}
	}
}

func TestComponentValuesAndSeedsDefault(t *testing.T) {
	s := mustParse(t, `base: {name: b, seed: 7, model: {d_model: 16, n_heads: 4, d_ff: 32, n_layers: 1},
  task: {kind: assoc_recall, seq_len: 16, vocab: 32, kv_pairs: 2}, train: {steps: 2, warmup_steps: 1}}
grid:
  model.attention: [{kind: gqa, kv_heads: 1}, {kind: standard}]
`)
	runs, err := s.Expand(build)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || runs[0].Name != "model.attention=gqa+kv_heads=1,seed=7" || runs[1].Name != "model.attention=standard,seed=7" {
		t.Fatalf("runs %v", []string{runs[0].Name, runs[1].Name})
	}
	if s.Name != "tiny" {
		t.Errorf("name %q, want the file's base name", s.Name)
	}
	if len(runs[1].Exp.Model.Attention.Options) != 0 {
		t.Errorf("the mapping value did not replace the component: %v", runs[1].Exp.Model.Attention.Options)
	}
}

// model.memory is a component key too: each memory kind with its own
// options (hmt's memory_tokens, which rmt's defaults do not share).
func TestMemoryComponentValues(t *testing.T) {
	s := mustParse(t, `base: {name: b, model: {d_model: 16, n_heads: 2, d_ff: 32, n_layers: 1},
  task: {kind: copy, seq_len: 16}, train: {steps: 2, warmup_steps: 1}}
grid:
  model.memory: [{kind: none}, {kind: hmt, segment: 8, memory_tokens: 2}, {kind: rmt, segment: 8}]
`)
	runs, err := s.Expand(build)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 3 || runs[1].Name != "model.memory=hmt+memory_tokens=2+segment=8,seed=1" {
		t.Fatalf("runs %d, second %q", len(runs), runs[1].Name)
	}
	hmt, rmt := runs[1].Exp.Model.Memory, runs[2].Exp.Model.Memory
	if hmt.Kind != "hmt" || hmt.Options["memory_tokens"] != 2 || rmt.Kind != "rmt" || rmt.Options["memory_tokens"] != nil {
		t.Errorf("hmt %+v, rmt %+v", hmt, rmt)
	}
}

// A component value may hold lists of scalars (dilated's segments), given
// to the option as a YAML list.
func TestComponentListOptions(t *testing.T) {
	s := mustParse(t, `base: {name: b, seed: 7, model: {d_model: 16, n_heads: 4, d_ff: 32, n_layers: 1},
  task: {kind: assoc_recall, seq_len: 16, vocab: 32, kv_pairs: 2}, train: {steps: 2, warmup_steps: 1}}
grid:
  model.attention: [{kind: dilated, segments: [4, 16], dilations: [1, 4]}]
`)
	runs, err := s.Expand(build)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Grid[0].Values[0].Label; got != "dilated+dilations=[1,4]+segments=[4,16]" {
		t.Errorf("label %q", got)
	}
	opts := runs[0].Exp.Model.Attention.Options
	if fmt.Sprint(opts["segments"]) != "[4 16]" || fmt.Sprint(opts["dilations"]) != "[1 4]" {
		t.Errorf("options %v", opts)
	}
	nested := "base: {name: b, task: {kind: assoc_recall, seq_len: 16, vocab: 32, kv_pairs: 2}}\ngrid:\n  model.attention: [{kind: dilated, segments: [[1]]}]\n"
	if _, err := Parse("s.yaml", []byte(nested), nil); err == nil || !strings.Contains(err.Error(), "lists of scalars") {
		t.Errorf("a nested list: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	base := "base: {name: b, task: {kind: assoc_recall, seq_len: 16, vocab: 32, kv_pairs: 2}, model: {d_model: 16, n_heads: 2, d_ff: 32, n_layers: 1}, train: {steps: 2, warmup_steps: 1}}\n"
	cases := []struct {
		name, text string
		want       []string // substrings of the one-line error
	}{
		{"unknown key", base + "grdi: {}\n", []string{"line 2", `unknown key "grdi"`}},
		{"empty list", base + "grid:\n  model.attention.kind: []\n", []string{"line 3", "grid.model.attention.kind", "empty list"}},
		{"bad grid key", base + "grid:\n  model.atention.kind: [flash]\n", []string{"line 3", "grid.model.atention.kind", "atention"}},
		{"wrong type", base + "grid:\n  model.d_model: [16, wide]\n", []string{"line 3", "grid.model.d_model", "wide"}},
		{"train type", base + "grid:\n  train.steps: [1.5]\n", []string{"grid.train.steps", "integer"}},
		{"not a list", base + "grid:\n  train.lr: 0.1\n", []string{"grid.train.lr", "list"}},
		{"seed in grid", base + "grid:\n  seed: [1, 2]\n", []string{"grid.seed", "seeds:"}},
		{"duplicate value", base + "grid:\n  train.lr: [0.1, 0.1]\n", []string{"line 3", "grid.train.lr", "twice"}},
		{"mapping value", base + "grid:\n  train: [{lr: 1}]\n", []string{"grid.train", "component"}},
		{"empty seeds", base + "seeds: []\n", []string{"seeds", "empty"}},
		{"bad seed", base + "seeds: [1, -2]\n", []string{"seeds", "-2"}},
		{"bad set", base + "set: [train.lrr=1]\n", []string{"set.train.lrr", "lrr"}},
		{"set not kv", base + "set: [train.lr]\n", []string{"set", "KEY=VALUE"}},
		{"no base", "grid: {train.lr: [1]}\n", []string{"base: missing"}},
		{"base in base", "base: {name: b, trian: {}}\n", []string{"line 1", "trian"}},
		{"bad name", base + "name: a/b\n", []string{"name", "a/b"}},
		{"not a mapping", "- 1\n", []string{"mapping"}},
		{"empty", "", []string{"empty"}},
		{"syntax", "base: [\n", []string{"yaml syntax"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("s.yaml", []byte(c.text), nil)
			if err == nil {
				t.Fatalf("no error")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "s.yaml") {
				t.Errorf("error %q: want one line starting with the file", msg)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not name %q", msg, w)
				}
			}
		})
	}
}

// A value the schema accepts but the run's config refuses is reported by
// Expand, naming the run and the key.
func TestExpandValidates(t *testing.T) {
	s := mustParse(t, strings.Replace(tinySweep, "task.seq_len: [16, 32]", "task.seq_len: [16, 0]", 1))
	if _, err := s.Expand(build); err == nil || !strings.Contains(err.Error(), "task.seq_len=0") || !strings.Contains(err.Error(), "seq_len") {
		t.Errorf("error %v: want one naming the run and seq_len", err)
	}
	s = mustParse(t, strings.Replace(tinySweep, "[standard, flash]", "[standard, nonesuch]", 1))
	if _, err := s.Expand(build); err == nil || !strings.Contains(err.Error(), "model.attention.kind") {
		t.Errorf("error %v: want one naming model.attention.kind", err)
	}
	s = mustParse(t, strings.Replace(tinySweep, "set: [train.lr=0.002]", "set: [train.warmup_steps=-1]", 1))
	if _, err := s.Expand(nil); err == nil || !strings.Contains(err.Error(), "train.warmup_steps") {
		t.Errorf("error %v: want Validate's", err)
	}
}

func TestLoadResolvesBase(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "sweeps"), 0o755)
	os.WriteFile(filepath.Join(dir, "base.yaml"), []byte("name: fromdisk\ntrain: {steps: 5, warmup_steps: 1}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "sweeps", "a.yaml"), []byte("base: ../base.yaml\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "sweeps", "b.yaml"), []byte("base: quickstart.yaml\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "sweeps", "c.yaml"), []byte("base: nope.yaml\n"), 0o644)
	s, err := Load(filepath.Join(dir, "sweeps", "a.yaml"), configs.FS)
	if err != nil || s.Base.Train.Steps != 5 || s.Name != "a" {
		t.Fatalf("relative base: %v %+v", err, s)
	}
	s, err = Load(filepath.Join(dir, "sweeps", "b.yaml"), configs.FS)
	if err != nil || s.Base.Name != "quickstart" || !strings.HasPrefix(s.BaseFrom, "embedded") {
		t.Fatalf("embedded base: %v %+v", err, s)
	}
	if _, err := Load(filepath.Join(dir, "sweeps", "c.yaml"), configs.FS); err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Fatalf("missing base: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "none.yaml"), configs.FS); err == nil || !strings.Contains(err.Error(), "none.yaml") {
		t.Fatalf("missing sweep: %v", err)
	}
}

// Every shipped sweep loads from the embedded configs, and every run builds.
func TestShippedSweeps(t *testing.T) {
	paths, _ := fs.Glob(configs.FS, "sweeps/*.yaml")
	papers, _ := fs.Glob(configs.FS, "paper/*.yaml")
	paths = append(paths, papers...)
	if len(paths) == 0 {
		t.Fatal("no embedded sweeps")
	}
	for _, p := range paths {
		s, err := Load(p, configs.FS)
		if err != nil {
			t.Fatal(err)
		}
		runs, err := s.Expand(build)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d runs", p, len(runs))
	}
}

func TestShardPartition(t *testing.T) {
	var runs []Run
	for i := 0; i < 13; i++ {
		runs = append(runs, Run{Index: i, Name: fmt.Sprint(i)})
	}
	for n := 1; n <= 5; n++ {
		seen := map[int]int{}
		for i := 0; i < n; i++ {
			sh, err := ParseShard(fmt.Sprintf("%d/%d", i, n))
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range sh.Select(runs) {
				seen[r.Index]++
			}
		}
		for _, r := range runs {
			if seen[r.Index] != 1 {
				t.Errorf("N=%d: run %d in %d shards, want exactly 1", n, r.Index, seen[r.Index])
			}
		}
	}
	if got := (Shard{}).Select(runs); len(got) != len(runs) {
		t.Errorf("the zero shard selects %d runs", len(got))
	}
	for _, bad := range []string{"2/2", "-1/2", "1/0", "a/b", "1", "1/2/3"} {
		if _, err := ParseShard(bad); err == nil {
			t.Errorf("ParseShard(%q): no error", bad)
		}
	}
}

func TestRunName(t *testing.T) {
	p := func(kv ...string) []Param {
		var ps []Param
		for i := 0; i < len(kv); i += 2 {
			ps = append(ps, Param{kv[i], kv[i+1]})
		}
		return ps
	}
	cases := []struct {
		params []Param
		seed   uint64
		want   string
	}{
		{nil, 3, "seed=3"},
		{p("model.attention.kind", "flash", "task.seq_len", "64"), 1, "model.attention.kind=flash,task.seq_len=64,seed=1"},
		{p("train.lr", "3.0e-3"), 2, "train.lr=3.0e-3,seed=2"},
		{p("model.attention", "gqa+kv_heads=1"), 1, "model.attention=gqa+kv_heads=1,seed=1"},
	}
	for _, c := range cases {
		if got := RunName(c.params, c.seed); got != c.want {
			t.Errorf("RunName(%v, %d) = %q, want %q", c.params, c.seed, got, c.want)
		}
	}
	// Unsafe characters are replaced and a hash keeps names apart.
	a, b := RunName(p("task.kind", "a/b"), 1), RunName(p("task.kind", "a_b"), 1)
	if a == b || strings.ContainsAny(a, "/ ") || !strings.HasPrefix(a, "task.kind=a_b,seed=1~") {
		t.Errorf("sanitised %q vs %q", a, b)
	}
	if a != RunName(p("task.kind", "a/b"), 1) {
		t.Error("not stable")
	}
	long := RunName(p("k", strings.Repeat("x", 300)), 1)
	long2 := RunName(p("k", strings.Repeat("x", 301)), 1)
	if len(long) > 200 || long == long2 {
		t.Errorf("long names: %d bytes, distinct %v", len(long), long != long2)
	}
}

// fakeLauncher "trains" by writing a summary.json derived from the config.
type fakeLauncher struct {
	mu      sync.Mutex
	started []string // run names, with " (resume)" for resumes
	fail    map[string]bool
	block   chan struct{} // if not nil, Launch waits for it or ctx
	onStart func(j Job)   // if not nil, called first
}

func (f *fakeLauncher) Launch(ctx context.Context, j Job) error {
	name := filepath.Base(j.Dir)
	f.mu.Lock()
	tag := name
	if j.Resume {
		tag += " (resume)"
	}
	f.started = append(f.started, tag)
	f.mu.Unlock()
	if f.onStart != nil {
		f.onStart(j)
	}
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			os.WriteFile(filepath.Join(j.Dir, train.CheckpointFile), []byte("ckpt"), 0o644)
			return train.ErrInterrupted
		}
	}
	if f.fail[name] {
		return &RunError{ExitCode: 1, Msg: "step 2: loss is NaN"}
	}
	exp, err := config.Load(filepath.Join(j.Dir, train.ConfigFile))
	if err != nil {
		return err
	}
	T, _ := exp.Task.Options["seq_len"].(int)
	kv := 128
	sum := train.Summary{Name: exp.Name, Attention: exp.Model.Attention.Kind, Task: exp.Task.Kind, Seed: exp.Seed, Threads: j.Threads,
		Steps: exp.Train.Steps, Params: 1000 + T, KVCacheBytesPerToken: &kv, EvalAccuracy: 0.5 + float64(exp.Seed)/10,
		StepMsMedian: float64(T * T / 100), TrainTokensPerSec: 1e5 / float64(T), PeakRSSBytes: int64(T) << 20}
	b, _ := json.Marshal(sum)
	return os.WriteFile(filepath.Join(j.Dir, train.SummaryFile), b, 0o644)
}

func execute(t *testing.T, s *Sweep, runs []Run, dir string, shard Shard, l Launcher) (*Outcome, string) {
	t.Helper()
	var log bytes.Buffer
	out, err := Execute(context.Background(), s, runs, Options{Dir: dir, Shard: shard, Workers: 2, Threads: 1, Launcher: l, Log: &log})
	if err != nil {
		t.Fatalf("Execute: %v\n%s", err, log.String())
	}
	return out, log.String()
}

func TestExecuteRestartResumeAndFailures(t *testing.T) {
	s := mustParse(t, tinySweep)
	runs, err := s.Expand(nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bad := runs[3].Name
	l := &fakeLauncher{fail: map[string]bool{bad: true}}
	out, _ := execute(t, s, runs, dir, Shard{}, l)
	if len(out.Done) != 7 || len(out.Failed) != 1 || out.Failed[0] != bad {
		t.Fatalf("outcome %+v", out)
	}
	f, err := os.ReadFile(filepath.Join(RunDir(dir, bad), FailureFile))
	if err != nil || !strings.Contains(string(f), "NaN") {
		t.Fatalf("failure.json: %v %s", err, f)
	}
	// The config each run trained is the resolved one, in its folder.
	if got, _ := config.Load(filepath.Join(RunDir(dir, runs[5].Name), train.ConfigFile)); got.Seed != runs[5].Seed || got.Model.Attention.Kind != "flash" {
		t.Errorf("config.yaml of %s: %+v", runs[5].Name, got)
	}

	// Restart: only the failed run starts again; leave a checkpoint in it
	// first, so that it resumes.
	os.WriteFile(filepath.Join(RunDir(dir, bad), train.CheckpointFile), []byte("ckpt"), 0o644)
	before := mtimes(t, dir, runs)
	l2 := &fakeLauncher{}
	out, log := execute(t, s, runs, dir, Shard{}, l2)
	if !reflect.DeepEqual(l2.started, []string{bad + " (resume)"}) || len(out.Skipped) != 7 || len(out.Done) != 1 {
		t.Fatalf("restart started %v, outcome %+v\n%s", l2.started, out, log)
	}
	if strings.Count(log, "skip ") != 7 {
		t.Errorf("log:\n%s", log)
	}
	after := mtimes(t, dir, runs)
	for n, m := range before {
		if n != bad && !after[n].Equal(m) {
			t.Errorf("%s: summary.json rewritten on restart", n)
		}
	}
	if _, err := os.Stat(filepath.Join(RunDir(dir, bad), FailureFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("failure.json left after the run succeeded")
	}

	// A finished run whose config the sweep now sets differently is an error
	// before anything runs.
	s2 := mustParse(t, strings.Replace(tinySweep, "train.lr=0.002", "train.lr=0.003", 1))
	runs2, _ := s2.Expand(nil)
	l3 := &fakeLauncher{}
	if _, err := Execute(context.Background(), s2, runs2, Options{Dir: dir, Launcher: l3}); err == nil || !train.IsBadInput(err) || len(l3.started) != 0 {
		t.Errorf("changed config: err %v, started %v", err, l3.started)
	}
}

func mtimes(t *testing.T, dir string, runs []Run) map[string]time.Time {
	out := map[string]time.Time{}
	for _, r := range runs {
		st, err := os.Stat(filepath.Join(RunDir(dir, r.Name), train.SummaryFile))
		if err == nil {
			out[r.Name] = st.ModTime()
		}
	}
	return out
}

func TestExecuteInterrupt(t *testing.T) {
	s := mustParse(t, tinySweep)
	runs, _ := s.Expand(nil)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	l := &fakeLauncher{block: make(chan struct{})}
	done := make(chan struct{})
	var out *Outcome
	var err error
	go func() {
		out, err = Execute(ctx, s, runs, Options{Dir: dir, Workers: 2, Launcher: l})
		close(done)
	}()
	for {
		l.mu.Lock()
		n := len(l.started)
		l.mu.Unlock()
		if n == 2 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if !errors.Is(err, train.ErrInterrupted) || len(out.Interrupted) != 2 || len(l.started) != 2 {
		t.Fatalf("err %v, outcome %+v, started %v", err, out, l.started)
	}
	// Restart resumes the two interrupted runs and runs the rest.
	l2 := &fakeLauncher{}
	out, _ = execute(t, s, runs, dir, Shard{}, l2)
	// With two workers the launches interleave in any order: count the
	// resumes rather than expect them first.
	resumed := 0
	for _, r := range l2.started {
		if strings.HasSuffix(r, "(resume)") {
			resumed++
		}
	}
	if len(out.Done) != 8 || resumed != 2 || len(l2.started) != 8 {
		t.Errorf("after interrupt: %+v, started %v", out, l2.started)
	}
}

// Shards written to separate folders, collected together, give the rows of
// the unsharded sweep; so does one folder shared by the shards.
func TestCollectShardsMatchesUnsharded(t *testing.T) {
	s := mustParse(t, tinySweep)
	runs, _ := s.Expand(nil)
	all := t.TempDir()
	execute(t, s, runs, all, Shard{}, &fakeLauncher{})
	want, err := Collect(all)
	if err != nil {
		t.Fatal(err)
	}
	if len(want.Rows) != 8 || len(want.Missing) != 0 || want.Info == nil || len(want.Info.Runs) != 8 {
		t.Fatalf("unsharded: %d rows, missing %v", len(want.Rows), want.Missing)
	}
	a, b, shared := t.TempDir(), t.TempDir(), t.TempDir()
	execute(t, s, runs, a, Shard{0, 2}, &fakeLauncher{})
	execute(t, s, runs, b, Shard{1, 2}, &fakeLauncher{})
	execute(t, s, runs, shared, Shard{1, 2}, &fakeLauncher{})
	half, _ := Collect(shared)
	if len(half.Rows) != 4 || len(half.Missing) != 4 {
		t.Errorf("one shard of two: %d rows, %d missing", len(half.Rows), len(half.Missing))
	}
	execute(t, s, runs, shared, Shard{0, 2}, &fakeLauncher{})
	// A failed copy of a run in an earlier folder loses to a finished one.
	failed := t.TempDir()
	execute(t, s, runs, failed, Shard{0, 8}, &fakeLauncher{fail: map[string]bool{runs[0].Name: true}})

	for _, dirs := range [][]string{{a, b}, {b, a}, {shared}, {failed, a, b, a}} {
		got, err := Collect(dirs...)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Rows) != len(want.Rows) {
			t.Fatalf("%v: %d rows, want %d", dirs, len(got.Rows), len(want.Rows))
		}
		for i := range got.Rows {
			g, w := got.Rows[i], want.Rows[i]
			if g.Run != w.Run || g.Status != StatusOK || !reflect.DeepEqual(g.Params, w.Params) || g.Seed != w.Seed ||
				g.Summary.EvalAccuracy != w.Summary.EvalAccuracy || g.SeqLen != w.SeqLen {
				t.Errorf("%v row %d: %+v, want %+v", dirs, i, g, w)
			}
		}
	}
	if _, err := Collect(filepath.Join(all, "nope")); err == nil || !train.IsBadInput(err) {
		t.Errorf("missing folder: %v", err)
	}
	if _, err := Collect(t.TempDir()); err == nil {
		t.Errorf("a folder that is no sweep: no error")
	}
}

func TestResultsFiles(t *testing.T) {
	s := mustParse(t, tinySweep)
	runs, _ := s.Expand(nil)
	dir := t.TempDir()
	execute(t, s, runs, dir, Shard{}, &fakeLauncher{fail: map[string]bool{runs[1].Name: true}})
	c, err := Collect(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteResults(dir, c.Rows); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(filepath.Join(dir, ResultsCSV))
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	head := recs[0]
	// The fixed columns, the grid keys, seed and threads, the config columns
	// the grid does not already give, then summary.json's fields in
	// train.Summary's order, each column once (summary.json's seed and
	// threads are those already listed).
	wantPrefix := []string{"run", "index", "status", "error", "model.attention.kind", "task.seq_len", "seed", "threads", "task.kind", "model.d_model",
		"name", "attention", "task", "dtype", "device", "blas", "steps", "params", "kv_cache_bytes_per_token", "eval_accuracy"}
	if len(head) < len(wantPrefix) || !reflect.DeepEqual(head[:len(wantPrefix)], wantPrefix) {
		t.Fatalf("columns %v, want them to start with %v", head, wantPrefix)
	}
	seen := map[string]bool{}
	for _, h := range head {
		if seen[h] {
			t.Errorf("column %q twice in %v", h, head)
		}
		seen[h] = true
	}
	for _, w := range []string{"eval_accuracy", "step_ms_median", "train_tokens_per_sec", "peak_rss_bytes", "kv_cache_bytes_per_token", "params"} {
		found := false
		for _, h := range head {
			found = found || h == w
		}
		if !found {
			t.Errorf("no column %s in %v", w, head)
		}
	}
	if len(recs) != 9 {
		t.Fatalf("%d lines, want header + 8", len(recs))
	}
	col := func(rec []string, name string) string {
		for i, h := range head {
			if h == name {
				return rec[i]
			}
		}
		return "?"
	}
	if col(recs[1], "status") != "ok" || col(recs[1], "task.seq_len") != "16" || col(recs[1], "eval_accuracy") != "0.6" {
		t.Errorf("row 1: %v", recs[1])
	}
	if col(recs[2], "status") != "failed" || !strings.Contains(col(recs[2], "error"), "NaN") || col(recs[2], "eval_accuracy") != "" {
		t.Errorf("row 2 (failed): %v", recs[2])
	}
	// results.jsonl: one object a line, numbers as numbers.
	b, _ := os.ReadFile(filepath.Join(dir, ResultsJSONL))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 8 {
		t.Fatalf("%d lines", len(lines))
	}
	var row map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &row); err != nil {
		t.Fatal(err)
	}
	if row["task.seq_len"] != 16.0 || row["model.attention.kind"] != "standard" || row["seed"] != 1.0 || row["eval_accuracy"] != 0.6 {
		t.Errorf("row %v", row)
	}
}

func TestInlineBaseKeepsLines(t *testing.T) {
	text := "name: x\nbase:\n  name: b\n  train:\n    stpes: 3\ngrid: {train.lr: [0.1]}\n"
	_, err := Parse("s.yaml", []byte(text), nil)
	if err == nil || !strings.Contains(err.Error(), "s.yaml: line 5") || !strings.Contains(err.Error(), "stpes") {
		t.Errorf("error %v: want s.yaml: line 5 naming stpes", err)
	}
}
