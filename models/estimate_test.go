package models

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/configs"
	"github.com/attnlab/attnlab/data"
	"github.com/attnlab/attnlab/graph"
	"github.com/attnlab/attnlab/layers"
)

// builtParams builds cfg's training graph at batch 1 and counts its store.
func builtParams(t *testing.T, cfg config.Model, task data.Task) int64 {
	t.Helper()
	store, err := graph.NewStore(tensor.Float32, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Build(cfg, task, store, 1); err != nil {
		t.Fatal(err)
	}
	return int64(store.NumElements())
}

// The estimate's parameter count is exactly what Build makes, for every
// shipped experiment.
func TestEstimateParamsMatchShippedConfigs(t *testing.T) {
	err := fs.WalkDir(configs.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		t.Run(path, func(t *testing.T) {
			b, err := fs.ReadFile(configs.FS, path)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains("\n"+string(b), "\nbase:") {
				t.Skip("a sweep file, not an experiment") // its variants are covered by TestEstimateParamsMatchEveryVariant
			}
			exp, err := config.Parse(path, b)
			if err != nil {
				t.Fatal(err)
			}
			task, err := data.New(exp.Task, exp.Seed)
			if err != nil {
				t.Fatal(err)
			}
			e, err := EstimateCost(exp.Model, task, 4, exp.Train.BatchSize, exp.Train.BatchSize)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := e.Params, builtParams(t, exp.Model, task); got != want {
				t.Errorf("estimated %d parameters, Build makes %d", got, want)
			}
			if err := e.CheckLimits(); err != nil {
				t.Errorf("a shipped config breaks a limit: %v", err)
			}
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The estimate's parameter count is exactly what Build makes for every
// registered variant, over the options and model settings that change the
// count; a variant without a formula fails here.
func TestEstimateParamsMatchEveryVariant(t *testing.T) {
	type variant struct {
		kind string
		opts map[string]any
	}
	var cases []variant
	for _, e := range layers.Variants() {
		cases = append(cases, variant{e.Name, nil})
	}
	cases = append(cases,
		variant{"standard", map[string]any{"bias": false}},
		variant{"flash", map[string]any{"bias": false}},
		variant{"gqa", map[string]any{"kv_heads": 1}},
		variant{"gqa", map[string]any{"kv_heads": 4, "bias": false}},
		variant{"mqa", map[string]any{"bias": false}},
		variant{"reuse", map[string]any{"qk_dim": 6}},
		variant{"reuse", map[string]any{"qk_dim": 4, "bias": false}},
		variant{"gpa", map[string]any{"bias": false}},
		variant{"mla", map[string]any{"q_rank": 6}},
		variant{"mla", map[string]any{"kv_rank": 5, "rope_dims": 4, "bias": true}},
		variant{"mla", map[string]any{"q_rank": 3, "kv_rank": 7, "bias": true}},
		variant{"moh", map[string]any{"shared_heads": 0}},
		variant{"moh", map[string]any{"shared_heads": 4}},
		variant{"moh", map[string]any{"shared_heads": 2, "top_k": 2, "bias": false}},
		variant{"latent", map[string]any{"latents": 3, "bias": false}},
		variant{"agent", map[string]any{"agents": 2, "bias": false}},
	)
	for _, v := range cases {
		bidirectional := v.kind == "latent" || v.kind == "agent"
		for _, setting := range []struct {
			name, norm, positional string
		}{{"layernorm-learned", "layernorm", "learned"}, {"rmsnorm-rope", "rmsnorm", "rope"}, {"layernorm-sinusoidal", "layernorm", "sinusoidal"}} {
			if sup, err := layers.SupportOf(v.kind); err == nil && sup.Allows(layers.Setting{Causal: !bidirectional, Positional: setting.positional}) != nil {
				continue // a position scheme the variant refuses (latent, linear: rope)
			}
			t.Run(fmt.Sprintf("%s%v/%s", v.kind, v.opts, setting.name), func(t *testing.T) {
				cfg := config.Default().Model
				cfg.DModel, cfg.NLayers, cfg.NHeads, cfg.DFF = 16, 2, 4, 24
				cfg.Norm, cfg.Positional = setting.norm, setting.positional
				cfg.Attention = config.Component{Kind: v.kind, Options: v.opts}
				tc := config.Component{Kind: "copy", Options: map[string]any{"seq_len": 8, "vocab": 11}}
				if bidirectional {
					cfg.Kind = "encoder"
					tc = config.Component{Kind: "majority", Options: map[string]any{"seq_len": 8, "min_len": 1}}
				}
				task, err := data.New(tc, 1)
				if err != nil {
					t.Fatal(err)
				}
				e, err := EstimateCost(cfg, task, 4, 2, 2)
				if errors.Is(err, errUnknownVariant) {
					t.Fatalf("attentionCost has no case for %q: add one mirroring its Forward", v.kind)
				}
				if err != nil {
					t.Fatal(err)
				}
				if got, want := e.Params, builtParams(t, cfg, task); got != want {
					t.Errorf("estimated %d parameters, Build makes %d", got, want)
				}
			})
		}
	}
}

// Absurd sizes are estimated in constant time without allocating, without
// overflowing, and refused by CheckLimits with the key to lower.
func TestEstimateHugeConfigsRefusedFast(t *testing.T) {
	task, err := data.New(config.Component{Kind: "copy", Options: map[string]any{"seq_len": 64, "vocab": 16}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	base := config.Default().Model
	cases := []struct {
		name  string
		edit  func(*config.Model)
		batch int
		want  string
	}{
		{"d_model", func(m *config.Model) { m.DModel = 1_000_000_000 }, 8, "model.d_model"},
		{"d_ff", func(m *config.Model) { m.DFF = 10_000_000_000 }, 8, "model.d_ff"},
		{"n_layers", func(m *config.Model) { m.NLayers = 1_000_000 }, 8, "model.n_layers"},
		{"n_layers-just-over", func(m *config.Model) { m.NLayers = MaxLayers + 1 }, 8, "1024, the most this trainer builds"},
		{"batch", func(m *config.Model) {}, 1_000_000_000, "train.batch_size"},
		{"everything", func(m *config.Model) { m.DModel, m.DFF, m.NLayers = 1<<40, 1<<50, 1<<40 }, 1 << 40, "model.n_layers"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := base
			c.edit(&cfg)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			e, err := EstimateCost(cfg, task, 4, c.batch, c.batch)
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}
			if elapsed > 2*time.Second {
				t.Errorf("estimate took %v", elapsed)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
				t.Errorf("estimate allocated %d bytes", grew)
			}
			if e.Params <= 0 || math.IsNaN(e.TotalBytes()) || e.TotalBytes() <= 0 {
				t.Errorf("overflowed: %d params, %g bytes", e.Params, e.TotalBytes())
			}
			err = e.CheckLimits()
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("CheckLimits = %v, want a one-line error naming %s", err, c.want)
			}
		})
	}
}

// The dense core's T x T scores count against the tensor limit; flash's
// do not exist.
func TestEstimateDenseScores(t *testing.T) {
	task, err := data.New(config.Component{Kind: "copy", Options: map[string]any{"seq_len": 65536, "vocab": 16}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default().Model
	cfg.Positional = "none"
	for kind, refused := range map[string]bool{"standard": true, "flash": false} {
		cfg.Attention = config.Component{Kind: kind}
		e, err := EstimateCost(cfg, task, 4, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.CheckLimits(); (err != nil) != refused {
			t.Errorf("%s at T 65536: CheckLimits = %v, want refused %t", kind, err, refused)
		}
		if kind == "standard" && e.ScratchBytes < 65536*65536*4 {
			t.Errorf("standard at T 65536: scratch %g bytes, want at least one T x T buffer", e.ScratchBytes)
		}
	}
}
