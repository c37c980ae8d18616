// Package blockmask describes which keys each query of an attention may see,
// as a value the attention cores consume, in the spirit of PyTorch
// FlexAttention's BlockMask: the query and key positions are cut into tiles
// of Block positions, and for every query tile the mask lists the key tiles
// that are fully visible (every element: no predicate is evaluated there)
// and those that are partially visible (the element predicate Visible
// decides inside them); every other tile is skipped. The same lists
// transposed (for every key tile, the query tiles that see it) drive a
// backward pass that walks key tiles to accumulate dK and dV without
// atomics.
//
// Builders classify tiles arithmetically (a causal band is arithmetic), in
// time O(number of listed tiles), never by evaluating the predicate at
// every element, and the metadata is O(listed tiles) ints. A dense core
// given the same predicate is the oracle for every pattern.
//
// Key padding is not part of a Mask: it differs per batch and per step, so
// the cores apply it (an input of the op) on top of the static pattern.
package blockmask

import (
	"fmt"
	"hash/fnv"
	"slices"
)

// Kind says how much of a (query tile, key tile) pair is visible.
type Kind uint8

const (
	None    Kind = iota // no element visible: the tile is skipped
	Partial             // some elements: Visible decides each
	Full                // every element visible
)

// Mask is a block-sparse attention pattern over Q query and K key
// positions in tiles of Block positions (the last tile of each side may be
// shorter).
type Mask struct {
	// Name says what pattern this is, with its parameters
	// ("sliding_window(window=256,causal)"); with the tile lists it makes
	// the mask's Fingerprint.
	Name        string
	Q, K, Block int
	// Visible is the element predicate: may query q see key k? It must be
	// true everywhere in Full tiles and false everywhere outside listed
	// tiles; cores evaluate it only in Partial tiles.
	Visible func(q, k int) bool
	// Interval, if not nil, says the same as Visible for patterns where
	// each query sees one contiguous run of keys: query q sees exactly the
	// keys [lo, hi) (lo >= hi: none). Cores then mask a Partial tile row by
	// row instead of element by element (a causal or windowed diagonal
	// tile costs O(block) calls, not O(block^2)).
	Interval func(q int) (lo, hi int)
	// KeyVisible, if not nil, is a predicate on keys alone: a key it
	// rejects is hidden from every query (the Sparse Transformer's summary
	// columns). When Interval or KeyVisible is set, the two together say
	// the same as Visible: query q sees key k iff k is in Interval(q)
	// (every key when Interval is nil) and KeyVisible(k) (every key when
	// it is nil). Cores then mask a Partial tile by rows and columns,
	// O(block) calls, instead of element by element.
	KeyVisible func(k int) bool

	// Per query tile qt: the key tiles rows[qt] (ascending), with their
	// kinds, as CSR: rowStart[qt]..rowStart[qt+1] index rowTiles/rowKinds.
	rowStart []int32
	rowTiles []int32
	rowKinds []Kind
	// The transpose: per key tile, the query tiles that see it.
	colStart []int32
	colTiles []int32
	colKinds []Kind
}

// Classifier says how visible the tile pair (query tile qt, key tile kt)
// is; Tiles calls it only for the key tiles a builder proposes.
type Classifier func(qt, kt int) Kind

// New builds a mask from a classifier: for each query tile, candidates(qt)
// lists the key tiles that may be visible (ascending, no repeats) and
// classify decides each; tiles classified None are left out. It panics on
// sizes below 1 or candidates out of range: builders are code, not input.
func New(name string, q, k, block int, visible func(q, k int) bool, candidates func(qt int) []int, classify Classifier) *Mask {
	if q < 1 || k < 1 || block < 1 {
		panic(fmt.Sprintf("blockmask: sizes Q %d, K %d, block %d must be at least 1", q, k, block))
	}
	m := &Mask{Name: name, Q: q, K: k, Block: block, Visible: visible}
	nq, nk := m.QueryTiles(), m.KeyTiles()
	m.rowStart = make([]int32, nq+1)
	colCount := make([]int32, nk+1)
	for qt := 0; qt < nq; qt++ {
		prev := -1
		for _, kt := range candidates(qt) {
			if kt < 0 || kt >= nk || kt <= prev {
				panic(fmt.Sprintf("blockmask: query tile %d: candidate key tiles must ascend within [0, %d), got %d after %d", qt, nk, kt, prev))
			}
			prev = kt
			kind := classify(qt, kt)
			if kind == None {
				continue
			}
			m.rowTiles = append(m.rowTiles, int32(kt))
			m.rowKinds = append(m.rowKinds, kind)
			colCount[kt+1]++
		}
		m.rowStart[qt+1] = int32(len(m.rowTiles))
	}
	// Transpose by counting sort: query tiles come out ascending per key tile.
	for kt := 0; kt < nk; kt++ {
		colCount[kt+1] += colCount[kt]
	}
	m.colStart = slices.Clone(colCount)
	m.colTiles = make([]int32, len(m.rowTiles))
	m.colKinds = make([]Kind, len(m.rowTiles))
	next := slices.Clone(colCount[:nk])
	for qt := 0; qt < nq; qt++ {
		for i := m.rowStart[qt]; i < m.rowStart[qt+1]; i++ {
			kt := m.rowTiles[i]
			m.colTiles[next[kt]] = int32(qt)
			m.colKinds[next[kt]] = m.rowKinds[i]
			next[kt]++
		}
	}
	return m
}

