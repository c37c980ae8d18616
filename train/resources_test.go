package train

import (
	"io/fs"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/configs"
)

// withMachine makes machineMemory report bytes for the test.
func withMachine(t *testing.T, bytes int64) {
	t.Helper()
	old := machineMemory
	machineMemory = func() (int64, string) { return bytes, "test" }
	t.Cleanup(func() { machineMemory = old })
}

// quickstart is the embedded quickstart with the --set overrides sets.
func quickstart(t *testing.T, sets ...string) config.Experiment {
	t.Helper()
	b, err := fs.ReadFile(configs.FS, configs.Quickstart)
	if err != nil {
		t.Fatal(err)
	}
	exp, err := config.Parse(configs.Quickstart, b)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sets {
		if err := exp.Set(s); err != nil {
			t.Fatal(err)
		}
	}
	return exp
}

// Build refuses oversized configs (issue 11 item 10) before allocating any
// model: fast, with little memory, with a one-line bad-input error naming
// what to lower.
func TestBuildRefusesOversizedConfigs(t *testing.T) {
	const GiB = 1 << 30
	cases := []struct {
		name    string
		machine int64
		sets    []string
		want    []string
	}{
		{"d_model", 23 * GiB, []string{"model.d_model=1000000000"}, []string{"model.d_model", "2^31"}},
		{"seq_len", 23 * GiB, []string{"task.seq_len=1e12"}, []string{"task.seq_len", "at most 1048576"}},
		{"seq_len-int", 23 * GiB, []string{"task.seq_len=1000000000000"}, []string{"task.seq_len"}},
		{"d_ff", 23 * GiB, []string{"model.d_ff=1e10"}, []string{"model.d_ff", "2^31"}},
		{"batch_size", 23 * GiB, []string{"train.batch_size=1e9"}, []string{"train.batch_size", "2^31"}},
		{"vocab", 23 * GiB, []string{"task.vocab=1e9"}, []string{"task.vocab"}},
		{"n_layers", 23 * GiB, []string{"model.n_layers=1000000"}, []string{"model.n_layers", "1024"}},
		{"n_layers-just-over", 23 * GiB, []string{"model.n_layers=1025"}, []string{"model.n_layers", "1024"}},
		{"memory", 23 * GiB, []string{"model.attention.kind=flash", "task.seq_len=65536", "train.batch_size=8"},
			[]string{"model needs about ", "GiB for training (parameters ", "at batch 8 x T 65536); this machine has 23 GiB; lower train.batch_size, task.seq_len or model.d_model"}},
		// The quickstart itself on a machine of 64 MiB: refused by memory
		// alone, and cheap to build if the check is missing.
		{"small-machine", 64 << 20, nil, []string{"this machine has 64 MiB"}},
		{"dense-scores", 4 * GiB, []string{"task.seq_len=16384", "train.batch_size=32", "model.n_layers=1", "model.d_model=8", "model.d_ff=8", "model.n_heads=1"},
			[]string{"model.attention.kind=flash"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			withMachine(t, c.machine)
			exp := quickstart(t, c.sets...)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			s, err := Build(exp)
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatalf("Build made a model of %d parameters, want a refusal", s.Store.NumElements())
			}
			msg := err.Error()
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
			if strings.Contains(msg, "\n") || !IsBadInput(err) {
				t.Errorf("want a one-line bad-input error, got %q (bad input %t)", msg, IsBadInput(err))
			}
			if elapsed > 2*time.Second {
				t.Errorf("refusing took %v", elapsed)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
				t.Errorf("refusing allocated %d MiB", grew>>20)
			}
		})
	}
}

