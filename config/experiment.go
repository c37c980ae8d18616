package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Experiment is one experiment file: what to train, on what, and how. Its
// YAML form mirrors the struct: top-level keys name, seed, dtype and the
// sections task, model and train. Task and Model.Attention are registry-chosen
// components written as {kind: NAME, option: value, ...}; their options are
// checked by their registries, not here.
type Experiment struct {
	Name  string `yaml:"name"`
	Seed  uint64 `yaml:"seed"`
	DType string `yaml:"dtype"` // float32 | float64
	// Device is where the model runs: cpu, or cuda (GPU 0, only in the
	// binary scripts/build-cuda.sh builds, and only for models whose every
	// op has a GPU path: package gpu).
	Device string `yaml:"device"`
	// TF32 runs the GPU's matrix products (cuBLAS) on TF32 tensor cores:
	// their inputs rounded to 10 mantissa bits, the sums kept in fp32.
	// Faster, less exact; device cuda only. Off by default, as PyTorch's.
	TF32  bool      `yaml:"tf32"`
	Task  Component `yaml:"task" registry:"task kind"` // {kind: assoc_recall, seq_len: 64, ...}: options are validated later by the task registry
	Model Model     `yaml:"model"`
	Train Train     `yaml:"train"`
}

// Model describes the Transformer.
type Model struct {
	Kind       string `yaml:"kind"` // decoder | encoder
	DModel     int    `yaml:"d_model"`
	NLayers    int    `yaml:"n_layers"`
	NHeads     int    `yaml:"n_heads"`
	DFF        int    `yaml:"d_ff"`
	Norm       string `yaml:"norm"`       // layernorm | rmsnorm
	Positional string `yaml:"positional"` // learned | sinusoidal | none | rope | partial_rope | alibi | xpos
	// RopeBase is RoPE's frequency base (rope, partial_rope, xpos).
	RopeBase float64 `yaml:"rope_base"`
	// RopeFraction is the fraction of each head's dims partial_rope rotates.
	RopeFraction float64 `yaml:"rope_fraction"`
	// XPosScaleBase is xPos's decay length scale.
	XPosScaleBase float64 `yaml:"xpos_scale_base"`
	Activation    string  `yaml:"activation"` // gelu | relu
	Pooling       string  `yaml:"pooling"`    // mean | cls (used by encoder models)
	// BlockModules are the block add-on modules every block applies to its
	// attention output, in order (layers/modules.go): [se, {kind: cbam,
	// kernel: 7}]; empty (the default) is none, the plain block.
	BlockModules Components `yaml:"block_modules" registry:"block module kind"`
	Attention    Component  `yaml:"attention" registry:"attention kind"` // {kind: standard, ...}: options validated later by the attention registry
	// Memory is segment recurrence (models/memory.go): {kind: rmt,
	// segment: 64, ...}; kind "" (or none) is no memory, the plain model.
	Memory Component `yaml:"memory" registry:"memory kind"`
	// SequenceParallel, above 1, computes each layer's full (flash)
	// attention core with that many workers over chunks of the sequence
	// (graph.SequenceParallelAttention, DISTFLASHATTN's balanced schedule):
	// the same function, with the work and memory of the core split. 0 or
	// 1 is off. It changes no parameter.
	SequenceParallel int `yaml:"sequence_parallel"`
}

// Train describes the optimisation (AdamW with a learning-rate schedule),
// evaluation, checkpointing and logging.
type Train struct {
	Steps           int     `yaml:"steps"`
	BatchSize       int     `yaml:"batch_size"`
	LR              float64 `yaml:"lr"`
	MinLRRatio      float64 `yaml:"min_lr_ratio"` // final lr = lr * min_lr_ratio for cosine/linear
	WeightDecay     float64 `yaml:"weight_decay"`
	Beta1           float64 `yaml:"beta1"`
	Beta2           float64 `yaml:"beta2"`
	Eps             float64 `yaml:"eps"`
	WarmupSteps     int     `yaml:"warmup_steps"`
	Schedule        string  `yaml:"schedule"`   // cosine | linear | constant
	GradClip        float64 `yaml:"grad_clip"`  // 0 = off
	EvalEvery       int     `yaml:"eval_every"` // 0 = only at the end
	EvalExamples    int     `yaml:"eval_examples"`
	EvalBatchSize   int     `yaml:"eval_batch_size"`  // 0 = batch_size
	CheckpointEvery int     `yaml:"checkpoint_every"` // 0 = only at the end (and on interrupt)
	LogEvery        int     `yaml:"log_every"`
}

