package main

import (
	"encoding/json"
	"encoding/xml"
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestBenchModelJSON(t *testing.T) {
	code, out, stderr := runCLI("bench", "--warmup", "1", "--steps", "2", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	for _, k := range []string{"step_ms_median", "step_ms_min", "step_ms_max", "tokens_per_sec", "alloc_bytes_per_step",
		"allocs_per_step", "peak_rss_bytes", "threads", "params"} {
		if v, ok := r[k].(float64); !ok || v <= 0 {
			t.Errorf("%s = %v, want a positive number", k, r[k])
		}
	}
	if r["name"] != "quickstart" || r["attention"] != "standard" || r["steps"] != 2.0 || r["warmup_steps"] != 1.0 {
		t.Errorf("name %v attention %v steps %v warmup %v", r["name"], r["attention"], r["steps"], r["warmup_steps"])
	}
	if b, _ := r["blas"].(string); b == "" {
		t.Errorf("no blas name")
	}
	if !(r["step_ms_min"].(float64) <= r["step_ms_median"].(float64) && r["step_ms_median"].(float64) <= r["step_ms_max"].(float64)) {
		t.Errorf("min %v median %v max %v out of order", r["step_ms_min"], r["step_ms_median"], r["step_ms_max"])
	}
	// The embedded reference configs are found by name; the table names the figures.
	code, out, stderr = runCLI("bench", "--config", "bench/ref-t256.yaml", "--set", "task.seq_len=8",
		"--set", "model.d_model=16", "--set", "model.d_ff=32", "--warmup", "0", "--steps", "1")
	if code != 0 {
		t.Fatalf("embedded config: exit %d: %s", code, stderr)
	}
	for _, want := range []string{"bench ref-t256", "step ms", "tokens/s", "allocated/step", "peak RSS", "BLAS"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestBenchAttentionJSONAndPlots(t *testing.T) {
	dir := t.TempDir()
	code, out, stderr := runCLI("bench", "attention", "--kinds", "standard,flash,agent", "--T", "16,32", "--reps", "1",
		"--heads", "2", "--head-dim", "8", "--json", "--out", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var res attentionBench
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if !res.Causal || res.DModel != 16 || res.Reps != 1 || res.Threads < 1 || res.BLAS == "" || res.MemoryNote == "" {
		t.Errorf("header: %+v", res)
	}
	measured := map[string]int{}
	for _, r := range res.Rows {
		if r.Kind == "agent" {
			if !strings.Contains(r.Skipped, "causal") {
				t.Errorf("agent at T=%d: skipped %q, want the causal refusal", r.T, r.Skipped)
			}
			continue
		}
		if r.Skipped != "" {
			t.Errorf("%s at T=%d skipped: %s", r.Kind, r.T, r.Skipped)
			continue
		}
		measured[r.Kind+" "+r.Pass]++
		if r.MsMed <= 0 || r.MsMin > r.MsMed || r.MsMed > r.MsMax || r.Alloc == 0 || r.Allocs == 0 || r.Peak == 0 {
			t.Errorf("%s T=%d %s: missing figures %+v", r.Kind, r.T, r.Pass, r)
		}
	}
	for _, k := range []string{"standard fwd", "standard fwdbwd", "flash fwd", "flash fwdbwd"} {
		if measured[k] != 2 {
			t.Errorf("%s: %d rows, want 2 (T=16, 32)", k, measured[k])
		}
	}
	if len(res.Slopes) != 4 {
		t.Errorf("%d slopes, want 4: %+v", len(res.Slopes), res.Slopes)
	}
	for _, s := range res.Slopes {
		if s.Time == nil || s.Alloc == nil || s.PeakHeap == nil {
			t.Errorf("%s %s: a slope is missing: %+v", s.Kind, s.Pass, s)
		}
	}
	// The same JSON is written under --out, with the plots, which decode.
	var onDisk attentionBench
	if b, err := os.ReadFile(filepath.Join(dir, attnBenchJSON)); err != nil {
		t.Error(err)
	} else if err := json.Unmarshal(b, &onDisk); err != nil || len(onDisk.Rows) != len(res.Rows) {
		t.Errorf("%s: %v, %d rows", attnBenchJSON, err, len(onDisk.Rows))
	}
	for _, base := range []string{attnTimePlot, attnMemoryPlot} {
		f, err := os.Open(filepath.Join(dir, base+".png"))
		if err != nil {
			t.Error(err)
			continue
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Errorf("%s.png: %v", base, err)
		} else if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
			t.Errorf("%s.png: %v", base, b)
		}
		svg, err := os.ReadFile(filepath.Join(dir, base+".svg"))
		if err != nil {
			t.Error(err)
			continue
		}
		var doc struct {
			XMLName xml.Name
		}
		if err := xml.Unmarshal(svg, &doc); err != nil || doc.XMLName.Local != "svg" {
			t.Errorf("%s.svg: %v, root %q", base, err, doc.XMLName.Local)
		}
		if !strings.Contains(string(svg), "slope") {
			t.Errorf("%s.svg: no slope in the legend", base)
		}
	}

	// The table, with one line for a refusal over several T.
	code, out, stderr = runCLI("bench", "attention", "--kinds", "flash,latent", "--T", "16", "--reps", "1", "--mode", "fwd",
		"--heads", "2", "--head-dim", "8")
	if code != 0 {
		t.Fatalf("table: exit %d: %s", code, stderr)
	}
	for _, want := range []string{"MEDIAN MS", "PEAK HEAP", "n/a: ", "slopes", "n/a (one T)", "memory:"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestBenchBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown kind", []string{"bench", "attention", "--kinds", "standard,nonesuch", "--T", "16"}, "nonesuch"},
		{"T zero", []string{"bench", "attention", "--T", "16,0"}, "--T 0"},
		{"T not a number", []string{"bench", "attention", "--T", "many"}, "many"},
		{"bad mode", []string{"bench", "attention", "--T", "16", "--mode", "back"}, "--mode"},
		{"bad dtype", []string{"bench", "attention", "--T", "16", "--dtype", "int8"}, "--dtype"},
		{"zero reps", []string{"bench", "attention", "--T", "16", "--reps", "0"}, "--reps"},
		{"missing config", []string{"bench", "--config", filepath.Join(dir, "nope.yaml")}, "nope.yaml"},
		{"bad set", []string{"bench", "--set", "train.nonesuch=1"}, "nonesuch"},
		{"zero steps", []string{"bench", "--steps", "0"}, "--steps"},
		{"stray argument", []string{"bench", "standard"}, "standard"},
		{"set another prefix", []string{"bench", "attention", "--T", "16", "--set", "train.steps=3"}, "--set train.steps: bench attention takes only model.attention.KEY=VALUE"},
		{"set an option no kind takes", []string{"bench", "attention", "--kinds", "standard,flash", "--T", "16", "--set", "model.attention.window=256"},
			"--set model.attention.window: no kind in --kinds takes option window (see trainer list)"},
		{"set block 0", []string{"bench", "attention", "--kinds", "standard,flash", "--T", "16", "--set", "model.attention.block=0"},
			"flash: model.attention.block: must be positive, got 0"},
		{"set block not a number", []string{"bench", "attention", "--kinds", "flash", "--T", "16", "--set", "model.attention.block=abc"},
			`flash: model.attention.block: want an integer, got "abc"`},
		{"set kv_heads not dividing the heads", []string{"bench", "attention", "--kinds", "gqa", "--T", "16", "--heads", "2", "--set", "model.attention.kv_heads=3"},
			"gqa: model.attention.kv_heads: 3 does not divide"},
		{"set a refused kind's bad value", []string{"bench", "attention", "--kinds", "flash,agent", "--T", "16", "--set", "model.attention.agents=many"},
			"agent: model.attention.agents: want an integer"},
		{"set unparsable", []string{"bench", "attention", "--kinds", "flash", "--T", "16", "--set", "model.attention.block=[1"}, "--set model.attention.block: cannot parse"},
		{"set without =", []string{"bench", "attention", "--kinds", "flash", "--T", "16", "--set", "model.attention.block"}, "--set model.attention.block: want model.attention.KEY=VALUE"},
		{"set a section", []string{"bench", "attention", "--kinds", "flash", "--T", "16", "--set", "model.attention.block.x=1"}, "--set model.attention.block.x: want model.attention.KEY"},
		{"set the kind", []string{"bench", "attention", "--kinds", "flash", "--T", "16", "--set", "model.attention.kind=gqa"}, "--kinds"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := runCLI(c.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr %q", code, stderr)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "error: ") || !strings.Contains(lines[0], c.want) {
				t.Errorf("stderr %q: want one line starting with error: and naming %q", stderr, c.want)
			}
		})
	}
}

// TestBenchAttentionSet: --set model.attention.KEY=VALUE reaches the layers
// of the kinds that take KEY (their parameter counts change), and only
// theirs; the JSON rows and the table's header say what each was given.
func TestBenchAttentionSet(t *testing.T) {
	for _, c := range []struct {
		name  string
		args  []string
		want  string    // each kind's options, as JSON
		table string    // in the table's header line
		fewer [2]string // the first of these kinds has fewer parameters
	}{
		{"flash block", []string{"--kinds", "flash", "--T", "16,32", "--set", "model.attention.block=16"},
			`{"flash":{"block":16}}`, "; options: flash block=16", [2]string{}},
		{"gqa kv_heads, standard gets none", []string{"--kinds", "standard,gqa", "--T", "16", "--set", "model.attention.kv_heads=1"},
			`{"gqa":{"kv_heads":1}}`, "; options: gqa kv_heads=1", [2]string{"gqa", "standard"}},
		{"two options, the last --set wins", []string{"--kinds", "standard,gqa", "--T", "16", "--set", "model.attention.kv_heads=2",
			"--set", "model.attention.bias=false", "--set", "model.attention.kv_heads=1"},
			`{"gqa":{"bias":false,"kv_heads":1},"standard":{"bias":false}}`, "; options: standard bias=false, gqa bias=false kv_heads=1", [2]string{"gqa", "standard"}},
		{"a refused kind is given its options too", []string{"--kinds", "flash,agent", "--T", "16", "--set", "model.attention.agents=2"},
			`{"agent":{"agents":2}}`, "; options: agent agents=2", [2]string{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"bench", "attention", "--reps", "1", "--warmup", "0", "--mode", "fwd", "--heads", "2", "--head-dim", "8"}, c.args...)
			code, out, stderr := runCLI(append(args, "--json")...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var res attentionBench
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, out)
			}
			given := map[string]map[string]any{}
			params := map[string]int{}
			for _, r := range res.Rows {
				if prev, ok := given[r.Kind]; ok && !reflect.DeepEqual(prev, r.Options) {
					t.Errorf("%s at T=%d: options %v, other rows %v", r.Kind, r.T, r.Options, prev)
				}
				given[r.Kind] = r.Options
				if r.AttentionFigures != nil {
					params[r.Kind] = r.Params
				}
			}
			for k, v := range given {
				if v == nil {
					delete(given, k)
				}
			}
			if b, _ := json.Marshal(given); string(b) != c.want {
				t.Errorf("options %s, want %s", b, c.want)
			}
			if f := c.fewer; f[0] != "" && !(params[f[0]] > 0 && params[f[0]] < params[f[1]]) {
				t.Errorf("%s has %d parameters, %s %d: the option did not reach the layer", f[0], params[f[0]], f[1], params[f[1]])
			}
			code, out, stderr = runCLI(args...)
			if code != 0 {
				t.Fatalf("table: exit %d: %s", code, stderr)
			}
			if header, _, _ := strings.Cut(out, "\n"); !strings.HasSuffix(header, c.table) {
				t.Errorf("header %q, want it to end in %q", header, c.table)
			}
		})
	}
}
