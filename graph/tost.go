package graph

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TokenStatsEps is added to each head's membership mass P before the
// second moment M is divided by it, as the public ToST code adds 1e-8: a
// head that no visible token belongs to (a causal sequence whose first
// tokens are padding) has M = P = 0 and gets moment 0, gain 1.
const TokenStatsEps = 1e-8

// TokenStatsShape describes the input of token statistics attention: Batch
// sequences of SeqLen positions, Heads heads of HeadDim dims, causal or
// not.
type TokenStatsShape struct {
	Batch, SeqLen, Heads, HeadDim int
	Causal                        bool
}

func (s TokenStatsShape) validate() error {
	if s.Batch < 1 || s.SeqLen < 1 || s.Heads < 1 || s.HeadDim < 1 {
		return fmt.Errorf("token statistics: sizes must be positive: %+v", s)
	}
	return nil
}

func (s TokenStatsShape) rows() int  { return s.Batch * s.SeqLen }
func (s TokenStatsShape) width() int { return s.Heads * s.HeadDim }

// TokenStatistics is the token statistics self-attention operator (TSSA;
// Wu et al. 2024, "Token Statistics Transformer: Linear-Time Attention via
// Variational Rate Reduction") over the projections w [Batch*SeqLen,
// Heads*HeadDim] with temperatures tau [Heads] and key mask keyMask
// [Batch*SeqLen] (nil: none). Per sequence, token t, head k and dim c,
// with p = HeadDim:
//
//	pi_tk  = softmax_k(tau_k n_tk / p),  n_tk = sum_c w_tkc^2
//	P_tk   = sum_{s in V(t)} keep_s pi_sk
//	M_tkc  = sum_{s in V(t)} keep_s pi_sk w_skc^2
//	out_tkc = -pi_tk w_tkc / (1 + M_tkc / (P_tk + TokenStatsEps))
//
// V(t) is s <= t when causal (prefix sums over time) and every s when not
// (one total per sequence); keep_s is 0 for padding, which so adds nothing
// to any statistic (its own output is still computed, from the
// statistics of the tokens it sees). No pairwise score is formed.
//
// The backward recomputes the forward from w and tau and carries the
// adjoints of P and M back through reverse prefix sums (causal) or totals
// (bidirectional); the gradient flows to w and tau, none to the mask. One
// worker per sequence, in float64 whatever the dtype. Time O(T Heads
// HeadDim) per sequence, memory O(T Heads HeadDim).
func TokenStatistics(w, tau, keyMask *G.Node, s TokenStatsShape) (*G.Node, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	masked := keyMask != nil
	name := fmt.Sprintf("TokenStatistics(%+v,masked=%t)", s, masked)
	children := G.Nodes{w, tau}
	typ := fnType(2, 1, 2)
	diff := []bool{true, true}
	if masked {
		children = append(children, keyMask)
		typ = fnType(2, 1, 1, 2)
		diff = append(diff, false)
	}
	rows, dw, H := s.rows(), s.width(), s.Heads
	return apply(&op{
		name:  name,
		arity: len(children),
		typ:   typ,
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if err := s.checkShapes(name, in, masked); err != nil {
				return nil, err
			}
			return tensor.Shape{rows, dw}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			if _, err := checkDtype(name, in...); err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), rows, dw)
			tostRun(s, in, out, nil)
			return out, nil
		},
		diffWRT: diff,
		symDiff: func(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
			args := append(append(G.Nodes{}, in...), grad)
			gtyp := fnType(2, 1, 2, 1)
			if masked {
				gtyp = fnType(2, 1, 1, 2, 1)
			}
			packed, err := apply(&op{
				name:  "Grad" + name,
				arity: len(args),
				typ:   gtyp,
				shape: func([]tensor.Shape) (tensor.Shape, error) { return tensor.Shape{rows*dw + H}, nil },
				do: func(vals []G.Value) (G.Value, error) {
					if _, err := checkDtype(name, vals...); err != nil {
						return nil, err
					}
					g := newTensor(vals[0].Dtype(), rows*dw+H)
					tostRun(s, vals[:len(vals)-1], g, vals[len(vals)-1])
					return g, nil
				},
			}, args...)
			if err != nil {
				return nil, err
			}
			gw, err := View(packed, 0, rows, dw)
			if err != nil {
				return nil, err
			}
			gtau, err := vectorView(packed, rows*dw, H)
			if err != nil {
				return nil, err
			}
			grads := G.Nodes{gw, gtau}
			if masked {
				grads = append(grads, nil)
			}
			return grads, nil
		},
	}, children...)
}

