package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// OptionKind is the type of a component option.
type OptionKind int

// The option kinds a component may declare.
const (
	Int OptionKind = iota
	Float
	Bool
	String
	IntList // a list of integers, e.g. [1, 2, 4]
)

func (k OptionKind) String() string {
	switch k {
	case Int:
		return "integer"
	case Float:
		return "number"
	case Bool:
		return "boolean"
	case IntList:
		return "list of integers"
	default:
		return "string"
	}
}

// OptionSpec declares one option of a registered component (an attention
// variant, a task): its name, type, default and a one-line description.
type OptionSpec struct {
	Name    string
	Kind    OptionKind
	Default any // int, float64, bool, string or []int, matching Kind
	Help    string
}

// Values holds a component's resolved options: every declared option is
// present, typed as its spec says (int, float64, bool or string).
type Values map[string]any

// Ints returns the integer-list option name (a copy).
func (v Values) Ints(name string) []int { return slices.Clone(v[name].([]int)) }

// Int returns the integer option name; it panics if the option was not declared
// as an integer, which is a programming error, not a user error.
func (v Values) Int(name string) int { return v[name].(int) }

// Float returns the number option name.
func (v Values) Float(name string) float64 { return v[name].(float64) }

// Bool returns the boolean option name.
func (v Values) Bool(name string) bool { return v[name].(bool) }

// String returns the string option name.
func (v Values) String(name string) string { return v[name].(string) }

// Component is a registry entry chosen by configuration: a kind plus that
// kind's own options, written in YAML as one mapping:
//
//	attention: {kind: sliding_window, window: 16}
//
// Options are kept as decoded from YAML until Resolve checks them against the
// kind's declared options.
type Component struct {
	Kind    string
	Options map[string]any
	// lines records the YAML line of each option, for error messages.
	lines map[string]int
	line  int
}

// UnmarshalYAML reads a mapping with a "kind" key and any other keys as options.
func (c *Component) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: want a mapping like {kind: NAME, ...}", n.Line)
	}
	c.line = n.Line
	if c.Options == nil {
		c.Options = map[string]any{}
	}
	if c.lines == nil {
		c.lines = map[string]int{}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value == "kind" {
			if v.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: kind: want a name", v.Line)
			}
			c.Kind = v.Value
			continue
		}
		var val any
		if err := v.Decode(&val); err != nil {
			return fmt.Errorf("line %d: %s: %v", v.Line, k.Value, err)
		}
		c.Options[k.Value] = val
		c.lines[k.Value] = k.Line
	}
	return nil
}

// MarshalYAML writes kind first, then the options in name order.
func (c Component) MarshalYAML() (any, error) {
	n := &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle}
	add := func(k string, v any) error {
		var vn yaml.Node
		if err := vn.Encode(v); err != nil {
			return err
		}
		n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: k}, &vn)
		return nil
	}
	if err := add("kind", c.Kind); err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(c.Options))
	for k := range c.Options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := add(k, c.Options[k]); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// Set assigns one option from text (as given to --set), parsed as a YAML scalar.
func (c *Component) Set(name, text string) error {
	var val any
	if err := yaml.Unmarshal([]byte(text), &val); err != nil {
		return fmt.Errorf("cannot parse %q: %v", text, err)
	}
	if c.Options == nil {
		c.Options = map[string]any{}
	}
	c.Options[name] = val
	if c.lines != nil {
		delete(c.lines, name)
	}
	return nil
}

// dropOptionsNotOf removes the options that kind, of the registry of
// family, does not take, and returns a note naming them ("" if none, or if
// the registry or kind is not known); path names the component in it.
func (c *Component) dropOptionsNotOf(kind, family, path string) string {
	names, ok := familyOptions(family, kind)
	if !ok {
		return ""
	}
	var dropped []string
	for k := range c.Options {
		if !slices.Contains(names, k) {
			dropped = append(dropped, k)
		}
	}
	if len(dropped) == 0 {
		return ""
	}
	sort.Strings(dropped)
	for _, k := range dropped {
		delete(c.Options, k)
		delete(c.lines, k)
	}
	what := "options"
	if len(dropped) == 1 {
		what = "option"
	}
	return fmt.Sprintf("%s.kind=%s: dropped %s %s (not options of %s)", path, kind, what, strings.Join(dropped, ", "), kind)
}

func (c Component) where(path, name string) string {
	if l, ok := c.lines[name]; ok && l > 0 {
		return fmt.Sprintf("%s.%s (line %d)", path, name, l)
	}
	return path + "." + name
}

