package sweep

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/attnlab/attnlab/config"
)

// Sweep is a parsed sweep file:
//
//	name: mqar-mini
//	base: ../quickstart.yaml   # a file (relative to this one), an embedded config, or an inline mapping
//	set: [train.steps=300]     # fixed overrides of every run: a list of KEY=VALUE or a mapping
//	grid:                      # dotted config keys -> lists of values
//	  model.attention.kind: [standard, flash, gqa]
//	  task.seq_len: [64, 128]
//	seeds: [1, 2]
//
// A grid value is a scalar, assigned like --set KEY=VALUE; under a component
// key (task, model.attention, model.memory) it may also be a mapping such as
// {kind: gqa, kv_heads: 1}, which replaces the whole component.
type Sweep struct {
	Name   string
	Source string            // the sweep file, as named in errors
	Base   config.Experiment // the base experiment, before any override
	// BaseFrom says where the base came from: a path, "embedded NAME" or
	// "inline".
	BaseFrom string
	Set      []Assignment // fixed overrides, applied in order before the grid values
	Grid     []Axis       // the grid keys, sorted
	Seeds    []uint64
}

// Axis is one grid key and its values, in the order written.
type Axis struct {
	Key    string
	Values []Value
	line   int
}

// Assignment is one fixed override of the set: section.
type Assignment struct {
	Key   string
	Value Value
	line  int
}

// Value is one value a key takes.
type Value struct {
	// Label is the value as written ("flash", "64", "3.0e-3"); for a
	// component mapping it is the kind followed by "+option=value" in option
	// order ("gqa+kv_heads=1"). Run names and tables show it.
	Label     string
	scalar    string            // the text given to Experiment.Set
	kind      string            // a component mapping: its kind ...
	options   map[string]string // ... and its options as YAML scalar text
	component bool
	line      int
}

// componentKeys are the config keys whose value is a component
// {kind: ..., options...}; a grid value there may be a mapping.
var componentKeys = map[string]func(*config.Experiment) *config.Component{
	"task":            func(e *config.Experiment) *config.Component { return &e.Task },
	"model.attention": func(e *config.Experiment) *config.Component { return &e.Model.Attention },
	"model.memory":    func(e *config.Experiment) *config.Component { return &e.Model.Memory },
}

// topKeys are the keys of a sweep file, in the order errors list them.
var topKeys = []string{"name", "base", "set", "grid", "seeds"}

// Load reads the sweep file at name. name is a path on disk; when no such
// file exists and embedded is not nil, it is looked up in embedded (the
// configs shipped in the binary). A base given as a path is looked up
// relative to the sweep file, then in embedded.
func Load(name string, embedded fs.FS) (*Sweep, error) {
	data, err := os.ReadFile(name)
	if err == nil {
		return Parse(name, data, diskBase{dir: filepath.Dir(name), embedded: embedded})
	}
	if errors.Is(err, fs.ErrNotExist) && embedded != nil && fs.ValidPath(path.Clean(name)) {
		if data, eerr := fs.ReadFile(embedded, path.Clean(name)); eerr == nil {
			n := path.Clean(name)
			return Parse(n+" (embedded)", data, embeddedBase{dir: path.Dir(n), fsys: embedded})
		}
	}
	return nil, fmt.Errorf("sweep: %s", strings.TrimPrefix(err.Error(), "open "))
}

// BaseResolver reads the experiment file a sweep's base names.
type BaseResolver interface {
	// ReadBase returns the file's text, a name for errors and a description
	// of where it was found.
	ReadBase(ref string) (data []byte, name, from string, err error)
}

// diskBase resolves a base path relative to the sweep file's folder, then
// in the embedded configs.
type diskBase struct {
	dir      string
	embedded fs.FS
}

func (d diskBase) ReadBase(ref string) ([]byte, string, string, error) {
	p := ref
	if !filepath.IsAbs(p) {
		p = filepath.Join(d.dir, ref)
	}
	data, err := os.ReadFile(p)
	if err == nil {
		return data, p, p, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, "", "", err
	}
	if d.embedded != nil && fs.ValidPath(path.Clean(ref)) {
		if data, eerr := fs.ReadFile(d.embedded, path.Clean(ref)); eerr == nil {
			return data, path.Clean(ref) + " (embedded)", "embedded " + path.Clean(ref), nil
		}
	}
	where := "no such file " + p
	if d.embedded != nil {
		where += " and no embedded config of that name (" + strings.Join(embeddedNames(d.embedded), ", ") + ")"
	}
	return nil, "", "", errors.New(where)
}

