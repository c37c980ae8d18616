package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// comparable strips what Parse records only for error messages (the lines of
// component options), so that experiments compare with reflect.DeepEqual.
func comparable(e Experiment) Experiment {
	strip := func(c Component) Component {
		if c.Options == nil {
			c.Options = map[string]any{}
		}
		return Component{Kind: c.Kind, Options: c.Options}
	}
	e.Task = strip(e.Task)
	e.Model.Attention = strip(e.Model.Attention)
	e.Model.Memory = strip(e.Model.Memory)
	return e
}

func sameExperiment(t *testing.T, got, want Experiment) {
	t.Helper()
	if g, w := comparable(got), comparable(want); !reflect.DeepEqual(g, w) {
		t.Errorf("experiments differ:\n got %+v\nwant %+v", g, w)
	}
}

const fullFile = `# a full experiment file
name: recall-d128_v2
seed: 42
dtype: float64
device: cuda
task: {kind: assoc_recall, seq_len: 64, n_keys: 16}
model:
  kind: encoder
  d_model: 128
  n_layers: 4
  n_heads: 8
  d_ff: 512
  norm: rmsnorm
  positional: sinusoidal
  rope_base: 500
  rope_fraction: 0.25
  xpos_scale_base: 256
  activation: relu
  pooling: cls
  attention:
    kind: sliding_window
    window: 16
    causal: true
    scale: 0.5
train:
  steps: 2000
  batch_size: 64
  lr: 3e-4
  min_lr_ratio: 0
  weight_decay: 0.1
  beta1: 0.8
  beta2: 0.98
  eps: 1.0e-6
  warmup_steps: 2e2
  schedule: linear
  grad_clip: 0.5
  eval_every: 100
  eval_examples: 1024
  eval_batch_size: 128
  checkpoint_every: 0
  log_every: 5
`

func fullExperiment() Experiment {
	return Experiment{
		Name:   "recall-d128_v2",
		Seed:   42,
		DType:  "float64",
		Device: "cuda",
		Task:   Component{Kind: "assoc_recall", Options: map[string]any{"seq_len": 64, "n_keys": 16}},
		Model: Model{
			Kind: "encoder", DModel: 128, NLayers: 4, NHeads: 8, DFF: 512,
			Norm: "rmsnorm", Positional: "sinusoidal", RopeBase: 500, RopeFraction: 0.25, XPosScaleBase: 256,
			Activation: "relu", Pooling: "cls",
			Attention: Component{Kind: "sliding_window", Options: map[string]any{"window": 16, "causal": true, "scale": 0.5}},
		},
		Train: Train{
			Steps: 2000, BatchSize: 64, LR: 3e-4, MinLRRatio: 0, WeightDecay: 0.1,
			Beta1: 0.8, Beta2: 0.98, Eps: 1e-6, WarmupSteps: 200, Schedule: "linear",
			GradClip: 0.5, EvalEvery: 100, EvalExamples: 1024, EvalBatchSize: 128,
			CheckpointEvery: 0, LogEvery: 5,
		},
	}
}

func TestDefaultIsValid(t *testing.T) {
	e := Default()
	if err := e.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	// Each call gets its own maps.
	a, b := Default(), Default()
	a.Task.Options["x"] = 1
	if len(b.Task.Options) != 0 {
		t.Fatal("Default() shares its option maps")
	}
}

func TestParseFull(t *testing.T) {
	e, err := Parse("full.yaml", []byte(fullFile))
	if err != nil {
		t.Fatal(err)
	}
	sameExperiment(t, e, fullExperiment())
	if err := e.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}

