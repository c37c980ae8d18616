package blockmask

// Fixed (content-independent) sparse patterns over t positions of
// self-attention (Q == K == t). They are bidirectional; a causal model
// composes them with And(m, Causal(t, t, block)).

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
)

// checkSizes panics unless t and block are at least 1 (New checks them too,
// but the builders do arithmetic with them first).
func checkSizes(builder string, t, block int) {
	if t < 1 || block < 1 {
		panic(fmt.Sprintf("blockmask: %s: t %d and block %d must be at least 1", builder, t, block))
	}
}

// Segments is the block-diagonal pattern of LongNet's segments (Ding et al.
// 2023, "LongNet: Scaling Transformers to 1,000,000,000 Tokens"), and the
// first, local part A1 of the Sparse Transformer's "fixed" pattern (Child et
// al. 2019) with length l: query i sees key j iff i/length == j/length, the
// positions cut into segments of length positions (the last may be
// shorter).
//
// It lists T/block · length/block tiles, all Full, when block divides length
// and length divides T; in general at most QueryTiles · (2⌈(length−1)/block⌉
// + 1), the tiles a segment boundary crosses Partial. It panics unless
// length >= 1.
func Segments(t, block, length int) *Mask {
	checkSizes("segments", t, block)
	if length < 1 {
		panic(fmt.Sprintf("blockmask: segments: length %d must be at least 1", length))
	}
	// The segments the positions [lo, hi) of a tile touch: first and last.
	segs := func(lo, hi int) (int, int) { return lo / length, (hi - 1) / length }
	m := New(fmt.Sprintf("segments(length=%d)", length), t, t, block,
		func(q, k int) bool { return q/length == k/length },
		func(qt int) []int {
			s0, s1 := segs(span(qt, block, t))
			// The keys of segments s0..s1: contiguous, so every key tile
			// between the first and the last holds a visible element.
			k0, k1 := s0*length, min((s1+1)*length, t)
			return seq(k0/block, (k1-1)/block+1)
		},
		func(qt, kt int) Kind {
			s0, s1 := segs(span(qt, block, t))
			r0, r1 := segs(span(kt, block, t))
			switch {
			case r1 < s0 || r0 > s1:
				return None // no segment in common
			case s0 == s1 && r0 == r1 && s0 == r0:
				return Full // queries and keys all in one segment
			}
			// A segment in common, and a query and a key in different ones.
			return Partial
		})
	m.Interval = func(q int) (int, int) { s := q / length * length; return s, min(s+length, t) }
	return m
}

// Summary is the second part A2 of the Sparse Transformer's "fixed"
// pattern (Child et al. 2019, "Generating Long Sequences with Sparse
// Transformers"): every query sees key j iff j mod l >= l−c, the last c
// positions of every stride of l being summary positions (1 <= c <= l; c ==
// l is Dense). The full "fixed" pattern's other part is Segments(t, block,
// l).
//
// Every query tile lists the same S key tiles, those holding a summary
// position, so it lists QueryTiles · S tiles: S is every key tile (but
// perhaps a short last one) when block > l−c, and at most ⌈T/l⌉ · (⌈c/block⌉
// + 1) otherwise. A key tile is Full when it holds summary positions only,
// else Partial. It panics unless 1 <= c <= l.
func Summary(t, block, l, c int) *Mask {
	checkSizes("summary", t, block)
	if l < 1 || c < 1 || c > l {
		panic(fmt.Sprintf("blockmask: summary: need 1 <= c <= l, got l %d, c %d", l, c))
	}
	plain := l - c // the non-summary positions at the start of each stride
	// nextSummary and nextPlain are the first summary (non-summary)
	// position at or after p; nextPlain is t when there is none.
	nextSummary := func(p int) int {
		if r := p % l; r < plain {
			return p + plain - r
		}
		return p
	}
	nextPlain := func(p int) int {
		if plain == 0 {
			return t
		}
		if r := p % l; r >= plain {
			return p + l - r
		}
		return p
	}
	// The key tiles holding a summary position, ascending: jump from each
	// to the tile of the next summary position, O(S).
	var cols []int
	for kt := 0; kt*block < t; kt++ {
		p := nextSummary(kt * block)
		if p >= t {
			break
		}
		kt = p / block
		cols = append(cols, kt)
	}
	keyVisible := func(k int) bool { return k%l >= plain }
	m := New(fmt.Sprintf("summary(l=%d,c=%d)", l, c), t, t, block,
		func(_, k int) bool { return keyVisible(k) },
		func(int) []int { return cols },
		func(_, kt int) Kind {
			k0, k1 := span(kt, block, t)
			switch {
			case nextSummary(k0) >= k1:
				return None
			case nextPlain(k0) >= k1:
				return Full
			}
			return Partial
		})
	m.KeyVisible = keyVisible
	return m
}

