package graph

import (
	"fmt"
	"math"
	"math/rand/v2"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// GPUCase is one check of an op's GPU path for trainer gpucheck (package
// gpu): Build makes a graph from fresh float32 inputs and returns the nodes
// to read back and their references, computed in float64 on the CPU from
// the same inputs; an output that is an input node was updated in place
// and is read after the run (IsInPlace). The cases are built in both builds: the default one
// runs them on the CPU (TestGPUCasesOnTheCPU), which checks the cases and
// their references without a GPU.
type GPUCase struct {
	Name, Shape string
	// TF32 cases run in an OnGPUTF32 graph: their products round their
	// inputs to TF32, so they are held to a looser bound and must differ
	// from fp32's (or the option did nothing).
	TF32  bool
	Build func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error)
}

// IsInPlace reports whether a GPU case's output n is an input node, which
// an op updated in place: the runner reads it after the run (on the GPU,
// it keeps it on the device and copies it back) rather than through Read.
func IsInPlace(n *G.Node) bool { return n.Op() == nil }

// GPUCases are the checks of the graph package's GPU ops, forward and
// backward.
func GPUCases() []GPUCase {
	return append([]GPUCase{
		dotCase(1000, 300),
		combineCase(300, 70),
		mohCase(500, 8, 2, 3),
		mohCase(300, 6, 0, 2),
		scaleHeadsCase(200, 4, 24),
		concatHeadsCase(130, 4, 24, 8, false),
		concatHeadsCase(130, 4, 24, 8, true),
		rotaryCase(RotaryShape{Batch: 2, SeqLen: 300, Heads: 3, HeadDim: 32, RotDims: 16, Base: 10000}),
		rotaryCase(RotaryShape{Batch: 1, SeqLen: 5000, Heads: 2, HeadDim: 16, RotDims: 16, Base: 10000, XPosScaleBase: 512, Query: true}),
		rotaryCase(RotaryShape{Batch: 1, SeqLen: 257, Heads: 2, HeadDim: 16, RotDims: 16, Base: 10000, XPosScaleBase: 512}),
		crossEntropyCase(300, 64),
		crossEntropyCase(1, 1000),
		correctCountCase(500, 17),
		adamWCase(false),
		adamWCase(true),
		activationCase(GELU, gelu, geluGrad),
		activationCase(ReLU, relu, reluGrad),
		normCase(true, 257, 96),
		normCase(false, 257, 96),
		normCase(true, 64, 1000),
		matMulCase(false, false, 130, 70, 90),
		matMulCase(true, true, 130, 70, 90),
		tf32(matMulCase(false, true, 130, 70, 300)),
		linearCase(200, 96, 130),
		embeddingCase(300, 50, 72),
	}, attentionGPUCases()...)
}

// tf32 is c with its products on TF32 tensor cores.
func tf32(c GPUCase) GPUCase {
	c.Name += ", TF32"
	c.TF32 = true
	return c
}

// embeddingCase checks y = table[ids] for n ids in [0, v) (repeated, so
// the gradient's scatter adds rows) and the table's gradient.
func embeddingCase(n, v, d int) GPUCase {
	return GPUCase{Name: "Embedding and its gradient", Shape: fmt.Sprintf("%d ids of %dx%d", n, v, d), Build: func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
		idv := make([]float32, n)
		for i := range idv {
			idv[i] = float32(rng.IntN(v))
		}
		tv, rv := gaussF32(rng, v*d, 1), gaussF32(rng, n*d, 1)
		ids := inputF32(g, "ids", append([]float32(nil), idv...), n)
		table := inputF32(g, "table", append([]float32(nil), tv...), v, d)
		r := inputF32(g, "r", append([]float32(nil), rv...), n, d)
		y, err := Embedding(ids, table)
		if err != nil {
			return nil, nil, err
		}
		grads, err := weightedSumGrads(y, r, table)
		if err != nil {
			return nil, nil, err
		}
		wantY, wantDT := make([]float64, n*d), make([]float64, v*d)
		for i, f := range idv {
			id := int(f)
			for j := 0; j < d; j++ {
				wantY[i*d+j] = float64(tv[id*d+j])
				wantDT[id*d+j] += float64(rv[i*d+j])
			}
		}
		return []*G.Node{y, grads[0]}, [][]float64{wantY, wantDT}, nil
	}}
}

// dense64 is a row-major float64 matrix for the references.
type dense64 struct {
	r, c int
	v    []float64
}

func (a dense64) t() dense64 {
	out := dense64{a.c, a.r, make([]float64, len(a.v))}
	for i := 0; i < a.r; i++ {
		for j := 0; j < a.c; j++ {
			out.v[j*a.r+i] = a.v[i*a.c+j]
		}
	}
	return out
}