// The allowed values of the enumerated string fields, in the order they are
// listed in errors.
var (
	dtypes      = []string{"float32", "float64"}
	devices     = []string{"cpu", "cuda"}
	modelKinds  = []string{"decoder", "encoder"}
	norms       = []string{"layernorm", "rmsnorm"}
	positionals = []string{"learned", "sinusoidal", "none", "rope", "partial_rope", "alibi", "xpos"}
	activations = []string{"gelu", "relu"}
	poolings    = []string{"mean", "cls"}
	schedules   = []string{"cosine", "linear", "constant"}
)

// maxNameLen bounds Experiment.Name so that it, plus whatever a runner adds
// to it, stays within file-system limits on a folder name.
const maxNameLen = 200

// Default returns the configuration a file starts from: every key a file
// leaves out keeps the value given here. Each call returns fresh maps.
func Default() Experiment {
	return Experiment{
		Name:   "experiment",
		Seed:   1,
		DType:  "float32",
		Device: "cpu",
		Task:   Component{Kind: "assoc_recall", Options: map[string]any{}},
		Model: Model{
			Kind:          "decoder",
			DModel:        64,
			NLayers:       2,
			NHeads:        4,
			DFF:           256,
			Norm:          "layernorm",
			Positional:    "learned",
			RopeBase:      10000,
			RopeFraction:  0.5,
			XPosScaleBase: 512,
			Activation:    "gelu",
			Pooling:       "mean",
			Attention:     Component{Kind: "standard", Options: map[string]any{}},
			Memory:        Component{Options: map[string]any{}},
		},
		Train: Train{
			Steps:           1000,
			BatchSize:       32,
			LR:              1e-3,
			MinLRRatio:      0.1,
			WeightDecay:     0.01,
			Beta1:           0.9,
			Beta2:           0.999,
			Eps:             1e-8,
			WarmupSteps:     100,
			Schedule:        "cosine",
			GradClip:        1.0,
			EvalEvery:       200,
			EvalExamples:    512,
			EvalBatchSize:   0,
			CheckpointEvery: 500,
			LogEvery:        10,
		},
	}
}

// Load reads and parses the experiment file at path (see Parse). It does not
// validate: apply --set overrides first, then call Validate.
func Load(path string) (Experiment, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Experiment{}, fmt.Errorf("config: %s", oneLine(err.Error()))
	}
	return Parse(path, data)
}

// Parse decodes YAML over Default(): keys absent from the file keep their
// defaults. It is strict: an unknown key, a duplicate key, a value of the wrong
// type, a second YAML document or an empty file is an error. name is the file
// name used in errors; every error is one line, naming the line and the key:
//
//	configs/x.yaml: line 7: unknown key "lrr" in train (known: steps, batch_size, lr, ...)
//	configs/x.yaml: line 3: yaml syntax: mapping values are not allowed in this context
//	configs/x.yaml: line 9: train.steps: want an integer, got "abc"
//	configs/x.yaml: empty file
//
// The options of task and model.attention may be any keys (their registries
// check them later), but their kind must be a string. Parse does not
// validate: call Validate once any --set overrides are applied.
func Parse(name string, data []byte) (Experiment, error) {
	d := &decoder{name: name}
	if err := checkText(data); err != nil {
		return Experiment{}, d.errorf(err.line, "%s", err.msg)
	}
	in := &byteReader{data: data}
	dec := yaml.NewDecoder(in)
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return Experiment{}, d.errorf(0, "empty file")
		}
		return Experiment{}, d.syntaxError(data, in.read, err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return Experiment{}, d.syntaxError(data, in.read, err)
	default:
		return Experiment{}, d.errorf(extra.Line, "a second YAML document (\"---\"): a file holds one experiment")
	}
	if len(doc.Content) == 0 || isNull(deref(doc.Content[0])) {
		return Experiment{}, d.errorf(0, "empty file")
	}
	e := Default()
	if err := d.section(doc.Content[0], reflect.ValueOf(&e).Elem(), ""); err != nil {
		return Experiment{}, err
	}
	return e, nil
}

