package models

// hmt: the Hierarchical Memory Transformer (He, Cao, Qin, Prakriya, Sun
// and Cong 2024, "HMT: Hierarchical Memory Transformer for Efficient Long
// Context Language Processing", arXiv 2405.06067, NAACL 2025), decoder
// form, trained from scratch inside the one unrolled graph
// (models/memory.go).
//
// Segment s of L tokens x_s (embedded, positions 0..L-1 added) is run in
// two passes of the block stack; the memory is a cache of the last N
// memory embeddings m_{s-N..s-1} (each one row per sequence):
//
//	summary pass (s > 0):
//	  S_s  = FinalNorm(Blocks([x_{s-1}[L-j : L]; t]))[last]   j = summary, t learned [1, D]
//	recall (s > 0), over the n = min(N, s) cached embeddings:
//	  q = S_s Wq,  K = [m_{s-n}; ...; m_{s-1}] Wk,  V = [...] Wv
//	  P_s  = softmax(q K^T / sqrt(D)) V                       single head
//	P_0  = a learned [1, D] parameter (memory.init), shared by every sequence, N(0, init_std^2)
//	main pass:
//	  H_s  = FinalNorm(Blocks([P_s; x_{s-1}[L-k : L]; x_s; P_s]))   k = carry (no carry rows at s = 0)
//	  out_s = H_s[1+k : 1+k+L]                                -> head, loss
//	  m_s   = H_s[last]                                       appended to the cache (dropping the oldest past N)
//
// Both passes are causal with the layer's own mask: the summary token,
// last, sees the summary tokens; every token of segment s sees P_s, the
// carried tokens and the segment's tokens up to itself; the last row sees
// the whole pass and writes m_s. The last segment writes nothing (nothing
// reads it). The recall is graph.Attention with one query over n keys and
// no mask (single head, scale 1/sqrt(D)), whose backward is tested there.
//
// Causality (the choice this implementation makes). In the paper the
// summary pass reads the first half of the segment s being processed, and
// P_s, recalled with that summary, is read by every token of segment s: a
// token before position j would then see, through P_s, tokens after it,
// which a language model trained on next-token prediction must not. Here
// the summary pass reads the last `summary` tokens of the previous segment
// s-1 instead, so that P_s depends only on segments before s (the cache
// holds m_{<s}; the carried tokens are from s-1), and the whole model is
// causal token by token (TestMemoryCausal). Segment 0 has no previous
// segment and no memory: it reads the learned P_0 and runs no summary pass
// or recall.
//
// Truncation (bptt_segments): the memory state is the cache, so every
// cached embedding entering segment s is stopped when s % bptt_segments
// == 0; P_s is computed inside segment s from the (stopped) cache, its
// summary and the recall's projections, which still get their gradients.
// The previous segment's token embeddings (summary and carry rows) are
// input, not memory, and are not stopped: they carry gradient to the
// embedding tables only.
//
// Departures from the paper: the paper plugs HMT into a pretrained
// backbone and trains its memory modules (and optionally the backbone)
// on top; here everything is trained from scratch together. The paper's
// memory-recall query and keys come from its own projections of the
// summary and of cached embeddings, as here, but the cached embeddings
// there are the backbone's hidden states of the memory position; here the
// last row's output after the final norm. The paper's summary pass reads
// the current segment's first half (see Causality above). The initial
// memory P_0 is a learned parameter (our choice: with no cached embedding
// there is nothing to recall), drawn small (init_std 0.02, as rmt's
// memory.init and for the same reason: with P_0 at the token embeddings'
// scale the embedding m_0 the last row writes is almost all P_0, and the
// cache it starts carries almost nothing of the segment; on passkey, 5
// digits, 4 segments of 16, the example-dependent part of m_0 was 0.2% of
// its mean square at initialization, that of m_1 0.0002% by step 200,
// and the model stayed at chance; with 0.02 seed 1 reaches 0.638 at
// 1000 steps and 0.983 at 3000 on configs/paper/memory-recall.yaml, but
// seed 2 stays at chance through 3000 steps, as rmt with memory_tokens 1
// does with seed 2 even on 2 segments, while rmt's default 4 tokens learn
// the 4 segments with seeds 1 and 2: the one memory embedding per segment
// is the remaining fragility; see memoryInitStd). Positions: the carried
// tokens keep the positions they had in segment s-1 (L-k..L-1),
// the summary tokens likewise (L-j..L-1); P_s, the summary token and m_s
// get no absolute position; rope, xpos and alibi act over each pass's
// sequence as the layer sees it.
//
// While the cache holds one embedding (segment 1, or always with recall
// 1) the softmax is over one key: P_s = m_{s-1} Wv whatever the summary,
// so the summary pass and Wq, Wk have no effect there.
//
// Identities (models/hmt_test.go): with one segment (segment =
// task.seq_len) the model is [P_0; x; P_0] exactly as rmt with
// memory_tokens 1, parameter for parameter (TestHMTOneSegmentIsRMT); with
// two segments, carry 0 and Wv = I it is that rmt over both segments
// (TestHMTTwoSegmentsIsRMT).
//
// Cost per example: S = T/L segments of two passes, over 1+j and L+k+2
// positions: O(S ((1+j)^2 + (L+k+2)^2) D) time with quadratic attention,
// plus the recall's O(S N D^2) projections; linear in T at fixed L, j, k
// and N. Activation memory likewise O(S (j+L+k) D) per layer. Parameters:
// D (P_0), and with more than one segment D (summary token) + 3 D^2
// (hmt.recall.wq, wk, wv).

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
	"github.com/attnlab/attnlab/layers"
)