// TokenMembership is the membership pi [Batch*SeqLen, Heads] that
// TokenStatistics computes from the same w and tau (row b*SeqLen + t holds
// pi_tk over the heads k; each row sums to 1), for attention maps: no
// gradient.
func TokenMembership(w, tau *G.Node, s TokenStatsShape) (*G.Node, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	name := fmt.Sprintf("TokenMembership(%+v)", s)
	rows, H := s.rows(), s.Heads
	return apply(&op{
		name:  name,
		arity: 2,
		typ:   fnType(2, 1, 2),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if err := s.checkShapes(name, in, false); err != nil {
				return nil, err
			}
			return tensor.Shape{rows, H}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			if _, err := checkDtype(name, in...); err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), rows, H)
			switch o := out.Data().(type) {
			case []float32:
				tostMembershipT(s, data[float32](in[0]), data[float32](in[1]), o)
			case []float64:
				tostMembershipT(s, data[float64](in[0]), data[float64](in[1]), o)
			}
			return out, nil
		},
	}, w, tau)
}

func (s TokenStatsShape) checkShapes(name string, in []tensor.Shape, masked bool) error {
	rows, dw := s.rows(), s.width()
	if !in[0].Eq(tensor.Shape{rows, dw}) || !in[1].Eq(tensor.Shape{s.Heads}) {
		return shapeErr(name, "want w [%d %d] and tau [%d]; got %v, %v", rows, dw, s.Heads, in[0], in[1])
	}
	if masked && !in[2].Eq(tensor.Shape{rows}) {
		return shapeErr(name, "want key mask [%d], got %v", rows, in[2])
	}
	return nil
}

// vectorView returns the n-vector stored in the flat vector packed from
// offset on, sharing its memory: a gradient of a vector input packed with
// others (see View). It is not differentiable.
func vectorView(packed *G.Node, offset, n int) (*G.Node, error) {
	name := fmt.Sprintf("VectorView(%d,%d)", offset, n)
	return apply(&op{
		name:  name,
		arity: 1,
		typ:   fnType(1, 1),
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if len(in[0]) != 1 || in[0][0] < offset+n {
				return nil, shapeErr(name, "packed vector %v too short", in[0])
			}
			return tensor.Shape{n}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			var backing any
			switch d := in[0].Data().(type) {
			case []float32:
				backing = d[offset : offset+n]
			case []float64:
				backing = d[offset : offset+n]
			default:
				return nil, fmt.Errorf("%s: unsupported dtype %v", name, in[0].Dtype())
			}
			return tensor.New(tensor.WithShape(n), tensor.WithBacking(backing)), nil
		},
	}, packed)
}

// tostRun computes the forward into out (grad nil) or the gradients dw|dtau
// into out (grad the output's gradient), one sequence per worker.
func tostRun(s TokenStatsShape, in []G.Value, out G.Value, grad G.Value) {
	if _, ok := in[0].Data().([]float32); ok {
		tostRunT[float32](s, in, out, grad)
		return
	}
	tostRunT[float64](s, in, out, grad)
}

func tostRunT[E Float](s TokenStatsShape, in []G.Value, out G.Value, grad G.Value) {
	w, tau := data[E](in[0]), data[E](in[1])
	var mask []E
	if len(in) > 2 {
		mask = data[E](in[2])
	}
	res := data[E](out)
	var g []E
	if grad != nil {
		g = data[E](grad)
	}
	T, dw, H := s.SeqLen, s.width(), s.Heads
	dtau := make([]float64, s.Batch*H) // per sequence, summed in order below
	parallelFor(s.Batch, T*dw*24, func(lo, hi int) {
		k := newTostWork(s, tau)
		for b := lo; b < hi; b++ {
			tostLoad(k, s, w, mask, b)
			k.forward(s)
			rows := res[b*T*dw : (b+1)*T*dw]
			if g == nil {
				for i, x := range k.out {
					rows[i] = E(x)
				}
				continue
			}
			for i, x := range g[b*T*dw : (b+1)*T*dw] {
				k.do[i] = float64(x)
			}
			k.backward(s, dtau[b*H:(b+1)*H])
			for i, x := range k.dw {
				rows[i] = E(x)
			}
		}
	})
	if g != nil {
		gt := res[s.rows()*dw:]
		for h := 0; h < H; h++ {
			var sum float64
			for b := 0; b < s.Batch; b++ {
				sum += dtau[b*H+h]
			}
			gt[h] = E(sum)
		}
	}
}