// Set applies one --set override "KEY=VALUE", KEY being a dotted YAML path:
//
//	train.lr=1e-3  seed=7  model.attention.kind=flash  model.attention.window=16  task.seq_len=128  task.kind=copy
//
// VALUE is checked against the field's type (integer, number, string); a
// component option (any key under task or model.attention other than kind)
// is stored as a YAML scalar through Component.Set and checked later by its
// registry. A list of components (model.block_modules) is set whole, in
// YAML flow syntax: model.block_modules=[se,{kind: cbam, kernel: 5}]. Errors
// are one line starting with "--set KEY=VALUE: ".
//
// Setting a component's kind to another kind drops the options the new kind
// does not take (see SetNoted, which says which); Set is SetNoted without
// the note.
func (e *Experiment) Set(assignment string) error {
	_, err := e.SetNoted(assignment)
	return err
}

// SetNoted is Set, also returning a note for the user, or "" when there is
// nothing to say. The note says which options a change of a component's
// kind dropped:
//
//	task.kind=copy: dropped option kv_pairs (not options of copy)
//
// A component's options are checked by its kind's registry only later, so
// without this a file's options for the old kind would make the new kind
// fail ("unknown option"), with no way to remove them from the command line.
// Options the new kind also takes are kept. The registry of the component's
// family (its field's registry tag) says which options a kind takes: where
// it is not linked in, or does not know the new kind, every option is kept
// (and the unknown kind is reported when the component is resolved).
func (e *Experiment) SetNoted(assignment string) (note string, err error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("--set %s: %s", oneLine(assignment), oneLine(fmt.Sprintf(format, args...)))
	}
	if err := checkText([]byte(assignment)); err != nil { // what a file may not hold
		return "", fail("%s", err.msg)
	}
	key, value, ok := strings.Cut(assignment, "=")
	if !ok {
		return "", fail("want KEY=VALUE, e.g. train.lr=0.001")
	}
	key = strings.TrimSpace(key)
	if key == "" {
		return "", fail("no key before \"=\"")
	}
	parts := strings.Split(key, ".")
	v := reflect.ValueOf(e).Elem()
	path := ""
	for i, p := range parts {
		if p == "" {
			return "", fail("%q has an empty part", key)
		}
		f, ok := fieldByKey(v.Type(), p)
		if !ok {
			return "", fail("%s", unknownKey(p, path, v.Type()))
		}
		fp := join(path, p)
		fv := v.Field(f)
		rest := parts[i+1:]
		switch {
		case fv.Type() == componentType:
			c := fv.Addr().Interface().(*Component)
			if len(rest) == 0 {
				return "", fail("%s", sectionError(fp, fv.Type()))
			}
			if len(rest) > 1 {
				return "", fail("%s.%s is a single value, not a section", fp, rest[0])
			}
			if rest[0] == "" { // Parse refuses an empty option name too
				return "", fail("%q has an empty part", key)
			}
			if rest[0] == "kind" {
				kind := strings.TrimSpace(value)
				if kind == "" {
					return "", fail("%s.kind: want a name, got nothing", fp)
				}
				note := ""
				if kind != c.Kind {
					note = c.dropOptionsNotOf(kind, v.Type().Field(f).Tag.Get("registry"), fp)
				}
				c.Kind = kind
				return note, nil
			}
			if err := c.Set(rest[0], value); err != nil {
				return "", fail("%v", err)
			}
			return "", nil
		case fv.Type() == componentsType: // the whole list: model.block_modules=[se,{kind: cbam, kernel: 5}]
			if len(rest) > 0 {
				return "", fail("%s is a list; set it whole, e.g. %s=[se,cbam]", fp, fp)
			}
			if err := setComponents(value, fv.Addr().Interface().(*Components), fp); err != nil {
				return "", fail("%v", err)
			}
			return "", nil
		case fv.Kind() == reflect.Struct:
			if len(rest) == 0 {
				return "", fail("%s", sectionError(fp, fv.Type()))
			}
			v, path = fv, fp
		default:
			if len(rest) > 0 {
				return "", fail("%s is a single value, not a section", fp)
			}
			if fv.Kind() == reflect.String {
				fv.SetString(value)
				return "", nil
			}
			var raw any
			if err := yaml.Unmarshal([]byte(value), &raw); err != nil {
				raw = value // not YAML: report it as the text it is
			}
			if err := assign(fv, raw); err != nil {
				return "", fail("%v", err)
			}
			return "", nil
		}
	}
	return "", fail("%s", sectionError(path, v.Type())) // not reached: the loop returns
}

