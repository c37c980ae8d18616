package models

import (
	"fmt"
	"math"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/data"
	"github.com/attnlab/attnlab/graph"
)

// memModel is a tiny float64 decoder on copy (T = seqLen, vocab 5) with
// memory mem (kind "" = the plain model).
func memModel(seqLen int, mem config.Component) (config.Model, config.Component) {
	mc, tc := tinyModel("decoder", "copy", map[string]any{"seq_len": seqLen, "vocab": 5})
	mc.Memory = mem
	return mc, tc
}

// memRun is one forward and backward pass of the model over batch
// example 0.. of the training stream, with the loss mask replaced by
// weights when not nil and the inputs edited by edit when not nil.
type memResult struct {
	logits []float64
	loss   float64
	grads  map[string][]float64
}

// memBuild builds mc for batch sequences of task tc (seed 1) in a float64
// store of seed 11.
func memBuild(t *testing.T, mc config.Model, tc config.Component, batch int) (data.Task, *graph.Store, *Model) {
	t.Helper()
	task, err := data.New(tc, 1)
	if err != nil {
		t.Fatal(err)
	}
	store, err := graph.NewStore(tensor.Float64, 11)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Build(mc, task, store, batch)
	if err != nil {
		t.Fatal(err)
	}
	return task, store, m
}

func memRun(t *testing.T, mc config.Model, tc config.Component, batch int, weights []float64, edit func([]int)) memResult {
	t.Helper()
	var weigh func([]float64)
	if weights != nil {
		weigh = func(mask []float64) { copy(mask, weights) }
	}
	return memPass(t, mc, tc, batch, nil, weigh, edit)
}

// memPass builds mc, applies set (if not nil) to the store, fills a
// training batch, edits its inputs (edit) and its loss weights (weigh),
// each if not nil, and runs one forward and backward pass: the logits, the
// loss and every parameter's gradient.
func memPass(t *testing.T, mc config.Model, tc config.Component, batch int, set func(*graph.Store), weigh func([]float64), edit func([]int)) memResult {
	t.Helper()
	task, store, m := memBuild(t, mc, tc, batch)
	if set != nil {
		set(store)
	}
	b := data.NewBatch(task, batch)
	task.Fill(b, data.Train, 0)
	if edit != nil {
		edit(b.Inputs)
	}
	if weigh != nil {
		weigh(b.LossMask)
	}
	if err := m.Feed(b); err != nil {
		t.Fatal(err)
	}
	if _, err := G.Grad(m.Loss, m.Params...); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(m.Graph, G.BindDualValues(m.Params...))
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	r := memResult{logits: graph.Float64s(m.Logits.Value()), grads: map[string][]float64{}}
	r.loss = graph.Float64s(m.Loss.Value())[0]
	for _, p := range m.Params {
		gv, err := p.Grad()
		if err != nil {
			t.Fatal(err)
		}
		r.grads[p.Name()] = graph.Float64s(gv)
	}
	return r
}

// sameRun fails t unless got's logits and every gradient want has are
// within 1e-10 of want's.
func sameRun(t *testing.T, got, want memResult) {
	t.Helper()
	if d := maxDiff(got.logits, want.logits); d > 1e-10 {
		t.Errorf("logits differ by %g", d)
	}
	for name, g := range want.grads {
		if d := maxDiff(got.grads[name], g); d > 1e-10 {
			t.Errorf("gradient of %s differs by %g", name, d)
		}
	}
}

func maxDiff(a, b []float64) float64 {
	d := 0.0
	if len(a) != len(b) {
		return math.Inf(1)
	}
	for i := range a {
		d = math.Max(d, math.Abs(a[i]-b[i]))
	}
	return d
}

// With its memory switched off (no memory tokens or slots) and one
// segment, each memory kind is the plain decoder: the same parameters by
// name, logits and every parameter's gradient within 1e-10, for a few
// attention variants and position schemes.
func TestMemoryDisabledIsPlain(t *testing.T) {
	const T = 6
	kinds := []config.Component{
		{Kind: "rmt", Options: map[string]any{"segment": T, "memory_tokens": 0}},
		{Kind: "memformer", Options: map[string]any{"segment": T, "slots": 0}},
	}
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
		plainCfg, tc := memModel(T, config.Component{})
		plainCfg.Attention, plainCfg.Positional, plainCfg.BlockModules = st.attn, st.pos, st.modules
		plain := memRun(t, plainCfg, tc, 2, nil, nil)
		for _, k := range kinds {
			t.Run(k.Kind+"/"+st.attn.Kind+"/"+st.pos, func(t *testing.T) {
				mc := plainCfg
				mc.Memory = k
				got := memRun(t, mc, tc, 2, nil, nil)
				if d := maxDiff(got.logits, plain.logits); d > 1e-10 {
					t.Errorf("logits differ by %g", d)
				}
				if len(got.grads) != len(plain.grads) {
					t.Errorf("%d parameters, the plain model has %d", len(got.grads), len(plain.grads))
				}
				for name, g := range plain.grads {
					if d := maxDiff(got.grads[name], g); d > 1e-10 {
						t.Errorf("gradient of %s differs by %g", name, d)
					}
				}
			})
		}
	}
}

