package blockmask

import (
	"fmt"
	"testing"
)

// check compares m with its element predicate at every element: a visible
// element lies in a listed tile, a Full tile is visible everywhere, a tile
// not listed nowhere, and a Partial tile has visible and hidden elements
// (the classification is tight, so cores skip all they can). The
// transposed lists must hold exactly the same pairs.
func check(t *testing.T, name string, m *Mask) {
	t.Helper()
	checkMask(t, name, m, true)
}

// checkMask is check with the tightness test optional: a composed mask
// (And) may list a tile Partial that is in fact Full or empty, which costs
// time but is never wrong.
func checkMask(t *testing.T, name string, m *Mask, tight bool) {
	t.Helper()
	kinds := map[[2]int]Kind{}
	for qt := 0; qt < m.QueryTiles(); qt++ {
		tiles, ks := m.Row(qt)
		for i, kt := range tiles {
			if i > 0 && tiles[i-1] >= kt {
				t.Fatalf("%s: query tile %d: key tiles not ascending: %v", name, qt, tiles)
			}
			kinds[[2]int{qt, int(kt)}] = ks[i]
		}
	}
	n := 0
	for kt := 0; kt < m.KeyTiles(); kt++ {
		tiles, ks := m.Col(kt)
		for i, qt := range tiles {
			if i > 0 && tiles[i-1] >= qt {
				t.Fatalf("%s: key tile %d: query tiles not ascending: %v", name, kt, tiles)
			}
			if k, ok := kinds[[2]int{int(qt), kt}]; !ok || k != ks[i] {
				t.Fatalf("%s: transposed pair (%d, %d) kind %d, rows say %d (listed %v)", name, qt, kt, ks[i], k, ok)
			}
			n++
		}
	}
	if n != len(kinds) || n != m.Tiles() {
		t.Fatalf("%s: %d pairs in the rows, %d in the columns, Tiles %d", name, len(kinds), n, m.Tiles())
	}
	if m.described() { // Interval and KeyVisible must say what Visible says
		for q := 0; q < m.Q; q++ {
			lo, hi := 0, m.K
			if m.Interval != nil {
				lo, hi = m.Interval(q)
			}
			for k := 0; k < m.K; k++ {
				in := k >= lo && k < hi && (m.KeyVisible == nil || m.KeyVisible(k))
				if in != m.Visible(q, k) {
					t.Fatalf("%s: query %d key %d: Interval [%d, %d) and KeyVisible say %v, Visible %v", name, q, k, lo, hi, in, m.Visible(q, k))
				}
			}
		}
	}
	for qt := 0; qt < m.QueryTiles(); qt++ {
		for kt := 0; kt < m.KeyTiles(); kt++ {
			q0, q1 := span(qt, m.Block, m.Q)
			k0, k1 := span(kt, m.Block, m.K)
			seen, hidden := 0, 0
			for q := q0; q < q1; q++ {
				for k := k0; k < k1; k++ {
					if m.Visible(q, k) {
						seen++
					} else {
						hidden++
					}
				}
			}
			kind, listed := kinds[[2]int{qt, kt}]
			switch {
			case !listed && seen > 0:
				t.Fatalf("%s: tile (%d, %d) skipped, but %d elements are visible", name, qt, kt, seen)
			case listed && kind == Full && hidden > 0:
				t.Fatalf("%s: tile (%d, %d) Full, but %d elements are hidden", name, qt, kt, hidden)
			case tight && listed && kind == Partial && (seen == 0 || hidden == 0):
				t.Fatalf("%s: tile (%d, %d) Partial with %d visible and %d hidden elements: not tight", name, qt, kt, seen, hidden)
			}
		}
	}
}