// Validate checks everything this package can check: the registry-chosen
// kinds must be named but are not looked up, and their options are not
// checked. The error lists every problem found, on one line separated by
// "; ", each naming the key and its value, e.g.
//
//	model.d_model (100) is not divisible by model.n_heads (3); train.lr: must be positive, got -0.001
func (e *Experiment) Validate() error {
	var probs []string
	add := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	oneOf := func(key, val string, allowed []string) {
		for _, a := range allowed {
			if val == a {
				return
			}
		}
		add("%s: want %s, got %q", key, orList(allowed), val)
	}
	positive := func(key string, n int) {
		if n <= 0 {
			add("%s: must be positive, got %d", key, n)
		}
	}
	nonNegative := func(key string, n int) {
		if n < 0 {
			add("%s: must not be negative, got %d", key, n)
		}
	}
	// finite reports whether x is a finite number, recording a problem if not.
	finite := func(key string, x float64) bool {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			add("%s: must be a finite number, got %s", key, fmtFloat(x))
			return false
		}
		return true
	}

	switch {
	case e.Name == "":
		add("name: must not be empty")
	case !validName(e.Name):
		add("name (%q): must be usable as a folder name: letters, digits, '-', '_' and '.' only, not \".\" or \"..\", at most %d characters", e.Name, maxNameLen)
	}
	oneOf("dtype", e.DType, dtypes)
	oneOf("device", e.Device, devices)
	if e.TF32 && e.Device != "cuda" {
		add("tf32: TF32 products are a GPU option (device cuda), and device is %q", e.Device)
	}
	if e.Task.Kind == "" {
		add("task.kind: must not be empty")
	}

	m := &e.Model
	oneOf("model.kind", m.Kind, modelKinds)
	positive("model.d_model", m.DModel)
	positive("model.n_layers", m.NLayers)
	positive("model.n_heads", m.NHeads)
	positive("model.d_ff", m.DFF)
	if m.DModel > 0 && m.NHeads > 0 && m.DModel%m.NHeads != 0 {
		add("model.d_model (%d) is not divisible by model.n_heads (%d)", m.DModel, m.NHeads)
	}
	oneOf("model.norm", m.Norm, norms)
	oneOf("model.positional", m.Positional, positionals)
	if finite("model.rope_base", m.RopeBase) && m.RopeBase <= 1 {
		add("model.rope_base: must be greater than 1, got %s", fmtFloat(m.RopeBase))
	}
	if m.SequenceParallel < 0 {
		add("model.sequence_parallel: must not be negative, got %d", m.SequenceParallel)
	}
	if m.SequenceParallel > 1 && m.Memory.Kind != "" && m.Memory.Kind != "none" {
		add("model.sequence_parallel: not with model.memory (%s attends one segment at a time)", m.Memory.Kind)
	}
	if finite("model.rope_fraction", m.RopeFraction) && (m.RopeFraction <= 0 || m.RopeFraction > 1) {
		add("model.rope_fraction: must be in (0, 1], got %s", fmtFloat(m.RopeFraction))
	}
	if finite("model.xpos_scale_base", m.XPosScaleBase) && m.XPosScaleBase <= 0 {
		add("model.xpos_scale_base: must be positive, got %s", fmtFloat(m.XPosScaleBase))
	}
	oneOf("model.activation", m.Activation, activations)
	oneOf("model.pooling", m.Pooling, poolings)
	if m.Attention.Kind == "" {
		add("model.attention.kind: must not be empty")
	}

	t := &e.Train
	positive("train.steps", t.Steps)
	positive("train.batch_size", t.BatchSize)
	if finite("train.lr", t.LR) && t.LR <= 0 {
		add("train.lr: must be positive, got %s", fmtFloat(t.LR))
	}
	if finite("train.min_lr_ratio", t.MinLRRatio) && (t.MinLRRatio < 0 || t.MinLRRatio > 1) {
		add("train.min_lr_ratio: must be in [0, 1], got %s", fmtFloat(t.MinLRRatio))
	}
	if finite("train.weight_decay", t.WeightDecay) && t.WeightDecay < 0 {
		add("train.weight_decay: must not be negative, got %s", fmtFloat(t.WeightDecay))
	}
	if finite("train.beta1", t.Beta1) && (t.Beta1 < 0 || t.Beta1 >= 1) {
		add("train.beta1: must be in [0, 1), got %s", fmtFloat(t.Beta1))
	}
	if finite("train.beta2", t.Beta2) && (t.Beta2 < 0 || t.Beta2 >= 1) {
		add("train.beta2: must be in [0, 1), got %s", fmtFloat(t.Beta2))
	}
	if finite("train.eps", t.Eps) && t.Eps <= 0 {
		add("train.eps: must be positive, got %s", fmtFloat(t.Eps))
	}
	// A warm-up longer than the run is allowed (a short smoke run of a
	// long config): the trainer caps it at train.steps and says so.
	if t.WarmupSteps < 0 {
		add("train.warmup_steps: must not be negative, got %d", t.WarmupSteps)
	}
	oneOf("train.schedule", t.Schedule, schedules)
	if finite("train.grad_clip", t.GradClip) && t.GradClip < 0 {
		add("train.grad_clip: must not be negative (0 = off), got %s", fmtFloat(t.GradClip))
	}
	nonNegative("train.eval_every", t.EvalEvery)
	positive("train.eval_examples", t.EvalExamples)
	nonNegative("train.eval_batch_size", t.EvalBatchSize)
	nonNegative("train.checkpoint_every", t.CheckpointEvery)
	positive("train.log_every", t.LogEvery)

	if len(probs) == 0 {
		return nil
	}
	for i := range probs {
		probs[i] = oneLine(probs[i])
	}
	return errors.New(strings.Join(probs, "; "))
}

