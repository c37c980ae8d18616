package models

import (
	"math"
	"testing"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// hmtMem is an hmt memory config with the given options.
func hmtMem(segment, summary, recall, carry, bptt int) config.Component {
	return config.Component{Kind: "hmt", Options: map[string]any{"segment": segment, "summary": summary, "recall": recall, "carry": carry, "bptt_segments": bptt}}
}

// With one segment hmt runs [P_0; tokens; P_0] (no summary pass, no
// recall, no carried tokens) with P_0 the learned memory.init [1, D]: the
// very sequence rmt with memory_tokens 1 runs, so the two models have the
// same parameters by name and equal logits and gradients within 1e-10,
// for a few attention variants, position schemes and block modules. (hmt
// has no setting that switches its memory off; rmt with memory_tokens 0
// is the plain model, TestMemoryDisabledIsPlain, so this pins hmt's
// segment sequence and output rows to a known model.)
func TestHMTOneSegmentIsRMT(t *testing.T) {
	const T = 6
	settings := []struct {
		attn    config.Component
		pos     string
		modules config.Components
	}{
		{config.Component{Kind: "standard"}, "learned", nil},
		{config.Component{Kind: "sliding_window", Options: map[string]any{"window": 3}}, "sinusoidal", nil},
		{config.Component{Kind: "standard"}, "rope", config.Components{{Kind: "se"}}},
	}
	for _, st := range settings {
		t.Run(st.attn.Kind+"/"+st.pos, func(t *testing.T) {
			rc, tc := memModel(T, config.Component{Kind: "rmt", Options: map[string]any{"segment": T, "memory_tokens": 1}})
			rc.Attention, rc.Positional, rc.BlockModules = st.attn, st.pos, st.modules
			want := memRun(t, rc, tc, 2, nil, nil)
			hc := rc
			hc.Memory = hmtMem(T, 2, 3, 2, 2)
			got := memRun(t, hc, tc, 2, nil, nil)
			if d := maxDiff(got.logits, want.logits); d > 1e-10 {
				t.Errorf("logits differ by %g", d)
			}
			if len(got.grads) != len(want.grads) {
				t.Errorf("%d parameters, rmt has %d", len(got.grads), len(want.grads))
			}
			for name, g := range want.grads {
				if d := maxDiff(got.grads[name], g); d > 1e-10 {
					t.Errorf("gradient of %s differs by %g", name, d)
				}
			}
		})
	}
}

// memRunSet is memRun with every position scored and set applied to the
// store after Build (to fix parameter values) and before the pass, and the
// inputs edited by edit when not nil.
func memRunSet(t *testing.T, mc config.Model, tc config.Component, batch int, set func(*graph.Store), edit func([]int)) memResult {
	t.Helper()
	all := func(mask []float64) {
		for i := range mask { // every position, every segment
			mask[i] = 1
		}
	}
	return memPass(t, mc, tc, batch, set, all, edit)
}

// Two segments, no carry, and the recall's value projection set to the
// identity: segment 1's cache holds m_0 alone, the softmax over one key
// is 1, so P_1 = m_0 Wv = m_0, the last row of segment 0's main pass; and
// hmt is rmt with memory_tokens 1 (M_1 = the last row of segment 0):
// equal logits at every position of both segments, and equal gradients
// of every parameter rmt has, within 1e-10 (the summary pass reaches the
// loss only through the softmax over one key, whose derivative is zero).
// This pins the memory write (which row, after which norm), P_s's two
// places in the main pass and the segment-1 token rows.
func TestHMTTwoSegmentsIsRMT(t *testing.T) {
	const T, L = 8, 4
	for _, pos := range []string{"learned", "rope"} {
		t.Run(pos, func(t *testing.T) {
			rc, tc := memModel(T, config.Component{Kind: "rmt", Options: map[string]any{"segment": L, "memory_tokens": 1, "bptt_segments": 0}})
			rc.Positional = pos
			want := memRunSet(t, rc, tc, 2, func(*graph.Store) {}, nil)
			hc := rc
			hc.Memory = hmtMem(L, 2, 3, 0, 0)
			got := memRunSet(t, hc, tc, 2, func(s *graph.Store) {
				w := s.Get("hmt.recall.wv").Value.Data().([]float64)
				d := hc.DModel
				for i := range w {
					w[i] = 0
					if i/d == i%d {
						w[i] = 1
					}
				}
			}, nil)
			sameRun(t, got, want)
		})
	}
}

// The carried tokens are the previous segment's last k. With the recall's
// value projection zero, P_s = 0 for s > 0 whatever the cache and the
// summary, so segment 1's tokens depend on segment 0 only through the
// carried rows: changing token p of segment 0 changes segment 1's logits
// exactly when p is among its last k tokens (bit for bit otherwise).
func TestHMTCarryWindow(t *testing.T) {
	const T, L, k, vocab = 8, 4, 2, 5
	mc, tc := memModel(T, hmtMem(L, 2, 4, k, 0))
	zeroWv := func(s *graph.Store) {
		w := s.Get("hmt.recall.wv").Value.Data().([]float64)
		for i := range w {
			w[i] = 0
		}
	}
	base := memRunSet(t, mc, tc, 1, zeroWv, nil)
	for p := 0; p < L; p++ {
		r := memRunSet(t, mc, tc, 1, zeroWv, func(in []int) { in[p] = (in[p] + 1) % vocab })
		d := maxDiff(r.logits[L*vocab:], base.logits[L*vocab:])
		if carried := p >= L-k; carried && d == 0 {
			t.Errorf("token %d is carried, and changing it leaves segment 1 unchanged", p)
		} else if !carried && d != 0 {
			t.Errorf("token %d is not carried, and changing it changes segment 1 by %g", p, d)
		}
	}
}

// The recall is a softmax over the cached embeddings: with two segments
// the cache holds one, the softmax is 1 whatever the query, so P_1 =
// m_0 Wv and the query's projection and the summary token get no
// gradient (within rounding); with three segments the recall chooses
// between two and both get one.
func TestHMTRecallOfOne(t *testing.T) {
	norm := func(g []float64) float64 {
		n := 0.0
		for _, x := range g {
			n += math.Abs(x)
		}
		return n
	}
	for _, c := range []struct {
		T    int
		zero bool
	}{{4, true}, {6, false}} {
		mc, tc := memModel(c.T, hmtMem(2, 1, 4, 1, 0))
		g := memRun(t, mc, tc, 2, nil, nil).grads
		for _, p := range []string{"hmt.recall.wq", "hmt.summary"} {
			gr, ok := g[p]
			if !ok {
				t.Fatalf("T=%d: no parameter %s", c.T, p)
			}
			n := norm(gr)
			if c.zero && n > 1e-12 {
				t.Errorf("T=%d (one cached embedding): |grad %s| = %g, want 0", c.T, p, n)
			}
			if !c.zero && n < 1e-8 {
				t.Errorf("T=%d (two cached embeddings): |grad %s| = %g, want > 0", c.T, p, n)
			}
		}
		if n := norm(g["hmt.recall.wv"]); n == 0 {
			t.Errorf("T=%d: no gradient reaches hmt.recall.wv", c.T)
		}
	}
}

// The whole hmt model's loss passes the float64 gradient check against
// every parameter through several segments (T = 8; segments of 2 or 4),
// with a cache smaller than the number of segments (recall 2 of 4
// segments: the oldest embedding is dropped), and with truncation in the
// graph: there only the segments of the first window (0..2 with
// bptt_segments 3) are scored, whose loss crosses no stop, so the
// truncated gradient is the true one (with a stop crossed it is not, by
// design: TestHMTTruncation checks what it drops).
func TestHMTGradients(t *testing.T) {
	cases := []struct {
		name   string
		mem    config.Component
		pos    string
		scored int // leading segments scored; 0 = all
	}{
		{"seg2-bptt0-recall2", hmtMem(2, 1, 2, 1, 0), "learned", 0},
		{"seg2-bptt3-rope", hmtMem(2, 2, 3, 2, 3), "rope", 3},
		{"seg4-bptt0-sinusoidal", hmtMem(4, 0, 8, 3, 0), "sinusoidal", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			const T = 8
			mc, tc := memModel(T, c.mem)
			mc.Positional = c.pos
			L := c.mem.Options["segment"].(int)
			memGradCheck(t, mc, tc, 6, func(i int) bool { return c.scored == 0 || i/L < c.scored })
		})
	}
}

