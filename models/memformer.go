package models

// memformer: Memformer's external memory (Wu, Lan, Gu and Yu 2020,
// "Memformer: A Memory-Augmented Transformer for Sequence Modeling",
// AACL-IJCNLP 2022), decoder form.
//
// A fixed set of K memory slots M_s [K, D] per sequence is read by every
// token of segment s and rewritten after it:
//
//	input_s = [M_s (K rows); tokens_s (L rows)]
//	H_s     = FinalNorm(Blocks(input_s))       causal: every token sees every slot
//	out_s   = H_s[K : K+L]                     -> head, loss
//	M_{s+1} = SlotWrite(q = M_s Wq, ks = M_s Wk, M_s, k = out_s Wk, v = out_s Wv)
//
// SlotWrite (graph/memory.go) is the paper's memory slot attention: slot i
// attends only over itself and the segment's outputs,
//
//	a_i = softmax(q_i.ks_i, q_i.k_1, ..., q_i.k_L) / sqrt(D)
//	M_{s+1,i} = a_i0 M_s,i + sum_j a_ij v_j
//
// so a slot that attends to itself keeps its content. M_0 is a learned
// [K, D] parameter (memory.slots) shared by every sequence, drawn from
// N(0, init_std^2), init_std 0.02 by default; Wq, Wk, Wv are the writer's
// own [D, D] projections (memory.write.*), single-headed.
//
// Departures from the paper: the tokens read the slots through the
// layer's own self-attention over [slots; tokens] (the paper has a
// separate cross-attention sublayer in each encoder layer), which lets
// every attention variant read the memory unchanged; the slots, as the
// first rows, see only each other causally, and their outputs are
// discarded. The writer's self value is the slot's content unprojected,
// and the paper's biased memory normalization and forgetting bias are
// left out (the update is a convex combination, which keeps the slots
// bounded by the values the writer reads). The paper's memory-replay
// back-propagation is replaced by unrolling with truncation
// (bptt_segments; models/memory.go).
//
// The initial slots are drawn small, as rmt's and hmt's initial memory
// (see memoryInitStd): at the tokens' scale, N(0, 1), the self term a_i0
// M_0 keeps the first write mostly the same constant for every example,
// and on configs/paper/memory-recall.yaml (5-digit passkey three segments
// back) seeds 2 and 3 stayed at chance, seed 2 still at 3000 steps
// (0.107), while seed 1 reached 0.623 at 1000 steps; with 0.02, seeds 1
// and 2 learn in 1000 steps and all three seeds in 3000 (0.978, 1.000,
// 1.000; EXPERIMENTS.md, section 8).
//
// The last segment writes nothing (nothing reads it). bptt_segments 1 is
// refused with more than one segment: it would stop every write, and the
// writer would get no gradient.
//
// With slots 0 and segment = task.seq_len the model is the plain decoder
// exactly. Cost per example: S = T/L passes over K + L positions plus the
// writer's O(K L D) per segment: O(S (K+L)^2 D) time for quadratic
// attention, linear in T at fixed L; K D + 3 D^2 parameters.

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
	"github.com/attnlab/attnlab/layers"
)

func init() {
	RegisterMemory(config.Entry[MemoryFactory]{
		Name:        "memformer",
		Description: "Memformer (Wu et al. 2020): memory slots read by the segment's tokens, rewritten by slot attention over themselves and the segment's outputs",
		Options: append(segmentOptions(64),
			config.OptionSpec{Name: "slots", Kind: config.Int, Default: 8, Help: "memory slots K; 0 = none"},
			initStdOption()),
		Factory: newMemformer,
	})
}

type memformer struct {
	segment, bptt, k, d int
	single              bool // one segment: no write
	initStd             float64
}

func newMemformer(o config.Values, s MemorySpec) (Memory, error) {
	segment, bptt, err := segmentOf(o, s)
	if err != nil {
		return nil, err
	}
	k := o.Int("slots")
	if k < 0 {
		return nil, fmt.Errorf("model.memory.slots: must not be negative, got %d", k)
	}
	initStd, err := initStdOf(o)
	if err != nil {
		return nil, err
	}
	if bptt == 1 && k > 0 && segment < s.SeqLen {
		return nil, fmt.Errorf("model.memory.bptt_segments: 1 stops the gradient of every write, so the memory writer would never learn; use 0 or at least 2")
	}
	return &memformer{segment: segment, bptt: bptt, k: k, d: s.DModel, single: segment == s.SeqLen, initStd: initStd}, nil
}

func (f *memformer) Segment() int { return f.segment }
func (f *memformer) BPTT() int    { return f.bptt }
func (f *memformer) Rows() int    { return f.k }

// Params counts the slots and, with more than one segment, the writer.
func (f *memformer) Params() int {
	switch {
	case f.k == 0:
		return 0
	case f.single:
		return f.k * f.d
	}
	return f.k*f.d + 3*f.d*f.d
}

func (f *memformer) Init(u *Unroll) (MemoryState, error) {
	if f.k == 0 {
		return nil, nil
	}
	m0, err := u.Root.Param("memory.slots", []int{f.k, f.d}, graph.Normal(f.initStd))
	if err != nil {
		return nil, err
	}
	return MemoryState{m0}, nil
}

func (f *memformer) Step(u *Unroll, s int, tokens *G.Node, st MemoryState) (*G.Node, MemoryState, error) {
	if f.k == 0 {
		h, err := u.Run(s, tokens, u.L)
		return h, nil, err
	}
	slots := Part{X: st[0], Rows: f.k, Shared: s == 0}
	x, n, err := u.Assemble(slots, Part{X: tokens, Rows: u.L})
	if err != nil {
		return nil, nil, err
	}
	h, err := u.Run(s, x, n)
	if err != nil {
		return nil, nil, err
	}
	out, err := u.Rows(h, n, f.k, u.L)
	if err != nil {
		return nil, nil, err
	}
	if s == u.S-1 { // nothing reads the last segment's write
		return out, nil, nil
	}
	mem := st[0]
	if s == 0 { // one copy of M_0 per sequence
		if mem, _, err = u.Assemble(slots, Part{}); err != nil {
			return nil, nil, err
		}
	}
	w := u.Root.Sub("memory.write")
	q, err := layers.Project(w, "wq", mem, f.d, f.d, false)
	if err != nil {
		return nil, nil, err
	}
	ks, err := layers.Project(w, "wk", mem, f.d, f.d, false)
	if err != nil {
		return nil, nil, err
	}
	k, err := layers.Project(w, "wk", out, f.d, f.d, false)
	if err != nil {
		return nil, nil, err
	}
	v, err := layers.Project(w, "wv", out, f.d, f.d, false)
	if err != nil {
		return nil, nil, err
	}
	next, err := graph.SlotWrite(q, ks, mem, k, v, u.Batch, f.k, u.L)
	if err != nil {
		return nil, nil, err
	}
	return out, MemoryState{next}, nil
}