// Marshal writes the fully resolved configuration as YAML: every field, in
// struct order, components as flow mappings {kind: ..., options in name
// order}, so that a run's config.yaml reproduces the run. Parse(Marshal(e))
// gives back e (component options keep their YAML types: a float option stays
// a float, written with a decimal point).
func (e *Experiment) Marshal() ([]byte, error) {
	n, err := encodeStruct(reflect.ValueOf(e).Elem())
	if err != nil {
		return nil, fmt.Errorf("config: marshal: %v", err)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("config: marshal: %v", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("config: marshal: %v", err)
	}
	return buf.Bytes(), nil
}

// ---- decoding ----

var componentType = reflect.TypeOf(Component{})

type decoder struct{ name string }

// errorf formats a one-line error "NAME: line N: MSG" (no line part when
// line is 0).
func (d *decoder) errorf(line int, format string, args ...any) error {
	msg := oneLine(fmt.Sprintf(format, args...))
	if line > 0 {
		return fmt.Errorf("%s: line %d: %s", d.name, line, msg)
	}
	return fmt.Errorf("%s: %s", d.name, msg)
}

// syntaxError rewrites a yaml.v3 parse error as "NAME: line N: yaml syntax: MSG".
// yaml.v3 leaves the line out for problems on the first line and, for parser
// (as opposed to scanner) errors, reports the line before the one where the
// enclosing structure started rather than where the problem is; so the line
// is found by firstFailingLine, from read, the number of bytes the parser
// had read when it failed, falling back to the line yaml.v3 gave.
func (d *decoder) syntaxError(data []byte, read int, err error) error {
	line, msg := splitYAMLError(err)
	if l := firstFailingLine(data, read, msg); l > 0 {
		line = l
	}
	return d.errorf(line, "yaml syntax: %s", msg)
}

// splitYAMLError splits "yaml: line N: MSG" into N (0 if absent) and MSG.
func splitYAMLError(err error) (int, string) {
	s := oneLine(strings.TrimPrefix(err.Error(), "yaml: "))
	if rest, ok := strings.CutPrefix(s, "line "); ok {
		if num, msg, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil {
				return n, msg
			}
		}
	}
	return 0, s
}

// byteReader hands data to the YAML parser one byte per Read, counting
// them, so that read says how far the parser had got when it failed: it
// reads only the few bytes of lookahead it needs.
type byteReader struct {
	data []byte
	read int
}

