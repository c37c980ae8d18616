package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Calls that are wrong in how the command is used exit 2 with one plain
// line (no tab from cobra's suggestions), like every other bad input.
func TestUsageErrorsExitTwo(t *testing.T) {
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	good := writeFile(t, dir, "good.yaml", tinyConfig)
	if code, _, e := runCLI("train", "--config", good, "--out", run, "--set", "train.steps=2", "--set", "train.warmup_steps=1"); code != 0 {
		t.Fatalf("setup run failed: %s", e)
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown subcommand", []string{"trian"}, `unknown command "trian"`},
		{"eval --examples 0", []string{"eval", "--run", run, "--examples", "0"}, "--examples must be at least 1, got 0"},
		{"eval --examples -5", []string{"eval", "--run", run, "--examples", "-5"}, "--examples must be at least 1, got -5"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := runCLI(c.args...)
			if code != 2 || strings.Contains(stderr, "\t") || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "error: ") || !strings.Contains(stderr, c.want) {
				t.Errorf("exit %d, stderr %q: want exit 2 and one line naming %q", code, stderr, c.want)
			}
		})
	}
}

// --version names the build; summary.json records it too.
func TestVersion(t *testing.T) {
	code, out, _ := runCLI("--version")
	if code != 0 || !strings.HasPrefix(out, "attnlab ") || strings.Count(out, "\n") != 1 {
		t.Errorf("--version: exit %d, %q", code, out)
	}
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	good := writeFile(t, dir, "good.yaml", tinyConfig)
	if code, _, e := runCLI("train", "--config", good, "--out", run, "--set", "train.steps=2", "--set", "train.warmup_steps=1"); code != 0 {
		t.Fatalf("run failed: %s", e)
	}
	b, err := os.ReadFile(filepath.Join(run, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	var sum struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(b, &sum); err != nil || !strings.HasPrefix(sum.Version, "attnlab ") {
		t.Errorf("summary.json version %q (%v)", sum.Version, err)
	}
}

// A short run of a config with a longer warm-up trains (capping the
// warm-up) instead of stopping on the config check.
func TestShortRunOfLongWarmup(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", tinyConfig) // warmup_steps: 5
	code, out, stderr := runCLI("train", "--config", good, "--out", filepath.Join(dir, "run"), "--set", "train.steps=3")
	if code != 0 || !strings.Contains(out, "note: train.warmup_steps (5) is more than train.steps (3)") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}

// report says which folders under runs/ it left out (no run.json).
func TestReportNamesSkippedFolders(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", tinyConfig)
	if code, _, e := runCLI("train", "--config", good, "--out", filepath.Join(dir, "sweep", "runs", "byhand"), "--set", "train.steps=2", "--set", "train.warmup_steps=1"); code != 0 {
		t.Fatalf("setup run failed: %s", e)
	}
	code, out, stderr := runCLI("report", filepath.Join(dir, "sweep"))
	if code != 0 || !strings.Contains(out, "skipped "+filepath.Join(dir, "sweep", "runs", "byhand")+": no run.json there") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}

// Switching a component's kind with --set drops the old kind's options and
// says so, so that the switch can work from the command line.
func TestSetKindSaysWhatItDrops(t *testing.T) {
	code, _, stderr := runCLI("info", "--set", "task.kind=copy")
	if code != 0 || !strings.Contains(stderr, "note: task.kind=copy: dropped option kv_pairs (not options of copy)") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

// The last step's checkpoint is written before the final evaluation: a run
// killed during that evaluation resumes with all its training done, and the
// resume evaluates and writes the summary.
func TestKilledDuringFinalEvaluationKeepsTraining(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a child trainer")
	}
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", tinyConfig) // 40 steps, log_every 1
	run := filepath.Join(dir, "run")
	cmd := startTrainer(t, "train", "--config", good, "--out", run,
		"--set", "train.checkpoint_every=0", "--set", "train.eval_every=0", "--set", "train.eval_examples=2000000")
	waitForStep(t, run, 39)
	ckpt := filepath.Join(run, "checkpoint.safetensors")
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(ckpt); err == nil {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if _, err := os.Stat(filepath.Join(run, "summary.json")); err == nil {
		t.Fatal("the run finished its 2M-example evaluation before the kill; the test saw nothing")
	}
	if _, err := os.Stat(ckpt); err != nil {
		t.Fatalf("no checkpoint during the final evaluation: %v", err)
	}
	code, out, stderr := runCLI("train", "--resume", run, "--set", "train.eval_examples=16")
	if code != 0 || !strings.Contains(out, "40 steps") {
		t.Errorf("resume: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}

// A refused run prints its error and nothing else: the "run ...; writing"
// line comes only once the folder's checks have passed.
func TestRefusedRunPrintsOnlyItsError(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", tinyConfig)
	run := filepath.Join(dir, "run")
	if code, out, e := runCLI("train", "--config", good, "--out", run, "--set", "train.steps=2", "--set", "train.warmup_steps=1"); code != 0 || !strings.HasPrefix(out, "run tiny:") {
		t.Fatalf("setup run: exit %d, stdout %q, stderr %s", code, out, e)
	}
	code, out, stderr := runCLI("train", "--resume", run, "--set", "seed=9")
	if code != 2 || out != "" || !strings.Contains(stderr, "seed (3 -> 9) differs") {
		t.Errorf("exit %d, stdout %q, stderr %q: want exit 2, nothing on stdout", code, out, stderr)
	}
}

// The default build has no GPU path: gpucheck says how to get one, in one
// line, and fails.
func TestGpucheckWithoutCUDASaysHowToBuildIt(t *testing.T) {
	code, out, stderr := runCLI("gpucheck")
	if code == 0 || out != "" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "scripts/build-cuda.sh") {
		t.Errorf("exit %d, stdout %q, stderr %q: want a non-zero exit and one line naming scripts/build-cuda.sh", code, out, stderr)
	}
}

// --device cuda (or device: cuda) in a build without CUDA is refused before
// anything is written, in one line that says how to run on the CPU; an
// unknown device is a config error.
func TestDeviceCudaWithoutCUDA(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", tinyConfig)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"train --device cuda", []string{"train", "--config", good, "--out", filepath.Join(dir, "a"), "--device", "cuda"}, "--device cpu"},
		{"train --set device=cuda", []string{"train", "--config", good, "--out", filepath.Join(dir, "b"), "--set", "device=cuda"}, "built without CUDA support"},
		{"bench --device cuda", []string{"bench", "--config", good, "--device", "cuda", "--steps", "1", "--warmup", "0"}, "built without CUDA support"},
		{"train --device tpu", []string{"train", "--config", good, "--out", filepath.Join(dir, "c"), "--device", "tpu"}, `device: want cpu or cuda, got "tpu"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, stderr := runCLI(c.args...)
			if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, c.want) {
				t.Errorf("exit %d, stdout %q, stderr %q: want exit 2 and one line naming %q", code, out, stderr, c.want)
			}
		})
	}
	for _, sub := range []string{"a", "b", "c"} {
		if _, err := os.Stat(filepath.Join(dir, sub)); err == nil {
			t.Errorf("a refused run wrote %s", sub)
		}
	}
	// A run trained on the GPU (its config says device: cuda; made here by
	// editing a CPU run's) is evaluated and resumed on the CPU with
	// --device cpu or --set device=cpu.
	run := filepath.Join(dir, "run")
	if code, _, e := runCLI("train", "--config", good, "--out", run, "--set", "train.steps=2", "--set", "train.warmup_steps=1"); code != 0 {
		t.Fatalf("setup run failed: %s", e)
	}
	cfg := filepath.Join(run, "config.yaml")
	b, err := os.ReadFile(cfg)
	if err != nil || !strings.Contains(string(b), "device: cpu") {
		t.Fatalf("the run's config.yaml has no device: cpu (%v)", err)
	}
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(b), "device: cpu", "device: cuda", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, e := runCLI("eval", "--run", run); code != 2 || !strings.Contains(e, "--device cpu") {
		t.Errorf("eval of a cuda run: exit %d, stderr %q: want the no-CUDA refusal naming --device cpu", code, e)
	}
	if code, _, e := runCLI("eval", "--run", run, "--device", "cpu"); code != 0 {
		t.Errorf("eval --device cpu: exit %d, stderr %q", code, e)
	}
	if code, _, e := runCLI("train", "--resume", run, "--set", "device=cpu", "--set", "train.steps=3"); code != 0 {
		t.Errorf("resume on the CPU of a cuda run: exit %d, stderr %q", code, e)
	}
}