func init() {
	RegisterMemory(config.Entry[MemoryFactory]{
		Name:        "hmt",
		Description: "Hierarchical Memory Transformer (He et al. 2024): a summary pass recalls a memory from the last cached memory embeddings by cross-attention; the main pass reads it with the previous segment's last tokens and writes a new embedding",
		Options: append(segmentOptions(64),
			config.OptionSpec{Name: "summary", Kind: config.Int, Default: 0, Help: "tokens the summary pass reads (the previous segment's last ones, for causality); 0 = segment/2"},
			config.OptionSpec{Name: "recall", Kind: config.Int, Default: 8, Help: "N: how many of the last memory embeddings the recall attends over"},
			config.OptionSpec{Name: "carry", Kind: config.Int, Default: 8, Help: "k: the previous segment's last tokens kept as context in the main pass; at most segment"},
			initStdOption()),
		Factory: newHMT,
	})
}

type hmt struct {
	segment, bptt, summary, recall, carry, d int
	single                                   bool // one segment: no summary pass, no recall
	initStd                                  float64
}

func newHMT(o config.Values, s MemorySpec) (Memory, error) {
	segment, bptt, err := segmentOf(o, s)
	if err != nil {
		return nil, err
	}
	h := &hmt{segment: segment, bptt: bptt, summary: o.Int("summary"), recall: o.Int("recall"), carry: o.Int("carry"), d: s.DModel, single: segment == s.SeqLen}
	switch {
	case h.summary < 0:
		return nil, fmt.Errorf("model.memory.summary: must not be negative (0 = segment/2), got %d", h.summary)
	case h.summary > segment:
		return nil, fmt.Errorf("model.memory.summary: must be at most model.memory.segment (%d), got %d", segment, h.summary)
	case h.recall < 1:
		return nil, fmt.Errorf("model.memory.recall: must be at least 1, got %d", h.recall)
	case h.carry < 0:
		return nil, fmt.Errorf("model.memory.carry: must not be negative, got %d", h.carry)
	case h.carry > segment:
		return nil, fmt.Errorf("model.memory.carry: must be at most model.memory.segment (%d), got %d", segment, h.carry)
	}
	if h.initStd, err = initStdOf(o); err != nil {
		return nil, err
	}
	if h.summary == 0 {
		h.summary = max(1, segment/2)
	}
	return h, nil
}

func (h *hmt) Segment() int { return h.segment }
func (h *hmt) BPTT() int    { return h.bptt }

// Rows is what EstimateCost adds to a segment's L tokens: the main pass's
// P_s twice and k carried tokens, and the summary pass's 1+j rows, counted
// as if in the one sequence (so the activations of both passes are
// counted, and attention scores overcounted by at most 2 (L+k+2)(1+j) per
// segment: the safe side for the memory guard; segment 0's missing carry
// and summary pass are counted too).
func (h *hmt) Rows() int { return 2 + h.carry + 1 + h.summary }

// Params counts P_0 and, with more than one segment, the summary token
// and the recall's projections.
func (h *hmt) Params() int {
	if h.single {
		return h.d
	}
	return 2*h.d + 3*h.d*h.d
}