func (r *byteReader) Read(p []byte) (int, error) {
	if r.read == len(r.data) {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.data[r.read]
	r.read++
	return 1, nil
}

// maxPrefixParses bounds the prefixes of a file firstFailingLine parses:
// each costs up to a parse of the whole file, so the search stays linear in
// its size (the old search parsed every prefix: minutes for a 4 MB file).
const maxPrefixParses = 20

// firstFailingLine returns the number of lines of the shortest prefix of data
// whose YAML fails to parse with message msg. The parser failed after
// reading read bytes, and it fails the same way on any prefix holding them,
// so the line holding the last byte read is an upper bound; the search
// walks up from there in doubling steps while a shorter prefix still fails
// with msg (usually the problem is on that line or the one above, and the
// first step ends it), then bisects, within maxPrefixParses parses. It
// returns 0 if it cannot tell.
func firstFailingLine(data []byte, read int, msg string) int {
	// ends[i] is the offset just past line i+1.
	var ends []int
	for i, c := range data {
		if c == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(ends) == 0 || ends[len(ends)-1] != len(data) {
		ends = append(ends, len(data))
	}
	parses := 0
	fails := func(lines int) bool {
		parses++
		dec := yaml.NewDecoder(bytes.NewReader(data[:ends[lines-1]]))
		for {
			var n yaml.Node
			err := dec.Decode(&n)
			if err == nil {
				continue
			}
			if errors.Is(err, io.EOF) {
				return false
			}
			_, m := splitYAMLError(err)
			return m == msg
		}
	}
	read = min(max(read, 1), len(data))
	hi := sort.SearchInts(ends, read) + 1 // fails: the line holding byte read-1
	if hi > len(ends) {
		return 0 // not expected: read is at most len(data)
	}
	lo := 0 // a prefix that does not fail; 0 lines never does
	for step := 1; parses < maxPrefixParses; step *= 2 {
		l := hi - step
		if l <= lo {
			break
		}
		if !fails(l) {
			lo = l
			break
		}
		hi = l
	}
	for hi-lo > 1 && parses < maxPrefixParses {
		mid := lo + (hi-lo)/2
		if fails(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

type textError struct {
	line int
	msg  string
}

// checkText rejects what yaml.v3's reader rejects without saying where:
// invalid UTF-8 and characters YAML does not allow in a stream.
func checkText(data []byte) *textError {
	line := 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size <= 1 {
			return &textError{line, "not valid UTF-8 text"}
		}
		switch {
		case r == '\n':
			line++
		case r == '\t', r == '\r', r >= 0x20 && r <= 0x7E, r == 0x85,
			r >= 0xA0 && r <= 0xD7FF, r >= 0xE000 && r <= 0xFFFD, r >= 0x10000 && r <= 0x10FFFF:
		default:
			return &textError{line, fmt.Sprintf("control character %U is not allowed", r)}
		}
		i += size
	}
	return nil
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// section decodes mapping n into the struct v, whose YAML path is path ("" at
// the top level). A null section (a key with nothing after it) keeps its
// defaults.
func (d *decoder) section(n *yaml.Node, v reflect.Value, path string) error {
	n = deref(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		if path == "" {
			return d.errorf(n.Line, "want a mapping of keys (%s), got %s", knownKeys(v.Type()), nodeDesc(n))
		}
		return d.errorf(n.Line, "%s: want a mapping of keys (%s), got %s", path, knownKeys(v.Type()), nodeDesc(n))
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key, err := d.key(k, path, seen)
		if err != nil {
			return err
		}
		f, ok := fieldByKey(v.Type(), key)
		if !ok {
			return d.errorf(k.Line, "%s", unknownKey(key, path, v.Type()))
		}
		fp := join(path, key)
		fv := v.Field(f)
		switch {
		case fv.Type() == componentType:
			err = d.component(val, fv.Addr().Interface().(*Component), fp)
		case fv.Type() == componentsType:
			err = d.components(val, fv.Addr().Interface().(*Components), fp)
		case fv.Kind() == reflect.Struct:
			err = d.section(val, fv, fp)
		default:
			err = d.scalar(val, fv, fp)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// key checks one mapping key of the section at path: a plain scalar, not a
// merge key, not seen before.
func (d *decoder) key(k *yaml.Node, path string, seen map[string]int) (string, error) {
	where := ""
	if path != "" {
		where = " in " + path
	}
	if k.Kind != yaml.ScalarNode {
		return "", d.errorf(k.Line, "want a plain key%s, got %s", where, nodeDesc(k))
	}
	if k.ShortTag() == "!!merge" {
		return "", d.errorf(k.Line, "merge keys (<<)%s are not supported", where)
	}
	if first, dup := seen[k.Value]; dup {
		return "", d.errorf(k.Line, "duplicate key %q%s (first at line %d)", k.Value, where, first)
	}
	seen[k.Value] = k.Line
	return k.Value, nil
}

// scalar decodes n into the string, integer or number field v.
func (d *decoder) scalar(n *yaml.Node, v reflect.Value, path string) error {
	n = deref(n)
	if n.Kind != yaml.ScalarNode {
		return d.errorf(n.Line, "%s: want %s, got %s", path, fieldKindDesc(v), nodeDesc(n))
	}
	if v.Kind() == reflect.String {
		if isNull(n) {
			return d.errorf(n.Line, "%s: want a string, got nothing", path)
		}
		v.SetString(n.Value)
		return nil
	}
	var raw any
	if err := n.Decode(&raw); err != nil {
		return d.errorf(n.Line, "%s: %s", path, cleanYAMLError(err))
	}
	if err := assign(v, raw); err != nil {
		return d.errorf(n.Line, "%s: %v", path, err)
	}
	return nil
}

// component decodes n into c. Option keys are free; kind must be a string.
// A null component keeps its default.
func (d *decoder) component(n *yaml.Node, c *Component, path string) error {
	n = deref(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return d.errorf(n.Line, "%s: want a mapping like {kind: NAME, ...}, got %s", path, nodeDesc(n))
	}
	// Component.UnmarshalYAML wants kind as a scalar node; m is n with an
	// aliased kind resolved.
	m := *n
	m.Content = append([]*yaml.Node(nil), n.Content...)
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key, err := d.key(k, path, seen)
		if err != nil {
			return err
		}
		if key == "" {
			return d.errorf(k.Line, "%s: empty option name", path)
		}
		if key == "kind" {
			val = deref(val)
			if val.Kind != yaml.ScalarNode || val.ShortTag() != "!!str" {
				return d.errorf(val.Line, "%s.kind: want a name, got %s", path, nodeDesc(val))
			}
			m.Content[i+1] = val
			continue
		}
		var raw any
		if err := val.Decode(&raw); err != nil {
			return d.errorf(val.Line, "%s.%s: %s", path, key, cleanYAMLError(err))
		}
	}
	if err := c.UnmarshalYAML(&m); err != nil { // not expected after the checks above
		return d.errorf(0, "%s: %s", path, err.Error())
	}
	return nil
}

// assign stores a value decoded from YAML in the integer, number or boolean field v
// (string fields take the text as written and do not come here).
func assign(v reflect.Value, raw any) error {
	switch v.Kind() {
	case reflect.Int:
		x, err := convert(raw, Int)
		if err != nil {
			return err
		}
		v.SetInt(int64(x.(int)))
	case reflect.Uint64:
		x, ok := toUint64(raw)
		if !ok {
			return fmt.Errorf("want a non-negative integer, got %s", describe(raw))
		}
		v.SetUint(x)
	case reflect.Float64:
		x, err := convert(raw, Float)
		if err != nil {
			return err
		}
		v.SetFloat(x.(float64))
	case reflect.Bool:
		x, err := convert(raw, Bool)
		if err != nil {
			return err
		}
		v.SetBool(x.(bool))
	default:
		return fmt.Errorf("unsupported field type %s", v.Type()) // a programming error
	}
	return nil
}

func toUint64(raw any) (uint64, bool) {
	switch x := raw.(type) {
	case int:
		return uint64(x), x >= 0
	case int64:
		return uint64(x), x >= 0
	case uint64:
		return x, true
	case float64:
		if x >= 0 && x == math.Trunc(x) && x < 1<<53 {
			return uint64(x), true
		}
	}
	return 0, false
}

// ---- reflection over yaml tags ----

// fieldByKey returns the index of the field of struct type t whose yaml key is key.
func fieldByKey(t reflect.Type, key string) (int, bool) {
	for i := 0; i < t.NumField(); i++ {
		if yamlKey(t.Field(i)) == key {
			return i, true
		}
	}
	return 0, false
}

func yamlKey(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// keys returns the yaml keys of struct type t in field order.
func keys(t reflect.Type) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		if k := yamlKey(t.Field(i)); k != "" {
			out = append(out, k)
		}
	}
	return out
}

func knownKeys(t reflect.Type) string { return strings.Join(keys(t), ", ") }

func unknownKey(key, path string, t reflect.Type) string {
	if path == "" {
		return fmt.Sprintf("unknown key %q at top level (known: %s)", key, knownKeys(t))
	}
	return fmt.Sprintf("unknown key %q in %s (known: %s)", key, path, knownKeys(t))
}

// exampleKeys picks, per section, the key suggested when a whole section is
// assigned; a section not listed suggests its first key.
var exampleKeys = map[string]string{"model": "d_model", "train": "lr"}

func sectionError(path string, t reflect.Type) string {
	ex := "kind"
	if t != componentType {
		if k, ok := exampleKeys[path]; ok {
			ex = k
		} else if ks := keys(t); len(ks) > 0 {
			ex = ks[0]
		}
	}
	return fmt.Sprintf("%s is a section; set one of its keys, e.g. %s.%s", path, path, ex)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func fieldKindDesc(v reflect.Value) string {
	switch v.Kind() {
	case reflect.Int:
		return "an integer"
	case reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	default:
		return "a string"
	}
}

func nodeDesc(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "nothing"
		}
		if n.ShortTag() == "!!str" {
			return strconv.Quote(n.Value)
		}
		return n.Value
	default:
		return "an alias"
	}
}

// ---- encoding ----

func encodeStruct(v reflect.Value) (*yaml.Node, error) {
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		key := yamlKey(t.Field(i))
		if key == "" {
			continue
		}
		fv := v.Field(i)
		var (
			vn  *yaml.Node
			err error
		)
		switch {
		case fv.Type() == componentType:
			vn, err = encodeComponent(fv.Interface().(Component))
		case fv.Type() == componentsType:
			vn, err = encodeComponents(fv.Interface().(Components))
		case fv.Kind() == reflect.Struct:
			vn, err = encodeStruct(fv)
		default:
			vn, err = encodeAny(fv.Interface())
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %v", key, err)
		}
		n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, vn)
	}
	return n, nil
}

// encodeComponent writes {kind: ..., options in name order} like
// Component.MarshalYAML, but with floats that read back as floats.
func encodeComponent(c Component) (*yaml.Node, error) {
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Style: yaml.FlowStyle}
	kind, err := encodeAny(c.Kind)
	if err != nil {
		return nil, err
	}
	n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "kind"}, kind)
	for _, k := range sortedKeys(c.Options) {
		vn, err := encodeAny(c.Options[k])
		if err != nil {
			return nil, fmt.Errorf("%s: %v", k, err)
		}
		kn, err := encodeAny(k)
		if err != nil {
			return nil, err
		}
		n.Content = append(n.Content, kn, vn)
	}
	return n, nil
}

