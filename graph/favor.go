package graph

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Kernels of Performer's random features.
const (
	// KernelSoftmax is FAVOR+'s positive random features (Choromanski et
	// al. 2021, Lemma 1): phi(x) = exp(w x' - |x'|^2/2) / sqrt(m), an
	// unbiased estimate of the softmax kernel exp(q . k / sqrt(d)).
	KernelSoftmax = "softmax"
	// KernelReLU is Performer's generalized attention with f = relu:
	// phi(x) = relu(w x') / sqrt(m), which can be 0 for every feature (its
	// attention divides with LinearEps, NormEps).
	KernelReLU = "relu"
)

// Stabilizers of the softmax kernel: a constant c subtracted in the
// exponent, exp(w x' - |x'|^2/2 - c), so that the largest feature is 1 and
// none overflows. A c shared by every feature of a query cancels in that
// query's ratio sum_j a_ij v_j / sum_j a_ij, and a c shared by every key
// of a (sequence, head) cancels in every ratio of that sequence and head:
// with NormExact (no eps) the attention output does not depend on c at
// all, so RandomFeatures treats c as a constant and the gradient it
// passes on through the attention is exact.
const (
	// StabilizeNone subtracts nothing: the features as defined (tests,
	// and the relu kernel, whose features no constant cancels from).
	StabilizeNone = ""
	// StabilizeRow subtracts, per row and head, the largest exponent of
	// the row's m features: for queries.
	StabilizeRow = "row"
	// StabilizeSequence subtracts, per (sequence, head), the largest
	// exponent over the sequence's unpadded positions and all m
	// features: for keys.
	StabilizeSequence = "sequence"
)

// FeatureShape describes RandomFeatures' input: Batch sequences of SeqLen
// positions, Heads heads of HeadDim dims packed in columns, mapped to
// Features random features per head by the kernel Kernel with the
// stabilizer Stabilizer (softmax only).
type FeatureShape struct {
	Batch, SeqLen, Heads, HeadDim, Features int
	Kernel                                  string
	Stabilizer                              string
}

func (s FeatureShape) validate() error {
	switch {
	case s.Batch < 1 || s.SeqLen < 1 || s.Heads < 1 || s.HeadDim < 1 || s.Features < 1:
		return fmt.Errorf("random features: sizes must be positive: %+v", s)
	case s.Kernel != KernelSoftmax && s.Kernel != KernelReLU:
		return fmt.Errorf("random features: unknown kernel %q (want %s or %s)", s.Kernel, KernelSoftmax, KernelReLU)
	case s.Stabilizer != StabilizeNone && s.Stabilizer != StabilizeRow && s.Stabilizer != StabilizeSequence:
		return fmt.Errorf("random features: unknown stabilizer %q (want %q, %s or %s)", s.Stabilizer, StabilizeNone, StabilizeRow, StabilizeSequence)
	case s.Kernel == KernelReLU && s.Stabilizer != StabilizeNone:
		return fmt.Errorf("random features: the relu kernel takes no stabilizer (no constant cancels from relu features), got %q", s.Stabilizer)
	}
	return nil
}

// scale is the data normalizer 1/d^(1/4): x' = x / d^(1/4), so that
// w x' . w y' estimates q . k / sqrt(d).
func (s FeatureShape) scale() float64 { return math.Pow(float64(s.HeadDim), -0.25) }