// The whole memory model's loss passes the float64 gradient check against
// every parameter, through three segments, with backpropagation through
// all of them (bptt_segments 0 and 3).
func TestMemoryGradients(t *testing.T) {
	cases := []struct {
		name string
		mem  config.Component
		pos  string
	}{
		{"rmt-bptt0", config.Component{Kind: "rmt", Options: map[string]any{"segment": 2, "memory_tokens": 2, "bptt_segments": 0}}, "learned"},
		{"rmt-bptt3-rope", config.Component{Kind: "rmt", Options: map[string]any{"segment": 2, "memory_tokens": 1, "bptt_segments": 3}}, "rope"},
		{"memformer-bptt0", config.Component{Kind: "memformer", Options: map[string]any{"segment": 2, "slots": 2, "bptt_segments": 0}}, "learned"},
		{"memformer-bptt3-sinusoidal", config.Component{Kind: "memformer", Options: map[string]any{"segment": 3, "slots": 3, "bptt_segments": 3}}, "sinusoidal"},
		// hmt's recall over two keys (segment 2) with the cached embeddings as values
		{"hmt-no-value-projection", config.Component{Kind: "hmt", Options: map[string]any{"segment": 2, "summary": 1, "carry": 1, "recall": 2, "bptt_segments": 0, "value_projection": false}}, "learned"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mc, tc := memModel(6, c.mem)
			mc.Positional = c.pos
			memGradCheck(t, mc, tc, 12, func(int) bool { return true }) // every segment's loss counts
		})
	}
}

// Truncation stops exactly what it should: with only the last segment of
// three scored, the initial memory gets a gradient when backpropagation
// covers all segments, none at all (exactly zero) when bptt_segments 1 or
// 2 stop the memory entering segment 2, and still one from segment 1's
// loss with bptt_segments 2 (the window {0, 1}).
func TestMemoryTruncation(t *testing.T) {
	const T, L = 6, 2
	scoreSegment := func(s int) []float64 { return segmentMask(T, L, s) }
	for _, c := range []struct{ kind, opt, param string }{{"rmt", "memory_tokens", "memory.init"}, {"memformer", "slots", "memory.slots"}} {
		norm := func(bptt, scored int) float64 {
			mc, tc := memModel(T, config.Component{Kind: c.kind, Options: map[string]any{"segment": L, c.opt: 2, "bptt_segments": bptt}})
			g := memRun(t, mc, tc, 2, scoreSegment(scored), nil).grads[c.param]
			n := 0.0
			for _, x := range g {
				n += math.Abs(x)
			}
			return n
		}
		t.Run(c.kind, func(t *testing.T) {
			if n := norm(0, 2); n == 0 {
				t.Error("bptt_segments 0: no gradient reaches the initial memory from segment 2")
			}
			if n := norm(3, 2); n == 0 {
				t.Error("bptt_segments 3: no gradient reaches the initial memory from segment 2")
			}
			stops := []int{1, 2}
			if c.kind == "memformer" { // 1 is refused: it would stop every write
				stops = []int{2}
			}
			for _, bptt := range stops {
				if n := norm(bptt, 2); n != 0 {
					t.Errorf("bptt_segments %d: segment 2's loss reaches the initial memory (|grad| %g)", bptt, n)
				}
			}
			if n := norm(2, 1); n == 0 {
				t.Error("bptt_segments 2: segment 1's loss does not reach the initial memory")
			}
			if c.kind == "rmt" {
				if n := norm(1, 1); n != 0 {
					t.Errorf("bptt_segments 1: segment 1's loss reaches the initial memory (|grad| %g)", n)
				}
			}
		})
	}
}