// embeddedBase resolves a base path relative to an embedded sweep file,
// then from the root of the embedded configs.
type embeddedBase struct {
	dir  string
	fsys fs.FS
}

func (e embeddedBase) ReadBase(ref string) ([]byte, string, string, error) {
	for _, p := range []string{path.Join(e.dir, ref), path.Clean(ref)} {
		if !fs.ValidPath(p) {
			continue
		}
		if data, err := fs.ReadFile(e.fsys, p); err == nil {
			return data, p + " (embedded)", "embedded " + p, nil
		}
	}
	return nil, "", "", fmt.Errorf("no embedded config %s (%s)", ref, strings.Join(embeddedNames(e.fsys), ", "))
}

func embeddedNames(fsys fs.FS) []string {
	var names []string
	fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".yaml") {
			names = append(names, p)
		}
		return nil
	})
	return names
}

// specError is an error in the sweep file: "FILE: line N: KEY: message".
func specError(file string, line int, format string, args ...any) error {
	msg := oneLine(fmt.Sprintf(format, args...))
	if line > 0 {
		return fmt.Errorf("%s: line %d: %s", file, line, msg)
	}
	return fmt.Errorf("%s: %s", file, msg)
}

// Parse decodes a sweep file. name is used in errors; bases resolves a base
// given as a path. Every error is one line naming the file, the line and
// the key. The grid values are checked against the config schema here (an
// unknown key or a value of the wrong type); whether every run's whole
// config is valid is Expand's job.
func Parse(name string, data []byte, bases BaseResolver) (*Sweep, error) {
	fail := func(line int, format string, args ...any) error { return specError(name, line, format, args...) }
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fail(0, "empty file")
		}
		return nil, fail(0, "yaml syntax: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, fail(0, "yaml syntax: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		return nil, fail(extra.Line, "a second YAML document (\"---\"): a file holds one sweep")
	}
	if len(doc.Content) == 0 {
		return nil, fail(0, "empty file")
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fail(root.Line, "want a mapping of keys (%s), got %s", strings.Join(topKeys, ", "), describe(root))
	}
	s := &Sweep{Source: name}
	nodes := map[string]*yaml.Node{}
	keyLines := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, fail(k.Line, "want a plain key, got %s", describe(k))
		}
		if !contains(topKeys, k.Value) {
			return nil, fail(k.Line, "unknown key %q in sweep (known: %s)", k.Value, strings.Join(topKeys, ", "))
		}
		if l, dup := keyLines[k.Value]; dup {
			return nil, fail(k.Line, "duplicate key %q (first at line %d)", k.Value, l)
		}
		keyLines[k.Value] = k.Line
		nodes[k.Value] = v
	}

	// base
	bn, ok := nodes["base"]
	if !ok || isNull(bn) {
		return nil, fail(keyLines["base"], "base: missing; name the experiment every run starts from (a file, or an inline mapping)")
	}
	var err error
	switch {
	case bn.Kind == yaml.ScalarNode && bn.ShortTag() == "!!str":
		if bases == nil {
			return nil, fail(bn.Line, "base: %s: no way to read files here", bn.Value)
		}
		text, bname, from, rerr := bases.ReadBase(bn.Value)
		if rerr != nil {
			return nil, fail(bn.Line, "base: %s: %s", bn.Value, rerr.Error())
		}
		if s.Base, err = config.Parse(bname, text); err != nil {
			return nil, fmt.Errorf("%s: line %d: base: %w", name, bn.Line, err)
		}
		s.BaseFrom = from
	case bn.Kind == yaml.MappingNode:
		if s.Base, err = parseInlineBase(name, data, root, bn); err != nil {
			return nil, err
		}
		s.BaseFrom = "inline"
	default:
		return nil, fail(bn.Line, "base: want a file name or a mapping (an experiment), got %s", describe(bn))
	}

	// name
	s.Name = strings.TrimSuffix(strings.TrimSuffix(filepath.Base(strings.TrimSuffix(name, " (embedded)")), ".yaml"), ".yml")
	if n, ok := nodes["name"]; ok {
		if n.Kind != yaml.ScalarNode || isNull(n) {
			return nil, fail(n.Line, "name: want a name, got %s", describe(n))
		}
		s.Name = n.Value
	}
	if !validName(s.Name) {
		return nil, fail(keyLines["name"], "name (%q): must be usable as a folder name: letters, digits, '-', '_' and '.' only, not \".\" or \"..\", at most %d characters", s.Name, maxSweepName)
	}

	// set
	if n, ok := nodes["set"]; ok && !isNull(n) {
		switch n.Kind {
		case yaml.SequenceNode:
			for _, item := range n.Content {
				if item.Kind != yaml.ScalarNode || isNull(item) {
					return nil, fail(item.Line, "set: want KEY=VALUE items, got %s", describe(item))
				}
				key, val, ok := strings.Cut(item.Value, "=")
				key = strings.TrimSpace(key)
				if !ok || key == "" {
					return nil, fail(item.Line, "set: want KEY=VALUE, e.g. train.steps=300, got %q", item.Value)
				}
				s.Set = append(s.Set, Assignment{Key: key, Value: Value{Label: val, scalar: val, line: item.Line}, line: item.Line})
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				if k.Kind != yaml.ScalarNode || k.Value == "" {
					return nil, fail(k.Line, "set: want a dotted config key, got %s", describe(k))
				}
				val, err := parseValue(name, "set."+k.Value, k.Value, v)
				if err != nil {
					return nil, err
				}
				s.Set = append(s.Set, Assignment{Key: k.Value, Value: val, line: k.Line})
			}
		default:
			return nil, fail(n.Line, "set: want a list of KEY=VALUE or a mapping KEY: VALUE, got %s", describe(n))
		}
	}

	// grid
	if n, ok := nodes["grid"]; ok && !isNull(n) {
		if n.Kind != yaml.MappingNode {
			return nil, fail(n.Line, "grid: want a mapping of dotted config keys to lists of values, got %s", describe(n))
		}
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || k.Value == "" {
				return nil, fail(k.Line, "grid: want a dotted config key, got %s", describe(k))
			}
			key := k.Value
			where := "grid." + key
			if l, dup := seen[key]; dup {
				return nil, fail(k.Line, "%s: duplicate key (first at line %d)", where, l)
			}
			seen[key] = k.Line
			switch key {
			case "seed":
				return nil, fail(k.Line, "%s: list the seeds under seeds:, not in the grid", where)
			case "name":
				return nil, fail(k.Line, "%s: every run of a sweep takes the sweep's name; runs are told apart by their folders", where)
			}
			if v.Kind != yaml.SequenceNode {
				return nil, fail(v.Line, "%s: want a list of values, e.g. [a, b], got %s", where, describe(v))
			}
			if len(v.Content) == 0 {
				return nil, fail(v.Line, "%s: empty list; give at least one value", where)
			}
			ax := Axis{Key: key, line: k.Line}
			labels := map[string]int{}
			for _, item := range v.Content {
				val, err := parseValue(name, where, key, item)
				if err != nil {
					return nil, err
				}
				if l, dup := labels[val.Label]; dup {
					return nil, fail(item.Line, "%s: value %q listed twice (first at line %d)", where, val.Label, l)
				}
				labels[val.Label] = item.Line
				ax.Values = append(ax.Values, val)
			}
			s.Grid = append(s.Grid, ax)
		}
		sort.Slice(s.Grid, func(i, j int) bool { return s.Grid[i].Key < s.Grid[j].Key })
	}

	// seeds
	if n, ok := nodes["seeds"]; ok {
		if n.Kind != yaml.SequenceNode {
			return nil, fail(n.Line, "seeds: want a list of seeds, e.g. [1, 2, 3], got %s", describe(n))
		}
		if len(n.Content) == 0 {
			return nil, fail(n.Line, "seeds: empty list; give at least one seed (or leave seeds out to use the base's)")
		}
		seen := map[uint64]int{}
		for _, item := range n.Content {
			x, err := strconv.ParseUint(item.Value, 10, 64)
			if item.Kind != yaml.ScalarNode || item.ShortTag() != "!!int" || err != nil {
				return nil, fail(item.Line, "seeds: want non-negative integers, got %s", describe(item))
			}
			if l, dup := seen[x]; dup {
				return nil, fail(item.Line, "seeds: seed %d listed twice (first at line %d)", x, l)
			}
			seen[x] = item.Line
			s.Seeds = append(s.Seeds, x)
		}
	} else {
		s.Seeds = []uint64{s.Base.Seed}
	}

	// A fixed override that a grid value would replace is an error, not a
	// silent no-op: the grid values are applied after set:, the seeds last.
	for _, a := range s.Set {
		if a.Key == "seed" {
			return nil, fail(a.line, "set.seed: the seeds come from the sweep's seeds: list, which is applied last; list the seed there")
		}
		if ax, ok := s.gridConflict(a.Key); ok {
			return nil, fail(a.line, "set.%s: %s", a.Key, s.conflictText(a.Key, ax, "set:"))
		}
	}

	// Check every key and value against the schema now, so that a typo is
	// reported at its line before any run is expanded.
	for _, a := range s.Set {
		e := cloneExp(s.Base)
		if err := a.Value.apply(&e, a.Key); err != nil {
			return nil, fail(a.line, "set.%s: %s", a.Key, err.Error())
		}
	}
	for _, ax := range s.Grid {
		for _, v := range ax.Values {
			e := cloneExp(s.Base)
			if err := v.apply(&e, ax.Key); err != nil {
				return nil, fail(v.line, "grid.%s: %s", ax.Key, err.Error())
			}
		}
	}
	return s, nil
}

