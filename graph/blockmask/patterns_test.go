package blockmask

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var (
	patternLengths = []int{1, 2, 5, 8, 9, 17, 33}
	patternBlocks  = []int{1, 2, 4, 5, 8}
)

// ceilDiv is ⌈a/b⌉ for a >= 0, b >= 1.
func ceilDiv(a, b int) int { return (a + b - 1) / b }

// checkCausal checks the composition a causal model uses, And(m, Causal),
// against the pattern's predicate restricted to k <= q.
func checkCausal(t *testing.T, name string, m *Mask) {
	t.Helper()
	and := And(m, Causal(m.Q, m.K, m.Block))
	checkMask(t, name+" and causal", and, false)
	for q := 0; q < m.Q; q++ {
		for k := 0; k < m.K; k++ {
			if got, want := and.Visible(q, k), k <= q && m.Visible(q, k); got != want {
				t.Fatalf("%s and causal (%d, %d): %v", name, q, k, got)
			}
		}
	}
}

func TestSegmentsMatchesItsPredicate(t *testing.T) {
	for _, T := range patternLengths {
		for _, block := range patternBlocks {
			for _, length := range []int{1, 3, 4, 7, 40} {
				name := fmt.Sprintf("segments %d T=%d block=%d", length, T, block)
				m := Segments(T, block, length)
				check(t, name, m)
				checkCausal(t, name, m)
				if max := m.QueryTiles() * (2*ceilDiv(length-1, block) + 1); m.Tiles() > max {
					t.Errorf("%s: %d tiles listed, the doc says at most %d", name, m.Tiles(), max)
				}
				if length%block == 0 && T%length == 0 {
					if want := T / block * length / block; m.Tiles() != want {
						t.Errorf("%s: %d tiles listed, want %d", name, m.Tiles(), want)
					}
				}
			}
		}
	}
}

func TestSummaryMatchesItsPredicate(t *testing.T) {
	for _, T := range patternLengths {
		for _, block := range patternBlocks {
			for _, lc := range [][2]int{{4, 1}, {4, 4}, {5, 2}, {8, 3}} {
				l, c := lc[0], lc[1]
				name := fmt.Sprintf("summary l=%d c=%d T=%d block=%d", l, c, T, block)
				m := Summary(T, block, l, c)
				check(t, name, m)
				checkCausal(t, name, m)
				// Every query tile lists the same key tiles: S of them.
				s, _ := m.Row(0)
				for qt := 1; qt < m.QueryTiles(); qt++ {
					if r, _ := m.Row(qt); !slices.Equal(r, s) {
						t.Fatalf("%s: query tile %d lists %v, tile 0 %v", name, qt, r, s)
					}
				}
				max := m.KeyTiles()
				if block <= l-c {
					max = min(max, ceilDiv(T, l)*(ceilDiv(c, block)+1))
				} else if full := T / block; len(s) < full {
					t.Errorf("%s: block > l-c, yet %d key tiles of %d full ones listed", name, len(s), full)
				}
				if len(s) > max {
					t.Errorf("%s: %d key tiles listed per row, the doc says at most %d", name, len(s), max)
				}
			}
			if d := Summary(T, block, 4, 4); d.Tiles() != d.QueryTiles()*d.KeyTiles() {
				t.Errorf("summary c == l T=%d block=%d lists %d tiles, not all", T, block, d.Tiles())
			}
		}
	}
}

