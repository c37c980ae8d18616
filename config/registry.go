package config

import (
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Entry is one registered component: a name, a one-line description, the
// options it takes and the factory that builds it.
type Entry[F any] struct {
	Name        string
	Description string
	Options     []OptionSpec
	Factory     F
}

// Registry maps names to components of one family (attention variants,
// tasks) in the style of database/sql drivers: each component registers itself
// from an init function, and configuration picks one by name.
type Registry[F any] struct {
	family string // "attention kind", "task kind": used in errors
	mu     sync.RWMutex
	m      map[string]Entry[F]
}

// NewRegistry returns an empty registry; family names what it holds in
// errors. It also makes the registry the one whose kinds' options
// Experiment.SetNoted consults for the component fields tagged with this
// family (registry:"task kind"), so that switching a kind with --set drops
// the options the new kind does not take.
func NewRegistry[F any](family string) *Registry[F] {
	r := &Registry[F]{family: family, m: map[string]Entry[F]{}}
	families.Lock()
	families.m[family] = r
	families.Unlock()
	return r
}

// optionNamer is a Registry of any factory type, as families holds it.
type optionNamer interface {
	// optionNames returns the option names of kind, and false if kind is not
	// registered.
	optionNames(kind string) ([]string, bool)
}

// families maps each registry's family to the registry.
var families = struct {
	sync.Mutex
	m map[string]optionNamer
}{m: map[string]optionNamer{}}

// familyOptions returns the option names of kind in the registry of family,
// and false if there is no such registry (its package is not linked in) or
// no such kind.
func familyOptions(family, kind string) ([]string, bool) {
	families.Lock()
	r, ok := families.m[family]
	families.Unlock()
	if !ok {
		return nil, false
	}
	return r.optionNames(kind)
}

func (r *Registry[F]) optionNames(kind string) ([]string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.m[kind]
	if !ok {
		return nil, false
	}
	names := make([]string, len(e.Options))
	for i, o := range e.Options {
		names[i] = o.Name
	}
	return names, true
}

// Register adds e. It panics on an empty or duplicate name, or on an option
// whose default does not match its kind: these are programming errors caught
// at init.
func (r *Registry[F]) Register(e Entry[F]) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.Name == "" {
		panic("config: Register with an empty name")
	}
	if _, dup := r.m[e.Name]; dup {
		panic(fmt.Sprintf("config: %s %q registered twice", r.family, e.Name))
	}
	for _, o := range e.Options {
		if _, err := convert(o.Default, o.Kind); err != nil {
			panic(fmt.Sprintf("config: %s %q option %s: default: %v", r.family, e.Name, o.Name, err))
		}
	}
	r.m[e.Name] = e
}

// Lookup returns the entry called name, or an error listing the known names.
func (r *Registry[F]) Lookup(name string) (Entry[F], error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.m[name]
	if !ok {
		return e, fmt.Errorf("unknown %s %q (known: %s)", r.family, name, strings.Join(r.namesLocked(), ", "))
	}
	return e, nil
}

// Entries returns every entry in name order.
func (r *Registry[F]) Entries() []Entry[F] {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Entry[F], 0, len(r.m))
	for _, n := range r.namesLocked() {
		out = append(out, r.m[n])
	}
	return out
}

func (r *Registry[F]) namesLocked() []string {
	names := make([]string, 0, len(r.m))
	for n := range r.m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Resolve looks up c.Kind and checks c's options against the entry's specs.
// path names the component in errors ("model.attention").
func (r *Registry[F]) Resolve(path string, c Component) (Entry[F], Values, error) {
	e, err := r.Lookup(c.Kind)
	if err != nil {
		return e, nil, fmt.Errorf("%s.kind: %w", path, err)
	}
	v, err := c.Resolve(path, e.Options)
	return e, v, err
}