// Legitimate configs are never refused: every shipped experiment, and the
// long flash run of issue 11 item 18 (T 16384, batch 1: 2.06 GiB peak RSS
// measured), on a machine of 4 GiB; and the estimate of that run is within
// 2x of what it measured.
func TestEstimateAcceptsShippedConfigs(t *testing.T) {
	withMachine(t, 4<<30)
	err := fs.WalkDir(configs.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		b, err := fs.ReadFile(configs.FS, path)
		if err != nil {
			return err
		}
		if strings.Contains("\n"+string(b), "\nbase:") {
			return nil // a sweep file
		}
		exp, err := config.Parse(path, b)
		if err != nil {
			return err
		}
		sets := [][]string{nil}
		if path == "bench/ref-t1024.yaml" {
			sets = append(sets, []string{"model.attention.kind=flash", "task.seq_len=16384", "train.batch_size=1"})
		}
		for _, ss := range sets {
			e := exp
			for _, s := range ss {
				if err := e.Set(s); err != nil {
					return err
				}
			}
			r, _, err := EstimateExperiment(e)
			if err != nil {
				t.Errorf("%s %v: %v", path, ss, err)
				continue
			}
			if r.Refusal != nil {
				t.Errorf("%s %v refused: %v", path, ss, r.Refusal)
			}
			if ss != nil {
				const measured = 2.06 * (1 << 30)
				if got := r.TotalBytes(); got < measured || got > 2*measured {
					t.Errorf("%s %v: estimated %s, measured 2.06 GiB: want at or above it, within 2x", path, ss, HumanBytes(got))
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// bench attention's sizes are checked before any layer is built.
func TestCheckAttentionBench(t *testing.T) {
	withMachine(t, 23<<30)
	base := AttentionBenchOptions{Kinds: []string{"standard", "flash"}, SeqLens: []int{1024}, Batch: 1, Heads: 4, HeadDim: 32,
		Causal: true, DType: "float32", Passes: []string{PassForward, PassBackward}, Reps: 1}
	cases := []struct {
		name string
		edit func(*AttentionBenchOptions)
		want string // "" = accepted
	}{
		{"default", func(o *AttentionBenchOptions) {}, ""},
		{"T-1e7", func(o *AttentionBenchOptions) { o.SeqLens = []int{1024, 10_000_000} }, "--T 10000000: standard attention: one head's dense attention scores"},
		{"T-1e7-flash", func(o *AttentionBenchOptions) { o.Kinds, o.SeqLens = []string{"flash"}, []int{10_000_000} }, "this machine has 23 GiB; lower --T, --batch or --heads x --head-dim"},
		{"batch", func(o *AttentionBenchOptions) { o.Batch = 1_000_000_000 }, "lower --batch, --T or --heads x --head-dim"},
		{"heads", func(o *AttentionBenchOptions) { o.Heads, o.HeadDim = 100_000, 100_000 }, "lower --heads x --head-dim"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := base
			c.edit(&o)
			err := CheckAttentionBench(o)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !IsBadInput(err)):
				t.Errorf("error %v, want a bad-input error saying %q", err, c.want)
			}
		})
	}
}

func TestMemTotal(t *testing.T) {
	cases := []struct {
		text string
		want int64
	}{
		{"MemTotal:       24683584 kB\nMemFree:        24096576 kB\n", 24683584 * 1024},
		{"MemFree: 1 kB\n", 0},
		{"MemTotal: lots kB\n", 0},
		{"MemTotal: 99999999999999999 kB\n", 0},
	}
	for _, c := range cases {
		if got := memTotal([]byte(c.text)); got != c.want {
			t.Errorf("memTotal(%q) = %d, want %d", c.text, got, c.want)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	cases := []struct {
		b    float64
		want string
	}{
		{512, "512 B"}, {1536, "1.5 KiB"}, {64 << 20, "64 MiB"}, {3.7 * (1 << 30), "3.7 GiB"}, {37 * (1 << 30), "37 GiB"},
		{8 * (1 << 60), "8.0 EiB"}, {1e30, "1e+30 B"},
	}
	for _, c := range cases {
		if got := HumanBytes(c.b); got != c.want {
			t.Errorf("HumanBytes(%g) = %q, want %q", c.b, got, c.want)
		}
	}
}