func (a dense64) mul(b dense64) dense64 {
	out := dense64{a.r, b.c, make([]float64, a.r*b.c)}
	for i := 0; i < a.r; i++ {
		for p := 0; p < a.c; p++ {
			x := a.v[i*a.c+p]
			for j := 0; j < b.c; j++ {
				out.v[i*b.c+j] += x * b.v[p*b.c+j]
			}
		}
	}
	return out
}

// matMulCase checks C = op(A) op(B) [m, n] (inner k) and, through loss =
// sum(C * R), dA and dB: the backward's products are MatMul's other
// transpose variants, so two cases cover all four.
func matMulCase(tA, tB bool, m, n, k int) GPUCase {
	ar, ac, br, bc := storedShapes(tA, tB, m, n, k)
	return GPUCase{Name: fmt.Sprintf("MatMul(tA=%t,tB=%t) and its gradients", tA, tB), Shape: fmt.Sprintf("%dx%d . %dx%d", ar, ac, br, bc), Build: func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
		av, bv, rv := gaussF32(rng, ar*ac, 1), gaussF32(rng, br*bc, 1), gaussF32(rng, m*n, 1)
		a := inputF32(g, "a", append([]float32(nil), av...), ar, ac)
		b := inputF32(g, "b", append([]float32(nil), bv...), br, bc)
		r := inputF32(g, "r", append([]float32(nil), rv...), m, n)
		c, err := MatMul(a, b, tA, tB)
		if err != nil {
			return nil, nil, err
		}
		grads, err := weightedSumGrads(c, r, a, b)
		if err != nil {
			return nil, nil, err
		}
		A, B, R := dense64{ar, ac, f64(av)}, dense64{br, bc, f64(bv)}, dense64{m, n, f64(rv)}
		opA, opB := A, B
		if tA {
			opA = A.t()
		}
		if tB {
			opB = B.t()
		}
		dA, dB := R.mul(opB.t()), opA.t().mul(R) // gradients of op(A) and op(B)
		if tA {
			dA = dA.t()
		}
		if tB {
			dB = dB.t()
		}
		return []*G.Node{c, grads[0], grads[1]}, [][]float64{opA.mul(opB).v, dA.v, dB.v}, nil
	}}
}

// linearCase checks y = x W + b and the gradients of x, W and b.
func linearCase(n, i, o int) GPUCase {
	return GPUCase{Name: "Linear and its gradients", Shape: fmt.Sprintf("%dx%d . %dx%d + %d", n, i, i, o, o), Build: func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
		xv, wv, bv, rv := gaussF32(rng, n*i, 1), gaussF32(rng, i*o, 1), gaussF32(rng, o, 1), gaussF32(rng, n*o, 1)
		x := inputF32(g, "x", append([]float32(nil), xv...), n, i)
		w := inputF32(g, "w", append([]float32(nil), wv...), i, o)
		b := inputF32(g, "b", append([]float32(nil), bv...), o)
		r := inputF32(g, "r", append([]float32(nil), rv...), n, o)
		y, err := Linear(x, w, b)
		if err != nil {
			return nil, nil, err
		}
		grads, err := weightedSumGrads(y, r, x, w, b)
		if err != nil {
			return nil, nil, err
		}
		X, W, R := dense64{n, i, f64(xv)}, dense64{i, o, f64(wv)}, dense64{n, o, f64(rv)}
		Y := X.mul(W)
		for row := 0; row < n; row++ {
			for j := 0; j < o; j++ {
				Y.v[row*o+j] += float64(bv[j])
			}
		}
		db := make([]float64, o)
		colSum(R.v, db, n, o)
		return []*G.Node{y, grads[0], grads[1], grads[2]}, [][]float64{Y.v, R.mul(W.t()).v, X.t().mul(R).v, db}, nil
	}}
}