// QueryTiles and KeyTiles are the numbers of tiles on each side.
func (m *Mask) QueryTiles() int { return (m.Q + m.Block - 1) / m.Block }

// KeyTiles is the number of key tiles.
func (m *Mask) KeyTiles() int { return (m.K + m.Block - 1) / m.Block }

// Row returns the key tiles query tile qt visits and their kinds (shared
// slices: do not modify).
func (m *Mask) Row(qt int) ([]int32, []Kind) {
	a, b := m.rowStart[qt], m.rowStart[qt+1]
	return m.rowTiles[a:b], m.rowKinds[a:b]
}

// Col returns the query tiles that visit key tile kt and their kinds.
func (m *Mask) Col(kt int) ([]int32, []Kind) {
	a, b := m.colStart[kt], m.colStart[kt+1]
	return m.colTiles[a:b], m.colKinds[a:b]
}

// Tiles is the number of listed (visited) tile pairs; VisitedFraction is
// it over all tile pairs, the share of a dense core's work a tiled core does.
func (m *Mask) Tiles() int { return len(m.rowTiles) }

// VisitedFraction is Tiles over QueryTiles x KeyTiles.
func (m *Mask) VisitedFraction() float64 {
	return float64(m.Tiles()) / float64(m.QueryTiles()*m.KeyTiles())
}

// span is the positions [lo, hi) of tile t of block positions on a side of
// n positions.
func span(t, block, n int) (lo, hi int) { return t * block, min((t+1)*block, n) }

// Fingerprint identifies the mask: its name, sizes and tile lists, hashed
// (FNV-1a). Attention ops put it in their names, since Gorgonia merges
// nodes whose ops have the same name and inputs: two masks with the same
// fingerprint must have the same predicate, which builders ensure by
// naming every parameter.
func (m *Mask) Fingerprint() string {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s|%d|%d|%d|", m.Name, m.Q, m.K, m.Block)
	for _, xs := range [][]int32{m.rowStart, m.rowTiles} {
		for _, x := range xs {
			h.Write([]byte{byte(x), byte(x >> 8), byte(x >> 16), byte(x >> 24)})
		}
	}
	h.Write(kindBytes(m.rowKinds))
	return fmt.Sprintf("%s#%016x", m.Name, h.Sum64())
}

func kindBytes(k []Kind) []byte {
	b := make([]byte, len(k))
	for i, x := range k {
		b[i] = byte(x)
	}
	return b
}

// Dense is the full pattern: every query sees every key.
func Dense(q, k, block int) *Mask {
	m := New("dense", q, k, block, func(int, int) bool { return true }, allTiles((k+block-1)/block), func(int, int) Kind { return Full })
	m.Interval = func(int) (int, int) { return 0, k }
	return m
}

// Causal lets query i see keys j <= i + k - q: the queries are the last q
// of the k positions (q == k for self-attention).
func Causal(q, k, block int) *Mask {
	shift := k - q
	m := New("causal", q, k, block, func(i, j int) bool { return j <= i+shift },
		func(qt int) []int {
			_, q1 := span(qt, block, q)
			last := q1 - 1 + shift // the last key the tile's last query sees
			if last < 0 {
				return nil
			}
			return seq(0, min(last, k-1)/block+1)
		},
		func(qt, kt int) Kind {
			q0, _ := span(qt, block, q)
			_, k1 := span(kt, block, k)
			if k1-1 <= q0+shift {
				return Full
			}
			return Partial // the diagonal tiles (tiles past the last query's keys are not candidates)
		})
	m.Interval = func(i int) (int, int) { return 0, min(i+shift+1, k) }
	return m
}

// And is the pattern visible where both a and b are (the same sizes and
// block): a causal mask composed with any pattern, say. It merges the two
// masks' tile lists in O(listed tiles); a tile is Full where both are.
func And(a, b *Mask) *Mask {
	if a.Q != b.Q || a.K != b.K || a.Block != b.Block {
		panic(fmt.Sprintf("blockmask: And of %s (%dx%d, block %d) and %s (%dx%d, block %d)", a.Name, a.Q, a.K, a.Block, b.Name, b.Q, b.K, b.Block))
	}
	va, vb := a.Visible, b.Visible
	kinds := map[[2]int]Kind{}
	m := New(a.Name+"&"+b.Name, a.Q, a.K, a.Block, func(q, k int) bool { return va(q, k) && vb(q, k) },
		func(qt int) []int {
			ta, ka := a.Row(qt)
			tb, kb := b.Row(qt)
			var out []int
			for i, j := 0, 0; i < len(ta) && j < len(tb); {
				switch {
				case ta[i] < tb[j]:
					i++
				case ta[i] > tb[j]:
					j++
				default:
					kind := Partial
					if ka[i] == Full && kb[j] == Full {
						kind = Full
					}
					kinds[[2]int{qt, int(ta[i])}] = kind
					out = append(out, int(ta[i]))
					i++
					j++
				}
			}
			return out
		},
		func(qt, kt int) Kind { return kinds[[2]int{qt, kt}] })
	if a.described() && b.described() { // rows and columns describe both, so the conjunction
		switch ia, ib := a.Interval, b.Interval; {
		case ia != nil && ib != nil:
			m.Interval = func(q int) (int, int) {
				lo, hi := ia(q)
				lo2, hi2 := ib(q)
				return max(lo, lo2), min(hi, hi2)
			}
		case ia != nil:
			m.Interval = ia
		default:
			m.Interval = ib
		}
		switch ka, kb := a.KeyVisible, b.KeyVisible; {
		case ka != nil && kb != nil:
			m.KeyVisible = func(k int) bool { return ka(k) && kb(k) }
		case ka != nil:
			m.KeyVisible = ka
		default:
			m.KeyVisible = kb
		}
	}
	return m
}