// tostMembershipT writes pi [rows, Heads] of w into out.
func tostMembershipT[E Float](s TokenStatsShape, w, tau, out []E) {
	k := newTostWork(s, tau)
	T, H := s.SeqLen, s.Heads
	for b := 0; b < s.Batch; b++ {
		tostLoad(k, s, w, nil, b)
		k.membership(s)
		for i, x := range k.pi {
			out[b*T*H+i] = E(x)
		}
	}
}

// tostWork holds one sequence in float64: w [T, H*p] as stored, keep [T],
// the membership pi [T, H], each token's P + eps [T, H], moments m = M /
// (P + eps) and gains 1 / (1 + m) [T, H*p], the output, and in the
// backward the output's gradient and dw.
type tostWork struct {
	tau                []float64 // [H]
	w, keep, pi, n     []float64
	den, m, gain, out  []float64
	do, dw, dpi, dM    []float64
	dP, accP, accM     []float64
	accdP, accdM, tmpH []float64
}

func newTostWork[E Float](s TokenStatsShape, tau []E) *tostWork {
	T, dw, H := s.SeqLen, s.width(), s.Heads
	k := &tostWork{
		tau: make([]float64, H),
		w:   make([]float64, T*dw), keep: make([]float64, T), pi: make([]float64, T*H), n: make([]float64, T*H),
		den: make([]float64, T*H), m: make([]float64, T*dw), gain: make([]float64, T*dw), out: make([]float64, T*dw),
		do: make([]float64, T*dw), dw: make([]float64, T*dw), dpi: make([]float64, T*H), dM: make([]float64, T*dw),
		dP: make([]float64, T*H), accP: make([]float64, H), accM: make([]float64, dw),
		accdP: make([]float64, H), accdM: make([]float64, dw), tmpH: make([]float64, H),
	}
	for h, x := range tau {
		k.tau[h] = float64(x)
	}
	return k
}

// tostLoad copies sequence b of w and its mask into k.
func tostLoad[E Float](k *tostWork, s TokenStatsShape, w, mask []E, b int) {
	T, dw := s.SeqLen, s.width()
	for i, x := range w[b*T*dw : (b+1)*T*dw] {
		k.w[i] = float64(x)
	}
	for t := range T {
		k.keep[t] = 1
		if mask != nil && mask[b*T+t] == 0 {
			k.keep[t] = 0
		}
	}
}

// membership fills n (the squared norms) and pi: per token a softmax over
// the heads of tau_k n_tk / p, its maximum subtracted.
func (k *tostWork) membership(s TokenStatsShape) {
	T, H, p := s.SeqLen, s.Heads, s.HeadDim
	for t := range T {
		a := k.tmpH
		mx := math.Inf(-1)
		for h := range H {
			row := k.w[(t*H+h)*p : (t*H+h+1)*p]
			n := 0.0
			for _, x := range row {
				n += x * x
			}
			k.n[t*H+h] = n
			a[h] = k.tau[h] * n / float64(p)
			mx = math.Max(mx, a[h])
		}
		sum := 0.0
		for h := range H {
			a[h] = math.Exp(a[h] - mx)
			sum += a[h]
		}
		for h := range H {
			k.pi[t*H+h] = a[h] / sum
		}
	}
}

// addStats adds token t's contribution keep_t pi_tk (to P) and keep_t pi_tk
// w_tkc^2 (to M) to the accumulators.
func (k *tostWork) addStats(s TokenStatsShape, t int) {
	if k.keep[t] == 0 {
		return
	}
	H, p := s.Heads, s.HeadDim
	for h := range H {
		q := k.pi[t*H+h]
		k.accP[h] += q
		for c := range p {
			x := k.w[(t*H+h)*p+c]
			k.accM[h*p+c] += q * x * x
		}
	}
}

