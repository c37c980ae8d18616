package layers

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// NSA is Native Sparse Attention (Yuan et al. 2025, "Native Sparse
// Attention: Hardware-Aligned and Natively Trainable Sparse Attention"):
// three attention branches over the same queries, each with its own keys
// and values, mixed per token and head by learned sigmoid gates. Per token
// x_t and head h (q and every branch's keys rotated by rope, partial_rope
// or xpos before use):
//
//	q = x Wq;  (k, v) = (x Wk, x Wv) window, (x Wk_cmp, x Wv_cmp) compression,
//	           (x Wk_slc, x Wv_slc) selection
//
// Compression: compressed token i covers positions [i d, i d + l), i < nc =
// floor((T - l)/d) + 1,
//
//	k~_i = phi_K(concat_r (k_cmp[i d + r] + p_K[r])),  v~_i likewise with phi_V, p_V
//	phi(u) = GELU(u W1 + b1) W2 + b2,  W1 [l dh, dh], W2 [dh, dh], shared by the heads
//	o_cmp(t) = sum_{i in C(t)} softmax_i(q_t . k~_i / sqrt(dh)) v~_i
//	C(t) = {i : i d + l - 1 <= t} (causal: blocks that have ended), every i
//	       (bidirectional); padded: only i whose block holds a real key
//
// (0 for a query with C(t) empty, such as t < l - 1 causal). Padded keys
// are zeroed before compression (inside the unfold). Selection: with
// p_cmp(t, i) that softmax and selection block j = [j l', (j+1) l'),
//
//	p_slc(t, j) = sum of p_cmp(t, i) over the i whose span [i d, i d + l)
//	              overlaps block j
//	I_t = n blocks among the candidates (causal: j l' <= t; bidirectional:
//	      every block): always block 0 and the blocks holding t and t - l'
//	      (the paper's 1 initial + 2 local, counted in n), then by p_slc
//	      descending, ties to the lower j
//	o_slc(t) = sum_{j' in the blocks I_t, unpadded, (causal) j' <= t}
//	               softmax(q_t . k_slc[j'] / sqrt(dh)) v_slc[j']
//
// (0 if no such key). Window: o_win(t) = attention over keys t - w .. t
// (bidirectional: |t - j| <= w; padded keys masked), sliding_window's
// pattern through the tiled core. Output:
//
//	g = sigmoid(x W_gate + b_gate)  [T, 3H]: per token, head and branch
//	out = concat_h(g_cmp,h o_cmp,h + g_slc,h o_slc,h + g_win,h o_win,h) Wo
//
// The selection is not differentiated (the paper's too: the top-n is
// discrete); the compressed keys reach the loss only through the
// compression branch. Cores: graph.BlockUnfold (the block gather, with a
// scatter-add backward), graph.CompressedAttentionLSE,
// graph.SelectedAttentionLSE (which recomputes p_cmp inside its forward
// and saves the kept block indices), Context.Attend for the window and
// graph.GatedSum for the mix.
//
// Time per head: O(T nc dh) = O(T^2 dh / d) for the compression branch
// and the selection scores, O(T n l' dh) for the selected attention,
// O(T w dh) for the window, O(nc l dh^2) for phi; memory O(T n) block
// indices, O(nc l dh) unfolded blocks (= O(T l/d dh)), O(T dh) per
// branch output and for transposed copies of the selection keys and
// values, and O(tile (n l' + nc + dh)) scratch per worker: no T x T score
// or mask is formed. The compression and selection kernels are
// GEMM-tiled: the compression branch is FlashAttention's tiling over the
// compressed tokens (query tiles x compressed tiles, each row masked
// beyond its own visible count); the selection branch takes, per tile of
// 128 queries, the union of the rows' kept blocks and runs one GEMM per
// block for the rows that keep it, so that a score costs about what it
// costs in flash. Measured with trainer bench attention (defaults, batch
// 1, 4 heads of 32, float32, 2 threads) at T = 4096, where nsa computes
// 0.81 of flash's scores, forward+backward took about 600 ms against
// flash's 750 ms on a 2-core AVX2 machine, and 280-340 ms against 250-270
// ms on an AVX-512 one (whose vectorized exponentials make every score
// cheaper, so that NSA's fixed extra, mostly its seven projections, phi
// and the gates, weighs more); at T = 1024, n l' = T and the selection sees every earlier key
// (1.85 of flash's scores), and nsa takes 1.7 to 2.7 times flash. It pays
// off only when T >> n l' and T >> w.
//
// Departures from the paper: each head is its own key/value group (the
// paper shares keys and values across a GQA group and sums p_slc over
// its heads); the position embedding p is added before phi's first
// linear layer, so it acts as a learned shift of b1 (p W1); p_slc is the
// overlap rule above, each overlapping compressed token counted once (the
// paper's Eq. 9 sums p_cmp over index offsets m + n with multiplicity, a
// triangular weighting of the same tokens; both choose from the same
// compressed scores); rotary positions are applied to the raw keys before
// compression, so a compressed token carries its block's rotations mixed
// by phi; ALiBi is refused (a compressed token has no single position);
// the gates are a single linear layer (the paper says an MLP) and always
// have a bias; the paper is causal and unpadded only, so the
// bidirectional form (every compressed token and every block a
// candidate, the same three forced blocks) and the padding rules above
// are ours; no Triton-style kernel: the branches are separate CPU ops
// (the paper fuses them on the GPU and loads each GQA group's kept
// blocks once for all its heads), GEMM-tiled as above.
type NSA struct {
	spec                    Spec
	block, stride           int
	selBlock, selected, win int
	bias                    bool
}