// AddSet appends a fixed override "KEY=VALUE" (as --set gives it) after
// those of the file. A grid key, a key under a grid key that is a whole
// component (task.seq_len when the grid lists task mappings) or the seed
// cannot be overridden this way: the grid values and seeds are applied last
// and would win, so the override would be silently lost.
func (s *Sweep) AddSet(assignment string) error {
	key, val, ok := strings.Cut(assignment, "=")
	key = strings.TrimSpace(key)
	if !ok || key == "" {
		return fmt.Errorf("--set %s: want KEY=VALUE, e.g. train.steps=300", oneLine(assignment))
	}
	if key == "seed" {
		return fmt.Errorf("--set %s: the seeds come from the sweep's seeds: list", oneLine(assignment))
	}
	if ax, ok := s.gridConflict(key); ok {
		return fmt.Errorf("--set %s: %s", oneLine(assignment), s.conflictText(key, ax, "--set"))
	}
	a := Assignment{Key: key, Value: Value{Label: val, scalar: val}}
	e := cloneExp(s.Base)
	if err := a.Value.apply(&e, key); err != nil {
		return fmt.Errorf("--set %s: %s", assignment, err.Error())
	}
	s.Set = append(s.Set, a)
	return nil
}

// gridConflict returns the grid axis whose values would replace a fixed
// override of key: the axis of key itself, or that of a whole component
// (task, model.attention, model.memory) holding key, since a component value replaces the
// component, options and all, after the overrides are applied.
func (s *Sweep) gridConflict(key string) (Axis, bool) {
	for _, ax := range s.Grid {
		if ax.Key == key {
			return ax, true
		}
		if _, comp := componentKeys[ax.Key]; comp && strings.HasPrefix(key, ax.Key+".") {
			return ax, true
		}
	}
	return Axis{}, false
}