// Causality of the whole memory model: changing the token at position p
// leaves the logits at every position before p unchanged (bit for bit)
// and changes some logit at p or later, for p in every segment.
func TestMemoryCausal(t *testing.T) {
	const T, vocab = 6, 5
	for _, mem := range []config.Component{
		{Kind: "rmt", Options: map[string]any{"segment": 2, "memory_tokens": 2}},
		{Kind: "memformer", Options: map[string]any{"segment": 2, "slots": 2}},
		// hmt: the summary pass reads the previous segment, the carry its last tokens
		{Kind: "hmt", Options: map[string]any{"segment": 2, "summary": 2, "carry": 1, "recall": 2}},
		{Kind: "hmt", Options: map[string]any{"segment": 2, "summary": 1, "carry": 2, "recall": 3}},
	} {
		t.Run(mem.Kind, func(t *testing.T) {
			mc, tc := memModel(T, mem)
			base := memRun(t, mc, tc, 1, nil, nil)
			for p := 0; p < T; p++ {
				r := memRun(t, mc, tc, 1, nil, func(in []int) { in[p] = (in[p] + 1) % vocab })
				if d := maxDiff(r.logits[:p*vocab], base.logits[:p*vocab]); d != 0 {
					t.Errorf("changing token %d changed an earlier logit by %g", p, d)
				}
				if d := maxDiff(r.logits[p*vocab:], base.logits[p*vocab:]); d == 0 {
					t.Errorf("changing token %d changed no logit", p)
				}
			}
		})
	}
}

// Bad memory configs fail with an error naming the key.
func TestMemoryConfigErrors(t *testing.T) {
	cases := []struct {
		name  string
		kind  string
		task  string
		mem   config.Component
		wants []string
	}{
		{"segment-not-dividing", "decoder", "copy", config.Component{Kind: "rmt", Options: map[string]any{"segment": 4}}, []string{"model.memory.segment: must divide task.seq_len (6), got 4"}},
		{"segment-zero", "decoder", "copy", config.Component{Kind: "memformer", Options: map[string]any{"segment": 0}}, []string{"model.memory.segment: must be positive"}},
		{"bptt-negative", "decoder", "copy", config.Component{Kind: "rmt", Options: map[string]any{"segment": 3, "bptt_segments": -1}}, []string{"model.memory.bptt_segments"}},
		{"tokens-negative", "decoder", "copy", config.Component{Kind: "rmt", Options: map[string]any{"segment": 3, "memory_tokens": -1}}, []string{"model.memory.memory_tokens"}},
		{"memformer-bptt1", "decoder", "copy", config.Component{Kind: "memformer", Options: map[string]any{"segment": 3, "bptt_segments": 1}}, []string{"model.memory.bptt_segments: 1"}},
		{"slots-negative", "decoder", "copy", config.Component{Kind: "memformer", Options: map[string]any{"segment": 3, "slots": -2}}, []string{"model.memory.slots"}},
		{"hmt-recall-zero", "decoder", "copy", config.Component{Kind: "hmt", Options: map[string]any{"segment": 3, "carry": 1, "recall": 0}}, []string{"model.memory.recall: must be at least 1, got 0"}},
		{"hmt-carry-negative", "decoder", "copy", config.Component{Kind: "hmt", Options: map[string]any{"segment": 3, "carry": -1}}, []string{"model.memory.carry: must not be negative"}},
		{"hmt-carry-over-segment", "decoder", "copy", config.Component{Kind: "hmt", Options: map[string]any{"segment": 3, "carry": 4}}, []string{"model.memory.carry: must be at most model.memory.segment (3), got 4"}},
		{"hmt-summary-over-segment", "decoder", "copy", config.Component{Kind: "hmt", Options: map[string]any{"segment": 3, "carry": 1, "summary": 4}}, []string{"model.memory.summary: must be at most model.memory.segment (3), got 4"}},
		{"hmt-summary-negative", "decoder", "copy", config.Component{Kind: "hmt", Options: map[string]any{"segment": 3, "carry": 1, "summary": -1}}, []string{"model.memory.summary: must not be negative"}},
		{"rmt-init-std-zero", "decoder", "copy", config.Component{Kind: "rmt", Options: map[string]any{"segment": 3, "init_std": 0.0}}, []string{"model.memory.init_std: must be a positive finite number, got 0"}},
		{"memformer-init-std-inf", "decoder", "copy", config.Component{Kind: "memformer", Options: map[string]any{"segment": 3, "init_std": math.Inf(1)}}, []string{"model.memory.init_std: must be a positive finite number, got +Inf"}},
		{"hmt-init-std-negative", "decoder", "copy", config.Component{Kind: "hmt", Options: map[string]any{"segment": 3, "carry": 1, "init_std": -0.5}}, []string{"model.memory.init_std: must be a positive finite number, got -0.5"}},
		{"hmt-memory-tokens-zero", "decoder", "copy", config.Component{Kind: "hmt", Options: map[string]any{"segment": 3, "carry": 1, "memory_tokens": 0}}, []string{"model.memory.memory_tokens: must be at least 1, got 0"}},
		{"hmt-value-projection-not-bool", "decoder", "copy", config.Component{Kind: "hmt", Options: map[string]any{"segment": 3, "carry": 1, "value_projection": 1}}, []string{"model.memory.value_projection"}},
		{"rmt-value-projection", "decoder", "copy", config.Component{Kind: "rmt", Options: map[string]any{"segment": 3, "value_projection": false}}, []string{"model.memory.value_projection", "unknown option"}},
		{"unknown-kind", "decoder", "copy", config.Component{Kind: "xl"}, []string{"model.memory.kind", `"xl"`, "rmt", "memformer"}},
		{"unknown-option", "decoder", "copy", config.Component{Kind: "rmt", Options: map[string]any{"segment": 3, "slots": 2}}, []string{"model.memory.slots", "unknown option", "memory_tokens"}},
		{"encoder", "encoder", "majority", config.Component{Kind: "rmt", Options: map[string]any{"segment": 3}}, []string{"model.memory", "decoder"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := map[string]any{"seq_len": 6, "vocab": 5}
			if c.task == "majority" {
				opts = map[string]any{"seq_len": 6, "min_len": 1}
			}
			mc, tc := tinyModel(c.kind, c.task, opts)
			mc.Memory = c.mem
			task, err := data.New(tc, 1)
			if err != nil {
				t.Fatal(err)
			}
			store, _ := graph.NewStore(tensor.Float64, 1)
			_, err = Build(mc, task, store, 1)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is not one line", err)
			}
		})
	}
}

