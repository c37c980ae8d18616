package graph

import (
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// ulp32 is the spacing of float32 values at |y| (y normal).
func ulp32(y float64) float64 {
	_, e := math.Frexp(y)
	return math.Ldexp(1, e-24)
}

// exp32Impls are the float32 exponentials under test: the scalar exp32 and
// the row function the softmaxes call (AVX-512 for whole 16-element blocks
// where the CPU has it, exp32 for the rest).
var exp32Impls = []struct {
	name string
	exp  func(x []float32) []float32
}{
	{"exp32", func(x []float32) []float32 {
		y := make([]float32, len(x))
		for i, v := range x {
			y[i] = exp32(v)
		}
		return y
	}},
	{"expShift", func(x []float32) []float32 {
		y := append([]float32(nil), x...)
		expShift(y, 0)
		return y
	}},
}

func TestExp32(t *testing.T) {
	if math.Abs(ln2Hi32+ln2Lo32-math.Ln2) > 1e-16 {
		t.Fatalf("ln2Hi32 + ln2Lo32 = %v, want ln 2", ln2Hi32+ln2Lo32)
	}
	if b := math.Float32bits(ln2Hi32); b&(1<<9-1) != 0 || float64(float32(ln2Hi32)) != ln2Hi32 {
		t.Fatalf("ln2Hi32 has more than 15 significant bits: %#x", b)
	}
	var xs []float32
	for x := -104.0; x <= 89; x += 1.0 / 4096 {
		xs = append(xs, float32(x))
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2_000_000 {
		xs = append(xs, float32(-104+193*rng.Float64()))
	}
	for range 1_000_000 { // softmax arguments: small and non-positive
		xs = append(xs, float32(-20*rng.Float64()))
	}
	// every float32 in [-1, 1] with a step of 2^-20, and near the range ends
	for x := float32(-1); x <= 1; x += 0x1p-20 {
		xs = append(xs, x)
	}
	for _, x := range []float32{0x1p-30, -0x1p-30, 1e-7, -1e-7, exp32Lo, exp32Hi, -87.336, -87.3365, -87.34, 88.5, 88.72, 88.7228, -103.9, -103.97} {
		xs = append(xs, x, math.Nextafter32(x, 0), math.Nextafter32(x, float32(math.Inf(1))))
	}
	inf := float32(math.Inf(1))
	specials := []struct{ x, want float32 }{
		{0, 1}, {float32(math.Copysign(0, -1)), 1}, {inf, inf}, {-inf, 0},
		{88.73, inf}, {1000, inf}, {-104, 0}, {-1000, 0}, {math.MaxFloat32, inf}, {-math.MaxFloat32, 0},
		{float32(math.Log(0x1p-149)), 0x1p-149}, {float32(math.Log(0x1p-140)), 0x1p-140},
	}
	for _, impl := range exp32Impls {
		t.Run(impl.name, func(t *testing.T) {
			var maxRel, maxUlp, worst float64
			var normal, sub int
			for i, got := range impl.exp(xs) {
				x := xs[i]
				want := math.Exp(float64(x))
				if want < 0x1p-126 { // subnormal (or 0) float32 result
					sub++
					w32 := float32(want)
					// one subnormal step of error plus the polynomial's relative error
					if d := math.Abs(float64(got) - float64(w32)); d > 0x1p-149+4e-7*want {
						t.Fatalf("exp(%v) = %v, want %v (subnormal)", x, got, w32)
					}
					continue
				}
				if want > math.MaxFloat32 {
					if !math.IsInf(float64(got), 1) && float64(got) != math.MaxFloat32 {
						t.Fatalf("exp(%v) = %v, want +Inf", x, got)
					}
					continue
				}
				normal++
				rel := math.Abs(float64(got)-want) / want
				if rel > maxRel {
					maxRel, worst = rel, float64(x)
				}
				maxUlp = math.Max(maxUlp, math.Abs(float64(got)-want)/ulp32(want))
			}
			t.Logf("%s: %d normal results, max relative error %.3g (%.2f ulp) at x = %g; %d subnormal or 0", impl.name, normal, maxRel, maxUlp, worst, sub)
			if maxRel > 5e-7 {
				t.Errorf("max relative error %.3g at x = %g, want <= 5e-7", maxRel, worst)
			}
			// Each special at every position of a 37-element row, so that
			// vector lanes and the scalar tail both see it.
			for _, c := range specials {
				for pos := 0; pos < 37; pos++ {
					row := make([]float32, 37)
					row[pos] = c.x
					if got := impl.exp(row)[pos]; got != c.want {
						t.Fatalf("exp(%v) at %d of 37 = %v, want %v", c.x, pos, got, c.want)
					}
				}
			}
			if got := impl.exp([]float32{float32(math.NaN())})[0]; got == got {
				t.Errorf("exp(NaN) = %v, want NaN", got)
			}
			row := make([]float32, 32)
			row[5] = float32(math.NaN())
			if got := impl.exp(row)[5]; got == got {
				t.Errorf("exp(NaN) in a 32-element row = %v, want NaN", got)
			}
		})
	}
}

// TestRowMaxAndSum32: the row maximum (NaN anywhere makes it NaN) and the
// float64 sum of the exponentials, over lengths that exercise the vector
// blocks and the tail.
func TestRowMaxAndSum32(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	inf := float32(math.Inf(1))
	for n := 0; n <= 70; n++ {
		row := make([]float32, n)
		want := float32(-3)
		for i := range row {
			row[i] = float32(rng.NormFloat64() * 5)
			want = max(want, row[i])
		}
		if got := rowMax32(row, -3); got != want {
			t.Fatalf("n=%d: rowMax32 = %v, want %v", n, got, want)
		}
		if n > 0 {
			for _, bad := range []float32{float32(math.NaN())} {
				for pos := range n {
					r := append([]float32(nil), row...)
					r[pos] = bad
					if got := rowMax32(r, -inf); got == got {
						t.Fatalf("n=%d: NaN at %d, rowMax32 = %v, want NaN", n, pos, got)
					}
				}
			}
		}
		var wantSum float64
		for _, x := range row {
			wantSum += math.Exp(float64(x) - float64(want))
		}
		r := append([]float32(nil), row...)
		if got := expShiftSum(r, float64(want)); math.Abs(got-wantSum) > 1e-6*wantSum {
			t.Fatalf("n=%d: expShiftSum = %v, want %v", n, got, wantSum)
		}
		for i := range r {
			r[i] = row[i]
		}
		scaleRow(r, 0.5)
		for i := range r {
			if r[i] != row[i]*0.5 {
				t.Fatalf("n=%d: scaleRow [%d] = %v, want %v", n, i, r[i], row[i]*0.5)
			}
		}
	}
	if got := rowMax32(make([]float32, 20), float32(math.NaN())); got == got {
		t.Errorf("rowMax32 with a NaN start = %v, want NaN", got)
	}
}

func TestErf32(t *testing.T) {
	var maxAbs, maxRel, worst float64
	check := func(x float32) {
		got := float64(erf32(x))
		want := math.Erf(float64(x))
		if d := math.Abs(got - want); d > maxAbs {
			maxAbs, worst = d, float64(x)
		}
		if math.Abs(want) >= 0x1p-126 { // a normal float32 result
			maxRel = math.Max(maxRel, math.Abs(got-want)/math.Abs(want))
		}
	}
	for x := -10.0; x <= 10; x += 1.0 / 65536 {
		check(float32(x))
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 1_000_000 {
		check(float32(rng.NormFloat64() * 3))
	}
	for _, x := range []float32{0x1p-126, 0x1p-149, 1e-30, erfSplit32, erfMax32} {
		for _, s := range []float32{1, -1} {
			check(s * x)
			check(s * math.Nextafter32(x, 0))
			check(s * math.Nextafter32(x, 10))
		}
	}
	t.Logf("erf32: max absolute error %.3g at x = %g; max relative error %.3g", maxAbs, worst, maxRel)
	if maxAbs > 3e-7 {
		t.Errorf("erf32 max absolute error %.3g at x = %g, want <= 3e-7", maxAbs, worst)
	}
	// Relative accuracy near 0, where erf(x) ~ 2x/sqrt(pi), matters too.
	if maxRel > 5e-7 {
		t.Errorf("erf32 max relative error %.3g, want <= 5e-7", maxRel)
	}
	inf := float32(math.Inf(1))
	for _, c := range []struct{ x, want float32 }{
		{0, 0}, {inf, 1}, {-inf, -1}, {4, 1}, {-4, -1}, {100, 1}, {-100, -1},
	} {
		if got := erf32(c.x); got != c.want {
			t.Errorf("erf32(%v) = %v, want %v", c.x, got, c.want)
		}
	}
	if got := erf32(float32(math.Copysign(0, -1))); got != 0 || !math.Signbit(float64(got)) {
		t.Errorf("erf32(-0) = %v, want -0", got)
	}
	if got := erf32(float32(math.NaN())); got == got {
		t.Errorf("erf32(NaN) = %v, want NaN", got)
	}
}

// The float32 GELU and its derivative agree with the float64 ones (math.Erf,
// math.Exp) to float32 resolution.
// TestGELU32: the float32 GELU and its derivative against the float64 ones,
// both as the scalar functions and as the slice functions the op calls
// (AVX-512 for whole 16-element blocks where the CPU has it).
func TestGELU32(t *testing.T) {
	var xs []float32
	for x := -12.0; x <= 12; x += 1.0 / 4096 {
		xs = append(xs, float32(x))
	}
	xs = append(xs, 30, -30, 200, -200, 1e-30, -1e-30, 0)
	ones := make([]float32, len(xs))
	for i := range ones {
		ones[i] = 1
	}
	vf, vg := make([]float32, len(xs)), make([]float32, len(xs))
	gelu32Slice(xs, vf)
	geluGrad32Slice(xs, ones, vg)
	var maxF, maxG, maxVF, maxVG float64
	for i, x32 := range xs {
		xf := float64(x32)
		scale := math.Max(1, math.Abs(xf))
		maxF = math.Max(maxF, math.Abs(float64(gelu32(x32))-gelu(xf))/scale)
		maxG = math.Max(maxG, math.Abs(float64(geluGrad32(x32))-geluGrad(xf))/scale)
		maxVF = math.Max(maxVF, math.Abs(float64(vf[i])-gelu(xf))/scale)
		maxVG = math.Max(maxVG, math.Abs(float64(vg[i])-geluGrad(xf))/scale)
	}
	t.Logf("max |error| / max(1, |x|): gelu32 %.3g, geluGrad32 %.3g; slices: %.3g, %.3g", maxF, maxG, maxVF, maxVG)
	for _, e := range []float64{maxF, maxG, maxVF, maxVG} {
		if e > 1e-6 {
			t.Errorf("gelu32 %.3g, geluGrad32 %.3g, slices %.3g, %.3g; want <= 1e-6", maxF, maxG, maxVF, maxVG)
			break
		}
	}
	inf := float32(math.Inf(1))
	nan := float32(math.NaN())
	if g := gelu32(inf); g != inf {
		t.Errorf("gelu32(+Inf) = %v", g)
	}
	if g := normCDF32(-inf); g != 0 {
		t.Errorf("normCDF32(-Inf) = %v", g)
	}
	if g := gelu32(nan); g == g {
		t.Errorf("gelu32(NaN) = %v", g)
	}
	// Specials at every position of a 37-element slice: vector lanes and tail.
	for pos := 0; pos < 37; pos++ {
		x := make([]float32, 37)
		y, d := make([]float32, 37), make([]float32, 37)
		x[pos] = nan
		gelu32Slice(x, y)
		geluGrad32Slice(x, ones[:37], d)
		if y[pos] == y[pos] || d[pos] == d[pos] {
			t.Fatalf("NaN at %d: gelu %v, grad %v, want NaN", pos, y[pos], d[pos])
		}
		x[pos] = inf
		gelu32Slice(x, y)
		if y[pos] != inf {
			t.Fatalf("+Inf at %d: gelu %v, want +Inf", pos, y[pos])
		}
	}
}

// The float32 row max propagates NaN, as math.Max does in the float64 path,
// so that a NaN score makes the softmax row (and the loss) NaN.
func TestSoftmaxRow32NaN(t *testing.T) {
	inf := float32(math.Inf(1))
	nan := float32(math.NaN())
	for _, row := range [][]float32{
		{1, nan, 2}, {nan, 1, 2}, {1, 2, nan}, {-inf, nan, -inf}, {nan}, {1, inf, 2},
	} {
		softmaxRow(row)
		for j, p := range row {
			if p == p {
				t.Errorf("softmax row with NaN or +Inf: element %d = %v, want NaN", j, p)
			}
		}
	}
	row := []float32{-inf, -inf}
	softmaxRow(row)
	if row[0] != 0 || row[1] != 0 {
		t.Errorf("softmax of -Inf row = %v, want zeros", row)
	}
	// The cross-entropy of a row with a NaN logit is NaN, so that training
	// stops on a non-finite loss.
	for _, z := range [][]float32{{1, nan, 2}, {nan, -inf}, {1, inf}} {
		loss, err := crossEntropy(z, []float32{0}, []float32{1}, nil, 1, len(z), 0)
		if err != nil || loss == loss {
			t.Errorf("cross-entropy of logits %v = %v, %v; want NaN", z, loss, err)
		}
	}
	row = []float32{0, float32(math.Log(3)), -inf}
	softmaxRow(row)
	if math.Abs(float64(row[0])-0.25) > 1e-7 || math.Abs(float64(row[1])-0.75) > 1e-7 || row[2] != 0 {
		t.Errorf("softmax = %v, want [0.25 0.75 0]", row)
	}
}

// as32 returns a float32 copy of the float64 tensor t, and t rounded to
// float32 values (so that both dtypes see the same inputs).
func as32(t *tensor.Dense) (t32, t64 *tensor.Dense) {
	d := t.Data().([]float64)
	f32, f64 := make([]float32, len(d)), make([]float64, len(d))
	for i, x := range d {
		f32[i] = float32(x)
		f64[i] = float64(f32[i])
	}
	sh := t.Shape().Clone()
	return tensor.New(tensor.WithShape(sh...), tensor.WithBacking(f32)), tensor.New(tensor.WithShape(sh.Clone()...), tensor.WithBacking(f64))
}

// The float32 attention cores (float32 softmax: rowMax32, exp32) agree with
// the float64 dense core, outputs and gradients, to 1e-5 relative (max
// norm), with sharp softmaxes (scores of standard deviation ~5) and masks.
func TestAttentionFloat32(t *testing.T) {
	rng := testRNG(t)
	for _, c := range []struct {
		name   string
		s      AttentionShape
		masked bool
	}{
		{"causal-padded", AttentionShape{Batch: 2, QLen: 100, KLen: 100, Heads: 4, KVHeads: 2, HeadDim: 16, Causal: true}, true},
		{"bidirectional-alibi", AttentionShape{Batch: 1, QLen: 70, KLen: 70, Heads: 2, KVHeads: 2, HeadDim: 8, ALiBi: true}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.s
			q32, q64 := as32(RandomTensor(rng, 3, s.Batch*s.QLen, s.Heads*s.HeadDim))
			k32, k64 := as32(RandomTensor(rng, 3, s.Batch*s.KLen, s.KVHeads*s.HeadDim))
			v32, v64 := as32(RandomTensor(rng, 1, s.Batch*s.KLen, s.KVHeads*s.VDim()))
			r32, r64 := as32(RandomTensor(rng, 1, s.Batch*s.QLen, s.Heads*s.VDim()))
			var m32, m64 *tensor.Dense
			if c.masked {
				m32, m64 = as32(mask01(rng, s.Batch*s.KLen, 0.3))
			}
			want := runCore(t, Attention, s, q64, k64, v64, m64, r64)
			for _, core := range []struct {
				name string
				f    func(q, k, v, m *G.Node, s AttentionShape) (*G.Node, error)
			}{{"standard", Attention}, {"flash", flashCore}} {
				got := runCore(t, core.f, s, q32, k32, v32, m32, r32)
				for _, p := range []struct {
					name      string
					got, want []float64
				}{{"out", got.out, want.out}, {"dq", got.dq, want.dq}, {"dk", got.dk, want.dk}, {"dv", got.dv, want.dv}} {
					d := maxRelDiff(p.got, p.want)
					t.Logf("%s float32 %s: relative difference %.3g", core.name, p.name, d)
					if d > 1e-5 {
						t.Errorf("%s float32 %s: relative difference %.3g from float64, want <= 1e-5", core.name, p.name, d)
					}
				}
			}
		})
	}
}

// The float32 GELU op and its gradient, and the float32 softmax
// cross-entropy and its gradient, agree with the float64 ones.
func TestActivationAndLossFloat32(t *testing.T) {
	rng := testRNG(t)
	run := func(x, r, tg, w *tensor.Dense) (act, grad []float64, loss float64) {
		g := G.NewGraph()
		xn := Variable(g, "x", x)
		y, err := Activate(xn, GELU)
		if err != nil {
			t.Fatal(err)
		}
		prod, err := G.HadamardProd(y, Variable(g, "r", r))
		if err != nil {
			t.Fatal(err)
		}
		s1, err := G.Sum(prod)
		if err != nil {
			t.Fatal(err)
		}
		// the activations are also the logits of a 64-class softmax
		ce, err := SoftmaxCrossEntropy(y, Variable(g, "t", tg), Variable(g, "w", w))
		if err != nil {
			t.Fatal(err)
		}
		total, err := G.Add(s1, ce)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := G.Grad(total, xn); err != nil {
			t.Fatal(err)
		}
		vm := G.NewTapeMachine(g, G.BindDualValues(xn))
		defer vm.Close()
		if err := vm.RunAll(); err != nil {
			t.Fatal(err)
		}
		gx, err := xn.Grad()
		if err != nil {
			t.Fatal(err)
		}
		l, err := scalar(ce.Value())
		if err != nil {
			t.Fatal(err)
		}
		return Float64s(y.Value()), Float64s(gx), l
	}
	const n, v = 64, 64
	x32, x64 := as32(RandomTensor(rng, 8, n, v))
	r32, r64 := as32(RandomTensor(rng, 1, n, v))
	t32, t64 := as32(ids(rng, n, v))
	w32, w64 := as32(mask01(rng, n, 0.2))
	y32, gx32, l32 := run(x32, r32, t32, w32)
	y64, gx64, l64 := run(x64, r64, t64, w64)
	var maxY float64
	for i := range y32 {
		maxY = math.Max(maxY, math.Abs(y32[i]-y64[i])/math.Max(1, math.Abs(y64[i])))
	}
	dg := maxRelDiff(gx32, gx64)
	dl := math.Abs(l32-l64) / math.Abs(l64)
	t.Logf("float32 vs float64: GELU max |diff|/max(1,|y|) %.3g; loss relative %.3g; d(GELU + loss)/dx relative %.3g", maxY, dl, dg)
	if maxY > 1e-6 || dl > 1e-6 || dg > 1e-5 {
		t.Errorf("float32 GELU %.3g (want <= 1e-6), loss %.3g (want <= 1e-6), gradient %.3g (want <= 1e-5) from float64", maxY, dl, dg)
	}
}

var benchSink float32

func expBenchInput() []float32 {
	rng := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, 1<<16)
	for i := range x {
		x[i] = float32(-20 * rng.Float64()) // softmax arguments x - max
	}
	return x
}

func erfBenchInput() []float32 {
	rng := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, 1<<16)
	for i := range x {
		x[i] = float32(rng.NormFloat64()) // pre-activations / sqrt 2
	}
	return x
}

