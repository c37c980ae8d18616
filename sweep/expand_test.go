package sweep

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// gridAxes are grid keys with a valid value for each index v < 20, so that
// a sweep of them expands (and validates) run by run when nothing caps it.
var gridAxes = []struct {
	key   string
	value func(v int) float64
}{
	{"train.lr", func(v int) float64 { return 0.001 * float64(v+1) }},
	{"train.weight_decay", func(v int) float64 { return 0.01 * float64(v) }},
	{"train.beta1", func(v int) float64 { return 0.8 + 0.01*float64(v) }},
	{"train.beta2", func(v int) float64 { return 0.99 + 0.0001*float64(v) }},
	{"train.grad_clip", func(v int) float64 { return 0.1 * float64(v+1) }},
	{"train.min_lr_ratio", func(v int) float64 { return 0.04 * float64(v) }},
	{"train.eps", func(v int) float64 { return 1e-8 * float64(v+1) }},
	{"train.log_every", func(v int) float64 { return float64(v + 1) }},
	{"train.eval_examples", func(v int) float64 { return float64(8 + v) }},
	{"train.steps", func(v int) float64 { return float64(100 + v) }},
	{"train.warmup_steps", func(v int) float64 { return float64(v) }},
	{"train.batch_size", func(v int) float64 { return float64(v + 1) }},
	{"model.d_ff", func(v int) float64 { return float64(8 + v) }},
	{"model.n_layers", func(v int) float64 { return float64(v + 1) }},
	{"train.checkpoint_every", func(v int) float64 { return float64(v) }},
	{"train.eval_every", func(v int) float64 { return float64(v) }},
	{"task.seq_len", func(v int) float64 { return float64(16 + 2*v) }},
	{"model.d_model", func(v int) float64 { return float64(16 + 2*v) }},
}

// gridSweep is a sweep of a tiny base over the first keys of gridAxes with
// values values each, and seeds seeds.
func gridSweep(keys, values, seeds int) string {
	var b strings.Builder
	b.WriteString("name: big\nbase:\n  name: big\n  task: {kind: assoc_recall, seq_len: 16, vocab: 32, kv_pairs: 2}\n")
	b.WriteString("  model: {kind: decoder, d_model: 16, n_layers: 1, n_heads: 2, d_ff: 32}\n")
	b.WriteString("  train: {steps: 100, batch_size: 4, warmup_steps: 1, eval_examples: 8}\ngrid:\n")
	for _, ax := range gridAxes[:keys] {
		vals := make([]string, values)
		for v := range vals {
			vals[v] = fmt.Sprintf("%g", ax.value(v))
		}
		fmt.Fprintf(&b, "  %s: [%s]\n", ax.key, strings.Join(vals, ", "))
	}
	s := make([]string, seeds)
	for i := range s {
		s[i] = fmt.Sprint(i + 1)
	}
	fmt.Fprintf(&b, "seeds: [%s]\n", strings.Join(s, ", "))
	return b.String()
}

// A grid beyond MaxRuns is refused before it is expanded: in milliseconds,
// without allocating the runs, with one line naming every grid key and its
// size, and without overflow when the product exceeds int64.
func TestExpandRefusesHugeGrids(t *testing.T) {
	cases := []struct {
		name               string
		keys, values, seed int
		count              string
	}{
		{"just-over", 5, 10, 2, "200000 runs"},    // 10^5 x 2: a few seconds to expand without the cap
		{"1e8", 7, 10, 10, "100000000 runs"},      // issue 11: 35 s, then a crash
		{"overflow", 18, 20, 10, "2.62e+24 runs"}, // 20^18 x 10 overflows int64
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := mustParse(t, gridSweep(c.keys, c.values, c.seed))
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			runs, err := s.Expand(nil)
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatalf("Expand gave %d runs, want an error", len(runs))
			}
			msg := err.Error()
			for _, want := range []string{"tiny.yaml: ", c.count, "train.lr: 10 values", fmt.Sprintf("%d seeds", c.seed), "100000"} {
				if c.name == "overflow" && want == "train.lr: 10 values" {
					want = "train.lr: 20 values"
				}
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not say %q", msg, want)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			if elapsed > 2*time.Second {
				t.Errorf("refusing took %v", elapsed)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
				t.Errorf("refusing allocated %d bytes", grew)
			}
		})
	}
}

// A grid of exactly MaxRuns runs is not refused by the count.
func TestExpandAllowsMaxRuns(t *testing.T) {
	s := mustParse(t, gridSweep(5, 10, 1))
	if err := s.checkSize(); err != nil {
		t.Errorf("%d runs refused: %v", MaxRuns, err)
	}
}