// conflictText says why the override of key (from where: "set:" or
// "--set") conflicts with the grid axis ax.
func (s *Sweep) conflictText(key string, ax Axis, where string) string {
	at := "grid." + ax.Key
	if where == "--set" {
		at += " of " + s.Source
	}
	if ax.line > 0 {
		at += fmt.Sprintf(", line %d", ax.line)
	}
	if ax.Key == key {
		return fmt.Sprintf("%s is also a grid key (%s), whose values are applied after %s and would replace it; give its values in the grid only", key, at, where)
	}
	return fmt.Sprintf("%s lies under the grid key %s (%s), whose values replace the whole component after %s, so the override would be lost; put %s into each of its values instead", key, ax.Key, at, where, strings.TrimPrefix(key, ax.Key+"."))
}

// parseValue reads one value of key (a scalar, or for a component key a
// mapping with a kind). where names it in errors.
func parseValue(file, where, key string, n *yaml.Node) (Value, error) {
	switch {
	case n.Kind == yaml.ScalarNode && !isNull(n):
		return Value{Label: n.Value, scalar: n.Value, line: n.Line}, nil
	case n.Kind == yaml.MappingNode:
		if _, ok := componentKeys[key]; !ok {
			return Value{}, specError(file, n.Line, "%s: a mapping value is only allowed for a component key (task, model.attention, model.memory); give a scalar", where)
		}
		v := Value{component: true, options: map[string]string{}, line: n.Line}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			text, ok := optionText(val)
			if k.Kind != yaml.ScalarNode || k.Value == "" || !ok {
				return Value{}, specError(file, k.Line, "%s: want {kind: NAME, option: value, ...} with scalar values or lists of scalars", where)
			}
			if _, dup := v.options[k.Value]; dup || (k.Value == "kind" && v.kind != "") {
				return Value{}, specError(file, k.Line, "%s: duplicate key %q", where, k.Value)
			}
			if k.Value == "kind" {
				v.kind = val.Value
				continue
			}
			v.options[k.Value] = text
		}
		if v.kind == "" {
			return Value{}, specError(file, n.Line, "%s: a mapping value needs a kind, e.g. {kind: gqa, kv_heads: 1}", where)
		}
		v.Label = v.kind
		for _, o := range sortedKeys(v.options) {
			v.Label += "+" + o + "=" + v.options[o]
		}
		return v, nil
	}
	return Value{}, specError(file, n.Line, "%s: want a value, got %s", where, describe(n))
}