func TestBuildersMatchTheirPredicates(t *testing.T) {
	for _, T := range []int{1, 2, 5, 8, 9, 17, 33} {
		for _, block := range []int{1, 2, 4, 5, 8} {
			check(t, fmt.Sprintf("dense T=%d block=%d", T, block), Dense(T, T, block))
			check(t, fmt.Sprintf("dense Q=%d K=%d block=%d", T, T+3, block), Dense(T, T+3, block))
			check(t, fmt.Sprintf("causal T=%d block=%d", T, block), Causal(T, T, block))
			check(t, fmt.Sprintf("causal Q=%d K=%d block=%d", T, T+3, block), Causal(T, T+3, block))
			for _, w := range []int{0, 1, 3, 4, 7, 40} {
				for _, causal := range []bool{true, false} {
					check(t, fmt.Sprintf("window %d causal %v T=%d block=%d", w, causal, T, block), SlidingWindow(T, block, w, causal))
					for _, g := range []int{0, 1, 3, 9} {
						m := WithGlobal(SlidingWindow(T, block, w, causal), g)
						checkMask(t, fmt.Sprintf("window %d global %d T=%d block=%d", w, g, T, block), m, false)
						for q := 0; q < T; q++ {
							for k := 0; k < T; k++ {
								d := q - k
								in := d >= 0 && d <= w || !causal && d < 0 && -d <= w
								if got, want := m.Visible(q, k), q < g || k < g || in; got != want {
									t.Fatalf("window %d global %d (%d, %d): %v", w, g, q, k, got)
								}
							}
						}
					}
					and := And(SlidingWindow(T, block, w, false), Causal(T, T, block))
					checkMask(t, fmt.Sprintf("window %d and causal T=%d block=%d", w, T, block), and, false)
					for q := 0; q < T; q++ {
						for k := 0; k < T; k++ {
							if got, want := and.Visible(q, k), k <= q && q-k <= w; got != want {
								t.Fatalf("window %d and causal (%d, %d): %v", w, q, k, got)
							}
						}
					}
				}
			}
		}
	}
}

// The element predicates themselves, against their definitions.
func TestPredicates(t *testing.T) {
	for q := 0; q < 12; q++ {
		for k := 0; k < 12; k++ {
			if got, want := Causal(12, 12, 4).Visible(q, k), k <= q; got != want {
				t.Fatalf("causal (%d, %d): %v", q, k, got)
			}
			if got, want := SlidingWindow(12, 4, 3, true).Visible(q, k), k <= q && k >= q-3; got != want {
				t.Fatalf("causal window 3 (%d, %d): %v", q, k, got)
			}
			if got, want := SlidingWindow(12, 4, 3, false).Visible(q, k), k >= q-3 && k <= q+3; got != want {
				t.Fatalf("window 3 (%d, %d): %v", q, k, got)
			}
		}
	}
}

// A band visits O(T) tiles: the builders' metadata and time are linear in
// the listed tiles, not quadratic in T.
func TestSlidingWindowIsLinear(t *testing.T) {
	const block, window = 64, 256
	for _, T := range []int{1 << 14, 1 << 16} {
		m := SlidingWindow(T, block, window, true)
		if max := (T/block + 1) * (window/block + 2); m.Tiles() > max {
			t.Errorf("T=%d: %d tiles listed, want at most %d", T, m.Tiles(), max)
		}
	}
	if f := SlidingWindow(1<<14, 64, 256, true).VisitedFraction(); f > 0.021 {
		t.Errorf("causal window 256 over 16K visits %.3f of the tiles", f)
	}
	if f := Causal(1<<10, 1<<10, 64).VisitedFraction(); f < 0.5 || f > 0.54 {
		t.Errorf("causal over 1K visits %.3f of the tiles, want about 0.53", f)
	}
}

func TestNewPanicsOnBadCandidates(t *testing.T) {
	for name, cands := range map[string]func(int) []int{
		"out of range": func(int) []int { return []int{0, 9} },
		"descending":   func(int) []int { return []int{1, 0} },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			New("bad", 8, 8, 4, func(int, int) bool { return true }, cands, func(int, int) Kind { return Full })
		}()
	}
}

func TestFingerprintSeparatesPatterns(t *testing.T) {
	seen := map[string]string{}
	for name, m := range map[string]*Mask{
		"dense":         Dense(16, 16, 4),
		"causal":        Causal(16, 16, 4),
		"window 3":      SlidingWindow(16, 4, 3, true),
		"window 4":      SlidingWindow(16, 4, 4, true),
		"window 3 bidi": SlidingWindow(16, 4, 3, false),
		"causal 17":     Causal(17, 17, 4),
		"causal block8": Causal(16, 16, 8),
	} {
		f := m.Fingerprint()
		if other, dup := seen[f]; dup {
			t.Errorf("%s and %s share fingerprint %s", name, other, f)
		}
		seen[f] = name
	}
	if SlidingWindow(16, 4, 3, true).Fingerprint() != SlidingWindow(16, 4, 3, true).Fingerprint() {
		t.Error("the same pattern built twice has two fingerprints")
	}
}
