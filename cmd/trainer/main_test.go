package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/attnlab/attnlab/internal/runlock"
)

// The test binary doubles as the trainer: with ATTNLAB_RUN_TRAINER=1 it runs
// main, so tests can start real processes and signal or kill them.
func TestMain(m *testing.M) {
	if os.Getenv("ATTNLAB_RUN_TRAINER") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// tinyConfig trains in well under a second.
const tinyConfig = `name: tiny
seed: 3
task: {kind: assoc_recall, seq_len: 16, vocab: 32, kv_pairs: 2}
model: {kind: decoder, d_model: 16, n_layers: 1, n_heads: 2, d_ff: 32}
train: {steps: 40, batch_size: 4, lr: 3.0e-3, warmup_steps: 5, eval_every: 20, eval_examples: 16,
        checkpoint_every: 10, log_every: 1}
`

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func runCLI(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

// lossesOf reads the loss of every row of a run's metrics.jsonl.
func lossesOf(t *testing.T, dir string) map[int]float64 {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[int]float64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r struct {
			Step int     `json:"step"`
			Loss float64 `json:"loss"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("bad metrics line %q: %v", sc.Text(), err)
		}
		out[r.Step] = r.Loss
	}
	return out
}

func TestBadInputExitsTwoWithOneLine(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", tinyConfig)
	syntax := writeFile(t, dir, "syntax.yaml", "name: x\ntrain: {steps: 3\nmodel: [\n")
	unknown := writeFile(t, dir, "unknown.yaml", tinyConfig+"extra_key: 1\n")
	plainFile := writeFile(t, dir, "plain", "x")
	noCkpt := filepath.Join(dir, "nockpt")
	os.MkdirAll(noCkpt, 0o755)
	writeFile(t, noCkpt, "config.yaml", tinyConfig)

	// A finished run whose checkpoint is then truncated.
	truncated := filepath.Join(dir, "truncated")
	if code, _, e := runCLI("train", "--config", good, "--out", truncated, "--set", "train.steps=2", "--set", "train.warmup_steps=1"); code != 0 {
		t.Fatalf("setup run failed: %s", e)
	}
	ck := filepath.Join(truncated, "checkpoint.safetensors")
	b, _ := os.ReadFile(ck)
	os.WriteFile(ck, b[:len(b)/2], 0o644)

	cases := []struct {
		name string
		args []string
		want string // substring of the error line
	}{
		{"missing config", []string{"train", "--config", filepath.Join(dir, "nope.yaml")}, "nope.yaml"},
		{"yaml syntax", []string{"train", "--config", syntax}, "syntax.yaml: line"},
		{"unknown key", []string{"train", "--config", unknown}, "extra_key"},
		{"unknown attention", []string{"train", "--config", good, "--set", "model.attention.kind=nonesuch"}, "model.attention.kind"},
		{"unknown task", []string{"train", "--config", good, "--set", "task.kind=nonesuch"}, "task.kind"},
		{"heads do not divide", []string{"train", "--config", good, "--set", "model.n_heads=3"}, "n_heads"},
		{"negative lr", []string{"train", "--config", good, "--set", "train.lr=-0.001"}, "train.lr"},
		{"seq_len 0", []string{"train", "--config", good, "--set", "task.seq_len=0"}, "task.seq_len"},
		{"set unknown path", []string{"train", "--config", good, "--set", "train.nonesuch=1"}, "nonesuch"},
		{"set wrong type", []string{"train", "--config", good, "--set", "train.lr=fast"}, "train.lr"},
		{"set wrong option type", []string{"train", "--config", good, "--set", "task.kv_pairs=many"}, "task.kv_pairs"},
		{"unknown attention option", []string{"train", "--config", good, "--set", "model.attention.window=3"}, "model.attention.window"},
		{"unwritable out", []string{"train", "--config", good, "--out", filepath.Join(plainFile, "run")}, "plain"},
		{"resume without checkpoint", []string{"train", "--resume", noCkpt}, "checkpoint"},
		{"resume missing folder", []string{"train", "--resume", filepath.Join(dir, "nofolder")}, "nofolder"},
		{"truncated checkpoint", []string{"train", "--resume", truncated}, "truncated"},
		{"eval truncated checkpoint", []string{"eval", "--run", truncated}, "truncated"},
		{"unknown flag", []string{"train", "--nonesuch"}, "nonesuch"},
		{"gradcheck unknown variant", []string{"gradcheck", "--variant", "nonesuch"}, "nonesuch"},
		{"kv_heads do not divide", []string{"train", "--config", good, "--set", "model.attention.kind=gqa", "--set", "model.attention.kv_heads=3"}, "model.attention.kv_heads"},
		{"position refused", []string{"train", "--config", good, "--set", "model.attention.kind=mla", "--set", "model.positional=xpos"}, "model.positional"},
		{"unknown position", []string{"info", "--config", good, "--set", "model.positional=rotary"}, "model.positional"},
		{"info missing config", []string{"info", "--config", filepath.Join(dir, "nope.yaml")}, "nope.yaml"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := runCLI(c.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr %q", code, stderr)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "error: ") || !strings.Contains(lines[0], c.want) {
				t.Errorf("stderr %q: want one line starting with error: and naming %q", stderr, c.want)
			}
			if strings.Contains(stderr, "goroutine") || strings.Contains(stderr, "panic") {
				t.Errorf("panic trace reached the user: %s", stderr)
			}
		})
	}
}

func TestSameSeedSameLosses(t *testing.T) {
	t.Setenv("GOMAXPROCS", "1")
	dir := t.TempDir()
	cfg := writeFile(t, dir, "tiny.yaml", tinyConfig)
	for _, out := range []string{"a", "b"} {
		if code, _, e := runCLI("train", "--config", cfg, "--out", filepath.Join(dir, out)); code != 0 {
			t.Fatalf("run %s: %s", out, e)
		}
	}
	a, b := lossesOf(t, filepath.Join(dir, "a")), lossesOf(t, filepath.Join(dir, "b"))
	if len(a) != 40 {
		t.Fatalf("%d logged steps, want 40", len(a))
	}
	for s, l := range a {
		if b[s] != l {
			t.Errorf("step %d: loss %v then %v", s, l, b[s])
		}
	}
}

// startTrainer runs the trainer as a child process (GOMAXPROCS=1).
func startTrainer(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "ATTNLAB_RUN_TRAINER=1", "GOMAXPROCS=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("child stderr: %s", stderr.String())
		}
	})
	return cmd
}

// waitForStep waits until the run in dir has logged step.
func waitForStep(t *testing.T, dir string, step int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(filepath.Join(dir, "metrics.jsonl"))
		if bytes.Count(b, []byte("\n")) >= step {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("run in %s never reached step %d", dir, step)
}

// An interrupted run (SIGINT, and separately kill -9), resumed, logs the
// same losses as an uninterrupted run.
func TestInterruptAndResume(t *testing.T) {
	t.Setenv("GOMAXPROCS", "1")
	dir := t.TempDir()
	// Long enough (about 2 s at the tiny model's speed) that the signal,
	// sent at step 15, lands well before the run could finish even on a
	// loaded machine.
	cfgText := strings.Replace(tinyConfig, "steps: 40,", "steps: 1200,", 1)
	cfgText = strings.Replace(cfgText, "d_model: 16, n_layers: 1", "d_model: 32, n_layers: 2", 1)
	cfg := writeFile(t, dir, "tiny.yaml", cfgText)
	ref := filepath.Join(dir, "ref")
	if code, _, e := runCLI("train", "--config", cfg, "--out", ref); code != 0 {
		t.Fatalf("reference run: %s", e)
	}
	want := lossesOf(t, ref)
	for _, c := range []struct {
		name   string
		signal syscall.Signal
		code   int
	}{{"sigint", syscall.SIGINT, 130}, {"kill-9", syscall.SIGKILL, -1}} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(dir, c.name)
			cmd := startTrainer(t, "train", "--config", cfg, "--out", out)
			waitForStep(t, out, 15)
			cmd.Process.Signal(c.signal)
			err := cmd.Wait()
			code := cmd.ProcessState.ExitCode()
			got := lossesOf(t, out)
			if code == 0 && len(got) >= 1200 {
				t.Skip("the run finished before the signal arrived")
			}
			if code != c.code {
				t.Fatalf("exit %d (%v), want %d", code, err, c.code)
			}
			resume := startTrainer(t, "train", "--resume", out)
			if err := resume.Wait(); err != nil {
				t.Fatalf("resume: %v", err)
			}
			got = lossesOf(t, out)
			if len(got) != len(want) {
				t.Fatalf("%d logged steps after resume, want %d", len(got), len(want))
			}
			for s, l := range want {
				if got[s] != l {
					t.Fatalf("step %d: loss %v after resume, %v uninterrupted", s, got[s], l)
				}
			}
			var sum struct {
				Steps   int  `json:"steps"`
				Resumed bool `json:"resumed"`
			}
			b, _ := os.ReadFile(filepath.Join(out, "summary.json"))
			if json.Unmarshal(b, &sum) != nil || sum.Steps != 1200 || !sum.Resumed {
				t.Errorf("summary.json: %s", b)
			}
		})
	}
}

func TestListAndGradcheck(t *testing.T) {
	code, out, e := runCLI("list", "--json")
	if code != 0 {
		t.Fatalf("list: %s", e)
	}
	var l struct {
		Attention []struct{ Name string } `json:"attention"`
		Tasks     []struct{ Name string } `json:"tasks"`
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil || len(l.Attention) == 0 || len(l.Tasks) < 2 {
		t.Fatalf("list --json: %v %s", err, out)
	}
	if code, out, e := runCLI("gradcheck", "--variant", "all"); code != 0 || !strings.Contains(out, "standard") {
		t.Fatalf("gradcheck: exit %d\n%s%s", code, out, e)
	}
}

// trainer info reports the KV cache from the config: MQA caches one key and
// one value head (2 x d_model/n_heads elements) per token per layer.
func TestInfoKVCache(t *testing.T) {
	for _, c := range []struct {
		kind string
		sets []string
		want int // bytes per token per layer, float32; -1 = none
	}{
		{"standard", nil, 2 * 64 * 4},
		{"mqa", nil, 2 * 16 * 4},
		{"gqa", []string{"model.attention.kv_heads=2"}, 2 * 2 * 16 * 4},
		{"mla", []string{"model.attention.kv_rank=24", "model.attention.rope_dims=8"}, (24 + 8) * 4},
	} {
		args := []string{"info", "--json", "--set", "model.attention.kind=" + c.kind}
		for _, s := range c.sets {
			args = append(args, "--set", s)
		}
		code, out, e := runCLI(args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, e)
		}
		var in struct {
			KV *int `json:"kv_cache_bytes_per_token"`
		}
		if err := json.Unmarshal([]byte(out), &in); err != nil || in.KV == nil || *in.KV != c.want {
			t.Errorf("%s: %v %s, want kv_cache_bytes_per_token %d", c.kind, err, out, c.want)
		}
	}
}

// The README's promise: the embedded quickstart reaches eval_accuracy >= 0.99
// on held-out data. About 90 s on 2 cores; skipped with -short.
func TestQuickstartLearns(t *testing.T) {
	if testing.Short() {
		t.Skip("trains the full quickstart")
	}
	out := filepath.Join(t.TempDir(), "qs")
	code, _, e := runCLI("train", "--out", out)
	if code != 0 {
		t.Fatalf("quickstart: %s", e)
	}
	var sum struct {
		EvalAccuracy float64 `json:"eval_accuracy"`
		WallSeconds  float64 `json:"wall_seconds"`
	}
	b, _ := os.ReadFile(filepath.Join(out, "summary.json"))
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	t.Logf("quickstart: eval_accuracy %.4f in %.0fs", sum.EvalAccuracy, sum.WallSeconds)
	if sum.EvalAccuracy < 0.99 {
		t.Errorf("eval_accuracy %.4f, want >= 0.99", sum.EvalAccuracy)
	}
}

// A tiny sweep end to end: compare trains 2 variants x 1 length x 1 seed,
// each run a child process; a restart runs nothing; report rebuilds the
// results elsewhere; bad sweep files exit 2 with one line naming the key.
func TestCompareSweepRestartReport(t *testing.T) {
	t.Setenv("ATTNLAB_RUN_TRAINER", "1") // the runs' processes are this test binary acting as the trainer
	dir := t.TempDir()
	writeFile(t, dir, "tiny.yaml", tinyConfig)
	sweepText := `name: tiny-sweep
base: tiny.yaml
set: [train.steps=3, train.warmup_steps=1, train.eval_every=0, train.eval_examples=8, train.checkpoint_every=0]
grid:
  model.attention.kind: [standard, flash]
  task.seq_len: [16]
seeds: [5]
`
	sw := writeFile(t, dir, "sweep.yaml", sweepText)
	out := filepath.Join(dir, "out")
	names := []string{"model.attention.kind=standard,task.seq_len=16,seed=5", "model.attention.kind=flash,task.seq_len=16,seed=5"}

	code, stdout, stderr := runCLI("compare", "--config", sw, "--out", out, "--workers", "2")
	if code != 0 {
		t.Fatalf("compare: exit %d\n%s%s", code, stdout, stderr)
	}
	mtimes := map[string]time.Time{}
	for _, n := range names {
		st, err := os.Stat(filepath.Join(out, "runs", n, "summary.json"))
		if err != nil {
			t.Fatalf("run %s: %v\n%s", n, err, stdout)
		}
		mtimes[n] = st.ModTime()
		b, _ := os.ReadFile(filepath.Join(out, "runs", n, "config.yaml"))
		if cfg := string(b); !strings.Contains(cfg, "seed: 5") || !strings.Contains(cfg, "steps: 3") || !strings.Contains(cfg, "name: tiny-sweep") {
			t.Errorf("%s/config.yaml is not the resolved run config:\n%s", n, b)
		}
		var sum struct {
			Threads int `json:"threads"`
			Steps   int `json:"steps"`
		}
		b, _ = os.ReadFile(filepath.Join(out, "runs", n, "summary.json"))
		if json.Unmarshal(b, &sum) != nil || sum.Steps != 3 || sum.Threads < 1 {
			t.Errorf("%s/summary.json: %s", n, b)
		}
	}
	results, err := os.ReadFile(filepath.Join(out, "results.jsonl"))
	if err != nil || bytes.Count(results, []byte("\n")) != 2 || !bytes.Contains(results, []byte(`"model.attention.kind":"flash"`)) {
		t.Fatalf("results.jsonl: %v\n%s", err, results)
	}
	for _, f := range []string{"results.csv", "report.md", "plots/acc-vs-throughput_assoc_recall_T16.png", "plots/acc-vs-throughput_assoc_recall_T16.svg"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	md, _ := os.ReadFile(filepath.Join(out, "report.md"))
	if !strings.Contains(string(md), "| standard | 1/1 |") || !strings.Contains(string(md), "task.seq_len does not take") {
		t.Errorf("report.md:\n%s", md)
	}

	// A restart finds both runs finished and runs nothing.
	code, stdout, stderr = runCLI("compare", "--config", sw, "--out", out, "--workers", "2")
	if code != 0 || strings.Count(stdout, "] skip ") != 2 || strings.Contains(stdout, "] start ") {
		t.Fatalf("restart: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, n := range names {
		st, _ := os.Stat(filepath.Join(out, "runs", n, "summary.json"))
		if !st.ModTime().Equal(mtimes[n]) {
			t.Errorf("%s was run again", n)
		}
	}

	// report rebuilds the same rows from the run folders, into another folder.
	merged := filepath.Join(dir, "merged")
	if code, stdout, stderr = runCLI("report", out, "--out", merged); code != 0 {
		t.Fatalf("report: exit %d\n%s%s", code, stdout, stderr)
	}
	again, _ := os.ReadFile(filepath.Join(merged, "results.jsonl"))
	if !bytes.Equal(again, results) {
		t.Errorf("report's results.jsonl differs from compare's:\n%s\n%s", again, results)
	}

	// Bad sweeps: nothing runs, exit 2, one line naming the key.
	for _, c := range []struct{ name, text, want string }{
		{"unknown key", sweepText + "sedes: [1]\n", "sedes"},
		{"empty list", strings.Replace(sweepText, "[standard, flash]", "[]", 1), "grid.model.attention.kind"},
		{"bad grid key", strings.Replace(sweepText, "model.attention.kind:", "model.attn.kind:", 1), "grid.model.attn.kind"},
		{"invalid run", strings.Replace(sweepText, "[16]", "[16, 0]", 1), "task.seq_len"},
		{"unknown variant", strings.Replace(sweepText, "flash]", "nonesuch]", 1), "model.attention.kind"},
		{"missing base", strings.Replace(sweepText, "tiny.yaml", "nope.yaml", 1), "nope.yaml"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := writeFile(t, dir, "bad.yaml", c.text)
			code, _, stderr := runCLI("compare", "--config", p, "--out", filepath.Join(dir, "bad"))
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], "error: ") || !strings.Contains(lines[0], c.want) {
				t.Errorf("exit %d, stderr %q: want 2 and one error line naming %q", code, stderr, c.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "bad")); err == nil {
				t.Errorf("a bad sweep created its output folder")
			}
		})
	}
}

// tinyRun trains tinyConfig (with the extra --set args) into a new folder
// and returns it.
func tinyRun(t *testing.T, sets ...string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := writeFile(t, dir, "tiny.yaml", tinyConfig)
	out := filepath.Join(dir, "run")
	args := []string{"train", "--config", cfg, "--out", out}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	if code, _, e := runCLI(args...); code != 0 {
		t.Fatalf("setup run: %s", e)
	}
	return out
}

// folderState is every file of dir (hidden ones included) and its content.
func folderState(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := map[string]string{}
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		st[e.Name()] = string(b)
	}
	return st
}

// sameFolder fails the test if dir no longer holds exactly before.
func sameFolder(t *testing.T, dir string, before map[string]string) {
	t.Helper()
	after := folderState(t, dir)
	for name, text := range before {
		if a, ok := after[name]; !ok {
			t.Errorf("%s was removed", name)
		} else if a != text {
			t.Errorf("%s was rewritten", name)
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Errorf("%s was added", name)
		}
	}
}

// wantOneErrorLine fails the test unless the run exited 2 with one error
// line holding every want.
func wantOneErrorLine(t *testing.T, code int, stderr string, want ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], "error: ") {
		t.Errorf("exit %d, stderr %q: want 2 and one error line", code, stderr)
		return
	}
	for _, w := range want {
		if !strings.Contains(lines[0], w) {
			t.Errorf("error %q does not say %q", lines[0], w)
		}
	}
}

// A resume may change only the keys that leave the training trajectory
// alone; a refused resume (a changed key, a broken checkpoint, a shortened
// run) writes nothing, so the folder still resumes and evaluates.
func TestResumeKeepsItsConfig(t *testing.T) {
	out := tinyRun(t, "train.steps=20", "train.eval_every=0")
	allowed := "may change only train.steps, train.eval_every, train.eval_examples, train.checkpoint_every, train.log_every"
	for _, c := range []struct {
		name string
		sets []string
		want []string
	}{
		{"model shape", []string{"model.d_model=32"}, []string{"model.d_model (16 -> 32)", allowed}},
		{"seed", []string{"seed=2"}, []string{"seed (3 -> 2)", allowed}},
		{"lr and schedule", []string{"train.lr=0.01", "train.schedule=constant", "train.steps=30"}, []string{"train.lr (0.003 -> 0.01)", "train.schedule (cosine -> constant)"}},
		{"attention option", []string{"model.attention.kind=gqa", "model.attention.kv_heads=1"}, []string{"model.attention.kind (standard -> gqa)", "model.attention.kv_heads ((none) -> 1)"}},
		{"shorter than the checkpoint", []string{"train.steps=10"}, []string{"train.steps (10) is below the step of the checkpoint", "(20)"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := folderState(t, out)
			args := []string{"train", "--resume", out}
			for _, s := range c.sets {
				args = append(args, "--set", s)
			}
			code, _, stderr := runCLI(args...)
			wantOneErrorLine(t, code, stderr, c.want...)
			sameFolder(t, out, before)
		})
	}

	// An allowed change with a checkpoint that does not load: refused
	// before config.yaml takes the change.
	broken := tinyRun(t, "train.steps=20")
	ck := filepath.Join(broken, "checkpoint.safetensors")
	b, _ := os.ReadFile(ck)
	os.WriteFile(ck, b[:len(b)/2], 0o644)
	before := folderState(t, broken)
	code, _, stderr := runCLI("train", "--resume", broken, "--set", "train.steps=30")
	wantOneErrorLine(t, code, stderr, "truncated")
	sameFolder(t, broken, before)

	// The folder refused above still resumes, and an allowed change is
	// recorded in its config.yaml.
	if code, _, e := runCLI("train", "--resume", out); code != 0 {
		t.Fatalf("resume after the refusals: exit %d: %s", code, e)
	}
	if code, _, e := runCLI("train", "--resume", out, "--set", "train.steps=25", "--set", "train.log_every=5", "--set", "train.eval_examples=8"); code != 0 {
		t.Fatalf("resume with allowed changes: exit %d: %s", code, e)
	}
	cfg, _ := os.ReadFile(filepath.Join(out, "config.yaml"))
	if !strings.Contains(string(cfg), "steps: 25") || !strings.Contains(string(cfg), "eval_examples: 8") {
		t.Errorf("config.yaml after an extended resume:\n%s", cfg)
	}
	if code, _, e := runCLI("eval", "--run", out); code != 0 {
		t.Errorf("eval after the refusals: exit %d: %s", code, e)
	}
}

// --out refuses a non-empty folder that is not a run's (the user's own
// files), and takes an empty folder or a run folder without a checkpoint.
func TestOutRefusesOthersFolders(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "tiny.yaml", strings.Replace(tinyConfig, "steps: 40,", "steps: 3,", 1))
	users := filepath.Join(dir, "users")
	os.MkdirAll(users, 0o755)
	writeFile(t, users, "config.yaml", "my: own config\n")
	writeFile(t, users, "metrics.jsonl", "{\"mine\": 1}\n")
	before := folderState(t, users)
	code, _, stderr := runCLI("train", "--config", cfg, "--out", users)
	wantOneErrorLine(t, code, stderr, "--out "+users, "not a run folder", "config.yaml")
	sameFolder(t, users, before)

	empty := filepath.Join(dir, "empty")
	os.MkdirAll(empty, 0o755)
	if code, _, e := runCLI("train", "--config", cfg, "--out", empty); code != 0 {
		t.Fatalf("an empty folder: exit %d: %s", code, e)
	}
	// A run that never saved a checkpoint (killed early): a new run may
	// take its folder.
	early := filepath.Join(dir, "early")
	os.MkdirAll(early, 0o755)
	for _, f := range []string{".attnlab-run", "config.yaml", "metrics.jsonl"} {
		b, _ := os.ReadFile(filepath.Join(empty, f))
		os.WriteFile(filepath.Join(early, f), b, 0o644)
	}
	if code, _, e := runCLI("train", "--config", cfg, "--out", early); code != 0 {
		t.Fatalf("a run folder without a checkpoint: exit %d: %s", code, e)
	}
	code, _, stderr = runCLI("train", "--config", cfg, "--out", early)
	wantOneErrorLine(t, code, stderr, "already holds a run", "--resume "+early)
}

// An explicitly empty --resume is an error, not a new run.
func TestResumeEmptyIsAnError(t *testing.T) {
	t.Chdir(t.TempDir())
	code, _, stderr := runCLI("train", "--resume", "", "--set", "train.steps=2", "--set", "train.warmup_steps=1")
	wantOneErrorLine(t, code, stderr, "--resume")
	if _, err := os.Stat("runs"); err == nil {
		t.Errorf("--resume \"\" started a new run")
	}
}

// The temporary files of checkpoint writes that a kill interrupted are
// removed when the run starts again.
func TestStaleTempFilesRemoved(t *testing.T) {
	out := tinyRun(t, "train.steps=20")
	ck, _ := os.ReadFile(filepath.Join(out, "checkpoint.safetensors"))
	stale := []string{".checkpoint.safetensors.tmp1x2y3z", ".checkpoint.safetensors.tmpq9", ".metrics.jsonl.tmp77"}
	for _, n := range stale {
		os.WriteFile(filepath.Join(out, n), ck, 0o600)
	}
	code, stdout, e := runCLI("train", "--resume", out, "--set", "train.steps=25")
	if code != 0 {
		t.Fatalf("resume: exit %d: %s", code, e)
	}
	for _, n := range stale {
		if _, err := os.Stat(filepath.Join(out, n)); err == nil {
			t.Errorf("%s left in place", n)
		}
	}
	if !strings.Contains(stdout, "removed 3 temporary file(s)") {
		t.Errorf("the run does not say it removed them:\n%s", stdout)
	}
}

// processGone reports whether pid has exited (a zombie, not yet reaped,
// has).
func processGone(pid int) bool {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && bytes.HasPrefix(b[i:], []byte(") Z")) {
			return true
		}
	}
	p, err := os.FindProcess(pid)
	return err != nil || p.Signal(syscall.Signal(0)) != nil
}

// longConfig is tinyConfig long enough (about 2 s) that a test acts while
// it trains, and checkpointing every 10 steps.
func longConfig(t *testing.T, dir string) string {
	text := strings.Replace(tinyConfig, "steps: 40,", "steps: 1200,", 1)
	text = strings.Replace(text, "d_model: 16, n_layers: 1", "d_model: 32, n_layers: 2", 1)
	return writeFile(t, dir, "long.yaml", text)
}

// One process writes a run folder at a time: a second train of a folder
// being trained (resume, or a new run) exits 2 naming the holder, and
// touches nothing (not even the temporary files the holder may be
// writing); the lock of a killed trainer is taken over.
func TestOneWriterPerRunFolder(t *testing.T) {
	t.Setenv("GOMAXPROCS", "1")
	dir := t.TempDir()
	cfg := longConfig(t, dir)
	out := filepath.Join(dir, "run")
	first := startTrainer(t, "train", "--config", cfg, "--out", out)
	defer first.Process.Kill()
	waitForStep(t, out, 15)
	live := writeFile(t, out, ".checkpoint.safetensors.tmpLIVE", "being written")
	holder := fmt.Sprintf("locked by %s pid %d", runlock.Hostname(), first.Process.Pid)
	code, _, stderr := runCLI("train", "--resume", out)
	wantOneErrorLine(t, code, stderr, out+": "+holder)
	fresh := filepath.Join(dir, "fresh")
	second := startTrainer(t, "train", "--config", cfg, "--out", fresh, "--set", "train.checkpoint_every=0")
	defer second.Process.Kill()
	waitForStep(t, fresh, 2)
	code, _, stderr = runCLI("train", "--config", cfg, "--out", fresh)
	wantOneErrorLine(t, code, stderr, fresh+": locked by", fmt.Sprintf("pid %d", second.Process.Pid))
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a refused start removed the holder's temporary file: %v", err)
	}

	first.Process.Kill()
	first.Wait()
	code, stdout, stderr := runCLI("train", "--resume", out)
	if code != 0 || !strings.Contains(stdout, "took over the stale lock of "+holder[len("locked by "):]+" (its process is gone)") {
		t.Fatalf("resume after the holder was killed: exit %d\n%s%s", code, stdout, stderr)
	}
	if _, err := os.Stat(filepath.Join(out, "lock")); err == nil {
		t.Errorf("lock left after the run ended")
	}
}

// SIGHUP (the terminal closed) and SIGPIPE (stdout's reader quit, as with
// | head -2) stop a run like SIGTERM: it saves a checkpoint, which
// evaluates, and exits 130. (TestInterruptAndResume shows that a resume
// from such a checkpoint continues exactly.)
func TestHangupAndBrokenPipeSaveCheckpoint(t *testing.T) {
	if signal.Ignored(syscall.SIGHUP) {
		t.Skip("SIGHUP is ignored here (nohup?), and so in the trainer")
	}
	dir := t.TempDir()
	cfg := longConfig(t, dir)
	for _, name := range []string{"sighup", "sigpipe"} {
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(dir, name)
			cmd := exec.Command(os.Args[0], "train", "--config", cfg, "--out", out)
			cmd.Env = append(os.Environ(), "ATTNLAB_RUN_TRAINER=1", "GOMAXPROCS=1")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			sc := bufio.NewScanner(stdout)
			for sc.Scan() && !strings.HasPrefix(sc.Text(), "step 15/") {
			}
			if name == "sighup" {
				cmd.Process.Signal(syscall.SIGHUP)
				go io.Copy(io.Discard, stdout)
			} else {
				stdout.Close() // the reader quits: the trainer's next write meets a broken pipe
			}
			cmd.Wait()
			code := cmd.ProcessState.ExitCode()
			if code == 0 && len(lossesOf(t, out)) >= 1200 {
				t.Skip("the run finished before the signal arrived")
			}
			if code != 130 || !strings.Contains(stderr.String(), "interrupted: checkpoint saved") {
				t.Fatalf("exit %d (%v), stderr %q: want 130 after saving a checkpoint", code, cmd.ProcessState, stderr.String())
			}
			code, o, e := runCLI("eval", "--run", out, "--json")
			var ev struct {
				Step int `json:"step"`
			}
			if code != 0 || json.Unmarshal([]byte(o), &ev) != nil || ev.Step < 15 {
				t.Fatalf("eval of the saved checkpoint: exit %d: %s%s; want the checkpoint of step 15 or later", code, o, e)
			}
		})
	}
}

// compare's runs hold their own locks and die with compare: after kill -9
// of compare the run's trainer saves a checkpoint and stops (Linux), a
// restarted compare leaves the run alone while that trainer still runs,
// and the run is trained once (one "done:" in its train.log).
func TestKilledCompareLeavesNoTwinRun(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the parent-death signal is Linux's")
	}
	dir := t.TempDir()
	longConfig(t, dir)
	sw := writeFile(t, dir, "sweep.yaml", "name: kill-sweep\nbase: long.yaml\ngrid:\n  model.attention.kind: [standard]\nseeds: [5]\n")
	out := filepath.Join(dir, "out")
	compare := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "compare", "--config", sw, "--out", out)
		cmd.Env = append(os.Environ(), "ATTNLAB_RUN_TRAINER=1", "GOMAXPROCS=1")
		return cmd
	}
	first := compare()
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	defer first.Process.Kill()
	var rd string
	for deadline := time.Now().Add(60 * time.Second); rd == "" && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		m, _ := filepath.Glob(filepath.Join(out, "runs", "*", "metrics.jsonl"))
		if len(m) == 1 {
			rd = filepath.Dir(m[0])
		}
	}
	if rd == "" {
		t.Fatal("the run never started")
	}
	waitForStep(t, rd, 15)
	info, _, err := runlock.Read(rd)
	if err != nil || info.PID == first.Process.Pid || info.PID <= 0 {
		t.Fatalf("lock %+v (%v): want it to name the run's trainer, not compare (pid %d)", info, err, first.Process.Pid)
	}
	trainer := info.PID
	first.Process.Kill()
	first.Wait()

	for try := 0; ; try++ {
		b, err := compare().CombinedOutput()
		if err != nil {
			t.Fatalf("restarted compare: %v\n%s", err, b)
		}
		if _, err := os.Stat(filepath.Join(rd, "summary.json")); err == nil {
			break
		}
		if !strings.Contains(string(b), fmt.Sprintf("locked by %s pid %d", runlock.Hostname(), trainer)) || try == 3 {
			t.Fatalf("restarted compare neither finished the run nor left it to its trainer:\n%s", b)
		}
		for deadline := time.Now().Add(60 * time.Second); !processGone(trainer); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the trainer of the killed compare (pid %d) still runs", trainer)
			}
		}
	}
	log, _ := os.ReadFile(filepath.Join(rd, "train.log"))
	if n := strings.Count(string(log), "\ndone: "); n != 1 || !strings.Contains(string(log), "checkpoint saved") {
		t.Errorf("train.log: %d done: lines, want 1, and the orphaned trainer's checkpoint:\n%s", n, log)
	}
}