func TestParseKeepsDefaults(t *testing.T) {
	tests := []struct {
		name string
		file string
		edit func(*Experiment) // applied to Default() to get the want
	}{
		{"one top-level key", "seed: 9\n", func(e *Experiment) { e.Seed = 9 }},
		{"one key in a section", "train:\n  lr: 0.01\n", func(e *Experiment) { e.Train.LR = 0.01 }},
		{"empty section", "model:\ntrain:\n  steps: 5\n", func(e *Experiment) { e.Train.Steps = 5 }},
		{"component option only keeps kind", "task: {seq_len: 32}\n", func(e *Experiment) { e.Task.Options["seq_len"] = 32 }},
		{"component kind only", "model:\n  attention: {kind: linear}\n", func(e *Experiment) { e.Model.Attention.Kind = "linear" }},
		{"comments only in a section", "name: x # the name\ntrain: {}\n", func(e *Experiment) { e.Name = "x" }},
		{"anchors and aliases", "name: &n same\nmodel: {norm: rmsnorm}\ntrain: {schedule: constant}\ntask: {kind: *n}\n",
			func(e *Experiment) {
				e.Name, e.Model.Norm, e.Train.Schedule, e.Task.Kind = "same", "rmsnorm", "constant", "same"
			}},
		{"big seed", "seed: 18446744073709551615\n", func(e *Experiment) { e.Seed = 1<<64 - 1 }},
		{"integer written as a whole float", "train: {steps: 1e4}\n", func(e *Experiment) { e.Train.Steps = 10000 }},
		{"number written as an integer", "train: {lr: 1}\n", func(e *Experiment) { e.Train.LR = 1 }},
		{"string that looks like a number", "name: 123\n", func(e *Experiment) { e.Name = "123" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("x.yaml", []byte(tt.file))
			if err != nil {
				t.Fatal(err)
			}
			want := Default()
			tt.edit(&want)
			sameExperiment(t, got, want)
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []string // substrings of the error
	}{
		{"empty", "", []string{"x.yaml: empty file"}},
		{"comments only", "# nothing\n\n", []string{"x.yaml: empty file"}},
		{"null document", "---\n", []string{"x.yaml: empty file"}},
		{"unknown key in section", "name: a\nseed: 2\ntrain:\n  steps: 10\n  lr: 0.1\n  batch_size: 2\n  lrr: 1\n",
			[]string{"x.yaml: line 7: ", `unknown key "lrr" in train (known: steps, batch_size, lr, min_lr_ratio,`, "log_every)"}},
		{"unknown top-level key", "name: a\nmodle:\n  d_model: 4\n",
			[]string{"line 2: ", `unknown key "modle" at top level (known: name, seed, dtype, device, tf32, task, model, train)`}},
		{"unknown key in model", "model:\n  heads: 4\n", []string{"line 2: ", `unknown key "heads" in model (known: kind, d_model,`}},
		{"syntax: mapping values", "name: a\nseed: 1\nmodel: a: b\n",
			[]string{"x.yaml: line 3: yaml syntax: mapping values are not allowed in this context"}},
		{"syntax on first line", "name: a: b\n", []string{"x.yaml: line 1: yaml syntax: mapping values are not allowed"}},
		{"syntax: bad indent", "train:\n  steps: 10\n lr: 1\n", []string{"line 3: yaml syntax: "}},
		{"syntax: unclosed flow", "name: x\ntask: {kind: x\nmodel:\n  d_model: 4\n", []string{"line 2: yaml syntax: "}},
		{"syntax: tab", "train:\n\tsteps: 1\n", []string{"line 2: yaml syntax: "}},
		{"unknown anchor", "name: x\nmodel:\n  d_model: *foo\n", []string{"line 3: yaml syntax: unknown anchor"}},
		{"control character", "name: x\nseed: 1\x01\n", []string{"line 2: control character U+0001"}},
		{"not utf-8", "name: x\n\nname: \xff\n", []string{"line 3: not valid UTF-8"}},
		{"duplicate reported before a bad value", "name: a\ntrain:\n  steps: 10\n  lr: 0.1\n  batch_size: 2\n  eps: 1e-8\n  warmup_steps: 1\n  schedule: linear\n  steps: abc\n",
			[]string{"x.yaml: line 9: "}}, // the duplicate is found first
		{"integer got string (single)", "train:\n  steps: abc\n", []string{`line 2: train.steps: want an integer, got "abc"`}},
		{"integer got fraction", "train:\n  batch_size: 2.5\n", []string{"line 2: train.batch_size: want an integer, got 2.5"}},
		{"integer got quoted", "model: {d_model: \"64\"}\n", []string{`line 1: model.d_model: want an integer, got "64"`}},
		{"number got string", "train:\n  lr: fast\n", []string{`line 2: train.lr: want a number, got "fast"`}},
		{"number got list", "train:\n  lr: [1, 2]\n", []string{"line 2: train.lr: want a number, got a list"}},
		{"number got nothing", "train:\n  lr:\n", []string{"line 2: train.lr: want a number, got nothing"}},
		{"string got mapping", "dtype: {a: 1}\n", []string{"line 1: dtype: want a string, got a mapping"}},
		{"string got nothing", "model:\n  norm:\n", []string{"line 2: model.norm: want a string, got nothing"}},
		{"negative seed", "seed: -1\n", []string{"line 1: seed: want a non-negative integer, got -1"}},
		{"bad explicit tag", "train:\n  steps: !!int abc\n", []string{"line 2: train.steps: cannot decode"}},
		{"section got scalar", "train: 5\n", []string{"line 1: train: want a mapping of keys (steps, batch_size,", "got 5"}},
		{"top level not a mapping", "- a\n- b\n", []string{"line 1: want a mapping of keys (name, seed,", "got a list"}},
		{"component not a mapping", "task: copy\n", []string{`line 1: task: want a mapping like {kind: NAME, ...}, got "copy"`}},
		{"component kind not a string", "task:\n  kind: 5\n", []string{"line 2: task.kind: want a name, got 5"}},
		{"component kind a list", "model:\n  attention:\n    kind: [a]\n", []string{"line 3: model.attention.kind: want a name, got a list"}},
		{"component kind empty", "task: {kind: }\n", []string{"line 1: task.kind: want a name, got nothing"}},
		{"duplicate key", "name: a\nseed: 1\nname: b\n", []string{`line 3: duplicate key "name" (first at line 1)`}},
		{"duplicate key in section", "train:\n  lr: 1\n  lr: 2\n", []string{`line 3: duplicate key "lr" in train (first at line 2)`}},
		{"duplicate option", "task: {kind: a, n: 1, n: 2}\n", []string{`line 1: duplicate key "n" in task`}},
		{"merge key", "base: &b {lr: 1}\n", []string{`unknown key "base"`}},
		{"merge key in section", "train:\n  <<: {lr: 1}\n", []string{"line 2: merge keys (<<) in train are not supported"}},
		{"second document", "name: a\n---\nname: b\n", []string{"line 2: a second YAML document"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("x.yaml", []byte(tt.file))
			if err == nil {
				t.Fatalf("Parse(%q) succeeded", tt.file)
			}
			msg := err.Error()
			if strings.ContainsAny(msg, "\r\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			if !strings.HasPrefix(msg, "x.yaml: ") {
				t.Errorf("error %q does not start with the file name", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.yaml")
	if err := os.WriteFile(path, []byte(fullFile), 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	sameExperiment(t, e, fullExperiment())

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("train:\n  lrr: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); err == nil || !strings.HasPrefix(err.Error(), bad+": line 2: unknown key") {
		t.Errorf("Load(bad) = %v", err)
	}

	missing := filepath.Join(dir, "missing.yaml")
	_, err = Load(missing)
	if want := "config: open " + missing + ": no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("Load(missing) = %v, want %s", err, want)
	}
}

func TestSet(t *testing.T) {
	good := []struct {
		set  string
		edit func(*Experiment)
	}{
		{"train.lr=1e-3", func(e *Experiment) { e.Train.LR = 1e-3 }},
		{"train.lr=2", func(e *Experiment) { e.Train.LR = 2 }},
		{"seed=7", func(e *Experiment) { e.Seed = 7 }},
		{"name=run-2", func(e *Experiment) { e.Name = "run-2" }},
		{"dtype=float64", func(e *Experiment) { e.DType = "float64" }},
		{"train.steps=1e4", func(e *Experiment) { e.Train.Steps = 10000 }},
		{"train.schedule=constant", func(e *Experiment) { e.Train.Schedule = "constant" }},
		{"model.n_heads=8", func(e *Experiment) { e.Model.NHeads = 8 }},
		{" model.d_model = 32", func(e *Experiment) { e.Model.DModel = 32 }},
		{"model.attention.kind=flash", func(e *Experiment) { e.Model.Attention.Kind = "flash" }},
		{"model.attention.window=16", func(e *Experiment) { e.Model.Attention.Options["window"] = 16 }},
		{"model.attention.causal=true", func(e *Experiment) { e.Model.Attention.Options["causal"] = true }},
		{"task.seq_len=128", func(e *Experiment) { e.Task.Options["seq_len"] = 128 }},
		{"task.kind=copy", func(e *Experiment) { e.Task.Kind = "copy" }},
		{"task.alphabet=a=b", func(e *Experiment) { e.Task.Options["alphabet"] = "a=b" }}, // split at the first "="
	}
	for _, tt := range good {
		t.Run(tt.set, func(t *testing.T) {
			got, want := Default(), Default()
			if err := got.Set(tt.set); err != nil {
				t.Fatal(err)
			}
			tt.edit(&want)
			sameExperiment(t, got, want)
		})
	}

	bad := []struct {
		set  string
		want []string
	}{
		{"train.lr", []string{"--set train.lr: want KEY=VALUE"}},
		{"=3", []string{"--set =3: no key"}},
		{"train.lr=abc", []string{"--set train.lr=abc: want a number", `got "abc"`}},
		{"train.lr=", []string{"--set train.lr=: want a number, got nothing"}},
		{"train.steps=2.5", []string{"--set train.steps=2.5: want an integer, got 2.5"}},
		{"seed=-3", []string{"--set seed=-3: want a non-negative integer"}},
		{"train=1", []string{"--set train=1: train is a section; set one of its keys, e.g. train.lr"}},
		{"model=1", []string{"--set model=1: model is a section; set one of its keys, e.g. model.d_model"}},
		{"task=copy", []string{"--set task=copy: task is a section; set one of its keys, e.g. task.kind"}},
		{"model.attention=x", []string{"model.attention is a section; set one of its keys, e.g. model.attention.kind"}},
		{"train.lrr=1", []string{"--set train.lrr=1: ", `unknown key "lrr" in train (known: steps, batch_size, lr,`}},
		{"trian.lr=1", []string{`unknown key "trian" at top level (known: name, seed, dtype, device, tf32, task, model, train)`}},
		{"model.attn.kind=x", []string{`unknown key "attn" in model (known: kind, d_model,`, "attention, memory, sequence_parallel)"}},
		{"train.lr.x=1", []string{"--set train.lr.x=1: train.lr is a single value, not a section"}},
		{"task.seq_len.x=1", []string{"task.seq_len is a single value, not a section"}},
		{"train..lr=1", []string{"empty part"}},
		{"task.kind=", []string{"--set task.kind=: task.kind: want a name, got nothing"}},
		{"task.x=[1", []string{"--set task.x=[1: cannot parse"}},
	}
	for _, tt := range bad {
		t.Run(tt.set, func(t *testing.T) {
			e := Default()
			err := e.Set(tt.set)
			if err == nil {
				t.Fatalf("Set(%q) succeeded", tt.set)
			}
			msg := err.Error()
			if strings.ContainsAny(msg, "\r\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			if !strings.HasPrefix(msg, "--set ") {
				t.Errorf("error %q does not start with --set", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Experiment)
		want string // "" = valid
	}{
		{"default", func(e *Experiment) {}, ""},
		{"full", func(e *Experiment) { *e = fullExperiment() }, ""},
		{"warmup equal to steps", func(e *Experiment) { e.Train.WarmupSteps = e.Train.Steps }, ""},
		{"zeros that mean off", func(e *Experiment) {
			e.Train.GradClip, e.Train.EvalEvery, e.Train.CheckpointEvery, e.Train.WarmupSteps, e.Train.WeightDecay = 0, 0, 0, 0, 0
			e.Train.MinLRRatio, e.Train.Beta1, e.Train.Beta2 = 1, 0, 0
		}, ""},
		{"empty name", func(e *Experiment) { e.Name = "" }, "name: must not be empty"},
		{"name with slash", func(e *Experiment) { e.Name = "a/b" }, `name ("a/b"): must be usable as a folder name`},
		{"name with space", func(e *Experiment) { e.Name = "a b" }, `name ("a b")`},
		{"name dot dot", func(e *Experiment) { e.Name = ".." }, `name ("..")`},
		{"name too long", func(e *Experiment) { e.Name = strings.Repeat("a", 201) }, "name (" + `"aaa`},
		{"dtype", func(e *Experiment) { e.DType = "float16" }, `dtype: want float32 or float64, got "float16"`},
		{"tf32 on cuda", func(e *Experiment) { e.Device, e.TF32 = "cuda", true }, ""},
		{"tf32 on cpu", func(e *Experiment) { e.TF32 = true }, `tf32: TF32 products are a GPU option (device cuda), and device is "cpu"`},
		{"task kind", func(e *Experiment) { e.Task.Kind = "" }, "task.kind: must not be empty"},
		{"model kind", func(e *Experiment) { e.Model.Kind = "gpt" }, `model.kind: want decoder or encoder, got "gpt"`},
		{"d_model", func(e *Experiment) { e.Model.DModel = 0 }, "model.d_model: must be positive, got 0"},
		{"n_layers", func(e *Experiment) { e.Model.NLayers = -1 }, "model.n_layers: must be positive, got -1"},
		{"n_heads", func(e *Experiment) { e.Model.NHeads = 0 }, "model.n_heads: must be positive, got 0"},
		{"d_ff", func(e *Experiment) { e.Model.DFF = 0 }, "model.d_ff: must be positive, got 0"},
		{"divisible", func(e *Experiment) { e.Model.DModel, e.Model.NHeads = 100, 3 }, "model.d_model (100) is not divisible by model.n_heads (3)"},
		{"norm", func(e *Experiment) { e.Model.Norm = "batchnorm" }, `model.norm: want layernorm or rmsnorm, got "batchnorm"`},
		{"positional", func(e *Experiment) { e.Model.Positional = "rotary" }, `model.positional: want learned, sinusoidal, none, rope, partial_rope, alibi or xpos, got "rotary"`},
		{"rope_fraction", func(e *Experiment) { e.Model.RopeFraction = 1.5 }, `model.rope_fraction: must be in (0, 1], got 1.5`},
		{"activation", func(e *Experiment) { e.Model.Activation = "tanh" }, `model.activation: want gelu or relu, got "tanh"`},
		{"pooling", func(e *Experiment) { e.Model.Pooling = "max" }, `model.pooling: want mean or cls, got "max"`},
		{"attention kind", func(e *Experiment) { e.Model.Attention.Kind = "" }, "model.attention.kind: must not be empty"},
		{"steps", func(e *Experiment) { e.Train.Steps = 0 }, "train.steps: must be positive, got 0"},
		{"batch_size", func(e *Experiment) { e.Train.BatchSize = 0 }, "train.batch_size: must be positive, got 0"},
		{"lr negative", func(e *Experiment) { e.Train.LR = -0.001 }, "train.lr: must be positive, got -0.001"},
		{"lr zero", func(e *Experiment) { e.Train.LR = 0 }, "train.lr: must be positive, got 0.0"},
		{"lr NaN", func(e *Experiment) { e.Train.LR = nan() }, "train.lr: must be a finite number, got .nan"},
		{"eps Inf", func(e *Experiment) { e.Train.Eps = inf() }, "train.eps: must be a finite number, got .inf"},
		{"grad_clip -Inf", func(e *Experiment) { e.Train.GradClip = -inf() }, "train.grad_clip: must be a finite number, got -.inf"},
		{"min_lr_ratio", func(e *Experiment) { e.Train.MinLRRatio = 1.5 }, "train.min_lr_ratio: must be in [0, 1], got 1.5"},
		{"weight_decay", func(e *Experiment) { e.Train.WeightDecay = -1 }, "train.weight_decay: must not be negative, got -1.0"},
		{"beta1", func(e *Experiment) { e.Train.Beta1 = 1 }, "train.beta1: must be in [0, 1), got 1.0"},
		{"beta2", func(e *Experiment) { e.Train.Beta2 = -0.5 }, "train.beta2: must be in [0, 1), got -0.5"},
		{"eps", func(e *Experiment) { e.Train.Eps = 0 }, "train.eps: must be positive, got 0.0"},
		{"warmup negative", func(e *Experiment) { e.Train.WarmupSteps = -1 }, "train.warmup_steps: must not be negative, got -1"},
		{"schedule", func(e *Experiment) { e.Train.Schedule = "step" }, `train.schedule: want cosine, linear or constant, got "step"`},
		{"grad_clip", func(e *Experiment) { e.Train.GradClip = -1 }, "train.grad_clip: must not be negative"},
		{"eval_every", func(e *Experiment) { e.Train.EvalEvery = -1 }, "train.eval_every: must not be negative, got -1"},
		{"eval_examples", func(e *Experiment) { e.Train.EvalExamples = 0 }, "train.eval_examples: must be positive, got 0"},
		{"eval_batch_size", func(e *Experiment) { e.Train.EvalBatchSize = -2 }, "train.eval_batch_size: must not be negative, got -2"},
		{"checkpoint_every", func(e *Experiment) { e.Train.CheckpointEvery = -1 }, "train.checkpoint_every: must not be negative, got -1"},
		{"log_every", func(e *Experiment) { e.Train.LogEvery = 0 }, "train.log_every: must be positive, got 0"},
		{"several problems, one line", func(e *Experiment) { e.Train.LR, e.Train.Steps = -1, 0 },
			"train.steps: must be positive, got 0; train.lr: must be positive, got -1.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := Default()
			tt.edit(&e)
			err := e.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tt.want)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.want) || strings.ContainsAny(msg, "\r\n") {
				t.Errorf("Validate() = %q, want one line containing %q", msg, tt.want)
			}
		})
	}
}

func nan() float64 { var z float64; return z / z }
func inf() float64 { var z float64; return 1 / z }

func TestMarshalRoundTrip(t *testing.T) {
	odd := Default()
	odd.Name = "123"
	odd.Seed = 1<<64 - 1
	odd.Train.GradClip = 1
	odd.Train.LR = 1e-20
	odd.Train.WeightDecay = 123456789012345680000
	odd.Task.Options = map[string]any{
		"whole_float": 2.0, "int": 3, "str_number": "16", "str": "a: b", "bool": false,
		"null": nil, "list": []any{1, 2.0, "x"}, "map": map[string]any{"a": 1.5, "b": "yes"},
	}
	odd.Model.Attention.Kind = "true"
	withSets := Default()
	for _, s := range []string{"model.attention.window=16", "model.attention.scale=1.0", "task.kind=copy", "train.lr=0.5"} {
		if err := withSets.Set(s); err != nil {
			t.Fatal(err)
		}
	}
	parsed, err := Parse("full.yaml", []byte(fullFile))
	if err != nil {
		t.Fatal(err)
	}
	for name, e := range map[string]Experiment{"default": Default(), "full": fullExperiment(), "parsed": parsed, "odd": odd, "set": withSets} {
		t.Run(name, func(t *testing.T) {
			data, err := e.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse("config.yaml", data)
			if err != nil {
				t.Fatalf("Parse(Marshal(e)): %v\n%s", err, data)
			}
			sameExperiment(t, got, e)
			again, err := got.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if string(again) != string(data) {
				t.Errorf("Marshal is not stable:\n%s\n---\n%s", data, again)
			}
		})
	}
}

func TestMarshalWritesEveryField(t *testing.T) {
	e := Default()
	data, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	var missing []string
	var walk func(reflect.Type, string)
	walk = func(ty reflect.Type, indent string) {
		for _, k := range keys(ty) {
			if !strings.Contains(text, "\n"+indent+k+":") && !strings.HasPrefix(text, indent+k+":") {
				missing = append(missing, k)
			}
			f, _ := ty.FieldByName(fieldName(ty, k))
			if f.Type.Kind() == reflect.Struct && f.Type != componentType {
				walk(f.Type, indent+"  ")
			}
		}
	}
	walk(reflect.TypeOf(e), "")
	if len(missing) > 0 {
		t.Errorf("Marshal left out %v:\n%s", missing, text)
	}
	for _, want := range []string{"task: {kind: assoc_recall}", "  attention: {kind: standard}", "  grad_clip: 1.0\n", "  eps: 1.0e-08\n", "  eval_batch_size: 0\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("Marshal output lacks %q:\n%s", want, text)
		}
	}
}

func fieldName(t reflect.Type, key string) string {
	i, _ := fieldByKey(t, key)
	return t.Field(i).Name
}

func TestOneLine(t *testing.T) {
	if got := oneLine("yaml: unmarshal errors:\n  line 3: x\r\n"); got != "yaml: unmarshal errors:; line 3: x" {
		t.Errorf("oneLine = %q", got)
	}
	if got := fmtFloat(1e21); got != "1.0e+21" {
		t.Errorf("fmtFloat(1e21) = %q", got)
	}
}

func ExampleParse() {
	file := []byte(`
name: recall-small
task: {kind: assoc_recall, seq_len: 32}
model:
  d_model: 32
  attention: {kind: sliding_window, window: 8}
train:
  steps: 500
`)
	e, err := Parse("configs/recall.yaml", file)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, s := range []string{"train.lr=3e-4", "model.attention.window=16"} {
		if err := e.Set(s); err != nil {
			fmt.Println(err)
			return
		}
	}
	if err := e.Validate(); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(e.Name, e.Model.DModel, e.Model.NHeads, e.Train.Steps, e.Train.LR)
	fmt.Println(e.Model.Attention.Kind, e.Model.Attention.Options["window"])

	_, err = Parse("configs/recall.yaml", []byte("train:\n  steps: 10\n  lrr: 1\n"))
	fmt.Println(err)
	fmt.Println(e.Set("train=1"))
	// Output:
	// recall-small 32 4 500 0.0003
	// sliding_window 16
	// configs/recall.yaml: line 3: unknown key "lrr" in train (known: steps, batch_size, lr, min_lr_ratio, weight_decay, beta1, beta2, eps, warmup_steps, schedule, grad_clip, eval_every, eval_examples, eval_batch_size, checkpoint_every, log_every)
	// --set train=1: train is a section; set one of its keys, e.g. train.lr
}