func TestBigBirdMatchesItsPredicate(t *testing.T) {
	for _, T := range patternLengths {
		for _, block := range patternBlocks {
			nb := ceilDiv(T, block)
			for _, window := range []int{1, 3, 5} {
				for _, global := range []int{0, 1, 2} {
					for _, random := range []int{0, 1, 2} {
						rng := rand.New(rand.NewPCG(uint64(T), uint64(block*100+window*10+global)))
						rnd := RandomBlocks(nb, window, global, random, rng)
						name := fmt.Sprintf("bigbird window=%d global=%d random=%d T=%d block=%d (%v)", window, global, random, T, block, rnd)
						m := BigBird(T, block, window, global, rnd)
						check(t, name, m)
						checkCausal(t, name, m)
						for qt := 0; qt < m.QueryTiles(); qt++ {
							tiles, kinds := m.Row(qt)
							for _, k := range kinds {
								if k != Full {
									t.Fatalf("%s: query tile %d: a %d tile", name, qt, k)
								}
							}
							max := window + global + len(rnd[qt])
							if qt < global {
								max = nb
							}
							if len(tiles) > max {
								t.Errorf("%s: query tile %d lists %d tiles, the doc says at most %d", name, qt, len(tiles), max)
							}
						}
					}
				}
				if m, n := BigBird(T, block, window, 0, nil), BigBird(T, block, window, 0, make([][]int32, nb)); m.Fingerprint() != n.Fingerprint() {
					t.Errorf("nil and empty random lists: %s, %s", m.Fingerprint(), n.Fingerprint())
				}
			}
		}
	}
}

// The random lists may overlap the window and the global blocks (BigBird
// takes them from anywhere), and global query rows may carry lists.
func TestBigBirdMergesOverlappingRandomBlocks(t *testing.T) {
	rnd := [][]int32{{0, 5}, {0, 1, 2, 7}, {0, 3, 4, 6}, {2, 3, 4}, nil, {0, 1, 2, 3, 4, 5, 6, 7}, {6}, {0, 7}}
	for _, global := range []int{0, 1, 3} {
		for _, block := range []int{1, 3, 4} {
			for _, T := range []int{8*block - block + 1, 8 * block} { // a ragged last block, a full one
				check(t, fmt.Sprintf("overlapping random global=%d T=%d block=%d", global, T, block), BigBird(T, block, 3, global, rnd))
			}
		}
	}
}

// The element predicates themselves, against their definitions.
func TestPatternPredicates(t *testing.T) {
	const T = 24
	rnd := [][]int32{nil, {4}, {5}, {0}, {1}, {2}}
	seg, sum, bb := Segments(T, 4, 5), Summary(T, 4, 6, 2), BigBird(T, 4, 3, 1, rnd)
	for q := 0; q < T; q++ {
		for k := 0; k < T; k++ {
			if got, want := seg.Visible(q, k), q/5 == k/5; got != want {
				t.Fatalf("segments 5 (%d, %d): %v", q, k, got)
			}
			if got, want := sum.Visible(q, k), k%6 >= 4; got != want {
				t.Fatalf("summary l=6 c=2 (%d, %d): %v", q, k, got)
			}
			qb, kb := q/4, k/4
			want := qb == 0 || kb == 0 || kb >= qb-1 && kb <= qb+1 || slices.Contains(rnd[qb], int32(kb))
			if got := bb.Visible(q, k); got != want {
				t.Fatalf("bigbird (%d, %d): %v", q, k, got)
			}
		}
	}
	// Spelled out for one row: block 3 sees 0 (global), 2..4 (window) and 0
	// (random, already global); block 4 sees 0, 1 (random) and 3..5.
	for qb, want := range map[int][]int32{3: {0, 2, 3, 4}, 4: {0, 1, 3, 4, 5}, 0: {0, 1, 2, 3, 4, 5}} {
		if got, _ := bb.Row(qb); !slices.Equal(got, want) {
			t.Errorf("bigbird row %d: %v, want %v", qb, got, want)
		}
	}
}

