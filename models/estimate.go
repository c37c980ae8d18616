package models

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/data"
	"github.com/attnlab/attnlab/graph"
	"github.com/attnlab/attnlab/layers"
)

// Limits that no configuration may exceed on any machine, whatever its
// memory: they keep every shape product of the builder and the graph ops far
// from int overflow, and refuse a config that would take minutes to build
// before it is built. CheckLimits applies them.
const (
	// MaxTensorElems bounds the elements of any one tensor (a weight, an
	// activation, the dense core's T x T scores of a head): 2^31.
	MaxTensorElems = 1 << 31
	// MaxParams bounds the parameters of a model: 2^33, about 8.6 billion
	// (137 GiB to train in float32), far beyond what a CPU trainer runs.
	MaxParams = 1 << 33
	// MaxLayers bounds model.n_layers: deeper graphs take minutes to build
	// (a block is some 60 graph nodes, forward and backward) long before
	// memory runs out.
	MaxLayers = 1024
)

// The calibration of the activation estimate. Each graph node of the
// forward pass holds its value, and the backward graph a gradient of the
// same size plus the temporaries of its ops; the Go collector (GOGC=100)
// lets garbage grow to about the live heap before collecting. Counting
// only the forward values each position keeps (forwardPerRow below), peak
// RSS of `trainer bench` (float32, d_model 128, d_ff 512, 2 layers, vocab
// 64, no evaluation tape) grew by 3.9-4.3 bytes of that count per byte of
// dtype, measured by varying one size at a time: batch 8 -> 32 at T 256
// (195 -> 662 MiB), d_model 128 -> 512 (553 MiB), d_ff 512 -> 4096 (703
// MiB), n_layers 2 -> 8 (669 MiB), gpa (245 MiB), float64 (358 MiB), flash
// at T 16384 batch 1 (1380 MiB), d_model 256 batch 16 (697 MiB). trainFactor
// 4.5 puts the estimate 5-20% above those (2.6 GiB estimated at T 16384).
// Training also builds the evaluation graph, forward only, whose tape
// machine added 0.65 GiB at T 16384 batch 1 (2.1 GiB `trainer train`
// against 1.45 GiB `trainer bench`; issue 11 item 18): evalFactor 2 of its
// forward count. Whole runs check it: `trainer train` of the quickstart
// peaked at 99.5 MiB (estimated 118 MiB), of ref-t1024 flash at T 16384
// batch 1 at 2.06 GiB (estimated 2.2 GiB). runtimeBytes is the process
// with tiny graphs (`trainer bench` of the quickstart peaks at 63 MiB).
//
// The dense core (standard attention) allocates its T x T probabilities
// per worker afresh in every call, two in the backward: at T 4096 batch 1
// it added 364 MiB to the peak RSS of flash (371 -> 735 MiB), 5.7 of those
// 64 MiB buffers with 2 workers, the collector's garbage included;
// scratchFactor 3 per worker.
const (
	trainFactor   = 4.5
	evalFactor    = 2.0
	scratchFactor = 3.0
	runtimeBytes  = 48 << 20
)

// Estimate is what a model config will take, computed from the config
// alone, in constant time and without allocating anything proportional to
// it. Sizes are float64, so that no product of absurd sizes overflows.
type Estimate struct {
	// Params is the parameter count, exactly what Build makes
	// (TestEstimateParamsMatchBuild), saturated at math.MaxInt64.
	Params int64
	// ParamBytes is weights, gradients and AdamW's two moments: 4 x
	// Params x BytesPerElem.
	ParamBytes float64
	// TrainActivationBytes is the training graph's values, gradients and
	// backward temporaries at Batch x SeqLen; EvalActivationBytes the
	// evaluation graph's at EvalBatch x SeqLen; ScratchBytes the dense
	// attention core's T x T buffers in flight (2 per worker in its
	// backward, and their garbage; 0 with flash-style cores); RuntimeBytes
	// the rest of the process.
	TrainActivationBytes, EvalActivationBytes, ScratchBytes, RuntimeBytes float64

	Batch, EvalBatch, SeqLen, Layers int
	BytesPerElem                     int
	// Largest is the largest single tensor the graphs would hold.
	Largest Tensor
	// KVCacheElems is one layer's KV cache per token, -1 without one.
	KVCacheElems int
	// StateElems is one layer's recurrent state per sequence, -1 without one.
	StateElems int
}