// EstimateCost knows memory models: its parameter count is the built
// model's exactly (positions of the segment's length, the memory's own
// parameters, a memformer writer only with more than one segment), and
// its activation estimate grows linearly in T at a fixed segment.
func TestMemoryEstimate(t *testing.T) {
	for _, mem := range []config.Component{
		{Kind: "rmt", Options: map[string]any{"segment": 4, "memory_tokens": 2}},
		{Kind: "rmt", Options: map[string]any{"segment": 12, "memory_tokens": 0}},
		{Kind: "memformer", Options: map[string]any{"segment": 4, "slots": 3}},
		{Kind: "memformer", Options: map[string]any{"segment": 12, "slots": 3}},
		{Kind: "hmt", Options: map[string]any{"segment": 4, "carry": 2}},
		{Kind: "hmt", Options: map[string]any{"segment": 12, "carry": 2}},
	} {
		for _, pos := range []string{"learned", "rope"} {
			mc, tc := memModel(12, mem)
			mc.Positional = pos
			task, err := data.New(tc, 1)
			if err != nil {
				t.Fatal(err)
			}
			e, err := EstimateCost(mc, task, 4, 2, 2)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := e.Params, builtParams(t, mc, task); got != want {
				t.Errorf("%s %v %s: estimated %d parameters, built %d", mem.Kind, mem.Options, pos, got, want)
			}
		}
	}
	act := func(T int) float64 {
		mc, tc := memModel(T, config.Component{Kind: "rmt", Options: map[string]any{"segment": 8}})
		task, err := data.New(tc, 1)
		if err != nil {
			t.Fatal(err)
		}
		e, err := EstimateCost(mc, task, 4, 2, 0)
		if err != nil {
			t.Fatal(err)
		}
		return e.TrainActivationBytes
	}
	if r := act(64) / act(32); math.Abs(r-2) > 1e-9 {
		t.Errorf("activations at T=64 are %g times those at T=32, want 2", r)
	}
	mc, tc := memModel(12, config.Component{Kind: "rmt", Options: map[string]any{"segment": 5}})
	task, _ := data.New(tc, 1)
	if _, err := EstimateCost(mc, task, 4, 1, 0); err == nil || !strings.Contains(err.Error(), "model.memory.segment") {
		t.Errorf("a segment not dividing T: %v", err)
	}
}