// BenchmarkExp32 compares exp32 with math.Exp on a float32 slice of 64K
// softmax-like arguments in [-20, 0].
func BenchmarkExp32(b *testing.B) {
	x := expBenchInput()
	y := make([]float32, len(x))
	b.Run("exp32", func(b *testing.B) {
		for b.Loop() {
			for i, v := range x {
				y[i] = exp32(v)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(x)), "ns/elem")
	})
	b.Run("expShift", func(b *testing.B) {
		for b.Loop() {
			copy(y, x)
			expShift(y, 0)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(x)), "ns/elem")
	})
	b.Run("math.Exp", func(b *testing.B) {
		for b.Loop() {
			for i, v := range x {
				y[i] = float32(math.Exp(float64(v)))
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(x)), "ns/elem")
	})
	benchSink = y[0]
}

// BenchmarkErf32 compares erf32 with math.Erf, and the float32 GELU and its
// derivative with the float64 ones, on 64K N(0, 1) values.
func BenchmarkErf32(b *testing.B) {
	x := erfBenchInput()
	y := make([]float32, len(x))
	for _, c := range []struct {
		name string
		f    func(float32) float32
	}{
		{"erf32", erf32},
		{"math.Erf", func(v float32) float32 { return float32(math.Erf(float64(v))) }},
		{"gelu32", gelu32},
		{"gelu64", func(v float32) float32 { return float32(gelu(float64(v))) }},
		{"geluGrad32", geluGrad32},
		{"geluGrad64", func(v float32) float32 { return float32(geluGrad(float64(v))) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				for i, v := range x {
					y[i] = c.f(v)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(x)), "ns/elem")
		})
	}
	benchSink = y[0]
}