// encodeAny encodes a value, writing floats so that they decode as floats
// again (1.0, not 1) and recursing into lists and mappings to do so.
func encodeAny(v any) (*yaml.Node, error) {
	switch x := v.(type) {
	case float64:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!float", Value: fmtFloat(x)}, nil
	case float32:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!float", Value: fmtFloat(float64(x))}, nil
	case string:
		if strings.ContainsAny(x, "\n\r") {
			// yaml.v3 writes (and Node.Encode reads) these as block
			// scalars, which lose a leading line break: double-quoted,
			// every character reads back.
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: x, Style: yaml.DoubleQuotedStyle}, nil
		}
	case []any:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for i, e := range x {
			en, err := encodeAny(e)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %v", i, err)
			}
			n.Content = append(n.Content, en)
		}
		return n, nil
	case map[string]any:
		n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		for _, k := range sortedKeys(x) {
			en, err := encodeAny(x[k])
			if err != nil {
				return nil, fmt.Errorf("%s: %v", k, err)
			}
			kn, err := encodeAny(k)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, kn, en)
		}
		return n, nil
	}
	n := &yaml.Node{}
	if err := n.Encode(v); err != nil {
		return nil, err
	}
	return n, nil
}

func sortedKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// fmtFloat writes x the shortest way that reads back exactly, always as a
// YAML float: 1.0 rather than 1, 1.0e-08 rather than 1e-08.
func fmtFloat(x float64) string {
	switch {
	case math.IsNaN(x):
		return ".nan"
	case math.IsInf(x, 1):
		return ".inf"
	case math.IsInf(x, -1):
		return "-.inf"
	}
	s := strconv.FormatFloat(x, 'g', -1, 64)
	mant, exp, hasExp := strings.Cut(s, "e")
	if !strings.Contains(mant, ".") {
		mant += ".0"
	}
	if hasExp {
		return mant + "e" + exp
	}
	return mant
}

// ---- small helpers ----

func validName(s string) bool {
	if s == "." || s == ".." || len(s) > maxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func orList(xs []string) string {
	switch len(xs) {
	case 0:
		return "nothing"
	case 1:
		return xs[0]
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " or " + xs[len(xs)-1]
}

// cleanYAMLError turns a yaml.v3 decode error, possibly several lines
// ("yaml: unmarshal errors:\n  line 3: ..."), into one line without the
// "yaml: " prefix or line numbers the caller already reports.
func cleanYAMLError(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	s = strings.TrimPrefix(s, "unmarshal errors:\n")
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if rest, ok := strings.CutPrefix(l, "line "); ok {
			if _, msg, ok := strings.Cut(rest, ": "); ok {
				l = msg
			}
		}
		if l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}

// oneLine replaces line breaks so that an error prints on one line.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	var parts []string
	for _, l := range strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }) {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}