func init() {
	Register("nsa", "Native Sparse Attention (Yuan et al. 2025): gated compressed tokens (block l 32, stride d 16), n 16 selected blocks of l' 64 chosen by the compressed scores, window w 512; O(T^2 d/stride + T n l' d + T w d)",
		Support{Causal: true, Bidirectional: true, Padding: true, Positions: []string{"learned", "sinusoidal", "none", "rope", "partial_rope", "xpos"},
			Why:          Refusals{Positions: "a compressed token has no single position to measure ALiBi's distance from"},
			CheckOptions: map[string]any{"compress_block": 3, "compress_stride": 1, "select_block": 1, "selected": 4, "window": 1}, NonSmooth: true},
		[]config.OptionSpec{
			{Name: "compress_block", Kind: config.Int, Default: 32, Help: "l: tokens per compressed token (a multiple of compress_stride)"},
			{Name: "compress_stride", Kind: config.Int, Default: 16, Help: "d: a compressed token every d tokens (d <= l, l % d == 0)"},
			{Name: "select_block", Kind: config.Int, Default: 64, Help: "l': tokens per selection block (a multiple of compress_stride)"},
			{Name: "selected", Kind: config.Int, Default: 16, Help: "n: selection blocks each query keeps, counting the initial and 2 local ones (>= 3)"},
			{Name: "window", Kind: config.Int, Default: 512, Help: "w: the window branch sees keys t-w..t"},
			{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the q, k, v and output projections (the gates always have one)"},
		},
		func(s Spec) (Attention, error) {
			a := &NSA{spec: s, block: s.Options.Int("compress_block"), stride: s.Options.Int("compress_stride"),
				selBlock: s.Options.Int("select_block"), selected: s.Options.Int("selected"), win: s.Options.Int("window"),
				bias: s.Options.Bool("bias")}
			switch {
			case a.block < 1:
				return nil, fmt.Errorf("model.attention.compress_block: must be positive, got %d", a.block)
			case a.stride < 1 || a.stride > a.block:
				return nil, fmt.Errorf("model.attention.compress_stride: must be in 1..compress_block (%d), got %d", a.block, a.stride)
			case a.block%a.stride != 0:
				return nil, fmt.Errorf("model.attention.compress_stride: must divide compress_block (%d), got %d", a.block, a.stride)
			case a.selBlock < 1 || a.selBlock%a.stride != 0:
				return nil, fmt.Errorf("model.attention.select_block: must be a positive multiple of compress_stride (%d), got %d", a.stride, a.selBlock)
			case a.selected < 3:
				return nil, fmt.Errorf("model.attention.selected: must be at least 3 (the initial and 2 local blocks are always kept), got %d", a.selected)
			case a.win < 0:
				return nil, fmt.Errorf("model.attention.window: must not be negative, got %d", a.win)
			}
			return a, nil
		})
}

// Forward implements Attention.
func (a *NSA) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	d, h, dh := a.spec.DModel, a.spec.Heads, a.spec.HeadDim()
	pos := a.spec.Pos
	if pos.ALiBi() {
		return nil, fmt.Errorf("model.positional: nsa attention does not take alibi")
	}
	// One query projection; keys and values per branch. Queries and keys
	// are rotated (rope, partial_rope, xpos; a no-op otherwise).
	var q, kw, vw, kc, vc, ks, vs *G.Node
	for _, p := range []struct {
		dst           **G.Node
		name          string
		rotate, query bool
	}{{&q, "wq", true, true}, {&kw, "wk", true, false}, {&vw, "wv", false, false}, {&kc, "wk_cmp", true, false},
		{&vc, "wv_cmp", false, false}, {&ks, "wk_slc", true, false}, {&vs, "wv_slc", false, false}} {
		n, err := Project(s, p.name, x, d, d, a.bias)
		if err != nil {
			return nil, err
		}
		if p.rotate {
			if n, err = pos.Rotate(n, c.Shape, h, dh, p.query); err != nil {
				return nil, err
			}
		}
		*p.dst = n
	}
	ns := graph.NSAShape{Batch: c.Batch, Len: c.SeqLen, Heads: h, HeadDim: dh,
		Block: a.block, Stride: a.stride, SelectBlock: a.selBlock, Selected: a.selected, Causal: c.Causal}
	nc := ns.Compressed()

	// Window branch: sliding_window's band (the context composes the
	// causal and padding masks) through the tiled core.
	oWin, _, err := c.Attend(q, kw, vw, CoreSpec{Heads: Heads{Heads: h, HeadDim: dh}, Pattern: SlidingWindowPattern(a.win, 0),
		Map: MapSpec{Label: "window", Note: fmt.Sprintf("the window branch: keys within %d positions (causal: before), before its gate", a.win)}})
	if err != nil {
		return nil, err
	}

	// Compression branch.
	var kTilde, cmask, oCmp *G.Node
	if nc > 0 {
		if kTilde, err = a.compress(s, "k", kc, c.KeyMask, ns); err != nil {
			return nil, err
		}
		vTilde, err := a.compress(s, "v", vc, c.KeyMask, ns)
		if err != nil {
			return nil, err
		}
		if c.KeyMask != nil {
			if cmask, err = graph.CompressedMask(c.KeyMask, ns); err != nil {
				return nil, err
			}
		}
		if oCmp, _, err = graph.CompressedAttentionLSE(q, kTilde, vTilde, cmask, ns); err != nil {
			return nil, err
		}
	} else {
		// No compression block: the branch outputs 0 (a nil branch of
		// GatedSum). The phi parameters still exist, so the parameter set
		// does not depend on T.
		for _, kind := range []string{"k", "v"} {
			if _, err := a.phiParams(s, kind, dh); err != nil {
				return nil, err
			}
		}
	}

	// Selection branch.
	oSlc, _, err := graph.SelectedAttentionLSE(q, ks, vs, kTilde, c.KeyMask, ns)
	if err != nil {
		return nil, err
	}
	if c.Cores != nil {
		a.logCores(c, ns)
	}
	if err := a.recordMaps(c, q, ks, kTilde, cmask, ns); err != nil {
		return nil, err
	}

	gl, err := Project(s, "w_gate", x, d, 3*h, true)
	if err != nil {
		return nil, err
	}
	gates, err := G.Sigmoid(gl)
	if err != nil {
		return nil, err
	}
	o, err := graph.GatedSum(gates, []*G.Node{oCmp, oSlc, oWin}, h, dh)
	if err != nil {
		return nil, err
	}
	return Project(s, "wo", o, d, d, a.bias)
}