// Resolve checks the component's options against specs and returns every
// declared option typed, with defaults filled in. path names the component in
// errors ("model.attention").
func (c Component) Resolve(path string, specs []OptionSpec) (Values, error) {
	known := map[string]OptionSpec{}
	names := make([]string, 0, len(specs))
	for _, s := range specs {
		known[s.Name] = s
		names = append(names, s.Name)
	}
	keys := make([]string, 0, len(c.Options))
	for k := range c.Options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, ok := known[k]; !ok {
			list := "it takes no options"
			if len(names) > 0 {
				list = "known: " + strings.Join(names, ", ")
			}
			return nil, fmt.Errorf("%s: unknown option for %s %q (%s)", c.where(path, k), lastPart(path), c.Kind, list)
		}
	}
	out := Values{}
	for _, s := range specs {
		raw, ok := c.Options[s.Name]
		if !ok {
			out[s.Name] = s.Default
			continue
		}
		v, err := convert(raw, s.Kind)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", c.where(path, s.Name), err)
		}
		out[s.Name] = v
	}
	return out, nil
}

func lastPart(path string) string {
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[i+1:]
	}
	return path
}

func convert(raw any, kind OptionKind) (any, error) {
	bad := func() error { return fmt.Errorf("want %s %s, got %v", article(kind), kind, describe(raw)) }
	switch kind {
	case Int:
		switch x := raw.(type) {
		case int:
			return x, nil
		case int64:
			return int(x), nil
		case uint64:
			if x > math.MaxInt64 {
				return nil, bad()
			}
			return int(x), nil
		case float64:
			if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
				return int(x), nil
			}
		}
	case Float:
		switch x := raw.(type) {
		case int:
			return float64(x), nil
		case int64:
			return float64(x), nil
		case uint64:
			return float64(x), nil
		case float64:
			return x, nil
		}
	case Bool:
		if x, ok := raw.(bool); ok {
			return x, nil
		}
	case IntList:
		switch x := raw.(type) {
		case []int:
			return slices.Clone(x), nil
		case []any:
			out := make([]int, len(x))
			for i, e := range x {
				n, err := convert(e, Int)
				if err != nil {
					return nil, fmt.Errorf("want a list of integers, element %d: %v", i, err)
				}
				out[i] = n.(int)
			}
			return out, nil
		}
	case String:
		switch x := raw.(type) {
		case string:
			return x, nil
		case int, int64, uint64, float64, bool:
			return fmt.Sprint(x), nil
		}
	}
	return nil, bad()
}

func article(k OptionKind) string {
	if k == Int {
		return "an"
	}
	return "a"
}

func describe(raw any) string {
	switch x := raw.(type) {
	case string:
		return strconv.Quote(x)
	case nil:
		return "nothing"
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	default:
		return fmt.Sprint(x)
	}
}

// Components is an ordered list of registry-chosen components
// (model.block_modules), written in YAML as a list whose items are a bare
// kind name or a component mapping:
//
//	block_modules: [se, {kind: cbam, kernel: 7}]
//
// An empty list is nil. --set takes the whole list in the same syntax
// (model.block_modules=[se,cbam]).
type Components []Component

var componentsType = reflect.TypeOf(Components(nil))

// components decodes the list n into cs; item i is named path[i] in
// errors. A null list keeps the default.
func (d *decoder) components(n *yaml.Node, cs *Components, path string) error {
	n = deref(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		return d.errorf(n.Line, "%s: want a list like [se, {kind: cbam, kernel: 7}], got %s", path, nodeDesc(n))
	}
	var out Components
	for i, item := range n.Content {
		ip := fmt.Sprintf("%s[%d]", path, i)
		item = deref(item)
		var c Component
		switch {
		case item.Kind == yaml.ScalarNode && item.ShortTag() == "!!str" && item.Value != "":
			c = Component{Kind: item.Value, Options: map[string]any{}}
		case item.Kind == yaml.MappingNode:
			if err := d.component(item, &c, ip); err != nil {
				return err
			}
		default:
			return d.errorf(item.Line, "%s: want a kind name or a mapping like {kind: NAME, ...}, got %s", ip, nodeDesc(item))
		}
		out = append(out, c)
	}
	*cs = out
	return nil
}

// setComponents parses text (a --set value) as a list of components.
func setComponents(text string, cs *Components, path string) error {
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(text), &n); err != nil {
		return fmt.Errorf("%s: cannot parse %q: %s", path, text, cleanYAMLError(err))
	}
	if len(n.Content) == 0 {
		*cs = nil
		return nil
	}
	d := &decoder{name: "value"}
	if err := d.components(n.Content[0], cs, path); err != nil {
		msg := strings.TrimPrefix(err.Error(), "value: ")
		if rest, ok := strings.CutPrefix(msg, "line "); ok {
			if _, m, ok := strings.Cut(rest, ": "); ok {
				msg = m
			}
		}
		return errors.New(msg)
	}
	for i := range *cs { // lines of the --set text, not of a file: errors leave them out
		(*cs)[i].lines = nil
	}
	return nil
}

// encodeComponents writes the list as a flow sequence of flow mappings.
func encodeComponents(cs Components) (*yaml.Node, error) {
	n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
	for i, c := range cs {
		cn, err := encodeComponent(c)
		if err != nil {
			return nil, fmt.Errorf("[%d]: %v", i, err)
		}
		n.Content = append(n.Content, cn)
	}
	return n, nil
}