// RandomFeatures is Performer's feature map (Choromanski et al. 2021,
// "Rethinking Attention with Performers") applied to x [Batch*SeqLen,
// Heads*HeadDim] (queries or keys, heads packed in columns) with the
// random projection w [Features, HeadDim] shared by the heads: per row and
// head, with x' = x / d^(1/4) and m = Features,
//
//	softmax: phi(x) = exp(w x' - |x'|^2/2 - c) / sqrt(m)
//	relu:    phi(x) = relu(w x') / sqrt(m)
//
// into [Batch*SeqLen, Heads*Features], head h in columns h*m .. (h+1)*m.
// c is the stabilizer (see StabilizeRow, StabilizeSequence): the op
// treats it as a constant, which is exact for the attention that
// consumes the features when that attention divides by sum_j a_ij exactly
// (LinearAttention with NormExact; see the stabilizer constants), and the
// gradient of the features with c fixed otherwise. keyMask [Batch*SeqLen]
// (nil: none) marks padding with 0: those rows get zero features and no
// gradient, and StabilizeSequence takes its maximum over the other rows
// only (a padded key's value can then neither overflow its own features
// nor make every real key's underflow).
//
// The backward is by hand: dphi/dx = phi (w - x') / d^(1/4) for softmax
// (c fixed) and relu'(w x') w / (d^(1/4) sqrt(m)) for relu; w is a draw,
// not a parameter, and gets no gradient. Time O(rows Heads Features
// HeadDim); memory O(rows Heads Features).
func RandomFeatures(x, w, keyMask *G.Node, s FeatureShape) (*G.Node, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	masked := keyMask != nil
	name := fmt.Sprintf("RandomFeatures(%+v,masked=%t)", s, masked)
	children := G.Nodes{x, w}
	typ := fnType(2, 2, 2)
	diff := []bool{true, false}
	if masked {
		children = append(children, keyMask)
		typ = fnType(2, 2, 1, 2)
		diff = append(diff, false)
	}
	rows, dx, dphi := s.Batch*s.SeqLen, s.Heads*s.HeadDim, s.Heads*s.Features
	shape := func(in []tensor.Shape) (tensor.Shape, error) {
		if !in[0].Eq(tensor.Shape{rows, dx}) || !in[1].Eq(tensor.Shape{s.Features, s.HeadDim}) {
			return nil, shapeErr(name, "want x [%d %d] and w [%d %d], got %v and %v", rows, dx, s.Features, s.HeadDim, in[0], in[1])
		}
		if masked && !in[2].Eq(tensor.Shape{rows}) {
			return nil, shapeErr(name, "want key mask [%d], got %v", rows, in[2])
		}
		return tensor.Shape{rows, dphi}, nil
	}
	return apply(&op{
		name:  name,
		arity: len(children),
		typ:   typ,
		shape: shape,
		do: func(in []G.Value) (G.Value, error) {
			if _, err := checkDtype(name, in...); err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), rows, dphi)
			if _, ok := in[0].Data().([]float32); ok {
				featuresForward[float32](s, in, out)
			} else {
				featuresForward[float64](s, in, out)
			}
			return out, nil
		},
		diffWRT: diff,
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			// The backward reads x, w and the features themselves: padded
			// rows have phi = 0 and so no gradient, and relu'(w x') is
			// phi > 0.
			gx, err := apply(&op{
				name:  "Grad" + name,
				arity: 4,
				typ:   fnType(2, 2, 2, 2, 2),
				shape: func([]tensor.Shape) (tensor.Shape, error) { return tensor.Shape{rows, dx}, nil },
				do: func(vals []G.Value) (G.Value, error) {
					if _, err := checkDtype("Grad"+name, vals...); err != nil {
						return nil, err
					}
					g := newTensor(vals[0].Dtype(), rows, dx)
					if _, ok := vals[0].Data().([]float32); ok {
						featuresBackward[float32](s, vals, g)
					} else {
						featuresBackward[float64](s, vals, g)
					}
					return g, nil
				},
			}, in[0], in[1], out, grad)
			if err != nil {
				return nil, err
			}
			grads := G.Nodes{gx, nil}
			if masked {
				grads = append(grads, nil)
			}
			return grads, nil
		},
	}, children...)
}

// featuresForward computes the features of every (sequence, head): the
// scaled rows x' [T, d], their projections P = x' w^T [T, m] (one matrix
// product), then the kernel row by row.
func featuresForward[E Float](s FeatureShape, in []G.Value, out G.Value) {
	x, w, res := data[E](in[0]), data[E](in[1]), data[E](out)
	var mask []E
	if len(in) > 2 {
		mask = data[E](in[2])
	}
	T, d, m := s.SeqLen, s.HeadDim, s.Features
	ld, ldo := s.Heads*d, s.Heads*m
	sc := E(s.scale())
	norm := 1 / math.Sqrt(float64(m))
	parallelFor(s.Batch*s.Heads, T*m*(d+4), func(lo, hi int) {
		xs := make([]E, T*d)
		p := make([]E, T*m)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/s.Heads, bh%s.Heads
			for t := 0; t < T; t++ {
				row := x[(b*T+t)*ld+h*d : (b*T+t)*ld+(h+1)*d]
				for c, v := range row {
					xs[t*d+c] = v * sc
				}
			}
			gemm(false, true, T, m, d, 1, xs, d, w, d, 0, p, m)
			keep := func(t int) bool { return mask == nil || mask[b*T+t] != 0 }
			if s.Kernel == KernelSoftmax {
				// exponents w x' - |x'|^2/2, then the stabilizer
				for t := 0; t < T; t++ {
					half := dot(xs[t*d:(t+1)*d], xs[t*d:(t+1)*d]) / 2
					for f := range p[t*m : (t+1)*m] {
						p[t*m+f] -= half
					}
				}
				seqMax := math.Inf(-1)
				if s.Stabilizer == StabilizeSequence {
					for t := 0; t < T; t++ {
						if keep(t) {
							for _, z := range p[t*m : (t+1)*m] {
								seqMax = math.Max(seqMax, float64(z))
							}
						}
					}
				}
				for t := 0; t < T; t++ {
					dst := res[(b*T+t)*ldo+h*m : (b*T+t)*ldo+(h+1)*m]
					if !keep(t) {
						clear(dst)
						continue
					}
					c := 0.0
					switch s.Stabilizer {
					case StabilizeRow:
						c = math.Inf(-1)
						for _, z := range p[t*m : (t+1)*m] {
							c = math.Max(c, float64(z))
						}
					case StabilizeSequence:
						c = seqMax
					}
					for f, z := range p[t*m : (t+1)*m] {
						dst[f] = E(math.Exp(float64(z)-c) * norm)
					}
				}
				continue
			}
			for t := 0; t < T; t++ {
				dst := res[(b*T+t)*ldo+h*m : (b*T+t)*ldo+(h+1)*m]
				if !keep(t) {
					clear(dst)
					continue
				}
				for f, z := range p[t*m : (t+1)*m] {
					dst[f] = E(math.Max(float64(z), 0) * norm)
				}
			}
		}
	})
}