// Tensor names one tensor of an estimate: what it is, its shape, and the
// config keys that size it.
type Tensor struct {
	Name  string
	Shape []float64
	Keys  string // what to lower, e.g. "task.vocab or model.d_model"
}

// Elems is the tensor's element count.
func (t Tensor) Elems() float64 {
	n := 1.0
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

func (t Tensor) String() string {
	dims := make([]string, len(t.Shape))
	for i, d := range t.Shape {
		dims[i] = fmtCount(d)
	}
	return fmt.Sprintf("%s [%s]", t.Name, strings.Join(dims, " x "))
}

// ActivationBytes is everything but the parameters: both graphs, the
// scratch and the runtime.
func (e Estimate) ActivationBytes() float64 {
	return e.TrainActivationBytes + e.EvalActivationBytes + e.ScratchBytes + e.RuntimeBytes
}

// TotalBytes is the estimated peak memory of training.
func (e Estimate) TotalBytes() float64 { return e.ParamBytes + e.ActivationBytes() }

// CheckLimits returns a one-line error naming the config key when the
// estimate exceeds a limit that holds on every machine (MaxLayers,
// MaxParams, MaxTensorElems), else nil.
func (e Estimate) CheckLimits() error {
	switch {
	case e.Layers > MaxLayers:
		return fmt.Errorf("model.n_layers: %d layers is more than %d, the most this trainer builds", e.Layers, MaxLayers)
	case e.Largest.Elems() > MaxTensorElems:
		return fmt.Errorf("model: %s would have %s elements, more than 2^31 in one tensor; lower %s",
			e.Largest, fmtCount(e.Largest.Elems()), e.Largest.Keys)
	case float64(e.Params) > MaxParams:
		return fmt.Errorf("model: %s parameters is more than 2^33 (%s); lower model.d_model, model.n_layers or model.d_ff",
			fmtCount(float64(e.Params)), fmtCount(MaxParams))
	}
	return nil
}

// EstimateCost computes what training cfg on task takes, with bytesPerElem
// bytes per element (4 for float32), batch training examples per step and
// evalBatch per evaluation graph (0: no evaluation graph). It checks what
// Build checks of the attention variant (its options and the position
// scheme), returning the same errors, but builds nothing; sizes beyond
// the limits are not errors here (see CheckLimits).
func EstimateCost(cfg config.Model, task data.Task, bytesPerElem, batch, evalBatch int) (Estimate, error) {
	if cfg.NHeads < 1 || cfg.DModel < 1 || cfg.DModel%cfg.NHeads != 0 {
		return Estimate{}, fmt.Errorf("model.d_model (%d) is not divisible by model.n_heads (%d)", cfg.DModel, cfg.NHeads)
	}
	if memoryOn(cfg) { // segment recurrence: memory.go
		return estimateMemory(cfg, task, bytesPerElem, batch, evalBatch)
	}
	spec := attentionSpec(cfg, task)
	attn, err := layers.NewAttention(cfg.Attention, spec)
	if err != nil {
		return Estimate{}, err
	}
	opts, err := attentionOptions(cfg.Attention)
	if err != nil {
		return Estimate{}, err
	}
	lc, err := attentionCost(cfg.Attention.Kind, opts, spec, float64(task.SeqLen()))
	if err != nil {
		return Estimate{}, err
	}
	modParams, modRow, err := blockModulesCost(cfg, spec) // model.block_modules; 0 without
	if err != nil {
		return Estimate{}, err
	}

	D, F, L := float64(cfg.DModel), float64(cfg.DFF), float64(cfg.NLayers)
	T, V := float64(task.SeqLen()), float64(task.Vocab())
	out, perSeqTop := V, 0.0
	if c := task.Classes(); c > 0 {
		out = float64(c)
		perSeqTop = D + 2*out // pooled row, logits, probabilities
	}
	norm := D // rmsnorm: a gain
	if cfg.Norm == "layernorm" {
		norm = 2 * D // and a shift
	}
	// Parameters, in Build's order.
	params := V * D
	if cfg.Positional == "learned" {
		params += T * D
	}
	params += L * (2*norm + lc.params + modParams + proj(D, F, true) + proj(F, D, true))
	params += norm + proj(D, out, true)

	// Forward values per position: embedding (and positions), the blocks,
	// the final norm and, for a language model, logits and probabilities.
	topRow := 2 * D
	if cfg.Positional == "learned" || cfg.Positional == "sinusoidal" {
		topRow += 2 * D
	}
	if task.Classes() == 0 {
		topRow += 2 * out
	}
	blockRow := 5*D + 2*F + lc.perRow + modRow // norms, residual adds, FFN hidden and output, attention
	perRow := L*blockRow + topRow
	perSeq := L*lc.perSeq + perSeqTop
	bpe := float64(bytesPerElem)
	forward := func(b int) float64 { return float64(b) * (T*perRow + perSeq) }

	e := Estimate{
		Params: saturate(params), ParamBytes: 4 * params * bpe,
		TrainActivationBytes: trainFactor * bpe * forward(batch),
		RuntimeBytes:         runtimeBytes,
		Batch:                batch, EvalBatch: evalBatch, SeqLen: task.SeqLen(), Layers: cfg.NLayers,
		BytesPerElem: bytesPerElem, KVCacheElems: -1, StateElems: -1,
	}
	if evalBatch > 0 {
		e.EvalActivationBytes = evalFactor * bpe * forward(evalBatch)
	}
	if kv, ok := attn.(layers.KVCache); ok {
		e.KVCacheElems = kv.KVCacheElems()
	}
	if st, ok := attn.(layers.RecurrentState); ok {
		e.StateElems = st.StateElems()
	}
	rows := float64(max(batch, evalBatch)) * T
	cands := []Tensor{
		{"embed.tokens", []float64{V, D}, "task.vocab or model.d_model"},
		{"head", []float64{D, out}, "task.vocab or model.d_model"},
		{"ffn.w1", []float64{D, F}, "model.d_model or model.d_ff"},
		{"the FFN hidden activations", []float64{rows, F}, "train.batch_size, task.seq_len or model.d_ff"},
		{"the block activations", []float64{rows, D}, "train.batch_size, task.seq_len or model.d_model"},
		lc.weight,
		{"the attention activations", []float64{rows, lc.width}, "train.batch_size, task.seq_len or model.d_model"},
	}
	if cfg.Positional == "learned" {
		cands = append(cands, Tensor{"embed.pos", []float64{T, D}, "task.seq_len or model.d_model"})
	}
	if task.Classes() == 0 {
		cands = append(cands, Tensor{"the logits", []float64{rows, out}, "train.batch_size, task.seq_len or task.vocab"})
	}
	if lc.dense {
		scores := Tensor{"one head's dense attention scores", []float64{T, T}, "task.seq_len (or use model.attention.kind=flash)"}
		cands = append(cands, scores)
		workers := math.Min(float64(runtime.GOMAXPROCS(0)), float64(max(batch, evalBatch))*float64(cfg.NHeads))
		e.ScratchBytes = scratchFactor * workers * scores.Elems() * bpe
	}
	for _, c := range cands {
		if c.Elems() > e.Largest.Elems() {
			e.Largest = c
		}
	}
	return e, nil
}

// AttentionLayerEstimate is one attention layer of kind at its default
// options on batch random sequences of seqLen positions (as `trainer bench
// attention` builds it): its parameters, the peak bytes of its forward pass
// (backward false) or forward and backward, and its largest tensor. The
// factors are the whole-model calibration's (see trainFactor).
func AttentionLayerEstimate(kind string, heads, headDim int, causal bool, batch, seqLen, bytesPerElem int, backward bool) (params int64, bytes float64, largest Tensor, err error) {
	spec := layers.Spec{DModel: heads * headDim, Heads: heads, NLayers: 1, Causal: causal, Pos: layers.Position{Kind: "none"}}
	c := config.Component{Kind: kind}
	opts, err := attentionOptions(c)
	if err != nil {
		return 0, 0, Tensor{}, err
	}
	lc, err := attentionCost(kind, opts, spec, float64(seqLen))
	if err != nil {
		return 0, 0, Tensor{}, err
	}
	D, T, B, bpe := float64(spec.DModel), float64(seqLen), float64(batch), float64(bytesPerElem)
	rows := B * T
	factor := evalFactor
	if backward {
		factor = trainFactor
	}
	bytes = runtimeBytes + 4*lc.params*bpe + factor*bpe*(rows*(D+lc.perRow)+B*lc.perSeq)
	largest = Tensor{"the layer's activations", []float64{rows, lc.width}, "--batch, --T or --heads x --head-dim"}
	if lc.dense {
		scores := Tensor{"one head's dense attention scores", []float64{T, T}, "--T"}
		if scores.Elems() > largest.Elems() {
			largest = scores
		}
		workers := math.Min(float64(runtime.GOMAXPROCS(0)), B*float64(heads))
		scratch := scratchFactor * workers * scores.Elems() * bpe
		if !backward {
			scratch /= 2 // the forward holds one T x T buffer per worker, the backward two
		}
		bytes += scratch
	}
	if lc.weight.Elems() > largest.Elems() {
		largest = lc.weight
		largest.Keys = "--heads x --head-dim"
	}
	return saturate(lc.params), bytes, largest, nil
}

// layerCost is one attention layer's share of an estimate.
type layerCost struct {
	params float64 // parameters
	perRow float64 // forward values kept per position
	perSeq float64 // forward values kept per sequence (latents, agents)
	width  float64 // the widest activation per position
	dense  bool    // the dense core: T x T scores per worker in flight
	weight Tensor  // the largest weight
}

// attentionOptions resolves a variant's options as NewAttention does.
func attentionOptions(c config.Component) (config.Values, error) {
	for _, e := range layers.Variants() {
		if e.Name == c.Kind {
			return c.Resolve("model.attention", e.Options)
		}
	}
	return nil, fmt.Errorf("model.attention.kind: unknown attention kind %q", c.Kind)
}

// errUnknownVariant marks a registered variant attentionCost has no
// formula for; TestEstimateKnowsEveryVariant fails for one.
var errUnknownVariant = errors.New("no estimate for this attention variant")

// attentionCost mirrors each variant's Forward (layers/*.go): the
// projections it makes, and the values its forward pass keeps per position
// and per sequence. A variant added to layers needs its case here.
func attentionCost(kind string, o config.Values, s layers.Spec, T float64) (layerCost, error) {
	D, H := float64(s.DModel), float64(s.Heads)
	d := D / H
	rot := 0.0 // rotations add a rotated copy of queries and keys
	if s.Pos.Rotary() {
		rot = 1
	}
	bias := func() bool { return o.Bool("bias") }
	w := func(name string, in, out float64) Tensor {
		return Tensor{"attention " + name, []float64{in, out}, "model.d_model or the model.attention options"}
	}
	var c layerCost
	switch kind {
	case "dilated":
		// multi-head projections; per pair an output and a logsumexp, merged
		pairs, b := float64(len(o.Ints("segments"))), bias()
		c.params = 4 * proj(D, D, b)
		c.perRow = 3*D + rot*2*D + pairs*(D+H) + 2*D
		c.width, c.weight = D, w("wq", D, D)
	case "linformer":
		// projections, E and F [k, T], the projected keys and values per sequence
		kp, b := float64(o.Int("k")), bias()
		nproj := 2.0
		if o.Bool("share_kv") {
			nproj = 1
		}
		c.params = 4*proj(D, D, b) + nproj*kp*T
		c.perRow = 3*D + rot*2*D + 2*H*kp + D
		c.perSeq = 2 * kp * D
		c.width, c.weight = D, w("wq", D, D)
	case "linear":
		// projections; the op keeps float64 copies of q, k, v and features per head in flight
		b := bias()
		c.params = 4 * proj(D, D, b)
		c.perRow = 3*D + 2*D
		c.width, c.weight = D, w("wq", D, D)
	case "latte":
		// q, k [H L], v; softmax, exp, prefix sums, query features [H L]; output, wo; maxima per sequence
		hl, b := H*float64(o.Int("latents")), bias()
		c.params = 2*proj(D, hl, b) + 2*proj(D, D, b)
		c.perRow = 2*hl + D + 4*hl + 2*D
		c.perSeq = hl
		c.width, c.weight = math.Max(D, hl), w("wv", D, D)
		if hl > D {
			c.weight = w("wq", D, hl)
		}
	case "performer":
		// projections, the query and key features (H*m each), the output and its projection
		hm, b := H*float64(layers.PerformerFeatures(s.HeadDim(), o.Int("features"))), bias()
		c.params = 4 * proj(D, D, b)
		c.perRow = 3*D + 2*hm + 2*D
		c.width, c.weight = math.Max(D, hm), w("wq", D, D)
	case "tost":
		// the projection w, the temperatures [H]; w, the op's output and wo's per position
		b := bias()
		c.params = 2*proj(D, D, b) + H
		c.perRow = 3 * D
		c.width, c.weight = D, w("wu", D, D)
	case "lsh": // wq, wv, wo; per round the op's packed output and logsumexp and their copies, then the merge
		c.params = 3 * proj(D, D, bias())
		c.perRow = 4*D + 2*float64(o.Int("hashes"))*(D+H)
		c.width, c.weight = D, w("wq", D, D)
	case "topk": // standard's projections; the op also keeps k indices and a logsumexp per head and position
		c.params = 4 * proj(D, D, bias())
		c.perRow = 5*D + rot*2*D + H + (math.Min(float64(o.Int("k")), T)+1)*H
		c.width, c.weight = D, w("wq", D, D)
	case "nsa":
		// q, three branches' keys and values, wo, the gates [D, 3H]; two
		// compression MLPs (positions [l, dh], [l dh, dh], [dh, dh]); per
		// position the branches' projections and rotations, the unfolded
		// blocks (l/stride rows of D for k and v), three outputs and
		// logsumexps, n kept blocks per head, the gated sum
		l, dh := float64(o.Int("compress_block")), d
		stride, n := float64(o.Int("compress_stride")), float64(o.Int("selected"))
		phi := l*dh + l*dh*dh + dh + dh*dh + dh
		c.params = 8*proj(D, D, bias()) + proj(D, 3*H, true) + 2*phi
		c.perRow = 7*D + rot*4*D + 2*l/stride*D + 3*(D+H) + n*H + 3*H + 2*D
		c.width, c.weight = D, w("wq", D, D)
	case "routing": // standard's projections; the op also keeps c_q and c_k and a logsumexp per head and position
		c.params = 4 * proj(D, D, bias())
		c.perRow = 5*D + rot*2*D + H + 3*H
		c.width, c.weight = D, w("wq", D, D)
	case "histogram": // standard's projections; the op also keeps the sorted order and a logsumexp per head and position
		c.params = 4 * proj(D, D, bias())
		c.perRow = 5*D + rot*2*D + H + 2*H
		c.width, c.weight = D, w("wq", D, D)
	case "standard", "flash", "gqa", "mqa", "sliding_window", "bigbird", "strided":
		g := H
		switch kind {
		case "gqa":
			g = float64(o.Int("kv_heads"))
		case "mqa":
			g = 1
		}
		kv, b := g*d, bias()
		c.params = 2*proj(D, D, b) + 2*proj(D, kv, b)
		c.perRow = 3*D + 2*kv + rot*(D+kv) + H
		c.width, c.dense, c.weight = D, kind == "standard", w("wq", D, D)
	case "reuse":
		dk := float64(o.Int("qk_dim"))
		if dk == 0 {
			dk = d
		}
		b := bias()
		c.params = 2*proj(D, dk, b) + 2*proj(D, D, b)
		c.perRow = 2*dk + 3*D + rot*2*dk + 1
		c.width, c.weight = math.Max(D, dk), w("wq", D, math.Max(D, dk))
	case "gpa":
		c.params = 6 * proj(D, D, bias())
		c.perRow = 9*D + rot*4*D + 2*H
		c.width, c.weight = D, w("wq", D, D)
	case "mla":
		kvr, qr, dr := float64(o.Int("kv_rank")), float64(o.Int("q_rank")), float64(o.Int("rope_dims"))
		if kvr == 0 {
			kvr = math.Max(1, math.Floor(D/2))
		}
		if dr == 0 {
			dr = math.Max(2, float64(s.HeadDim()/2/2*2))
		}
		b := bias()
		qIn := D
		c.params = proj(D, kvr, b) + kvr + 2*proj(kvr, D, b) + proj(D, dr, b) + proj(D, D, b)
		c.perRow = 2*kvr + 2*D + dr
		if qr > 0 {
			c.params += proj(D, qr, b) + qr
			c.perRow += 2 * qr
			qIn = qr
		}
		c.params += proj(qIn, D, b) + proj(qIn, H*dr, b)
		c.perRow += D + 2*H*dr + dr + 2*(D+H*dr) + D + H + D
		c.width = math.Max(D+H*dr, math.Max(kvr, qr))
		c.weight = w("w_qr", qIn, math.Max(D, H*dr))
		if big := math.Max(kvr, qr); D*big > c.weight.Elems() {
			c.weight = w("w_dkv or w_dq", D, big)
		}
	case "moh":
		b := bias()
		router := float64(graph.MoHRouterWidth(s.Heads, o.Int("shared_heads")))
		c.params = 4*proj(D, D, b) + D*router
		c.perRow = 3*D + rot*2*D + D + H + router + H + 2*D
		c.width, c.weight = D, w("wq", D, D)
	case "latent":
		n, b := float64(o.Int("latents")), bias()
		c.params = n*D + 3*2*D + 12*proj(D, D, b)
		c.perRow = 5 * D
		c.perSeq = n * 16 * D
		c.width, c.weight = D, w("wq_e", D, D)
	case "agent":
		n, b := float64(o.Int("agents")), bias()
		c.params = 4 * proj(D, D, b)
		c.perRow = 3*D + rot*3*D + 2*D + 2*H
		c.perSeq = n * 4 * D
		c.width, c.weight = D, w("wq", D, D)
	default:
		return c, fmt.Errorf("model.attention.kind %q: %w", kind, errUnknownVariant)
	}
	return c, nil
}

// proj is the parameter count of layers.Project: an [in, out] weight and,
// with bias, an [out] bias.
func proj(in, out float64, bias bool) float64 {
	if bias {
		return in*out + out
	}
	return in * out
}

// saturate converts a count to int64, saturating at math.MaxInt64. Counts
// below 2^53 are exact: every term of the sums above is an integer.
func saturate(x float64) int64 {
	if x >= math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(x)
}

// fmtCount writes a count exactly below a million and as 1.2e+09 above.
func fmtCount(x float64) string {
	if x < 1e6 {
		return fmt.Sprintf("%.0f", x)
	}
	return fmt.Sprintf("%.3g", x)
}