// Truncation stops exactly the cache: with only segment 2 of three scored,
// P_0 (memory.init, read by segment 0 only, reaching later segments through
// m_0 in the cache) gets a gradient when backpropagation covers all
// segments (bptt 0 or 3) and none at all (exactly zero) when bptt 1 or 2
// stop the cache entering segment 2; segment 1's loss reaches it with
// bptt 2 (window {0, 1}) and not with bptt 1. The recall's projections
// keep their gradients under truncation (they act inside the segment).
func TestHMTTruncation(t *testing.T) {
	const T, L = 6, 2
	scoreSegment := func(s int) []float64 { return segmentMask(T, L, s) }
	norm := func(bptt, scored int, param string) float64 {
		mc, tc := memModel(T, hmtMem(L, 1, 2, 1, bptt))
		g, ok := memRun(t, mc, tc, 2, scoreSegment(scored), nil).grads[param]
		if !ok {
			t.Fatalf("no parameter %s", param)
		}
		n := 0.0
		for _, x := range g {
			n += math.Abs(x)
		}
		return n
	}
	for _, bptt := range []int{0, 3} {
		if n := norm(bptt, 2, "memory.init"); n == 0 {
			t.Errorf("bptt_segments %d: no gradient reaches memory.init from segment 2", bptt)
		}
	}
	for _, bptt := range []int{1, 2} {
		if n := norm(bptt, 2, "memory.init"); n != 0 {
			t.Errorf("bptt_segments %d: segment 2's loss reaches memory.init (|grad| %g)", bptt, n)
		}
		if n := norm(bptt, 2, "hmt.recall.wk"); n == 0 {
			t.Errorf("bptt_segments %d: truncation stopped the recall's key projection", bptt)
		}
	}
	if n := norm(2, 1, "memory.init"); n == 0 {
		t.Error("bptt_segments 2: segment 1's loss does not reach memory.init")
	}
	if n := norm(1, 1, "memory.init"); n != 0 {
		t.Errorf("bptt_segments 1: segment 1's loss reaches memory.init (|grad| %g)", n)
	}
}