// phi is one compression MLP's parameters.
type phi struct{ pos, w1, b1, w2, b2 *G.Node }

// phiParams are the compression MLP of keys (kind "k") or values ("v"):
// "cmp_pos_<kind>" [l, dh] (the intra-block positions), "phi_<kind>_w1"
// [l dh, dh], "phi_<kind>_b1" [dh], "phi_<kind>_w2" [dh, dh],
// "phi_<kind>_b2" [dh].
func (a *NSA) phiParams(s Scope, kind string, dh int) (phi, error) {
	var p phi
	var err error
	in := a.block * dh
	if p.pos, err = s.Param("cmp_pos_"+kind, []int{a.block, dh}, graph.Normal(0.02)); err != nil {
		return p, err
	}
	if p.w1, err = s.Param("phi_"+kind+"_w1", []int{in, dh}, graph.Uniform(1/math.Sqrt(float64(in)))); err != nil {
		return p, err
	}
	if p.b1, err = s.Param("phi_"+kind+"_b1", []int{dh}, graph.Constant(0)); err != nil {
		return p, err
	}
	if p.w2, err = s.Param("phi_"+kind+"_w2", []int{dh, dh}, graph.Uniform(1/math.Sqrt(float64(dh)))); err != nil {
		return p, err
	}
	if p.b2, err = s.Param("phi_"+kind+"_b2", []int{dh}, graph.Constant(0)); err != nil {
		return p, err
	}
	return p, nil
}

