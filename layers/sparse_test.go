package layers

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// sparseVariants are the fixed-pattern variants, with options that make
// the checks' short sequences exercise their patterns.
var sparseVariants = []config.Component{
	{Kind: "sliding_window", Options: map[string]any{"window": 2}},
	{Kind: "sliding_window", Options: map[string]any{"window": 1, "global_tokens": 2}},
	{Kind: "bigbird", Options: map[string]any{"block": 2, "window_blocks": 1, "random_blocks": 1, "global_blocks": 1}},
	{Kind: "strided", Options: map[string]any{"mode": "strided", "stride": 3}},
	{Kind: "strided", Options: map[string]any{"mode": "fixed", "stride": 4, "summary": 1}},
	{Kind: "dilated", Options: map[string]any{"segments": []any{2, 4, 8}, "dilations": []any{1, 2, 4}}},
}

// TestSparseCoresMatchDense: each sparse variant, run on the tiled core,
// computes what it computes with every pattern on the dense core (which
// evaluates the pattern's predicate at every score): outputs and the
// gradients of the input and every parameter to 1e-10 in float64, fresh
// random inputs each run, in every check setting and on a padded length
// that is no multiple of the tile.
func TestSparseCoresMatchDense(t *testing.T) {
	settings := append(CheckSettings(),
		CheckSetting{Name: "causal-padded-T13-tile4", Causal: true, Padded: true, Batch: 2, SeqLen: 13, DModel: 8, Heads: 2, FlashBlock: 4},
		CheckSetting{Name: "bidirectional-padded-T13-tile3", Padded: true, Batch: 2, SeqLen: 13, DModel: 8, Heads: 4, FlashBlock: 3},
	)
	for _, c := range sparseVariants {
		for _, st := range settings {
			t.Run(c.Kind+"/"+st.Name, func(t *testing.T) {
				seed := uint64(time.Now().UnixNano())
				t.Logf("seed %d", seed)
				tiled := runLayer(t, c, st, seed)
				dense := runLayerWith(t, c, st, seed, func(ctx *Context) { ctx.oracle = true })
				if d := relDiff(tiled.out, dense.out); !(d <= 1e-10) {
					t.Errorf("output: relative difference %g", d)
				}
				if d := relDiff(tiled.dx, dense.dx); !(d <= 1e-10) {
					t.Errorf("input gradient: relative difference %g", d)
				}
				for name, w := range dense.dparams {
					if d := relDiff(tiled.dparams[name], w); !(d <= 1e-10) {
						t.Errorf("gradient of %s: relative difference %g", name, d)
					}
				}
			})
		}
	}
}

// TestSparsePatternsFollowTheirFormulas: each variant's recorded maps
// (the dense core's weights under the variant's own pattern) are nonzero
// exactly where the paper's formula lets query i see key j, head by head,
// causal and bidirectional: so a pattern built wrong (an offset, a bound,
// the heads' split) fails here even though both cores agree on it.
func TestSparsePatternsFollowTheirFormulas(t *testing.T) {
	abs := func(x int) int { return max(x, -x) }
	for _, c := range []struct {
		name    string
		options map[string]any
		kind    string
		// vis says whether query i sees key j under head h in the map
		// labelled label (bidirectional; causal adds j <= i).
		vis func(label string, h, i, j int) bool
	}{
		{"window", map[string]any{"window": 2}, "sliding_window", func(_ string, h, i, j int) bool { return abs(i-j) <= 2 }},
		{"window+global", map[string]any{"window": 1, "global_tokens": 2}, "sliding_window", func(_ string, h, i, j int) bool { return abs(i-j) <= 1 || i < 2 || j < 2 }},
		{"bigbird", map[string]any{"block": 3, "window_blocks": 3, "random_blocks": 0, "global_blocks": 1}, "bigbird", func(_ string, h, i, j int) bool {
			return abs(i/3-j/3) <= 1 || i/3 < 1 || j/3 < 1
		}},
		{"strided", map[string]any{"mode": "strided", "stride": 3}, "strided", func(_ string, h, i, j int) bool {
			return h%2 == 0 && abs(i-j) < 3 || h%2 == 1 && abs(i-j)%3 == 0
		}},
		{"fixed", map[string]any{"mode": "fixed", "stride": 4, "summary": 2}, "strided", func(_ string, h, i, j int) bool {
			return h%2 == 0 && i/4 == j/4 || h%2 == 1 && j%4 >= 2
		}},
		{"dilated", map[string]any{"segments": []any{4, 8}, "dilations": []any{1, 2}}, "dilated", func(_ string, h, i, j int) bool {
			return i/4 == j/4 || i%2 == h%2 && j%2 == h%2 && i/8 == j/8 // either pair
		}},
	} {
		for _, causal := range []bool{false, true} {
			st := CheckSetting{Name: c.name, Causal: causal, Batch: 1, SeqLen: 13, DModel: 16, Heads: 4, FlashBlock: 3, Options: c.options}
			_, maps, err := mapRun(t, c.kind, st, 5, true)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range maps[0] {
				for h := 0; h < m.Heads; h++ {
					w := m.Head(h)
					for i := 0; i < m.QLen; i++ {
						for j := 0; j < m.KLen; j++ {
							want := c.vis(m.Label, h, i, j) && (!causal || j <= i)
							if got := w[i*m.KLen+j] != 0; got != want {
								t.Errorf("%s causal=%v, map %s, head %d: query %d sees key %d: %v, the formula says %v", c.name, causal, m.Label, h, i, j, got, want)
							}
						}
					}
				}
			}
		}
	}
}

