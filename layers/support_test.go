package layers

import (
	"fmt"
	"math"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// everySetting is every combination a variant may declare: causal or not,
// padded or not, each position scheme.
func everySetting() []CheckSetting {
	var out []CheckSetting
	for _, causal := range []bool{true, false} {
		for _, padded := range []bool{false, true} {
			for _, pos := range Positions {
				out = append(out, CheckSetting{
					Name:   fmt.Sprintf("causal=%t/padded=%t/%s", causal, padded, pos),
					Causal: causal, Padded: padded, Positional: pos,
					Batch: 2, SeqLen: 5, DModel: 8, Heads: 2,
				})
			}
		}
	}
	return out
}

// Every registered variant's declaration matches what it does: in each
// declared setting its factory builds and a forward pass runs to finite
// outputs; each undeclared one NewAttention refuses with the declaration's
// config error, naming the key to change.
func TestSupportMatchesBehaviour(t *testing.T) {
	for _, v := range Variants() {
		sup, err := SupportOf(v.Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range everySetting() {
			t.Run(v.Name+"/"+st.Name, func(t *testing.T) {
				refusal := sup.Allows(st.Setting())
				out, _, err := mapRun(t, v.Name, st, 1, false)
				switch {
				case refusal == nil && err != nil:
					t.Fatalf("declared (%s) but refused: %v", sup, err)
				case refusal == nil:
					for i, y := range out {
						if math.IsNaN(y) || math.IsInf(y, 0) {
							t.Fatalf("output %d is %v", i, y)
						}
					}
				case err == nil:
					t.Fatalf("not declared (%s), and NewAttention built it", sup)
				case err.Error() != refusal.Error():
					t.Fatalf("refused with %q, want the declaration's %q", err, refusal)
				case !strings.HasPrefix(err.Error(), "model.") && !strings.HasPrefix(err.Error(), "task:"):
					t.Fatalf("refusal %q names no config key", err)
				}
			})
		}
	}
}

// The gradient-check settings cover every variant's declaration: each
// direction, padding and each position scheme that acts inside attention
// that the variant declares is in some setting it takes, and each declared
// direction is also checked over several flash tiles with a ragged last
// one, in a graph whose flash cores (if any) all use the small tile.
func TestCheckSettingsCoverDeclarations(t *testing.T) {
	inside := []string{"rope", "partial_rope", "xpos", "alibi"} // the others act before the layer
	for _, v := range Variants() {
		t.Run(v.Name, func(t *testing.T) {
			sup, err := SupportOf(v.Name)
			if err != nil {
				t.Fatal(err)
			}
			covered := map[string]bool{}
			for _, st := range CheckSettings() {
				if sup.Allows(st.Setting()) != nil {
					continue
				}
				dir := "bidirectional"
				if st.Causal {
					dir = "causal"
				}
				covered[dir] = true
				if st.Padded {
					covered["padding"] = true
				}
				covered[st.Position().Kind] = true
				if b := st.FlashBlock; b > 0 && st.SeqLen > b && st.SeqLen%b != 0 {
					covered[dir+" over several tiles"] = true
					checkFlashBlocks(t, v.Name, st)
				}
			}
			var want []string
			for _, d := range []struct {
				ok  bool
				dir string
			}{{sup.Causal, "causal"}, {sup.Bidirectional, "bidirectional"}} {
				if d.ok {
					want = append(want, d.dir, d.dir+" over several tiles")
				}
			}
			if sup.Padding {
				want = append(want, "padding")
			}
			for _, p := range inside {
				if (Position{Kind: p}).Allow(v.Name, "", sup.Positions...) == nil {
					want = append(want, p)
				}
			}
			for _, w := range want {
				if !covered[w] {
					t.Errorf("declares %s, and no setting of CheckSettings checks %s with it", sup, w)
				}
			}
		})
	}
}

// checkFlashBlocks builds variant kind in st and fails if a tiled core in
// its graph ignores st.FlashBlock (a variant that calls a core of its own
// instead of Context.Attend).
func checkFlashBlocks(t *testing.T, kind string, st CheckSetting) {
	t.Helper()
	a, err := NewAttention(config.Component{Kind: kind, Options: st.Options}, st.spec())
	if err != nil {
		t.Fatal(err)
	}
	store, err := graph.NewStore(tensor.Float64, 1)
	if err != nil {
		t.Fatal(err)
	}
	g := G.NewGraph()
	b := store.Bind(g)
	sh := Shape{Batch: st.Batch, SeqLen: st.SeqLen, DModel: st.DModel}
	c := Context{Shape: sh, Causal: st.Causal, Tile: st.FlashBlock}
	if st.Padded {
		c.KeyMask = b.Input("key_mask", sh.Rows())
	}
	if _, err := a.Forward(NewScope(b).Sub("attn"), b.Input("x", sh.Rows(), sh.DModel), c); err != nil {
		t.Fatal(err)
	}
	tile := fmt.Sprintf("block=%d,", st.FlashBlock)
	for _, n := range g.AllNodes() {
		if op := n.Op(); op != nil && strings.HasPrefix(op.String(), "TiledAttention(") && !strings.Contains(op.String(), tile) {
			t.Errorf("%s: %s: a tiled core ignores Context.Tile %d: %s", kind, st.Name, st.FlashBlock, op)
		}
	}
}

// A declaration must be complete: Register panics on one that is not.
func TestSupportCheck(t *testing.T) {
	all := Support{Causal: true, Bidirectional: true, Padding: true, Positions: Positions}
	for _, c := range []struct {
		name string
		s    Support
		want string // "" = complete
	}{
		{"everything", all, ""},
		{"encoder only", Support{Bidirectional: true, Padding: true, Positions: []string{"none"}, Why: Refusals{Causal: "x", Positions: "y"}}, ""},
		{"no direction", Support{Padding: true, Positions: Positions}, "neither causal nor bidirectional"},
		{"no positions", Support{Causal: true, Bidirectional: true, Padding: true}, "no position scheme"},
		{"unknown position", Support{Causal: true, Bidirectional: true, Padding: true, Positions: []string{"none", "nope"}, Why: Refusals{Positions: "y"}}, `unknown position scheme "nope"`},
		{"twice", Support{Causal: true, Bidirectional: true, Padding: true, Positions: []string{"none", "none"}, Why: Refusals{Positions: "y"}}, `"none" twice`},
		{"causal refused silently", Support{Bidirectional: true, Padding: true, Positions: Positions}, "refuses causal without"},
		{"padding refused silently", Support{Causal: true, Bidirectional: true, Positions: Positions}, "refuses padding without"},
		{"positions refused silently", Support{Causal: true, Bidirectional: true, Padding: true, Positions: []string{"none"}}, "refuses some position schemes without"},
	} {
		err := c.s.check()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}

// Allows words each refusal from the declaration and names the config key;
// String lists what is supported.
func TestSupportAllowsAndString(t *testing.T) {
	agent, err := SupportOf("agent")
	if err != nil {
		t.Fatal(err)
	}
	dec := Support{Causal: true, Positions: []string{"rope"}, name: "dec",
		Why: Refusals{Bidirectional: "looks back only", Padding: "counts every position", Positions: "it needs rotations"}}
	for _, c := range []struct {
		s    Support
		st   Setting
		want string // "" = allowed
	}{
		{agent, Setting{}, ""},
		{agent, Setting{Padded: true, Positional: "xpos"}, ""},
		{agent, Setting{Causal: true}, "model.kind: agent attention pools agent tokens over the whole sequence and cannot be causal; use it in encoder models"},
		{agent, Setting{Positional: "alibi"}, `model.positional: agent attention cannot use "alibi" (agent tokens have no position to measure distance from); use learned, sinusoidal, none, rope, partial_rope, xpos`},
		{dec, Setting{Causal: true, Positional: "rope"}, ""},
		{dec, Setting{Positional: "rope"}, "model.kind: dec attention looks back only and cannot be bidirectional; use it in decoder models"},
		{dec, Setting{Causal: true, Padded: true, Positional: "rope"}, "task: dec attention counts every position and cannot take padded batches; use a task of fixed-length sequences"},
		{dec, Setting{Causal: true}, `model.positional: dec attention cannot use "none" (it needs rotations); use rope`},
	} {
		err := c.s.Allows(c.st)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s %+v: %v", c.s.name, c.st, err)
		case c.want != "" && (err == nil || err.Error() != c.want):
			t.Errorf("%s %+v: %v\nwant %s", c.s.name, c.st, err, c.want)
		}
	}
	if got, want := agent.String(), "bidirectional, padding; positions: learned, sinusoidal, none, rope, partial_rope, xpos"; got != want {
		t.Errorf("agent: %q, want %q", got, want)
	}
	if got, want := dec.String(), "causal; positions: rope"; got != want {
		t.Errorf("dec: %q, want %q", got, want)
	}
	if _, err := SupportOf("nope"); err == nil || !strings.Contains(err.Error(), `unknown attention kind "nope"`) {
		t.Errorf("SupportOf(nope): %v", err)
	}
}