// setStats sets token t's den = P + eps, moment m = M / den and gain from
// the accumulators.
func (k *tostWork) setStats(s TokenStatsShape, t int) {
	H, p := s.Heads, s.HeadDim
	for h := range H {
		den := k.accP[h] + TokenStatsEps
		k.den[t*H+h] = den
		for c := range p {
			i := (t*H+h)*p + c
			k.m[i] = k.accM[h*p+c] / den
			k.gain[i] = 1 / (1 + k.m[i])
		}
	}
}

// forward fills pi, den, m, gain and out: causal, the accumulators are
// prefix sums over time, each token's statistics set after its own
// contribution; bidirectional, they are the totals, the same for every
// token.
func (k *tostWork) forward(s TokenStatsShape) {
	T, H, p := s.SeqLen, s.Heads, s.HeadDim
	k.membership(s)
	clear(k.accP)
	clear(k.accM)
	if s.Causal {
		for t := range T {
			k.addStats(s, t)
			k.setStats(s, t)
		}
	} else {
		for t := range T {
			k.addStats(s, t)
		}
		for t := range T {
			k.setStats(s, t)
		}
	}
	for t := range T {
		for h := range H {
			pi := k.pi[t*H+h]
			for c := range p {
				i := (t*H+h)*p + c
				k.out[i] = -pi * k.w[i] * k.gain[i]
			}
		}
	}
}

// backward fills dw from do and adds each head's dtau to dtau; forward has
// run. With G = do, per token (g the gain, m the moment, den = P + eps):
//
//	dpi_tk  = -sum_c G w g                 (through out's factor pi)
//	dw_tkc  = -G pi g                      (through out's factor w)
//	dm_tkc  = G pi w g^2,  dM = dm / den,  dP_tk = -sum_c dm m / den
//
// A source s receives, from every token t that sees it, RM_skc = sum_t
// dM_tkc and RP_sk = sum_t dP_tk (causal: reverse prefix sums over t >= s;
// bidirectional: totals), so that dpi_sk += keep_s (sum_c RM w^2 + RP) and
// dw_skc += 2 keep_s pi_sk w_skc RM_skc. Last the softmax: da_tk = pi_tk
// (dpi_tk - sum_j pi_tj dpi_tj), dtau_k += da_tk n_tk / p and dw_tkc +=
// 2 w_tkc tau_k da_tk / p.
func (k *tostWork) backward(s TokenStatsShape, dtau []float64) {
	T, H, p := s.SeqLen, s.Heads, s.HeadDim
	for t := range T {
		for h := range H {
			j := t*H + h
			pi, den := k.pi[j], k.den[j]
			dpi, dP := 0.0, 0.0
			for c := range p {
				i := j*p + c
				G, x, g := k.do[i], k.w[i], k.gain[i]
				dpi -= G * x * g
				k.dw[i] = -G * pi * g
				dm := G * pi * x * g * g
				k.dM[i] = dm / den
				dP -= dm * k.m[i] / den
			}
			k.dpi[j], k.dP[j] = dpi, dP
		}
	}
	clear(k.accdP)
	clear(k.accdM)
	if !s.Causal {
		for t := range T {
			k.addAdjoints(s, t)
		}
	}
	for t := T - 1; t >= 0; t-- {
		if s.Causal {
			k.addAdjoints(s, t)
		}
		if k.keep[t] == 0 {
			continue
		}
		for h := range H {
			j := t*H + h
			pi, dq := k.pi[j], k.accdP[h]
			for c := range p {
				i, x, r := j*p+c, k.w[j*p+c], k.accdM[h*p+c]
				dq += r * x * x
				k.dw[i] += 2 * pi * x * r
			}
			k.dpi[j] += dq
		}
	}
	for t := range T {
		dot := 0.0
		for h := range H {
			dot += k.pi[t*H+h] * k.dpi[t*H+h]
		}
		for h := range H {
			j := t*H + h
			da := k.pi[j] * (k.dpi[j] - dot)
			dtau[h] += da * k.n[j] / float64(p)
			dn := da * k.tau[h] / float64(p)
			for c := range p {
				i := j*p + c
				k.dw[i] += 2 * k.w[i] * dn
			}
		}
	}
}

// addAdjoints adds token t's dP and dM to the backward accumulators.
func (k *tostWork) addAdjoints(s TokenStatsShape, t int) {
	H, p := s.Heads, s.HeadDim
	for h := range H {
		k.accdP[h] += k.dP[t*H+h]
		for c := range p {
			k.accdM[h*p+c] += k.dM[(t*H+h)*p+c]
		}
	}
}