func TestRandomBlocks(t *testing.T) {
	for _, tiles := range []int{1, 2, 5, 9, 40} {
		for _, window := range []int{1, 3, 5} {
			for _, global := range []int{0, 1, 2} {
				for _, random := range []int{0, 1, 3, 50} {
					name := fmt.Sprintf("tiles=%d window=%d global=%d random=%d", tiles, window, global, random)
					rnd := RandomBlocks(tiles, window, global, random, rand.New(rand.NewPCG(7, 11)))
					again := RandomBlocks(tiles, window, global, random, rand.New(rand.NewPCG(7, 11)))
					if len(rnd) != tiles {
						t.Fatalf("%s: %d lists", name, len(rnd))
					}
					for qt, row := range rnd {
						if !slices.Equal(row, again[qt]) {
							t.Fatalf("%s: block %d: %v, then %v with the same seed", name, qt, row, again[qt])
						}
						eligible := 0
						for kt := 0; kt < tiles; kt++ {
							if kt >= global && (kt < qt-window/2 || kt > qt+window/2) {
								eligible++
							}
						}
						want := min(random, eligible)
						if qt < global {
							want = 0
						}
						if len(row) != want {
							t.Fatalf("%s: block %d: %d random blocks %v, want %d", name, qt, len(row), row, want)
						}
						for i, kt := range row {
							switch {
							case kt < 0 || int(kt) >= tiles:
								t.Fatalf("%s: block %d: %v out of range", name, qt, row)
							case i > 0 && kt <= row[i-1]:
								t.Fatalf("%s: block %d: %v not ascending and distinct", name, qt, row)
							case int(kt) < global:
								t.Fatalf("%s: block %d: %v holds a global block", name, qt, row)
							case int(kt) >= qt-window/2 && int(kt) <= qt+window/2:
								t.Fatalf("%s: block %d: %v holds a window block", name, qt, row)
							}
						}
					}
				}
			}
		}
	}
	a := RandomBlocks(64, 3, 2, 3, rand.New(rand.NewPCG(1, 2)))
	b := RandomBlocks(64, 3, 2, 3, rand.New(rand.NewPCG(3, 4)))
	if slices.EqualFunc(a, b, slices.Equal) {
		t.Error("two seeds drew the same random blocks")
	}
	if BigBird(64*4, 4, 3, 2, a).Fingerprint() == BigBird(64*4, 4, 3, 2, b).Fingerprint() || BigBird(64*4, 4, 3, 2, a).Name == BigBird(64*4, 4, 3, 2, b).Name {
		t.Error("two draws of random blocks give the same name or fingerprint")
	}
}

// Each eligible block is drawn equally often: block 5 of 10 with window 3
// and one global block may draw from {1, 2, 3, 7, 8, 9}; two at a time,
// each is drawn a third of the time.
func TestRandomBlocksAreUniform(t *testing.T) {
	const draws = 30000
	rng := rand.New(rand.NewPCG(5, 6))
	counts := map[int32]int{}
	for range draws {
		for _, kt := range RandomBlocks(10, 3, 1, 2, rng)[5] {
			counts[kt]++
		}
	}
	for _, kt := range []int32{1, 2, 3, 7, 8, 9} {
		if n := counts[kt]; n < draws/3*95/100 || n > draws/3*105/100 {
			t.Errorf("block %d drawn %d times in %d, want about %d", kt, n, draws, draws/3)
		}
	}
	if len(counts) != 6 {
		t.Errorf("drew blocks %v", counts)
	}
}

// A window covering every block leaves nothing out: the mask lists the
// same tiles as Dense, all Full.
func TestBigBirdWideWindowIsDense(t *testing.T) {
	for _, T := range patternLengths {
		for _, block := range patternBlocks {
			nb := ceilDiv(T, block)
			for _, global := range []int{0, 1} {
				m, d := BigBird(T, block, 2*nb-1, global, nil), Dense(T, T, block)
				if m.Tiles() != d.Tiles() {
					t.Fatalf("T=%d block=%d: %d tiles, dense %d", T, block, m.Tiles(), d.Tiles())
				}
				for qt := 0; qt < nb; qt++ {
					mt, mk := m.Row(qt)
					dt, dk := d.Row(qt)
					if !slices.Equal(mt, dt) || !slices.Equal(mk, dk) {
						t.Fatalf("T=%d block=%d row %d: %v %v, dense %v %v", T, block, qt, mt, mk, dt, dk)
					}
				}
			}
		}
	}
}