// normCase checks LayerNorm (centered) or RMSNorm of x [n, d] and, through
// loss = sum(y * r), the gradients of x, gamma and beta against the CPU
// kernels in float64 (layerNormForward, normGradX, normGradGamma, colSum).
func normCase(centered bool, n, d int) GPUCase {
	name := "RMSNorm"
	if centered {
		name = "LayerNorm"
	}
	const eps = 1e-5
	return GPUCase{Name: name + " and its gradients", Shape: fmt.Sprintf("%dx%d", n, d), Build: func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
		xv, rv := gaussF32(rng, n*d, 3), gaussF32(rng, n*d, 1)
		for i := range xv { // rows with their own offsets: the mean matters
			xv[i] += float32(i / d % 7)
		}
		gv, bv := gaussF32(rng, d, 1), gaussF32(rng, d, 1)
		x := inputF32(g, "x", append([]float32(nil), xv...), n, d)
		r := inputF32(g, "r", append([]float32(nil), rv...), n, d)
		gamma := inputF32(g, "gamma", append([]float32(nil), gv...), d)
		wrt := G.Nodes{x, gamma}
		var y *G.Node
		var err error
		if centered {
			beta := inputF32(g, "beta", append([]float32(nil), bv...), d)
			wrt = append(wrt, beta)
			y, err = LayerNorm(x, gamma, beta, eps)
		} else {
			y, err = RMSNorm(x, gamma, eps)
		}
		if err != nil {
			return nil, nil, err
		}
		grads, err := weightedSumGrads(y, r, wrt...)
		if err != nil {
			return nil, nil, err
		}
		x64, r64, g64, b64 := f64(xv), f64(rv), f64(gv), f64(bv)
		wantY := make([]float64, n*d)
		if centered {
			layerNormForward(x64, g64, b64, wantY, n, d, eps)
		} else {
			rmsNormForward(x64, g64, wantY, n, d, eps)
		}
		wantDX, wantDG, wantDB := make([]float64, n*d), make([]float64, d), make([]float64, d)
		normGradX(x64, g64, r64, wantDX, n, d, centered, eps)
		normGradGamma(x64, r64, wantDG, n, d, centered, eps)
		colSum(r64, wantDB, n, d)
		outs, refs := []*G.Node{y, grads[0], grads[1]}, [][]float64{wantY, wantDX, wantDG}
		if centered {
			outs, refs = append(outs, grads[2]), append(refs, wantDB)
		}
		return outs, refs, nil
	}}
}

// weightedSumGrads builds loss = sum(y * r) and its gradients with respect
// to wrt: the backward of y's op gets the random output gradient r.
func weightedSumGrads(y, r *G.Node, wrt ...*G.Node) (G.Nodes, error) {
	yr, err := G.HadamardProd(y, r)
	if err != nil {
		return nil, err
	}
	loss, err := G.Sum(yr)
	if err != nil {
		return nil, err
	}
	return G.Grad(loss, wrt...)
}

func f64(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

// GPUFloats is a case's float32 output read back (a tensor, or a scalar
// such as a loss, as one element).
func GPUFloats(v G.Value) ([]float32, error) {
	switch d := v.Data().(type) {
	case []float32:
		return d, nil
	case float32:
		return []float32{d}, nil
	}
	return nil, fmt.Errorf("%T is not float32", v.Data())
}

// GPURelErr is ||got - want|| / ||want||, the measure of the GPU checks
// (+Inf for lengths that differ). An infinite element (an attention
// core's logsumexp -Inf for a query that sees no key) must be matched by
// the same infinity, and then counts in neither norm; any other value
// against an infinity, or an infinity against a finite value, is +Inf.
func GPURelErr(got []float32, want []float64) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var num, den float64
	for i, w := range want {
		if g := float64(got[i]); math.IsInf(w, 0) || math.IsInf(g, 0) {
			if g != w {
				return math.Inf(1)
			}
			continue
		}
		d := float64(got[i]) - w
		num += d * d
		den += w * w
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

// gaussF32 is n draws of N(0, sd^2) in float32.
func gaussF32(rng *rand.Rand, n int, sd float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(sd * rng.NormFloat64())
	}
	return x
}

func inputF32(g *G.ExprGraph, name string, x []float32, shape ...int) *G.Node {
	return G.NewTensor(g, tensor.Float32, len(shape), G.WithShape(shape...), G.WithName(name),
		G.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(x))))
}

// activationCase checks y = a(x) and, through loss = sum(y * r) with r
// random, dx = r a'(x).
func activationCase(a Activation, f, df func(float64) float64) GPUCase {
	const rows, cols = 300, 257
	return GPUCase{Name: "Activate(" + string(a) + ") and its gradient", Shape: "300x257", Build: func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
		xv, rv := gaussF32(rng, rows*cols, 2), gaussF32(rng, rows*cols, 1)
		x := inputF32(g, "x", append([]float32(nil), xv...), rows, cols)
		r := inputF32(g, "r", append([]float32(nil), rv...), rows, cols)
		y, err := Activate(x, a)
		if err != nil {
			return nil, nil, err
		}
		grads, err := weightedSumGrads(y, r, x)
		if err != nil {
			return nil, nil, err
		}
		wantY, wantDX := make([]float64, len(xv)), make([]float64, len(xv))
		for i, v := range xv {
			wantY[i] = f(float64(v))
			wantDX[i] = float64(rv[i]) * df(float64(v))
		}
		return []*G.Node{y, grads[0]}, [][]float64{wantY, wantDX}, nil
	}}
}