// Init is the empty cache; P_0 is read by Step(0).
func (h *hmt) Init(u *Unroll) (MemoryState, error) { return nil, nil }

// span is rows [lo, lo+count) of each sequence's per rows of x
// ([Batch*per, D]), or, with per 0, rows [lo, lo+count) of x shared by
// every sequence.
type span struct {
	x              *G.Node
	per, lo, count int
}

// gather stacks spans per sequence in one GatherRows: sequence b of the
// result is span 0's rows of b, then span 1's, ... ([Batch*n, D]).
func gather(u *Unroll, spans ...span) (*G.Node, int, error) {
	var srcs G.Nodes
	var use []span
	n := 0
	for _, sp := range spans {
		if sp.count > 0 {
			srcs, use, n = append(srcs, sp.x), append(use, sp), n+sp.count
		}
	}
	refs := make([]graph.RowRef, 0, u.Batch*n)
	for b := 0; b < u.Batch; b++ {
		for i, sp := range use {
			for r := sp.lo; r < sp.lo+sp.count; r++ {
				refs = append(refs, graph.RowRef{Src: i, Row: b*sp.per + r})
			}
		}
	}
	x, err := graph.GatherRows(srcs, refs)
	return x, n, err
}

func (h *hmt) Step(u *Unroll, s int, tokens *G.Node, st MemoryState) (*G.Node, MemoryState, error) {
	L := u.L
	var p span
	carry := 0
	if s == 0 {
		p0, err := u.Root.Param("memory.init", []int{1, h.d}, graph.Normal(h.initStd))
		if err != nil {
			return nil, nil, err
		}
		p = span{x: p0, count: 1}
	} else {
		ps, err := h.recallMemory(u, s, st)
		if err != nil {
			return nil, nil, err
		}
		p, carry = span{x: ps, per: 1, count: 1}, h.carry
	}
	x, n, err := gather(u, p, span{x: u.Prev, per: L, lo: L - carry, count: carry}, span{x: tokens, per: L, count: L}, p)
	if err != nil {
		return nil, nil, err
	}
	hs, err := u.Run(s, x, n)
	if err != nil {
		return nil, nil, err
	}
	out, err := u.Rows(hs, n, 1+carry, L)
	if err != nil {
		return nil, nil, err
	}
	if s == u.S-1 { // nothing reads the last segment's memory embedding
		return out, nil, nil
	}
	ms, err := u.Rows(hs, n, n-1, 1)
	if err != nil {
		return nil, nil, err
	}
	next := append(append(MemoryState(nil), st...), ms)
	if len(next) > h.recall {
		next = next[len(next)-h.recall:]
	}
	return out, next, nil
}

// recallMemory is P_s for s > 0: the summary pass over the previous
// segment's last j tokens and the summary token, then the cross-attention
// from the summary over the cached embeddings st ([Batch, D] each).
func (h *hmt) recallMemory(u *Unroll, s int, st MemoryState) (*G.Node, error) {
	L, j := u.L, h.summary
	tok, err := u.Root.Param("hmt.summary", []int{1, h.d}, graph.Normal(layers.EmbedStd))
	if err != nil {
		return nil, err
	}
	x, n, err := gather(u, span{x: u.Prev, per: L, lo: L - j, count: j}, span{x: tok, count: 1})
	if err != nil {
		return nil, err
	}
	y, err := u.RunLabelled(fmt.Sprintf("segment %d summary", s), x, n)
	if err != nil {
		return nil, err
	}
	sum, err := u.Rows(y, n, n-1, 1)
	if err != nil {
		return nil, err
	}
	parts := make([]span, len(st))
	for i, m := range st {
		parts[i] = span{x: m, per: 1, count: 1}
	}
	cache, nc, err := gather(u, parts...)
	if err != nil {
		return nil, err
	}
	w := u.Root.Sub("hmt.recall")
	q, err := layers.Project(w, "wq", sum, h.d, h.d, false)
	if err != nil {
		return nil, err
	}
	k, err := layers.Project(w, "wk", cache, h.d, h.d, false)
	if err != nil {
		return nil, err
	}
	v, err := layers.Project(w, "wv", cache, h.d, h.d, false)
	if err != nil {
		return nil, err
	}
	return graph.Attention(q, k, v, nil, graph.AttentionShape{Batch: u.Batch, QLen: 1, KLen: nc, Heads: 1, KVHeads: 1, HeadDim: h.d})
}
