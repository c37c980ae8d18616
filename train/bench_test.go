package train

import (
	"fmt"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

const benchTinyConfig = `name: tiny
seed: 3
task: {kind: assoc_recall, seq_len: 16, vocab: 32, kv_pairs: 2}
model: {kind: decoder, d_model: 16, n_layers: 1, n_heads: 2, d_ff: 32}
train: {steps: 40, batch_size: 4, lr: 3.0e-3, warmup_steps: 5, eval_every: 20, eval_examples: 16}
`

func TestBenchTiny(t *testing.T) {
	exp, err := config.Parse("tiny.yaml", []byte(benchTinyConfig))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Bench(exp, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	if r.Steps != 3 || r.Warmup != 1 || r.SeqLen != 16 || r.BatchSize != 4 || r.Params == 0 {
		t.Errorf("bad shape of the result: %+v", r)
	}
	if !(r.StepMsMin > 0 && r.StepMsMin <= r.StepMsMedian && r.StepMsMedian <= r.StepMsMax) {
		t.Errorf("step times min %v median %v max %v", r.StepMsMin, r.StepMsMedian, r.StepMsMax)
	}
	if r.TokensPerSec <= 0 || r.AllocBytesPerStep == 0 || r.AllocsPerStep == 0 || r.Threads < 1 || r.BLAS == "" {
		t.Errorf("missing figures: %+v", r)
	}
	if _, err := Bench(exp, 0, 0); !IsBadInput(err) {
		t.Errorf("0 steps: got %v, want a bad-input error", err)
	}
	if r.Memory != "" {
		t.Errorf("a plain model reports memory %q", r.Memory)
	}
	if err := exp.Set("model.memory.kind=rmt"); err != nil {
		t.Fatal(err)
	}
	if err := exp.Set("model.memory.segment=8"); err != nil {
		t.Fatal(err)
	}
	if r, err = Bench(exp, 0, 1); err != nil {
		t.Fatal(err)
	} else if r.Memory != "rmt, segments of 8" {
		t.Errorf("a memory model reports memory %q, want %q", r.Memory, "rmt, segments of 8")
	}
}

func TestBenchAttentionTiny(t *testing.T) {
	rows, err := BenchAttention(AttentionBenchOptions{
		Kinds: []string{"flash", "latent"}, SeqLens: []int{8, 16}, Batch: 1, Heads: 2, HeadDim: 4, Causal: true,
		Passes: []string{PassForward, PassBackward}, Reps: 1, Warmup: 1, Seed: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	var measured, skipped int
	for _, r := range rows {
		switch {
		case r.Kind == "latent":
			skipped++
			if r.Skipped == "" || !strings.Contains(r.Skipped, "causal") {
				t.Errorf("latent in a causal setting: %+v, want skipped naming causal", r)
			}
		case r.Skipped != "":
			t.Errorf("flash skipped: %s", r.Skipped)
		default:
			measured++
			if r.MsMed <= 0 || r.Alloc == 0 || r.Peak == 0 || r.Params == 0 {
				t.Errorf("missing figures: %+v", r)
			}
		}
	}
	if measured != 4 || skipped != 2 {
		t.Errorf("%d measured rows (want 4: 2 T x 2 passes), %d skipped (want 2: one per T)", measured, skipped)
	}
}

// BenchmarkAdamWUpdate: one AdamW update of the reference model's
// parameters (shared/bench/torch_ref.py at T=256: 0.43M, float32), with
// the global gradient norm for clipping, as a training step does.
func BenchmarkAdamWUpdate(b *testing.B) {
	store, err := graph.NewStore(tensor.Float32, 1)
	if err != nil {
		b.Fatal(err)
	}
	shapes := [][]int{{64, 128}, {256, 128}} // token and position embeddings
	for l := 0; l < 2; l++ {
		shapes = append(shapes, []int{128}, []int{128}, // LayerNorm
			[]int{128, 384}, []int{384}, []int{128, 128}, []int{128}, // attention
			[]int{128}, []int{128}, // LayerNorm
			[]int{128, 512}, []int{512}, []int{512, 128}, []int{128}) // FFN
	}
	shapes = append(shapes, []int{128}, []int{128}, []int{128, 64}, []int{64}) // final LayerNorm, head
	var grads []G.Value
	for i, s := range shapes {
		if _, err := store.Param(fmt.Sprintf("p%d", i), s, graph.Uniform(0.1)); err != nil {
			b.Fatal(err)
		}
		g := tensor.New(tensor.WithShape(s...), tensor.Of(tensor.Float32))
		for j, d := 0, g.Data().([]float32); j < len(d); j++ {
			d[j] = float32(j%7) - 3
		}
		grads = append(grads, g)
	}
	opt := NewAdamW(store, 0.9, 0.999, 1e-8, 0.01)
	b.ReportMetric(float64(store.NumElements()), "params")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		norm := GlobalNorm(grads)
		if err := opt.Update(grads, 3e-4, min(1, 1/norm)); err != nil {
			b.Fatal(err)
		}
	}
}

func TestBenchAttentionOptions(t *testing.T) {
	for _, c := range []struct {
		name    string
		kinds   []string
		options map[string]map[string]any
		wantErr string // "" for none; else a bad-input error containing it
		// fewer names two kinds of which the first has fewer parameters.
		fewer [2]string
	}{
		{name: "gqa kv_heads reaches the layer, standard gets none", kinds: []string{"standard", "gqa"},
			options: map[string]map[string]any{"gqa": {"kv_heads": 1}}, fewer: [2]string{"gqa", "standard"}},
		{name: "flash block", kinds: []string{"flash"}, options: map[string]map[string]any{"flash": {"block": 8}}},
		{name: "no bias", kinds: []string{"standard", "flash"},
			options: map[string]map[string]any{"flash": {"bias": false}}, fewer: [2]string{"flash", "standard"}},
		{name: "a refused kind's rows carry its options", kinds: []string{"latent"}, options: map[string]map[string]any{"latent": {"latents": 4}}},
		{name: "block 0 is the factory's error", kinds: []string{"flash"}, options: map[string]map[string]any{"flash": {"block": 0}},
			wantErr: "flash: model.attention.block: must be positive"},
		{name: "kv_heads not dividing the heads", kinds: []string{"standard", "gqa"}, options: map[string]map[string]any{"gqa": {"kv_heads": 3}},
			wantErr: "gqa: model.attention.kv_heads: 3 does not divide"},
		{name: "wrong type", kinds: []string{"flash"}, options: map[string]map[string]any{"flash": {"block": "big"}},
			wantErr: `flash: model.attention.block: want an integer, got "big"`},
		{name: "undeclared option", kinds: []string{"standard"}, options: map[string]map[string]any{"standard": {"window": 4}},
			wantErr: "model.attention.window: unknown option"},
		{name: "a refused kind's options are still checked against their specs", kinds: []string{"latent"},
			options: map[string]map[string]any{"latent": {"latents": "many"}}, wantErr: "latent: model.attention.latents: want an integer"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rows, err := BenchAttention(AttentionBenchOptions{
				Kinds: c.kinds, Options: c.options, SeqLens: []int{16}, Batch: 1, Heads: 2, HeadDim: 4, Causal: true,
				Passes: []string{PassForward}, Reps: 1, Seed: 1,
			})
			if c.wantErr != "" {
				if err == nil || !IsBadInput(err) || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, want a bad-input error containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			params := map[string]int{}
			for _, r := range rows {
				if got, want := fmt.Sprint(r.Options), fmt.Sprint(c.options[r.Kind]); got != want {
					t.Errorf("%s at T=%d: options %s, want %s", r.Kind, r.T, got, want)
				}
				if r.Kind == "latent" {
					if r.Skipped == "" {
						t.Errorf("latent measured in a causal setting: %+v", r)
					}
					continue
				}
				if r.Skipped != "" {
					t.Errorf("%s skipped: %s", r.Kind, r.Skipped)
					continue
				}
				params[r.Kind] = r.Params
			}
			if f := c.fewer; f[0] != "" && !(params[f[0]] > 0 && params[f[0]] < params[f[1]]) {
				t.Errorf("%s has %d parameters, %s %d: the option did not reach the layer", f[0], params[f[0]], f[1], params[f[1]])
			}
		})
	}
}