// featuresBackward computes dL/dx from x, w, phi and g = dL/dphi (vals in
// that order), per (sequence, head): with A = g * phi (softmax) or
// g * [phi > 0] / sqrt(m) (relu), elementwise [T, m],
//
//	softmax: dx = (A w - rowsum(A) x') / d^(1/4)
//	relu:    dx = A w / d^(1/4)
//
// one matrix product A w [T, d] each.
func featuresBackward[E Float](s FeatureShape, vals []G.Value, out G.Value) {
	x, w, phi, g, res := data[E](vals[0]), data[E](vals[1]), data[E](vals[2]), data[E](vals[3]), data[E](out)
	T, d, m := s.SeqLen, s.HeadDim, s.Features
	ld, ldo := s.Heads*d, s.Heads*m
	sc := E(s.scale())
	norm := E(1 / math.Sqrt(float64(m)))
	parallelFor(s.Batch*s.Heads, T*m*(d+4), func(lo, hi int) {
		a := make([]E, T*m)
		rs := make([]E, T)
		gx := make([]E, T*d)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/s.Heads, bh%s.Heads
			for t := 0; t < T; t++ {
				off := (b*T+t)*ldo + h*m
				rs[t] = 0
				for f := 0; f < m; f++ {
					if s.Kernel == KernelSoftmax {
						a[t*m+f] = g[off+f] * phi[off+f]
						rs[t] += a[t*m+f]
					} else if phi[off+f] > 0 {
						a[t*m+f] = g[off+f] * norm
					} else {
						a[t*m+f] = 0
					}
				}
			}
			gemm(false, false, T, d, m, sc, a, m, w, d, 0, gx, d)
			for t := 0; t < T; t++ {
				src := x[(b*T+t)*ld+h*d : (b*T+t)*ld+(h+1)*d]
				dst := res[(b*T+t)*ld+h*d : (b*T+t)*ld+(h+1)*d]
				for c := range dst {
					dst[c] = gx[t*d+c]
					if s.Kernel == KernelSoftmax {
						dst[c] -= rs[t] * src[c] * sc * sc // rowsum(A) x' / d^(1/4)
					}
				}
			}
		}
	})
}

// DrawFeatures draws Performer's random projection w [m, d], row-major:
// i.i.d. N(0, 1) rows, or, with orthogonal, the paper's orthogonal random
// features (ORF, Choromanski et al. 2021 section 2.4): blocks of d rows,
// each the rows of an orthonormalized d x d Gaussian matrix (Gram-Schmidt),
// the last block truncated to the rows m leaves, and every row rescaled to
// the norm of an independent d-dimensional Gaussian vector (so that each
// row has the marginal distribution of an i.i.d. Gaussian row, and the
// estimate stays unbiased, with lower variance).
func DrawFeatures(rng *rand.Rand, m, d int, orthogonal bool) []float64 {
	w := make([]float64, m*d)
	for i := range w {
		w[i] = rng.NormFloat64()
	}
	if !orthogonal {
		return w
	}
	block := make([]float64, d*d)
	for r0 := 0; r0 < m; r0 += d {
		for i := range block {
			block[i] = rng.NormFloat64()
		}
		gramSchmidt(block, d)
		n := min(d, m-r0)
		for i := 0; i < n; i++ {
			var chi float64
			for range d {
				g := rng.NormFloat64()
				chi += g * g
			}
			chi = math.Sqrt(chi)
			for c := 0; c < d; c++ {
				w[(r0+i)*d+c] = block[i*d+c] * chi
			}
		}
	}
	return w
}

// gramSchmidt orthonormalizes the rows of the d x d matrix a in place
// (modified Gram-Schmidt, each row reorthogonalized once more: a Gaussian
// matrix is full rank with probability 1, and the second pass keeps the
// rows orthogonal to rounding).
func gramSchmidt(a []float64, d int) {
	for i := 0; i < d; i++ {
		ri := a[i*d : (i+1)*d]
		for range 2 {
			for j := 0; j < i; j++ {
				rj := a[j*d : (j+1)*d]
				p := dot(ri, rj)
				for c := range ri {
					ri[c] -= p * rj[c]
				}
			}
		}
		n := math.Sqrt(dot(ri, ri))
		for c := range ri {
			ri[c] /= n
		}
	}
}

// FeatureRNG is the generator of one draw of a layer's random features: a
// PCG seeded from the store's seed and an FNV-1a hash of the layer's name
// and the redraw index r, so that a draw depends on nothing else (not on
// the order layers are built in, nor on how many steps a process ran).
func FeatureRNG(seed uint64, name string, r int) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(name))
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(r))
	h.Write(b[:])
	return rand.New(rand.NewPCG(seed, h.Sum64()))
}