// compress maps the branch's keys or values x [B*T, H*dh] to compressed
// tokens [B*nc, H*dh]: unfold the blocks to rows (b, i, h) of l*dh, then
// phi(u + p) = GELU(u W1 + (p W1 + b1)) W2 + b2 row by row.
func (a *NSA) compress(s Scope, kind string, x, keyMask *G.Node, ns graph.NSAShape) (*G.Node, error) {
	dh := ns.HeadDim
	p, err := a.phiParams(s, kind, dh)
	if err != nil {
		return nil, err
	}
	u, err := graph.BlockUnfold(x, keyMask, ns)
	if err != nil {
		return nil, err
	}
	flat, err := G.Reshape(p.pos, tensor.Shape{1, a.block * dh})
	if err != nil {
		return nil, err
	}
	pw, err := graph.MatMul(flat, p.w1, false, false)
	if err != nil {
		return nil, err
	}
	if pw, err = G.Reshape(pw, tensor.Shape{dh}); err != nil {
		return nil, err
	}
	b1, err := G.Add(pw, p.b1)
	if err != nil {
		return nil, err
	}
	hid, err := graph.Linear(u, p.w1, b1)
	if err != nil {
		return nil, err
	}
	if hid, err = graph.Activate(hid, graph.GELU); err != nil {
		return nil, err
	}
	out, err := graph.Linear(hid, p.w2, p.b2)
	if err != nil {
		return nil, err
	}
	return G.Reshape(out, tensor.Shape{ns.Batch * ns.Compressed(), ns.Heads * dh})
}

// recordMaps records the compression and selection branches' maps (the
// window's is recorded by Attend), each before its gate.
func (a *NSA) recordMaps(c Context, q, ks, kTilde, cmask *G.Node, ns graph.NSAShape) error {
	if c.Maps == nil {
		return nil
	}
	as := graph.AttentionShape{Batch: c.Batch, QLen: c.SeqLen, KLen: c.SeqLen, Heads: ns.Heads, KVHeads: ns.Heads, HeadDim: ns.HeadDim, Causal: c.Causal}
	if kTilde != nil {
		w, err := graph.CompressedWeights(q, kTilde, cmask, ns)
		if err != nil {
			return fmt.Errorf("recording the nsa compressed map of layer %d: %w", c.Layer, err)
		}
		cs := as
		cs.KLen, cs.Causal = ns.Compressed(), false
		if _, err := c.RecordMap(MapSpec{Label: "compressed", Weights: w, Shape: cs, Cols: AxisCompressed, EmptyRows: true, KeyMask: cmask,
			Note: fmt.Sprintf("the compression branch over compressed tokens (block %d, stride %d), before its gate; a token sees a block once it has ended", a.block, a.stride)}); err != nil {
			return err
		}
	}
	w, err := graph.SelectedWeights(q, ks, kTilde, c.KeyMask, ns)
	if err != nil {
		return fmt.Errorf("recording the nsa selected map of layer %d: %w", c.Layer, err)
	}
	_, err = c.RecordMap(MapSpec{Label: "selected", Weights: w, Shape: as, KeyMask: c.KeyMask, EmptyRows: c.KeyMask != nil,
		Note: fmt.Sprintf("the selection branch: %d blocks of %d keys per query chosen by the compressed scores, before its gate", a.selected, a.selBlock)})
	return err
}

// logCores logs the compression and selection branches' scores (the
// window's is logged by Attend, with flash's count for the layer, so these
// calls log no flash scores of their own): every visible (query,
// compressed token) pair, and for the selection those again plus at most
// n l' keys per query (an upper bound: the blocks a query keeps are data).
func (a *NSA) logCores(c Context, ns graph.NSAShape) {
	var cmp, slc int64
	for t := 0; t < c.SeqLen; t++ {
		switch {
		case !c.Causal:
			cmp += int64(ns.Compressed())
			slc += int64(min(a.selected*a.selBlock, c.SeqLen))
		case t >= a.block-1:
			cmp += int64(min((t-a.block+1)/a.stride+1, ns.Compressed()))
			fallthrough
		default:
			slc += int64(min(a.selected*a.selBlock, t+1))
		}
	}
	n := int64(c.Batch * ns.Heads)
	c.Cores.Calls = append(c.Cores.Calls,
		CoreCall{Label: "compressed", Scores: n * cmp},
		CoreCall{Label: "selected", Scores: n * (cmp + slc)})
}

// KVCacheElems implements KVCache: per token, the window branch's key and
// value (2D; only the last w tokens are needed, counted in full here as
// for sliding_window), the selection branch's (2D), and a compressed key
// and value every d tokens (ceil(2D/d)); the raw compression keys and
// values of the last, unfinished block (l tokens) are not counted.
func (a *NSA) KVCacheElems() int {
	d := a.spec.DModel
	return 4*d + (2*d+a.stride-1)/a.stride
}