// TestMemoryReachesLaterSegments: a token of the first segment changes the
// logits of the last segment, which only the memory can carry there (the
// segments share nothing else; hmt's carry and summary are kept to the
// previous segment, so the first segment reaches the third only through
// the memory). Without memory (memory_tokens 0) it does not.
func TestMemoryReachesLaterSegments(t *testing.T) {
	const T, vocab = 6, 5
	for _, c := range []struct {
		mem   config.Component
		reach bool
	}{
		{config.Component{Kind: "rmt", Options: map[string]any{"segment": 2, "memory_tokens": 2, "bptt_segments": 0}}, true},
		{config.Component{Kind: "memformer", Options: map[string]any{"segment": 2, "slots": 2, "bptt_segments": 0}}, true},
		{config.Component{Kind: "hmt", Options: map[string]any{"segment": 2, "summary": 1, "carry": 1, "recall": 2, "bptt_segments": 0}}, true},
		{config.Component{Kind: "rmt", Options: map[string]any{"segment": 2, "memory_tokens": 0}}, false},
	} {
		t.Run(fmt.Sprint(c.mem.Kind, c.mem.Options), func(t *testing.T) {
			mc, tc := memModel(T, c.mem)
			base := memRun(t, mc, tc, 1, nil, nil)
			r := memRun(t, mc, tc, 1, nil, func(in []int) { in[0] = (in[0] + 1) % vocab })
			d := maxDiff(r.logits[4*vocab:], base.logits[4*vocab:])
			if c.reach && d == 0 {
				t.Error("changing token 0 left the last segment's logits unchanged: the memory carries nothing")
			}
			if !c.reach && d != 0 {
				t.Errorf("without memory, token 0 changed the last segment's logits by %g", d)
			}
		})
	}
}

// memGradCheck gradient-checks (float64 finite differences) every
// parameter of model mc on task tc, batch 2, with the loss over the
// positions i (of each sequence) that scored(i) keeps.
func memGradCheck(t *testing.T, mc config.Model, tc config.Component, maxPerInput int, scored func(i int) bool) {
	t.Helper()
	task, err := data.New(tc, 3)
	if err != nil {
		t.Fatal(err)
	}
	store, _ := graph.NewStore(tensor.Float64, 5)
	m, err := Build(mc, task, store, 2)
	if err != nil {
		t.Fatal(err)
	}
	b := data.NewBatch(task, 2)
	task.Fill(b, data.Train, 0)
	T := task.SeqLen()
	for i := range b.LossMask {
		b.LossMask[i] = 0
		if scored(i % T) {
			b.LossMask[i] = 1
		}
	}
	if err := m.Feed(b); err != nil {
		t.Fatal(err)
	}
	res, err := graph.GradCheck{Seed: 9, MaxPerInput: maxPerInput, Eps: 1e-6}.Run(m.Graph, m.Loss, m.Params)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Pass {
		t.Error(res)
	}
}

// segmentMask is a loss mask for 2 sequences of T positions that scores
// only segment s (positions s*L .. s*L+L-1).
func segmentMask(T, L, s int) []float64 {
	w := make([]float64, 2*T)
	for b := 0; b < 2; b++ {
		for j := 0; j < L; j++ {
			w[b*T+s*L+j] = 1
		}
	}
	return w
}

// init_std (rmt, hmt) is the standard deviation memory.init is drawn
// with: the same draw scaled, 0.02 (memoryInitStd) by default.
func TestMemoryInitStd(t *testing.T) {
	for _, c := range []struct {
		kind  string
		opts  map[string]any
		param string // the initial memory's parameter
	}{
		{"rmt", map[string]any{"segment": 3, "memory_tokens": 2}, "memory.init"},
		{"hmt", map[string]any{"segment": 3, "carry": 1}, "memory.init"},
		{"memformer", map[string]any{"segment": 3, "slots": 2}, "memory.slots"},
	} {
		t.Run(c.kind, func(t *testing.T) {
			draw := func(std any) []float64 {
				opts := map[string]any{}
				for k, v := range c.opts {
					opts[k] = v
				}
				if std != nil {
					opts["init_std"] = std
				}
				mc, tc := memModel(6, config.Component{Kind: c.kind, Options: opts})
				_, store, _ := memBuild(t, mc, tc, 2)
				p := store.Get(c.param)
				if p == nil {
					t.Fatalf("no %s", c.param)
				}
				return graph.Float64s(p.Value)
			}
			def, half, one := draw(nil), draw(0.5), draw(1)
			for i := range def {
				if d := math.Abs(def[i] - memoryInitStd*one[i]); d > 1e-15 {
					t.Fatalf("default draw %d is %g, want %g x the init_std 1 draw %g", i, def[i], memoryInitStd, one[i])
				}
				if d := math.Abs(half[i] - 0.5*one[i]); d > 1e-15 {
					t.Fatalf("init_std 0.5 draw %d is %g, want half the init_std 1 draw %g", i, half[i], one[i])
				}
			}
		})
	}
}

