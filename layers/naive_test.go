package layers

import (
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// This file holds naive float64 references of the attention variants:
// plain loops over float64 slices written from each paper's equations (as
// the variant's doc comment states them), calling nothing of graph or
// layers, and the harness that compares a layer built in float64 with its
// reference on the layer's own parameter values: the outputs, and the input
// gradient of sum(out * R) against a finite difference of the reference.
// A matrix is a row-major []float64; a head h of a [rows, heads*d] matrix is
// columns h*d .. (h+1)*d.

// refTol is how far (relDiff) a layer may be from its reference: float64
// rounding of a few hundred operations, far below any real bug.
const refTol = 1e-9

// nLinear is x [rows, in] times w [in, out] plus b [out] (nil: no bias).
func nLinear(x []float64, in int, w, b []float64, out int) []float64 {
	rows := len(x) / in
	y := make([]float64, rows*out)
	for r := 0; r < rows; r++ {
		for j := 0; j < out; j++ {
			var s float64
			if b != nil {
				s = b[j]
			}
			for k := 0; k < in; k++ {
				s += x[r*in+k] * w[k*out+j]
			}
			y[r*out+j] = s
		}
	}
	return y
}

// nEps is the epsilon of the norms (PyTorch's LayerNorm default).
const nEps = 1e-5

// nLayerNorm is (x - mean) / sqrt(var + eps) * gamma + beta over each row.
func nLayerNorm(x []float64, d int, gamma, beta []float64) []float64 {
	y := make([]float64, len(x))
	for r := 0; r < len(x)/d; r++ {
		row := x[r*d : (r+1)*d]
		var mean, v float64
		for _, a := range row {
			mean += a
		}
		mean /= float64(d)
		for _, a := range row {
			v += (a - mean) * (a - mean)
		}
		v /= float64(d)
		for j, a := range row {
			y[r*d+j] = (a-mean)/math.Sqrt(v+nEps)*gamma[j] + beta[j]
		}
	}
	return y
}

// nRMSNorm is x / sqrt(mean(x^2) + eps) * gamma over each row.
func nRMSNorm(x []float64, d int, gamma []float64) []float64 {
	y := make([]float64, len(x))
	for r := 0; r < len(x)/d; r++ {
		row := x[r*d : (r+1)*d]
		var ms float64
		for _, a := range row {
			ms += a * a
		}
		ms /= float64(d)
		for j, a := range row {
			y[r*d+j] = a / math.Sqrt(ms+nEps) * gamma[j]
		}
	}
	return y
}

// nPos is a position scheme as the references apply it.
type nPos struct {
	kind     string  // none, learned, sinusoidal, rope, partial_rope, xpos
	base     float64 // RoPE frequency base
	fraction float64 // partial_rope: fraction of a head's dims rotated
	lambda   float64 // xPos: the scale base (lambda in Sun et al. 2022)
}

// refPos is the scheme of CheckSetting{Positional: kind}.Position(), written
// out: base 10000, half the dims for partial_rope, xPos scale base 4.
func refPos(kind string) nPos {
	if kind == "" {
		kind = "none"
	}
	return nPos{kind: kind, base: 10000, fraction: 0.5, lambda: 4}
}

// rotated reports whether the scheme rotates queries and keys.
func (p nPos) rotated() bool {
	return p.kind == "rope" || p.kind == "partial_rope" || p.kind == "xpos"
}

// rotate applies the rotation to x [batch*seqLen, heads*d] (queries if
// query, else keys), position n = row mod seqLen. RoFormer (Su et al. 2021,
// eq. 13-15): in each head, pair (x_2i, x_2i+1) at position n turns by
// n theta_i, theta_i = base^(-2i/r) over the first r dims (r = d, or the
// partial_rope fraction rounded down to even). xPos (Sun et al. 2022): pair
// i is also scaled by zeta_i^(n/lambda) on queries and zeta_i^(-n/lambda)
// on keys, zeta_i = (2i/r + 0.4) / 1.4, so q_n . k_m scales by
// zeta^((n-m)/lambda). (The layers centre n on the middle of the sequence,
// which cancels in every score; the reference does not.)
func (p nPos) rotate(x []float64, seqLen, heads, d int, query bool) []float64 {
	y := append([]float64(nil), x...)
	if !p.rotated() {
		return y
	}
	r := d
	if p.kind == "partial_rope" {
		r = int(p.fraction * float64(d))
	}
	r -= r % 2
	width := heads * d
	for row := 0; row < len(x)/width; row++ {
		n := float64(row % seqLen)
		for h := 0; h < heads; h++ {
			for i := 0; i < r/2; i++ {
				theta := math.Pow(p.base, -2*float64(i)/float64(r))
				c, s := math.Cos(n*theta), math.Sin(n*theta)
				scale := 1.0
				if p.kind == "xpos" {
					zeta := (2*float64(i)/float64(r) + 0.4) / 1.4
					scale = math.Pow(zeta, n/p.lambda)
					if !query {
						scale = 1 / scale
					}
				}
				a, b := x[row*width+h*d+2*i], x[row*width+h*d+2*i+1]
				y[row*width+h*d+2*i] = scale * (a*c - b*s)
				y[row*width+h*d+2*i+1] = scale * (a*s + b*c)
			}
		}
	}
	return y
}

// nAttn is one scaled dot-product attention: batch sequences of qLen
// queries and kLen keys, heads query heads over kvHeads key/value heads
// (query head h reads key/value head h / (heads/kvHeads), GQA's contiguous
// groups), qk dims per query and key head and dv per value head.
type nAttn struct {
	batch, qLen, kLen int
	heads, kvHeads    int
	qk, dv            int
	causal            bool      // query i sees keys j <= i (qLen = kLen)
	keyMask           []float64 // [batch*kLen], 0 = padding no query sees; nil = none
}

// probs returns P[b][h][i][j] = softmax_j(q_bhi . k_bj / sqrt(qk)) over the
// keys query i may see (max subtracted; a query that sees none gets a row of
// zeros).
func (a nAttn) probs(q, k []float64) [][][][]float64 {
	group := a.heads / a.kvHeads
	p := make([][][][]float64, a.batch)
	for b := range p {
		p[b] = make([][][]float64, a.heads)
		for h := range p[b] {
			kh := h / group
			p[b][h] = make([][]float64, a.qLen)
			for i := range p[b][h] {
				row := make([]float64, a.kLen)
				seen := make([]bool, a.kLen)
				mx := math.Inf(-1)
				for j := range row {
					if (a.causal && j > i) || (a.keyMask != nil && a.keyMask[b*a.kLen+j] == 0) {
						continue
					}
					seen[j] = true
					for c := 0; c < a.qk; c++ {
						row[j] += q[(b*a.qLen+i)*a.heads*a.qk+h*a.qk+c] * k[(b*a.kLen+j)*a.kvHeads*a.qk+kh*a.qk+c]
					}
					row[j] /= math.Sqrt(float64(a.qk))
					mx = math.Max(mx, row[j])
				}
				var z float64
				for j := range row {
					if seen[j] {
						row[j] = math.Exp(row[j] - mx)
						z += row[j]
					}
				}
				for j := range row {
					if seen[j] {
						row[j] /= z
					} else {
						row[j] = 0
					}
				}
				p[b][h][i] = row
			}
		}
	}
	return p
}

// apply is P V: [batch*qLen, heads*dv] from v [batch*kLen, kvHeads*dv].
func (a nAttn) apply(p [][][][]float64, v []float64) []float64 {
	group := a.heads / a.kvHeads
	o := make([]float64, a.batch*a.qLen*a.heads*a.dv)
	for b := range p {
		for h := range p[b] {
			for i, row := range p[b][h] {
				for j, w := range row {
					for c := 0; c < a.dv; c++ {
						o[(b*a.qLen+i)*a.heads*a.dv+h*a.dv+c] += w * v[(b*a.kLen+j)*a.kvHeads*a.dv+(h/group)*a.dv+c]
					}
				}
			}
		}
	}
	return o
}

// attend is softmax(Q K^T / sqrt(qk)) V head by head.
func (a nAttn) attend(q, k, v []float64) []float64 { return a.apply(a.probs(q, k), v) }

// refModel is what a reference knows of the layer under test besides its
// parameters: the setting's sizes, causality, padding and positions.
type refModel struct {
	batch, seqLen, d, heads int
	causal                  bool
	mask                    []float64 // key mask [batch*seqLen] or nil
	pos                     nPos
}

// self is the attention of the model's positions to themselves with its
// masks, heads query heads over kvHeads of qk and dv dims.
func (m refModel) self(heads, kvHeads, qk, dv int) nAttn {
	return nAttn{batch: m.batch, qLen: m.seqLen, kLen: m.seqLen, heads: heads, kvHeads: kvHeads, qk: qk, dv: dv, causal: m.causal, keyMask: m.mask}
}

// params are a layer's parameters by name without the "attn." prefix; a
// missing name (an absent bias) is nil.
type params map[string][]float64

// lin is the projection called name (weight name, bias name_b if any).
func (p params) lin(x []float64, in int, name string, out int) []float64 {
	return nLinear(x, in, p[name], p[name+"_b"], out)
}

// refMultiHead is multi-head attention with kvHeads key/value heads:
// Vaswani et al. 2017 (kvHeads = heads), GQA (Ainslie et al. 2023) and MQA
// (Shazeer 2019, kvHeads = 1), position rotation on queries and keys.
func refMultiHead(m refModel, p params, x []float64, kvHeads int) []float64 {
	dh := m.d / m.heads
	q := m.pos.rotate(p.lin(x, m.d, "wq", m.d), m.seqLen, m.heads, dh, true)
	k := m.pos.rotate(p.lin(x, m.d, "wk", kvHeads*dh), m.seqLen, kvHeads, dh, false)
	v := p.lin(x, m.d, "wv", kvHeads*dh)
	return p.lin(m.self(m.heads, kvHeads, dh, dh).attend(q, k, v), m.d, "wo", m.d)
}

// refGPA is daGPAM (Heo and Choi 2024): per head the map
// A = (1 + lambda) softmax(S1) - lambda softmax(S2), from two query/key
// projections, applied to one V.
func refGPA(lambda float64) func(refModel, params, []float64) []float64 {
	return func(m refModel, p params, x []float64) []float64 {
		dh := m.d / m.heads
		a := m.self(m.heads, m.heads, dh, dh)
		pr := func(wq, wk string) [][][][]float64 {
			q := m.pos.rotate(p.lin(x, m.d, wq, m.d), m.seqLen, m.heads, dh, true)
			k := m.pos.rotate(p.lin(x, m.d, wk, m.d), m.seqLen, m.heads, dh, false)
			return a.probs(q, k)
		}
		p1, p2 := pr("wq", "wk"), pr("wq2", "wk2")
		for b := range p1 {
			for h := range p1[b] {
				for i := range p1[b][h] {
					for j := range p1[b][h][i] {
						p1[b][h][i][j] = (1+lambda)*p1[b][h][i][j] - lambda*p2[b][h][i][j]
					}
				}
			}
		}
		return p.lin(a.apply(p1, p.lin(x, m.d, "wv", m.d)), m.d, "wo", m.d)
	}
}

// refMLA is DeepSeek-V2's multi-head latent attention (section 2.1): keys
// and values from the RMS-normed latent c_KV, queries from x or the
// RMS-normed latent c_Q, and per head the content part [q^C_h ; q^R_h]
// against [k^C_h ; k^R] with k^R one RoPE-rotated key shared by the heads;
// scores over sqrt(d + d_r).
func refMLA(kvRank, qRank, dr int) func(refModel, params, []float64) []float64 {
	return func(m refModel, p params, x []float64) []float64 {
		H, d := m.heads, m.d/m.heads
		ckv := nRMSNorm(p.lin(x, m.d, "w_dkv", kvRank), kvRank, p["kv_norm.gamma"])
		kc, v := p.lin(ckv, kvRank, "w_uk", H*d), p.lin(ckv, kvRank, "w_uv", H*d)
		kr := m.pos.rotate(p.lin(x, m.d, "w_kr", dr), m.seqLen, 1, dr, false)
		cq, qIn := x, m.d
		if qRank > 0 {
			cq, qIn = nRMSNorm(p.lin(x, m.d, "w_dq", qRank), qRank, p["q_norm.gamma"]), qRank
		}
		qc := p.lin(cq, qIn, "w_uq", H*d)
		qr := m.pos.rotate(p.lin(cq, qIn, "w_qr", H*dr), m.seqLen, H, dr, true)
		rows := m.batch * m.seqLen
		w := d + dr
		q, k := make([]float64, rows*H*w), make([]float64, rows*H*w)
		for r := 0; r < rows; r++ {
			for h := 0; h < H; h++ {
				copy(q[r*H*w+h*w:], qc[r*H*d+h*d:r*H*d+(h+1)*d])
				copy(q[r*H*w+h*w+d:], qr[r*H*dr+h*dr:r*H*dr+(h+1)*dr])
				copy(k[r*H*w+h*w:], kc[r*H*d+h*d:r*H*d+(h+1)*d])
				copy(k[r*H*w+h*w+d:], kr[r*dr:(r+1)*dr])
			}
		}
		return p.lin(m.self(H, H, w, d).attend(q, k, v), m.d, "wo", m.d)
	}
}

// refReuse is UniForm's reuse attention (Yeom and Kim 2024): one map
// softmax(x Wq (x Wk)^T / sqrt(d_k)) shared by every head, applied to each
// head's values V_h, concatenated and projected.
func refReuse(dk int) func(refModel, params, []float64) []float64 {
	return func(m refModel, p params, x []float64) []float64 {
		dh := m.d / m.heads
		q := m.pos.rotate(p.lin(x, m.d, "wq", dk), m.seqLen, 1, dk, true)
		k := m.pos.rotate(p.lin(x, m.d, "wk", dk), m.seqLen, 1, dk, false)
		v := p.lin(x, m.d, "wv", m.d)
		pr := m.self(1, 1, dk, dk).probs(q, k)
		o := make([]float64, len(v))
		for b := 0; b < m.batch; b++ {
			for h := 0; h < m.heads; h++ { // head h: the one map times V_h
				for i := 0; i < m.seqLen; i++ {
					for j, a := range pr[b][0][i] {
						for c := 0; c < dh; c++ {
							o[(b*m.seqLen+i)*m.d+h*dh+c] += a * v[(b*m.seqLen+j)*m.d+h*dh+c]
						}
					}
				}
			}
		}
		return p.lin(o, m.d, "wo", m.d)
	}
}

// refLatent is the Perceiver latent layer of latent.go: learned latents L
// [n, D]; Z = L + CrossAttn_e(LN_e(L), x) (padding masked);
// Z = Z + SelfAttn_p(LN_p(Z)); out = CrossAttn_d(x, LN_d(Z)).
func refLatent(n int) func(refModel, params, []float64) []float64 {
	return func(m refModel, p params, x []float64) []float64 {
		d, dh := m.d, m.d/m.heads
		cross := func(tag string, y, z []float64, qLen, kLen int, mask []float64) []float64 {
			a := nAttn{batch: m.batch, qLen: qLen, kLen: kLen, heads: m.heads, kvHeads: m.heads, qk: dh, dv: dh, keyMask: mask}
			o := a.attend(p.lin(y, d, "wq_"+tag, d), p.lin(z, d, "wk_"+tag, d), p.lin(z, d, "wv_"+tag, d))
			return p.lin(o, d, "wo_"+tag, d)
		}
		add := func(a, b []float64) []float64 {
			c := make([]float64, len(a))
			for i := range a {
				c[i] = a[i] + b[i]
			}
			return c
		}
		ln := func(tag string, z []float64) []float64 {
			return nLayerNorm(z, d, p[tag+".gamma"], p[tag+".beta"])
		}
		var lat []float64
		for b := 0; b < m.batch; b++ {
			lat = append(lat, p["latents"]...)
		}
		z := add(lat, cross("e", ln("ln_e", lat), x, n, m.seqLen, m.mask))
		lz := ln("ln_p", z)
		z = add(z, cross("p", lz, lz, n, n, nil))
		return cross("d", x, ln("ln_d", z), m.seqLen, n, nil)
	}
}

// refAgent is agent attention (Han et al. 2024) in the pure two-softmax
// form of agent.go: agents are the means of contiguous segments
// [floor(s T / n), floor((s+1) T / n)) of the rotated queries (real
// positions only), they read the rotated keys, and the queries read them
// back; with xPos the agents read as keys are pooled from the queries
// rotated as keys. An agent whose segment is padding only is masked out.
func refAgent(n int) func(refModel, params, []float64) []float64 {
	return func(m refModel, p params, x []float64) []float64 {
		d, dh, T := m.d, m.d/m.heads, m.seqLen
		qRot := m.pos.rotate(p.lin(x, d, "wq", d), T, m.heads, dh, true)
		qAsKey := qRot
		if m.pos.kind == "xpos" {
			qAsKey = m.pos.rotate(p.lin(x, d, "wq", d), T, m.heads, dh, false)
		}
		k := m.pos.rotate(p.lin(x, d, "wk", d), T, m.heads, dh, false)
		v := p.lin(x, d, "wv", d)
		real := func(b, t int) bool { return m.mask == nil || m.mask[b*T+t] != 0 }
		pool := func(y []float64) (agents, agentMask []float64) {
			agents, agentMask = make([]float64, m.batch*n*d), make([]float64, m.batch*n)
			for b := 0; b < m.batch; b++ {
				for s := 0; s < n; s++ {
					cnt := 0
					for t := s * T / n; t < (s+1)*T/n; t++ {
						if !real(b, t) {
							continue
						}
						cnt++
						for c := 0; c < d; c++ {
							agents[(b*n+s)*d+c] += y[(b*T+t)*d+c]
						}
					}
					for c := 0; c < d && cnt > 0; c++ {
						agents[(b*n+s)*d+c] /= float64(cnt)
					}
					if cnt > 0 {
						agentMask[b*n+s] = 1
					}
				}
			}
			return agents, agentMask
		}
		aq, agentMask := pool(qRot)
		ak, _ := pool(qAsKey)
		agg := nAttn{batch: m.batch, qLen: n, kLen: T, heads: m.heads, kvHeads: m.heads, qk: dh, dv: dh, keyMask: m.mask}
		va := agg.attend(aq, k, v)
		bc := nAttn{batch: m.batch, qLen: T, kLen: n, heads: m.heads, kvHeads: m.heads, qk: dh, dv: dh, keyMask: agentMask}
		return p.lin(bc.attend(qRot, ak, va), d, "wo", d)
	}
}

// refMoH is Mixture-of-Head attention as moh.go implements it (Jin et al.
// 2024, eq. 5-6): multi-head attention whose head outputs are weighed per
// token by gates from a bias-free router z = x Wr: the first S heads get
// alpha1 softmax(z_s), the top K of the R routed heads (by logit, ties to
// the lower head) alpha2 softmax(z_r) over all R, the others 0, with
// [alpha1, alpha2] = softmax(z_b) when there are both kinds. softmaxGates
// false: every active head weighs 1.
func refMoH(shared, topK int, softmaxGates bool) func(refModel, params, []float64) []float64 {
	return func(m refModel, p params, x []float64) []float64 {
		H, dh := m.heads, m.d/m.heads
		q := m.pos.rotate(p.lin(x, m.d, "wq", m.d), m.seqLen, H, dh, true)
		k := m.pos.rotate(p.lin(x, m.d, "wk", m.d), m.seqLen, H, dh, false)
		o := m.self(H, H, dh, dh).attend(q, k, p.lin(x, m.d, "wv", m.d))
		width := H
		if shared > 0 && shared < H {
			width = H + 2
		}
		z := nLinear(x, m.d, p["router"], nil, width)
		softmax := func(l []float64) []float64 {
			mx := math.Inf(-1)
			for _, a := range l {
				mx = math.Max(mx, a)
			}
			e, s := make([]float64, len(l)), 0.0
			for i, a := range l {
				e[i] = math.Exp(a - mx)
				s += e[i]
			}
			for i := range e {
				e[i] /= s
			}
			return e
		}
		for r := 0; r < len(x)/m.d; r++ {
			zr := z[r*width : (r+1)*width]
			alpha1, alpha2 := 1.0, 1.0
			if width > H {
				a := softmax(zr[H:])
				alpha1, alpha2 = a[0], a[1]
			}
			gates := make([]float64, H)
			for h, g := range softmax(zr[:shared]) {
				gates[h] = alpha1 * g
			}
			routed := softmax(zr[shared:H])
			for j, g := range routed {
				above := 0 // routed heads ranked before j
				for i, l := range zr[shared:H] {
					if l > zr[shared+j] || (l == zr[shared+j] && i < j) {
						above++
					}
				}
				if above < topK {
					gates[shared+j] = alpha2 * g
				}
			}
			for h := range gates {
				if !softmaxGates && (h < shared || gates[h] != 0) {
					gates[h] = 1
				}
				for c := 0; c < dh; c++ {
					o[r*m.d+h*dh+c] *= gates[h]
				}
			}
		}
		return p.lin(o, m.d, "wo", m.d)
	}
}

// refMask is a key mask for batch sequences of seqLen: sequence 0 pads its
// last position, sequence 1 its second half and position 1 (a hole), and
// any further ones alternate; position 0 is always real.
func refMask(batch, seqLen int) []float64 {
	m := make([]float64, batch*seqLen)
	for b := 0; b < batch; b++ {
		for t := 0; t < seqLen; t++ {
			switch b % 3 {
			case 0:
				m[b*seqLen+t] = b2f(t < seqLen-1)
			case 1:
				m[b*seqLen+t] = b2f(t < (seqLen+1)/2 && t != 1)
			default:
				m[b*seqLen+t] = b2f(t%2 == 0)
			}
		}
	}
	return m
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// refRun is a layer's output and input gradient for loss = sum(out * r) on
// input x, with its parameters by name.
type refRun struct {
	out, dx []float64
	p       params
}

// runRef builds variant c in setting st (causal and key mask as given) in
// float64 (newLayerFixture), and runs forward and backward on x.
func runRef(t *testing.T, c config.Component, st CheckSetting, seed uint64, x, mask, r []float64) refRun {
	t.Helper()
	f := newLayerFixture(t, tensor.Float64, c, st, seed, x, mask)
	sh := Shape{Batch: st.Batch, SeqLen: st.SeqLen, DModel: st.DModel}
	rn := graph.Variable(f.g, "r", tensor.New(tensor.WithShape(sh.Rows(), sh.DModel), tensor.WithBacking(append([]float64(nil), r...))))
	prod, err := G.HadamardProd(f.out, rn)
	if err != nil {
		t.Fatal(err)
	}
	loss, err := G.Sum(prod)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := G.Grad(loss, f.x); err != nil {
		t.Fatal(err)
	}
	m := G.NewTapeMachine(f.g, G.BindDualValues(f.x))
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	dx, err := f.x.Grad()
	if err != nil {
		t.Fatal(err)
	}
	return refRun{out: graph.Float64s(f.out.Value()), dx: graph.Float64s(dx), p: f.params}
}

// refGrad is the gradient of sum(f(x) * r) by the five-point central
// difference (error O(h^4); h = 1e-3 puts both truncation and rounding
// near 1e-12 for these sizes).
func refGrad(f func([]float64) []float64, x, r []float64) []float64 {
	const h = 1e-3
	loss := func(x []float64) float64 {
		var s float64
		for i, y := range f(x) {
			s += y * r[i]
		}
		return s
	}
	g := make([]float64, len(x))
	xs := append([]float64(nil), x...)
	for i := range xs {
		at := func(dx float64) float64 {
			xs[i] = x[i] + dx
			return loss(xs)
		}
		g[i] = (-at(2*h) + 8*at(h) - 8*at(-h) + at(-2*h)) / (12 * h)
		xs[i] = x[i]
	}
	return g
}

// refCase is one variant in one setting against its reference.
type refCase struct {
	name string
	comp config.Component
	st   CheckSetting // Padded: the key mask of refMask
	ref  func(refModel, params, []float64) []float64
}

// checkRef compares the layer of c with its reference: outputs and input
// gradients within refTol, for fixed seeds.
func checkRef(t *testing.T, c refCase) {
	t.Helper()
	for _, seed := range []uint64{1, 2} {
		rng := rand.New(rand.NewPCG(seed, 17))
		n := c.st.Batch * c.st.SeqLen * c.st.DModel
		x := graph.RandomTensor(rng, 1, n).Data().([]float64)
		r := graph.RandomTensor(rng, 1, n).Data().([]float64)
		var mask []float64
		if c.st.Padded {
			mask = refMask(c.st.Batch, c.st.SeqLen)
		}
		got := runRef(t, c.comp, c.st, seed, x, mask, r)
		m := refModel{batch: c.st.Batch, seqLen: c.st.SeqLen, d: c.st.DModel, heads: c.st.Heads,
			causal: c.st.Causal, mask: mask, pos: refPos(c.st.Positional)}
		f := func(x []float64) []float64 { return c.ref(m, got.p, x) }
		want := f(x)
		for i, y := range got.out {
			if math.IsNaN(y) || math.IsInf(y, 0) {
				t.Fatalf("seed %d: output [%d] = %g", seed, i, y)
			}
		}
		dOut, dGrad := relDiff(got.out, want), relDiff(got.dx, refGrad(f, x, r))
		t.Logf("seed %d: output %.2g, input gradient %.2g from the reference", seed, dOut, dGrad)
		if d := dOut; d > refTol {
			t.Errorf("seed %d: output differs from the reference by %.3g (relative, max norm; want <= %g)\ngot  %.6g\nwant %.6g",
				seed, d, refTol, got.out[:c.st.DModel], want[:c.st.DModel])
		}
		if d := dGrad; d > refTol {
			t.Errorf("seed %d: input gradient differs from the reference's finite difference by %.3g (want <= %g)", seed, d, refTol)
		}
	}
}

// refSetting is a setting for the references: 2 sequences of 7 positions,
// d_model 8 over heads heads, flash cores in 3 x 3 tiles (two full tiles
// and a ragged one).
func refSetting(causal, padded bool, pos string, heads int) CheckSetting {
	return CheckSetting{Causal: causal, Padded: padded, Batch: 2, SeqLen: 7, DModel: 8, Heads: heads, Positional: pos, FlashBlock: 3}
}

// TestNaiveReferences: every variant below computes its reference's
// outputs and input gradients to 1e-9 in float64, in the settings that
// exercise what a plausible bug would break: gpa with lambda != 0, mla's
// rotated shared key with and without the query latent, latent's encode
// residual, agent with each position family, gqa's 1 < G < H grouping, mqa
// and reuse on their own references, moh's routing.
func TestNaiveReferences(t *testing.T) {
	comp := func(kind string, opts map[string]any) config.Component {
		return config.Component{Kind: kind, Options: opts}
	}
	mh := func(kv int) func(refModel, params, []float64) []float64 {
		return func(m refModel, p params, x []float64) []float64 {
			if kv == 0 {
				kv = m.heads
			}
			return refMultiHead(m, p, x, kv)
		}
	}
	var cases []refCase
	add := func(name string, c config.Component, st CheckSetting, ref func(refModel, params, []float64) []float64) {
		cases = append(cases, refCase{name, c, st, ref})
	}
	add("standard/causal-padded", comp("standard", nil), refSetting(true, true, "", 2), mh(0))
	add("flash/causal-rope-block2", comp("flash", map[string]any{"block": 2}), refSetting(true, false, "rope", 2), mh(0))
	for _, c := range []struct {
		name        string
		causal, pad bool
		pos         string
		lambda      float64
		noBias      bool
	}{
		{"causal", true, false, "", 0.3, false},
		{"bidirectional", false, false, "", 0.3, false},
		{"bidirectional-padded", false, true, "", 0.7, true},
		{"causal-rope-padded", true, true, "rope", 0.3, false},
	} {
		add("gpa/"+c.name, comp("gpa", map[string]any{"lambda": c.lambda, "bias": !c.noBias}), refSetting(c.causal, c.pad, c.pos, 2), refGPA(c.lambda))
	}
	for _, c := range []struct {
		name                string
		causal, pad         bool
		kvRank, qRank, rope int
		bias                bool
	}{
		{"causal-rope", true, false, 4, 0, 2, false},
		{"causal-rope-qrank", true, false, 4, 6, 2, false},
		{"causal-rope-qrank-padded-bias", true, true, 3, 5, 4, true},
		{"bidirectional-rope-padded", false, true, 4, 0, 2, true},
	} {
		opts := map[string]any{"kv_rank": c.kvRank, "q_rank": c.qRank, "rope_dims": c.rope, "bias": c.bias}
		add("mla/"+c.name, comp("mla", opts), refSetting(c.causal, c.pad, "rope", 2), refMLA(c.kvRank, c.qRank, c.rope))
	}
	add("mla/causal-none", comp("mla", map[string]any{"kv_rank": 4}), refSetting(true, false, "none", 2), refMLA(4, 0, 2))
	for _, pad := range []bool{false, true} {
		name := map[bool]string{false: "bidirectional", true: "bidirectional-padded"}[pad]
		add("latent/"+name, comp("latent", map[string]any{"latents": 3}), refSetting(false, pad, "", 2), refLatent(3))
	}
	add("latent/learned-4heads-nobias", comp("latent", map[string]any{"latents": 5, "bias": false}), refSetting(false, false, "learned", 4), refLatent(5))
	for _, pos := range []string{"none", "learned", "rope", "partial_rope", "xpos"} {
		for _, pad := range []bool{false, true} {
			name := pos + map[bool]string{false: "", true: "-padded"}[pad]
			add("agent/"+name, comp("agent", map[string]any{"agents": 3}), refSetting(false, pad, pos, 2), refAgent(3))
		}
	}
	add("agent/xpos-agent-per-position", comp("agent", map[string]any{"agents": 7}), refSetting(false, true, "xpos", 2), refAgent(7))
	for _, c := range []struct {
		name string
		st   CheckSetting
	}{
		{"causal-padded", refSetting(true, true, "", 4)},
		{"causal-rope", refSetting(true, false, "rope", 4)},
		{"bidirectional-xpos-padded", refSetting(false, true, "xpos", 4)},
	} {
		add("gqa-4heads-2groups/"+c.name, comp("gqa", map[string]any{"kv_heads": 2}), c.st, mh(2))
		add("gqa-4heads-1group/"+c.name, comp("gqa", map[string]any{"kv_heads": 1}), c.st, mh(1))
		add("gqa-4heads-4groups/"+c.name, comp("gqa", map[string]any{"kv_heads": 4}), c.st, mh(4))
		add("mqa-4heads/"+c.name, comp("mqa", nil), c.st, mh(1))
	}
	for _, c := range []struct {
		name  string
		st    CheckSetting
		qkDim int
	}{
		{"2heads-causal-padded", refSetting(true, true, "", 2), 4},
		{"4heads-causal-rope", refSetting(true, false, "rope", 4), 2},
		{"4heads-qk6-bidirectional-xpos-padded", refSetting(false, true, "xpos", 4), 6},
	} {
		add("reuse-"+c.name, comp("reuse", map[string]any{"qk_dim": c.qkDim}), c.st, refReuse(c.qkDim))
	}
	for _, c := range []struct {
		name         string
		shared, topK int
		gate         string
		st           CheckSetting
	}{
		{"1shared-top2-causal-padded", 1, 2, "softmax", refSetting(true, true, "", 4)},
		{"0shared-top2-bidirectional", 0, 2, "softmax", refSetting(false, false, "", 4)},
		{"2shared-top1-causal-rope", 2, 1, "softmax", refSetting(true, false, "rope", 4)},
		{"4shared-bidirectional-padded", 4, 1, "softmax", refSetting(false, true, "", 4)},
		{"1shared-top1-gate-none-causal", 1, 1, "none", refSetting(true, false, "", 4)},
	} {
		opts := map[string]any{"shared_heads": c.shared, "top_k": c.topK, "gate": c.gate}
		c.st.DModel = 16 // 4 heads of 4 dims
		add("moh-"+c.name, comp("moh", opts), c.st, refMoH(c.shared, c.topK, c.gate == "softmax"))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { checkRef(t, c) })
	}
}