// The patterns visit O(T) tiles and build in time linear in them.
func TestPatternsAreLinear(t *testing.T) {
	const T, block = 1 << 16, 64
	nb := T / block
	start := time.Now()
	seg := Segments(T, block, 2048)
	if want := nb * 2048 / block; seg.Tiles() != want {
		t.Errorf("segments 2048: %d tiles listed, want %d", seg.Tiles(), want)
	}
	rnd := RandomBlocks(nb, 3, 2, 3, rand.New(rand.NewPCG(1, 2)))
	bb := BigBird(T, block, 3, 2, rnd)
	if max := 2*nb + nb*(3+2+3); bb.Tiles() > max {
		t.Errorf("bigbird: %d tiles listed, want at most %d", bb.Tiles(), max)
	}
	if f := bb.VisitedFraction(); f > 0.01 {
		t.Errorf("bigbird over 64K visits %.4f of the tiles", f)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("built in %v", el)
	}
}

func TestPatternsPanicOnBadParameters(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for name, build := range map[string]func(){
		"segments length 0":     func() { Segments(8, 4, 0) },
		"segments t 0":          func() { Segments(0, 4, 2) },
		"segments block 0":      func() { Segments(8, 0, 2) },
		"summary c 0":           func() { Summary(8, 4, 4, 0) },
		"summary c > l":         func() { Summary(8, 4, 4, 5) },
		"summary l 0":           func() { Summary(8, 4, 0, 0) },
		"summary block 0":       func() { Summary(8, 0, 4, 1) },
		"bigbird even window":   func() { BigBird(16, 4, 2, 0, nil) },
		"bigbird window 0":      func() { BigBird(16, 4, 0, 0, nil) },
		"bigbird global -1":     func() { BigBird(16, 4, 3, -1, nil) },
		"bigbird block 0":       func() { BigBird(16, 0, 3, 0, nil) },
		"bigbird random count":  func() { BigBird(16, 4, 3, 0, make([][]int32, 3)) },
		"bigbird random range":  func() { BigBird(16, 4, 3, 0, [][]int32{nil, {4}, nil, nil}) },
		"bigbird random order":  func() { BigBird(16, 4, 3, 0, [][]int32{nil, {3, 2}, nil, nil}) },
		"bigbird random repeat": func() { BigBird(16, 4, 3, 0, [][]int32{nil, {3, 3}, nil, nil}) },
		"random even window":    func() { RandomBlocks(8, 4, 0, 1, rng) },
		"random negative":       func() { RandomBlocks(8, 3, 0, -1, rng) },
		"random global -1":      func() { RandomBlocks(8, 3, -1, 1, rng) },
		"random tiles 0":        func() { RandomBlocks(0, 3, 0, 1, rng) },
		"random nil rng":        func() { RandomBlocks(8, 3, 0, 1, nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			build()
		}()
	}
}

func TestPatternFingerprintsSeparate(t *testing.T) {
	seen := map[string]string{}
	for name, m := range map[string]*Mask{
		"segments 4":          Segments(16, 4, 4),
		"segments 5":          Segments(16, 4, 5),
		"summary 4 1":         Summary(16, 4, 4, 1),
		"summary 4 2":         Summary(16, 4, 4, 2),
		"summary 8 2":         Summary(16, 4, 8, 2),
		"bigbird 1 0":         BigBird(16, 4, 1, 0, nil),
		"bigbird 3 0":         BigBird(16, 4, 3, 0, nil),
		"bigbird 1 1":         BigBird(16, 4, 1, 1, nil),
		"bigbird 1 0 random":  BigBird(16, 4, 1, 0, [][]int32{{2}, nil, nil, nil}),
		"bigbird 1 0 random2": BigBird(16, 4, 1, 0, [][]int32{{3}, nil, nil, nil}),
	} {
		f := m.Fingerprint()
		if other, dup := seen[f]; dup {
			t.Errorf("%s and %s share fingerprint %s", name, other, f)
		}
		seen[f] = name
	}
	// Only the names separate different predicates with the same tiles:
	// segments of 3 and of 5 over 16 positions in tiles of 8 both list the
	// four tiles Partial.
	a, b := Segments(16, 8, 3), Segments(16, 8, 5)
	if a.Tiles() != 4 || b.Tiles() != 4 {
		t.Fatalf("segments in tiles of 8: %d and %d tiles", a.Tiles(), b.Tiles())
	}
	if a.Fingerprint() == b.Fingerprint() {
		t.Error("segments 3 and 5 share a fingerprint")
	}
}