// RandomBlocks draws BigBird's random key blocks (Zaheer et al. 2020, "Big
// Bird: Transformers for Longer Sequences") for a pattern of tiles blocks:
// for each query block qt >= global, random distinct key blocks drawn
// uniformly from those neither in qt's window (|qt−kt| <= window/2) nor
// global (kt < global), fewer when fewer remain, ascending; global query
// blocks (qt < global), which see every key anyway, get none. It takes
// O(random) time per block (Floyd's sampling), never enumerating the
// eligible blocks. It panics on tiles < 1, an even or non-positive window,
// negative global or random, or a nil rng with random > 0.
func RandomBlocks(tiles, window, global, random int, rng *rand.Rand) [][]int32 {
	checkBigBird("random_blocks", tiles, window, global)
	if random < 0 {
		panic(fmt.Sprintf("blockmask: random_blocks: random %d is negative", random))
	}
	if random > 0 && rng == nil {
		panic("blockmask: random_blocks: nil rng")
	}
	out := make([][]int32, tiles)
	picked := map[int]bool{}
	for qt := min(global, tiles); qt < tiles; qt++ {
		// The eligible blocks are [global, tiles) less the window [a, b]
		// (qt >= global lies in it, so a <= b): n of them, the x-th being
		// global+x, shifted past the window when it reaches it.
		a, b := max(qt-window/2, global), min(qt+window/2, tiles-1)
		width := b - a + 1
		n := tiles - global - width
		r := min(random, n)
		if r == 0 {
			continue
		}
		// Floyd: a uniform r-subset of [0, n) in r draws.
		clear(picked)
		for j := n - r; j < n; j++ {
			if x := rng.IntN(j + 1); picked[x] {
				picked[j] = true
			} else {
				picked[x] = true
			}
		}
		row := make([]int32, 0, r)
		for x := range picked {
			kt := global + x
			if kt >= a {
				kt += width
			}
			row = append(row, int32(kt))
		}
		slices.Sort(row)
		out[qt] = row
	}
	return out
}

func checkBigBird(builder string, tiles, window, global int) {
	if tiles < 1 {
		panic(fmt.Sprintf("blockmask: %s: %d tiles", builder, tiles))
	}
	if window < 1 || window%2 == 0 {
		panic(fmt.Sprintf("blockmask: %s: window %d must be odd and positive (the block and window/2 each side)", builder, window))
	}
	if global < 0 {
		panic(fmt.Sprintf("blockmask: %s: global %d is negative", builder, global))
	}
}

// BigBird is the block-sparse pattern of Zaheer et al. 2020 ("Big Bird:
// Transformers for Longer Sequences", the ITC construction) with the tile as
// BigBird's block: query block qt sees key block kt iff |qt−kt| <=
// window/2 (window blocks, odd: 3 is the block and one each side), kt <
// global (global keys), qt < global (global queries see every key) or kt is
// in random[qt] (ascending, say from RandomBlocks; random may be nil for
// none, else it has one list per block). The predicate is block-level,
// visible(i, j) = visibleBlock(i/block, j/block), so every listed tile is
// Full.
//
// It lists the KeyTiles tiles of each global query block and at most window
// + global + len(random[qt]) of every other: O(T/block) tiles for fixed
// window, global and random. It panics on an even or non-positive window,
// negative global, or random lists of the wrong count, out of range or not
// ascending.
func BigBird(t, block, window, global int, random [][]int32) *Mask {
	checkSizes("bigbird", t, block)
	nb := (t + block - 1) / block
	checkBigBird("bigbird", nb, window, global)
	if random != nil && len(random) != nb {
		panic(fmt.Sprintf("blockmask: bigbird: %d random lists for %d blocks", len(random), nb))
	}
	// Own the lists (the predicate and the name depend on them), check
	// them, and hash them for the name.
	rnd := make([][]int32, nb)
	h := fnv.New64a()
	total := 0
	for qt := range random {
		rnd[qt] = slices.Clone(random[qt])
		h.Write([]byte{'|'})
		for i, kt := range rnd[qt] {
			if kt < 0 || int(kt) >= nb || i > 0 && kt <= rnd[qt][i-1] {
				panic(fmt.Sprintf("blockmask: bigbird: query block %d: random blocks must ascend within [0, %d), got %v", qt, nb, random[qt]))
			}
			h.Write([]byte{byte(kt), byte(kt >> 8), byte(kt >> 16), byte(kt >> 24)})
		}
		total += len(rnd[qt])
	}
	rname := "none"
	if total > 0 {
		rname = fmt.Sprintf("%d@fnv%016x", total, h.Sum64())
	}
	half := window / 2
	visibleBlock := func(qb, kb int) bool {
		if qb < global || kb < global || qb-kb <= half && kb-qb <= half {
			return true
		}
		_, found := slices.BinarySearch(rnd[qb], int32(kb))
		return found
	}
	all := seq(0, nb)
	return New(fmt.Sprintf("bigbird(window=%d,global=%d,random=%s)", window, global, rname), t, t, block,
		func(q, k int) bool { return visibleBlock(q/block, k/block) },
		func(qt int) []int {
			if qt < global {
				return all
			}
			// Merge the global blocks [0, g), the window [lo, hi] and the
			// random list, ascending without repeats.
			g := min(global, nb)
			lo, hi := max(qt-half, g), min(qt+half, nb-1)
			r := rnd[qt]
			out := make([]int, 0, g+hi-lo+1+len(r))
			add := func(kt int) {
				if len(out) == 0 || kt > out[len(out)-1] {
					out = append(out, kt)
				}
			}
			emit := func(kt int) { // the random blocks below kt, then kt
				for len(r) > 0 && int(r[0]) < kt {
					add(int(r[0]))
					r = r[1:]
				}
				add(kt)
			}
			for kt := 0; kt < g; kt++ {
				emit(kt)
			}
			for kt := lo; kt <= hi; kt++ {
				emit(kt)
			}
			for _, kt := range r {
				add(int(kt))
			}
			return out
		},
		func(int, int) Kind { return Full })
}
