package main

import (
	"encoding/json"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/attnlab/attnlab/configs"
	"github.com/attnlab/attnlab/train"
)

// boundedRun runs the CLI in-process and fails the test if it takes more
// than 2 s or allocates more than 64 MiB (issue 11 item 10: oversized
// configs crashed the runtime, or built for minutes).
func boundedRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	code, stdout, stderr = runCLI(args...)
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if elapsed > 2*time.Second {
		t.Errorf("%v took %v", args, elapsed)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Errorf("%v allocated %d MiB", args, grew>>20)
	}
	return code, stdout, stderr
}

// wantOneLineError checks an exit-2 refusal: one stderr line, "error: "
// and every part of want.
func wantOneLineError(t *testing.T, args []string, code int, stderr string, want ...string) {
	t.Helper()
	if code != exitBadInput {
		t.Errorf("%v: exit %d, want %d (stderr %q)", args, code, exitBadInput, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "error: ") {
		t.Errorf("%v: stderr %q, want one line starting with \"error: \"", args, stderr)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("%v: stderr %q does not say %q", args, stderr, w)
		}
	}
}

// hugeButWithinLimits needs petabytes, with no tensor over 2^31 elements:
// refused by the memory check alone on any machine.
var hugeButWithinLimits = []string{"--set", "model.n_layers=1000", "--set", "task.seq_len=65536", "--set", "train.batch_size=16", "--set", "model.attention.kind=flash"}

// Each oversized command of issue 11 item 10 exits 2 with one error line,
// fast and without allocating the model.
func TestOversizedConfigsRefused(t *testing.T) {
	dir := t.TempDir()
	ref, err := configs.FS.ReadFile("bench/ref-t256.yaml") // the copy task: any vocab up to the tensor limit
	if err != nil {
		t.Fatal(err)
	}
	refPath := writeFile(t, dir, "ref-t256.yaml", string(ref))
	sweepPath := writeFile(t, dir, "big.yaml", `name: big
base: `+refPath+`
grid:
  train.lr: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
  train.weight_decay: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
  train.beta1: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
  train.beta2: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
  train.grad_clip: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
  train.min_lr_ratio: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
  train.eps: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
  train.log_every: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
`)
	out := filepath.Join(dir, "runs")
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"d_model", []string{"train", "--set", "model.d_model=1000000000"}, []string{"model.d_model", "2^31"}},
		{"seq_len", []string{"train", "--set", "task.seq_len=1e12"}, []string{"task.seq_len: must be at most 1048576"}},
		{"seq_len-int", []string{"info", "--set", "task.seq_len=1000000000000"}, []string{"task.seq_len: must be at most 1048576"}},
		{"d_ff", []string{"train", "--set", "model.d_ff=1e10"}, []string{"model.d_ff", "2^31"}},
		{"batch_size", []string{"train", "--set", "train.batch_size=1e9"}, []string{"train.batch_size", "2^31"}},
		{"vocab", []string{"train", "--config", refPath, "--set", "task.vocab=1e9"}, []string{"task.vocab", "2^31"}},
		{"n_layers", []string{"train", "--set", "model.n_layers=1000000"}, []string{"model.n_layers", "1024"}},
		{"bench", []string{"bench", "--set", "model.d_model=1000000000"}, []string{"model.d_model"}},
		{"bench-attention", []string{"bench", "attention", "--T", "10000000"}, []string{"--T 10000000: standard attention: one head's dense attention scores"}},
		{"bench-attention-heads", []string{"bench", "attention", "--T", "64", "--heads", "100000", "--head-dim", "100000"}, []string{"--heads x --head-dim"}},
		{"grid", []string{"compare", "--config", sweepPath}, []string{"the grid makes 100000000 runs", "train.lr: 10 values", "x 1 seed)"}},
	}
	if m, _ := train.MachineMemory(); m > 0 {
		cases = append(cases, struct {
			name string
			args []string
			want []string
		}{"memory", append([]string{"train"}, hugeButWithinLimits...), []string{"model needs about ", "at batch 16 x T 65536); this machine has "}})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{}, c.args...)
			switch args[0] {
			case "train":
				args = append(args, "--out", filepath.Join(out, c.name))
			case "compare":
				args = append(args, "--out", filepath.Join(out, c.name))
			}
			code, _, stderr := boundedRun(t, args...)
			wantOneLineError(t, args, code, stderr, c.want...)
		})
	}
}

// info reports an oversized config's estimate and that train would refuse
// it, without building it, and exits 0; a config that fits gets its
// estimate and the machine's memory.
func TestInfoPrintsEstimate(t *testing.T) {
	code, stdout, stderr := boundedRun(t, "info", "--set", "model.d_model=1000000000")
	if code != 0 || !strings.Contains(stdout, "training memory: about ") || !strings.Contains(stdout, "train would refuse this config: model: attention wq") {
		t.Errorf("info of d_model 1e9: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	code, stdout, stderr = boundedRun(t, "info", "--json", "--set", "model.n_layers=1000000")
	var in modelInfo
	if err := json.Unmarshal([]byte(stdout), &in); code != 0 || err != nil {
		t.Fatalf("info --json of n_layers 1e6: exit %d, %v, stdout %q, stderr %q", code, err, stdout, stderr)
	}
	if !in.Memory.Refused || !strings.Contains(in.Memory.Refusal, "model.n_layers") || in.Params < 1_000_000*10_000 || in.Memory.TotalBytes <= 0 {
		t.Errorf("info --json of n_layers 1e6: %+v", in)
	}

	code, stdout, _ = boundedRun(t, "info", "--json")
	in = modelInfo{}
	if err := json.Unmarshal([]byte(stdout), &in); code != 0 || err != nil {
		t.Fatalf("info --json: exit %d, %v", code, err)
	}
	if in.Params != 110400 || in.Memory.Refused || in.Memory.TotalBytes < 64<<20 || in.Memory.TotalBytes > 256<<20 {
		t.Errorf("info --json of the quickstart (110400 parameters, about 100 MiB peak RSS measured): %+v", in)
	}
}
