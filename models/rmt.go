package models

// rmt: the Recurrent Memory Transformer (Bulatov, Kuratov and Burtsev
// 2022, "Recurrent Memory Transformer", NeurIPS 2022), decoder form.
//
// Segment s of L tokens is run with m memory tokens on each side:
//
//	input_s  = [M_s (read, m rows); tokens_s (L rows); M_s (write, m rows)]
//	H_s      = FinalNorm(Blocks(input_s))        causal, the layer's own mask
//	out_s    = H_s[m : m+L]                      the tokens' outputs -> head, loss
//	M_{s+1}  = H_s[m+L : 2m+L]                   the write positions' outputs
//
// with M_0 a learned [m, D] parameter (memory.init) shared by every
// sequence, drawn from N(0, init_std^2), init_std 0.02 by default. The
// write outputs are taken after the final norm, as the
// paper's GPT-2 implementation takes the last hidden state (which
// includes GPT-2's final LayerNorm): the memory entering each segment is
// then normalized, whatever the number of segments. Logits and loss are
// computed at the L token positions only, reassembled in the example's
// order.
//
// Departures from the paper: the causal mask of the layer covers the
// memory tokens too, so read token i sees read tokens 0..i only and the
// write tokens see everything before them (the paper's encoder version
// lets memory tokens see each other fully; its decoder version, like
// this one, places the write tokens at the end so they see the whole
// segment). Memory tokens get no absolute position embedding (the paper's
// GPT-2 gives them positions). All segments are unrolled in one graph with
// truncation every bptt_segments segments (the paper trains with 0-4
// segments of backpropagation; models/memory.go). The initial memory is
// small (init_std 0.02) where the paper's code draws it at the token
// embeddings' scale (randn times the embedding table's std, here
// layers.EmbedStd = 1): at segment 0 the write tokens enter as M_0, the
// same for every example, and with M_0 of the tokens' scale their outputs
// M_1 are almost all M_0 (on passkey, 5 digits, d_model 64, 2 layers,
// segments of 16: the example-dependent part of M_1 is 0.1% of its mean
// square at initialization, 0.003% by step 500, and the model never
// leaves the loss ln 10, on 2 segments as on 4); with 0.02 it is 9% at
// initialization and the model learns the task (1.000 on 4 segments by
// step 750; configs/paper/memory-recall.yaml). See memoryInitStd.
//
// With memory_tokens 0 and segment = task.seq_len the model is the plain
// decoder exactly (TestMemoryDisabledIsPlain).
//
// Cost per example: S = T/L passes over L + 2m positions: O(S (L+2m)^2 D)
// time for quadratic attention, O(T D) for the cut and reassembly, and
// activation memory linear in T at fixed L; m D parameters.

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

func init() {
	RegisterMemory(config.Entry[MemoryFactory]{
		Name:        "rmt",
		Description: "Recurrent Memory Transformer (Bulatov et al. 2022): memory tokens read at each segment's start, written at its end, passed to the next segment",
		Options: append(segmentOptions(64),
			config.OptionSpec{Name: "memory_tokens", Kind: config.Int, Default: 4, Help: "memory tokens m (read and write); 0 = none"},
			initStdOption()),
		Factory: newRMT,
	})
}

type rmt struct {
	segment, bptt, m, d int
	initStd             float64
}

func newRMT(o config.Values, s MemorySpec) (Memory, error) {
	segment, bptt, err := segmentOf(o, s)
	if err != nil {
		return nil, err
	}
	m := o.Int("memory_tokens")
	if m < 0 {
		return nil, fmt.Errorf("model.memory.memory_tokens: must not be negative, got %d", m)
	}
	initStd, err := initStdOf(o)
	if err != nil {
		return nil, err
	}
	return &rmt{segment: segment, bptt: bptt, m: m, d: s.DModel, initStd: initStd}, nil
}

func (r *rmt) Segment() int { return r.segment }
func (r *rmt) BPTT() int    { return r.bptt }
func (r *rmt) Rows() int    { return 2 * r.m }
func (r *rmt) Params() int  { return r.m * r.d }

// Init is M_0 (shared by the batch); no state without memory tokens.
func (r *rmt) Init(u *Unroll) (MemoryState, error) {
	if r.m == 0 {
		return nil, nil
	}
	m0, err := u.Root.Param("memory.init", []int{r.m, r.d}, graph.Normal(r.initStd))
	if err != nil {
		return nil, err
	}
	return MemoryState{m0}, nil
}

func (r *rmt) Step(u *Unroll, s int, tokens *G.Node, st MemoryState) (*G.Node, MemoryState, error) {
	if r.m == 0 {
		h, err := u.Run(s, tokens, u.L)
		return h, nil, err
	}
	mem := Part{X: st[0], Rows: r.m, Shared: s == 0}
	x, n, err := u.Assemble(mem, Part{X: tokens, Rows: u.L}, mem)
	if err != nil {
		return nil, nil, err
	}
	h, err := u.Run(s, x, n)
	if err != nil {
		return nil, nil, err
	}
	out, err := u.Rows(h, n, r.m, u.L)
	if err != nil {
		return nil, nil, err
	}
	next, err := u.Rows(h, n, r.m+u.L, r.m)
	if err != nil {
		return nil, nil, err
	}
	return out, MemoryState{next}, nil
}