// In causal models BigBird draws its random blocks among the earlier
// blocks outside the window and the global ones, as many as there are.
func TestEarlierRandomBlocks(t *testing.T) {
	const nb, window, global, random = 12, 3, 2, 3
	rows := earlierRandomBlocks(nb, window, global, random, rand.New(rand.NewPCG(1, 2)))
	for qt, row := range rows {
		n := max(qt-window/2-global, 0)
		if qt < global {
			n = 0
		}
		if len(row) != min(random, n) {
			t.Errorf("block %d: %d random blocks, want %d", qt, len(row), min(random, n))
		}
		for i, kt := range row {
			if int(kt) < global || int(kt) >= qt-window/2 || i > 0 && kt <= row[i-1] {
				t.Errorf("block %d: random blocks %v: want ascending in [%d, %d)", qt, row, global, qt-window/2)
			}
		}
	}
}

// Options far beyond the sequence (a window or stride of MaxInt, a block
// larger than T, more random blocks than there are) compute what the
// largest meaningful value computes, without overflow or huge buffers.
func TestSparseExtremeOptions(t *testing.T) {
	const huge = math.MaxInt
	st := CheckSetting{Name: "causal-padded", Causal: true, Padded: true, Batch: 2, SeqLen: 9, DModel: 8, Heads: 2}
	for _, c := range []struct {
		name      string
		got, want config.Component
	}{
		{"window", config.Component{Kind: "sliding_window", Options: map[string]any{"window": huge, "global_tokens": huge}}, config.Component{Kind: "sliding_window", Options: map[string]any{"window": 9}}},
		{"stride", config.Component{Kind: "strided", Options: map[string]any{"stride": huge}}, config.Component{Kind: "strided", Options: map[string]any{"stride": 9}}},
		{"dilation", config.Component{Kind: "dilated", Options: map[string]any{"segments": []any{huge}, "dilations": []any{huge}}}, config.Component{Kind: "dilated", Options: map[string]any{"segments": []any{9}, "dilations": []any{9}}}},
		{"bigbird", config.Component{Kind: "bigbird", Options: map[string]any{"block": 100000, "random_blocks": 1 << 40, "global_blocks": huge}}, config.Component{Kind: "standard"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, want := runLayer(t, c.got, st, 1), runLayer(t, c.want, st, 1)
			if d := relDiff(got.out, want.out); !(d <= 1e-10) {
				t.Errorf("output differs from %s by %g", c.want.Kind, d)
			}
		})
	}
}

// Linear attention's chunk is an implementation choice: chunks of 1, 3 and
// more than T give the same outputs and gradients (float64, 1e-10).
func TestLinearChunksAgree(t *testing.T) {
	for _, causal := range []bool{true, false} {
		st := CheckSetting{Name: "padded", Causal: causal, Padded: true, Batch: 2, SeqLen: 11, DModel: 8, Heads: 2}
		want := runLayer(t, config.Component{Kind: "linear", Options: map[string]any{"chunk": 64}}, st, 3)
		for _, chunk := range []int{1, 3} {
			got := runLayer(t, config.Component{Kind: "linear", Options: map[string]any{"chunk": chunk}}, st, 3)
			if d := relDiff(got.out, want.out); !(d <= 1e-10) {
				t.Errorf("causal %v chunk %d: output differs by %g", causal, chunk, d)
			}
			for name, w := range want.dparams {
				if d := relDiff(got.dparams[name], w); !(d <= 1e-10) {
					t.Errorf("causal %v chunk %d: gradient of %s differs by %g", causal, chunk, name, d)
				}
			}
		}
	}
}

// Linformer with k = T and identity projections E = F = I is standard
// attention (bidirectional, unpadded: with padding the zeroed keys still
// take a softmax weight), outputs and the gradients of the input and of
// the shared parameters to 1e-10.
func TestLinformerIdentityIsStandard(t *testing.T) {
	const T = 7
	st := CheckSetting{Name: "bidirectional", Batch: 2, SeqLen: T, DModel: 8, Heads: 2}
	identity := func(p *graph.Param) {
		if strings.HasSuffix(p.Name, "proj_e") || strings.HasSuffix(p.Name, "proj_f") {
			d := p.Value.Data().([]float64)
			clear(d)
			for i := 0; i < T; i++ {
				d[i*T+i] = 1
			}
		}
	}
	for _, share := range []bool{false, true} {
		got := runLayerFixed(t, config.Component{Kind: "linformer", Options: map[string]any{"k": T, "share_kv": share}}, st, 4, nil, identity)
		want := runLayer(t, config.Component{Kind: "standard"}, st, 4)
		if d := relDiff(got.out, want.out); !(d <= 1e-10) {
			t.Errorf("share_kv %v: output differs by %g", share, d)
		}
		if d := relDiff(got.dx, want.dx); !(d <= 1e-10) {
			t.Errorf("share_kv %v: input gradient differs by %g", share, d)
		}
		for name, w := range want.dparams {
			if d := relDiff(got.dparams[name], w); !(d <= 1e-10) {
				t.Errorf("share_kv %v: gradient of %s differs by %g", share, name, d)
			}
		}
	}
}

// Linear attention reports its recurrent state (S and z per head), and
// keeps no KV cache.
func TestLinearState(t *testing.T) {
	a, err := NewAttention(config.Component{Kind: "linear"}, Spec{DModel: 64, Heads: 4, NLayers: 2, Causal: true, Pos: Position{Kind: "learned"}})
	if err != nil {
		t.Fatal(err)
	}
	st, ok := a.(RecurrentState)
	if !ok || st.StateElems() != 4*(16*16+16) {
		t.Fatalf("state %v (%v), want 4 x (16 x 16 + 16)", ok, st)
	}
	if _, kv := a.(KVCache); kv {
		t.Error("linear attention claims a KV cache")
	}
}