// hmt with value_projection false recalls the cached embeddings
// themselves (the paper's P_s = softmax(q K^T / sqrt(D)) M): there is no
// hmt.recall.wv, Params counts Wq and Wk only, and with two segments and
// no carry (one key: P_1 = m_0) the model is rmt with memory_tokens 1 over
// both segments with no parameter set, as TestHMTTwoSegmentsIsRMT gets
// with Wv = I: equal logits and equal gradients of every rmt parameter.
func TestHMTNoValueProjection(t *testing.T) {
	const T, L = 8, 4
	rc, tc := memModel(T, config.Component{Kind: "rmt", Options: map[string]any{"segment": L, "memory_tokens": 1, "bptt_segments": 0}})
	want := memRunSet(t, rc, tc, 2, func(*graph.Store) {}, nil)
	hc := rc
	hc.Memory = config.Component{Kind: "hmt", Options: map[string]any{"segment": L, "summary": 2, "recall": 3, "carry": 0, "bptt_segments": 0, "value_projection": false}}
	got := memRunSet(t, hc, tc, 2, func(s *graph.Store) {
		if s.Get("hmt.recall.wv") != nil {
			t.Error("value_projection false: hmt.recall.wv exists")
		}
		if s.Get("hmt.recall.wq") == nil || s.Get("hmt.recall.wk") == nil {
			t.Error("value_projection false: hmt.recall.wq or wk missing")
		}
	}, nil)
	sameRun(t, got, want)
	for _, vp := range []bool{true, false} {
		hc.Memory.Options["value_projection"] = vp
		mem, err := newMemory(hc, T)
		if err != nil {
			t.Fatal(err)
		}
		d, want := hc.DModel, 2*hc.DModel+2*hc.DModel*hc.DModel
		if vp {
			want += d * d
		}
		if got := mem.Params(); got != want {
			t.Errorf("value_projection %v: Params %d, want %d", vp, got, want)
		}
	}
}

// hmt with memory_tokens r: each memory embedding is r rows. With one
// segment the model is [P_0 (r rows); tokens; P_0] exactly as rmt with
// memory_tokens r (as TestHMTOneSegmentIsRMT for r = 1). With more
// segments the recall is r queries over the r rows of each cached
// embedding (a mix of them, not rmt's copy), so there the test checks the
// rows the estimate counts, the parameters, and the float64 gradients
// through three segments (recall over two embeddings, carry 1).
func TestHMTMemoryTokens(t *testing.T) {
	const T = 6
	for _, r := range []int{2, 3} {
		rc, tc := memModel(T, config.Component{Kind: "rmt", Options: map[string]any{"segment": T, "memory_tokens": r}})
		want := memRun(t, rc, tc, 2, nil, nil)
		hc := rc
		hc.Memory = config.Component{Kind: "hmt", Options: map[string]any{"segment": T, "summary": 2, "recall": 3, "carry": 2, "memory_tokens": r}}
		got := memRun(t, hc, tc, 2, nil, nil)
		if d := maxDiff(got.logits, want.logits); d > 1e-10 {
			t.Errorf("r=%d: logits differ by %g", r, d)
		}
		if len(got.grads) != len(want.grads) {
			t.Errorf("r=%d: %d parameters, rmt has %d", r, len(got.grads), len(want.grads))
		}
		for name, g := range want.grads {
			if d := maxDiff(got.grads[name], g); d > 1e-10 {
				t.Errorf("r=%d: gradient of %s differs by %g", r, name, d)
			}
		}
	}
	mem := config.Component{Kind: "hmt", Options: map[string]any{"segment": 2, "summary": 1, "carry": 1, "recall": 2, "bptt_segments": 0, "memory_tokens": 2}}
	mc, tc := memModel(T, mem)
	m, err := newMemory(mc, T)
	if err != nil {
		t.Fatal(err)
	}
	d := mc.DModel
	if got, want := m.Params(), 2*2*d+3*d*d; got != want {
		t.Errorf("Params %d, want %d", got, want)
	}
	if got, want := m.Rows(), 2*2+1+2+1; got != want {
		t.Errorf("Rows %d, want %d", got, want)
	}
	memGradCheck(t, mc, tc, 12, func(int) bool { return true })
}