// described reports whether Interval and KeyVisible say what Visible says.
func (m *Mask) described() bool { return m.Interval != nil || m.KeyVisible != nil }

// SlidingWindow lets query i see keys i-window..i when causal, |i-j| <=
// window otherwise (Q == K).
func SlidingWindow(t, block, window int, causal bool) *Mask {
	if window < 0 {
		panic("blockmask: negative window")
	}
	window = min(window, t) // a wider window sees no more, and q+window must not overflow
	visible := func(q, k int) bool { return k <= q && q-k <= window || !causal && k > q && k-q <= window }
	lo := func(q int) int { return max(q-window, 0) }
	hi := func(q int) int { // the last visible key of query q
		if causal {
			return q
		}
		return min(q+window, t-1)
	}
	dir := "causal"
	if !causal {
		dir = "bidirectional"
	}
	m := New(fmt.Sprintf("sliding_window(window=%d,%s)", window, dir), t, t, block, visible,
		func(qt int) []int {
			q0, q1 := span(qt, block, t)
			return seq(lo(q0)/block, hi(q1-1)/block+1)
		},
		func(qt, kt int) Kind {
			q0, q1 := span(qt, block, t)
			k0, k1 := span(kt, block, t)
			// Query q sees the interval [lo(q), hi(q)], whose ends do not
			// decrease with q: no query of the tile sees the key tile if the
			// last query's interval ends before it or the first's starts
			// after it; every query sees all of it if the last query's
			// interval starts at or before k0 and the first's ends at or
			// after k1-1.
			switch {
			case hi(q1-1) < k0 || lo(q0) > k1-1:
				return None
			case lo(q1-1) <= k0 && hi(q0) >= k1-1:
				return Full
			}
			return Partial
		})
	m.Interval = func(q int) (int, int) { return lo(q), hi(q) + 1 }
	return m
}

// WithGlobal adds global positions to a self-attention pattern (Q == K):
// the first g queries see every key and every query sees the first g keys
// (Longformer's global attention, Beltagy et al. 2020), on top of m. It
// lists m's tiles plus the global tile rows and columns: O(listed tiles +
// (T / block) x g / block).
func WithGlobal(m *Mask, g int) *Mask {
	if m.Q != m.K || g < 0 {
		panic(fmt.Sprintf("blockmask: WithGlobal(%s, %d) needs a square mask and g >= 0", m.Name, g))
	}
	if g == 0 {
		return m
	}
	g = min(g, m.K)
	gTiles := (g + m.Block - 1) / m.Block // key tiles holding a global position
	visible := m.Visible
	return New(fmt.Sprintf("%s+global(%d)", m.Name, g), m.Q, m.K, m.Block,
		func(q, k int) bool { return q < g || k < g || visible(q, k) },
		func(qt int) []int {
			if qt*m.Block < g { // a global query: every key tile
				return seq(0, m.KeyTiles())
			}
			tiles, _ := m.Row(qt)
			out := seq(0, gTiles)
			for _, kt := range tiles {
				if int(kt) >= gTiles {
					out = append(out, int(kt))
				}
			}
			return out
		},
		func(qt, kt int) Kind {
			_, q1 := span(qt, m.Block, m.Q)
			_, k1 := span(kt, m.Block, m.K)
			if q1 <= g || k1 <= g { // every query, or every key, of the tile is global
				return Full
			}
			inner := None
			tiles, kinds := m.Row(qt)
			if i, ok := slices.BinarySearch(tiles, int32(kt)); ok {
				inner = kinds[i]
			}
			if inner == Full {
				return Full
			}
			if qt*m.Block < g || kt*m.Block < g { // some global positions in the tile
				return Partial
			}
			return inner
		})
}

func allTiles(n int) func(int) []int {
	all := seq(0, n)
	return func(int) []int { return all }
}

// seq is lo, lo+1, ..., hi-1.
func seq(lo, hi int) []int {
	s := make([]int, 0, max(hi-lo, 0))
	for i := lo; i < hi; i++ {
		s = append(s, i)
	}
	return s
}
