package layers

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// Support is what an attention variant declares, when it registers, about
// the settings it works in, in the way gonum/optimize's methods declare the
// information they use: which mask directions, whether batches may be
// padded, and which position schemes. NewAttention refuses an undeclared
// setting with a config error built from the declaration (Allows), before
// the factory runs; so a factory or forward error in a declared setting is
// a bug, and `trainer gradcheck`, `trainer bench attention`, the map and
// support tests report it as a failure instead of "not applicable".
type Support struct {
	Causal        bool     // decoder models: position i sees positions j <= i only
	Bidirectional bool     // encoder models: every position sees every other
	Padding       bool     // batches with a key-padding mask (Context.KeyMask)
	Positions     []string // the position schemes it takes, of Positions, in the order errors list them
	// Why says why the variant refuses each thing it does not support, for
	// the config error; required for each refusal.
	Why Refusals
	// CheckOptions are the options gradient checks build the variant with
	// when a setting names none (nil: the defaults): sizes small enough
	// that the checks' short sequences exercise the pattern (a window of
	// 2, not 128).
	CheckOptions map[string]any
	// NonSmooth marks a variant that is not twice differentiable
	// everywhere: it selects keys or heads by content (top-k, hashing,
	// clustering, sorting, moh's top-k heads: at a tie the selection flips)
	// or its feature map has a kink
	// (linear attention's elu + 1, whose second derivative jumps at 0). A
	// finite-difference step that crosses such a point gives an inaccurate
	// numeric gradient. CheckAttention therefore retries a failing check
	// of such a variant with two more seeds and fails only when all three
	// fail: a wrong gradient fails at every seed, a crossing by chance at
	// one.
	NonSmooth bool

	name string // set by Register; names the variant in errors
}

// Refusals are the reasons a variant gives for the settings it refuses,
// each worded to follow "<kind> attention": "pools agent tokens over the
// whole sequence" gives "agent attention pools agent tokens over the whole
// sequence and cannot be causal". Positions is a parenthetical instead
// ("agent tokens have no position to measure distance from").
type Refusals struct {
	Causal, Bidirectional, Padding, Positions string
}

// Setting is one combination of the things a variant declares support for.
type Setting struct {
	Causal     bool
	Padded     bool
	Positional string // a position scheme; "" is none
}

// Allows returns nil if the variant supports st, otherwise the config error
// that says what it refuses and why ("model.kind: agent attention ... cannot
// be causal; use it in encoder models").
func (s Support) Allows(st Setting) error {
	switch {
	case st.Causal && !s.Causal:
		return fmt.Errorf("model.kind: %s attention %s and cannot be causal; use it in encoder models", s.name, s.Why.Causal)
	case !st.Causal && !s.Bidirectional:
		return fmt.Errorf("model.kind: %s attention %s and cannot be bidirectional; use it in decoder models", s.name, s.Why.Bidirectional)
	case st.Padded && !s.Padding:
		return fmt.Errorf("task: %s attention %s and cannot take padded batches; use a task of fixed-length sequences", s.name, s.Why.Padding)
	}
	pos := st.Positional
	if pos == "" {
		pos = "none"
	}
	return Position{Kind: pos}.Allow(s.name, s.Why.Positions, s.Positions...)
}

// String lists what the variant supports: "causal, bidirectional, padding;
// positions: learned, sinusoidal, none, rope, partial_rope, alibi, xpos".
func (s Support) String() string {
	var modes []string
	for _, m := range []struct {
		ok   bool
		name string
	}{{s.Causal, "causal"}, {s.Bidirectional, "bidirectional"}, {s.Padding, "padding"}} {
		if m.ok {
			modes = append(modes, m.name)
		}
	}
	return strings.Join(modes, ", ") + "; positions: " + strings.Join(s.Positions, ", ")
}

// check reports a declaration that is incomplete: no direction, an unknown
// or repeated position scheme, or a refusal without its reason.
func (s Support) check() error {
	if !s.Causal && !s.Bidirectional {
		return fmt.Errorf("declares neither causal nor bidirectional support")
	}
	if len(s.Positions) == 0 {
		return fmt.Errorf("declares no position scheme")
	}
	for i, p := range s.Positions {
		if !slices.Contains(Positions, p) {
			return fmt.Errorf("declares unknown position scheme %q (known: %s)", p, strings.Join(Positions, ", "))
		}
		if slices.Contains(s.Positions[:i], p) {
			return fmt.Errorf("declares position scheme %q twice", p)
		}
	}
	for _, r := range []struct {
		refused bool
		why     string
		what    string
	}{
		{!s.Causal, s.Why.Causal, "causal"},
		{!s.Bidirectional, s.Why.Bidirectional, "bidirectional"},
		{!s.Padding, s.Why.Padding, "padding"},
		{len(s.Positions) < len(Positions), s.Why.Positions, "some position schemes"},
	} {
		if r.refused && r.why == "" {
			return fmt.Errorf("refuses %s without saying why (Support.Why)", r.what)
		}
	}
	return nil
}

var (
	supportMu sync.RWMutex
	supports  = map[string]Support{} // beside the registry: config.Entry has no field for it
)

// SupportOf returns what the variant called name declared at registration.
func SupportOf(name string) (Support, error) {
	if _, err := variants.Lookup(name); err != nil {
		return Support{}, err
	}
	supportMu.RLock()
	defer supportMu.RUnlock()
	s := supports[name]
	s.Positions = slices.Clone(s.Positions)
	s.CheckOptions = maps.Clone(s.CheckOptions)
	return s, nil
}