// optionText is a component option's value as YAML text: a scalar as
// written, a list of scalars as [a,b,c] (list options: dilated's segments).
func optionText(n *yaml.Node) (string, bool) {
	switch {
	case n.Kind == yaml.ScalarNode && !isNull(n):
		return n.Value, true
	case n.Kind == yaml.SequenceNode && len(n.Content) > 0:
		parts := make([]string, len(n.Content))
		for i, e := range n.Content {
			if e.Kind != yaml.ScalarNode || isNull(e) {
				return "", false
			}
			parts[i] = e.Value
		}
		return "[" + strings.Join(parts, ",") + "]", true
	}
	return "", false
}

// apply assigns v to key in e, through Experiment.Set (type-checked), so the
// errors name the key and the value.
func (v Value) apply(e *config.Experiment, key string) error {
	set := func(k, val string) error {
		a := k + "=" + val
		if err := e.Set(a); err != nil {
			return errors.New(strings.TrimPrefix(err.Error(), "--set "+a+": "))
		}
		return nil
	}
	if !v.component {
		return set(key, v.scalar)
	}
	c := componentKeys[key](e)
	*c = config.Component{Kind: v.kind, Options: map[string]any{}}
	for _, o := range sortedKeys(v.options) {
		if err := set(key+"."+o, v.options[o]); err != nil {
			return err
		}
	}
	return nil
}

// parseInlineBase parses the base mapping bn of the sweep file as an
// experiment. To keep the line numbers of errors those of the sweep file,
// it parses the file's own text with everything before the mapping blanked
// and everything from the next top-level key on cut; if that text does not
// stand alone (an unusual layout), it parses the mapping re-encoded.
func parseInlineBase(file string, data []byte, root, bn *yaml.Node) (config.Experiment, error) {
	lines := strings.SplitAfter(string(data), "\n")
	end := len(lines) // lines[:end] may hold the mapping
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i+1] == bn && i+2 < len(root.Content) {
			end = root.Content[i+2].Line - 1
		}
	}
	if bn.Line >= 1 && bn.Line <= end && bn.Column >= 1 && bn.Column-1 <= len(lines[bn.Line-1]) {
		var b strings.Builder
		for i := 0; i < bn.Line-1; i++ {
			b.WriteString("\n")
		}
		b.WriteString(strings.Repeat(" ", bn.Column-1))
		b.WriteString(lines[bn.Line-1][bn.Column-1:])
		for i := bn.Line; i < end; i++ {
			b.WriteString(lines[i])
		}
		exp, err := config.Parse(file, []byte(b.String()))
		if err == nil || !strings.Contains(err.Error(), "yaml syntax") {
			if err != nil {
				return exp, fmt.Errorf("%s (in base)", err.Error())
			}
			return exp, nil
		}
	}
	text, err := yaml.Marshal(bn)
	if err != nil {
		return config.Experiment{}, specError(file, bn.Line, "base: %v", err)
	}
	exp, err := config.Parse(fmt.Sprintf("%s: base at line %d", file, bn.Line), text)
	return exp, err
}

// cloneExp returns a deep copy of e (components' option maps included).
func cloneExp(e config.Experiment) config.Experiment {
	c := e
	c.Task.Options = cloneMap(e.Task.Options)
	c.Model.Attention.Options = cloneMap(e.Model.Attention.Options)
	return c
}

func cloneMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "nothing"
		}
		return strconv.Quote(n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "something else"
}

// maxSweepName bounds a sweep's name (it becomes each run's experiment name).
const maxSweepName = 100

func validName(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > maxSweepName {
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

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func oneLine(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }), " ")
}
