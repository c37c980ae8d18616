package graph

import "math"

// Single-precision elementwise math for the float32 instantiations of the
// ops: the softmax exponentials of the attention cores and the cross-entropy,
// and the exact (erf) GELU. Go's math package works in float64 only, and
// calling it from a float32 loop costs two conversions per element plus
// accuracy that float32 storage throws away. The float64 instantiations keep
// calling math.Exp, math.Erf and math.Max: their numerics are unchanged.
//
// Errors, as measured by TestExp32, TestErf32 and TestGELU32 against
// math.Exp and math.Erf in float64 over dense grids and random points:
//   - exp32: relative error below 9e-8 (about 1 ulp) wherever the result is a
//     normal float32. Results below 2^-126 (x < -87.34) are subnormal, built
//     with one rounding, so they lose relative precision as exp's true value
//     does when stored as float32; below about -103.97 they are 0.
//   - erf32: absolute error below 1.3e-7 (about 2 ulp of values near 1),
//     relative error below 2e-7 where erf(x) is a normal float32.
//   - gelu32 and geluGrad32: error below 1.4e-7 max(1, |x|).
//
// Float32 arithmetic in Go rounds each operation to float32 (no extended
// precision); the bounds above hold whether or not the compiler fuses a
// multiply and an add.

// exp32 constants. ln2Hi32 is ln 2 rounded to 15 significant bits, so k *
// ln2Hi32 is exact for the |k| <= 150 that occur, and ln2Lo32 = ln 2 -
// ln2Hi32 (Cody and Waite's split of the reduction constant).
const (
	log2e32      = 1.44269504088896340736
	ln2Hi32      = 0.693145751953125
	ln2Lo32      = 1.42860682030941723212e-6
	roundMagic32 = 12582912   // 1.5 * 2^23: adding it rounds |v| < 2^22 to an integer
	roundBits32  = 0x4b400000 // math.Float32bits(roundMagic32)

	// exp32Lo and exp32Hi bound the fast path: for x in [exp32Lo, exp32Hi]
	// the k of the reduction is in [-126, 127], so 2^k is a normal float32.
	exp32Lo = -87.33
	exp32Hi = 88.0
	// exp(x) rounds to +Inf above exp32Overflow (ln MaxFloat32) and to 0
	// below exp32Underflow (ln of half the smallest subnormal, 2^-150).
	exp32Overflow  = 88.72284
	exp32Underflow = -103.97208

	// The coefficients of q(r) ~ (e^r - 1 - r) / r^2 on |r| <= ln2/2: a
	// minimax fit (Remez exchange, weight 1/q) with relative error 1.3e-7 in
	// q, hence below 1e-8 in 1 + r + r^2 q(r).
	expC2 = 0.5
	expC3 = 0.166665778
	expC4 = 0.0416668542
	expC5 = 0.00836314075
	expC6 = 0.00139012851
)

// exp32 returns e^x in float32 arithmetic: x = k ln2 + r with k =
// round(x / ln2) and |r| <= ln2/2 (Cody-Waite reduction with ln 2 split in
// two), e^r by a degree-6 polynomial, and the scaling by 2^k built in the
// exponent bits. exp32(+Inf) = +Inf, exp32(-Inf) = 0, exp32(NaN) = NaN;
// results that overflow are +Inf, and those below the smallest normal float32
// are rounded to subnormals (0 below about -103.97).
func exp32(x float32) float32 {
	if !(x >= exp32Lo && x <= exp32Hi) { // NaN goes here too
		return exp32Slow(x)
	}
	k, p := exp32Reduce(x)
	return p * math.Float32frombits(uint32(k+127)<<23)
}

// exp32Reduce returns k and e^r with x = k ln2 + r, |r| <= ln2/2 (up to
// rounding); e^x = e^r 2^k.
func exp32Reduce(x float32) (int32, float32) {
	t := float32(x*log2e32) + roundMagic32
	k := int32(math.Float32bits(t)) - roundBits32
	kf := t - roundMagic32
	r := x - kf*ln2Hi32 // exact: kf*ln2Hi32 is exact and close to x
	r -= kf * ln2Lo32
	q := expC2 + r*(expC3+r*(expC4+r*(expC5+r*expC6)))
	return k, 1 + (r + r*r*q)
}

// exp32Slow is exp32 outside its fast range: specials, overflow, and the
// subnormal results, which are scaled by 2^k in two steps so that only the
// last rounds.
func exp32Slow(x float32) float32 {
	switch {
	case x != x:
		return x
	case x > exp32Overflow:
		return float32(math.Inf(1))
	case x < exp32Underflow:
		return 0
	}
	k, p := exp32Reduce(x)
	k1 := k / 2
	k2 := k - k1
	return p * math.Float32frombits(uint32(k1+127)<<23) * math.Float32frombits(uint32(k2+127)<<23)
}

// erf32 constants. For |x| < erfSplit32, erf(x) = x P(x^2) with P a degree-5
// minimax fit (relative error 8.5e-9) of erf(sqrt y)/sqrt y on y in [0,
// erfSplit32^2]. For erfSplit32 <= |x| < erfMax32, erfc(|x|) = exp(-x^2)
// Q(t) with t = 1/(1 + |x|/2) and Q a degree-5 polynomial fitted by Remez
// exchange to erfcx(x) = exp(x^2) erfc(x) with weight exp(-x^2), so that the
// absolute error of erfc is 1.7e-10 (the substitution t is that of Abramowitz
// and Stegun 7.1.25-28, with our own coefficients). Above erfMax32, erf rounds
// to 1 in float32 (erfc(4) = 1.5e-8).
const (
	erfSplit32 = 0.875
	erfMax32   = 4

	erfP0 = 1.12837911
	erfP1 = -0.376125515
	erfP2 = 0.112824552
	erfP3 = -0.0267914627
	erfP4 = 0.00503218127
	erfP5 = -0.000620325503

	erfQ0 = 0.00162278896
	erfQ1 = 0.261426449
	erfQ2 = 0.390858293
	erfQ3 = -0.0542625301
	erfQ4 = 0.627961874
	erfQ5 = -0.227830514

	invSqrt2_32   = 0.70710678118654752440 // 1/sqrt 2
	invSqrt2Pi_32 = 0.39894228040143267794 // 1/sqrt(2 pi)
)

// erf32 returns the error function of x in float32 arithmetic (see the
// constants above for the method); erf32(±Inf) = ±1, erf32(NaN) = NaN.
func erf32(x float32) float32 {
	ax := abs32(x)
	if ax < erfSplit32 {
		return erfSmall32(x)
	}
	if !(ax < erfMax32) {
		switch {
		case x != x:
			return x
		case x < 0:
			return -1
		}
		return 1
	}
	c := 1 - erfcTail32(ax, exp32(-ax*ax))
	if x < 0 {
		return -c
	}
	return c
}

// erfSmall32 is erf(x) for |x| < erfSplit32.
func erfSmall32(x float32) float32 {
	y := x * x
	return x * (erfP0 + y*(erfP1+y*(erfP2+y*(erfP3+y*(erfP4+y*erfP5)))))
}

// erfcTail32 is erfc(a) for erfSplit32 <= a < erfMax32, given e = exp(-a*a).
func erfcTail32(a, e float32) float32 {
	t := 1 / (1 + 0.5*a)
	return e * (erfQ0 + t*(erfQ1+t*(erfQ2+t*(erfQ3+t*(erfQ4+t*erfQ5)))))
}

func abs32(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }

// normCDF32 is the standard normal distribution function Phi(x) = (1 +
// erf(x/sqrt 2))/2; in the lower tail it is computed as erfc(|x|/sqrt 2)/2,
// without the cancellation of 1 + erf.
func normCDF32(x float32) float32 {
	u := x * invSqrt2_32
	if abs32(u) < erfSplit32 {
		return 0.5 + 0.5*erfSmall32(u)
	}
	return normCDFTail32(u, exp32(-u*u))
}

// normCDFTail32 is Phi(x) for u = x/sqrt 2 with |u| >= erfSplit32, given e =
// exp(-u*u).
func normCDFTail32(u, e float32) float32 {
	au := abs32(u)
	if !(au < erfMax32) {
		switch {
		case u != u:
			return u
		case u > 0:
			return 1
		}
		return 0
	}
	c := 0.5 * erfcTail32(au, e) // Phi(-|x|)
	if u < 0 {
		return c
	}
	return 1 - c
}

// gelu32 is x Phi(x), the exact GELU, in float32.
func gelu32(x float32) float32 { return x * normCDF32(x) }

// geluGrad32 is Phi(x) + x phi(x) with phi(x) = exp(-x^2/2)/sqrt(2 pi), in
// float32; the exponential serves both terms.
func geluGrad32(x float32) float32 {
	u := x * invSqrt2_32
	e := exp32(-u * u)
	var cdf float32
	if abs32(u) < erfSplit32 {
		cdf = 0.5 + 0.5*erfSmall32(u)
	} else {
		cdf = normCDFTail32(u, e)
	}
	return cdf + x*e*invSqrt2Pi_32
}

// rowMax32 returns the largest of m and the elements of row, or NaN if any of
// them is NaN (as math.Max would, which the float64 paths use); plain
// comparisons, without math.Max's care for the sign of zero.
func rowMax32(row []float32, m float32) float32 {
	if m != m {
		return m
	}
	if n := len(row) &^ 15; hasAVX512 && n > 0 {
		lanes := [16]float32{m, m, m, m, m, m, m, m, m, m, m, m, m, m, m, m}
		if maxAVX512(&row[0], n, &lanes) {
			return float32(math.NaN())
		}
		for _, v := range lanes { // no NaN here; plain compares (Go's max is slow)
			if v > m {
				m = v
			}
		}
		row = row[n:]
	}
	for _, v := range row {
		if v > m {
			m = v
		} else if v != v {
			return v
		}
	}
	return m
}

// rowMax returns the largest of m and the elements of row, NaN if any is NaN.
func rowMax[T Float](row []T, m float64) float64 {
	if r, ok := any(row).([]float32); ok {
		return float64(rowMax32(r, float32(m)))
	}
	for _, x := range row {
		m = math.Max(m, float64(x))
	}
	return m
}

// expShiftSum replaces each x of row by exp(x - m) and returns their sum
// (accumulated in float64 for either type).
func expShiftSum[T Float](row []T, m float64) float64 {
	if r, ok := any(row).([]float32); ok {
		m32 := float32(m)
		var sum float64
		if n := len(r) &^ 15; hasAVX512 && n > 0 {
			var sums [8]float64
			expShiftSumAVX512(&r[0], n, m32, &sums)
			for _, v := range sums {
				sum += v
			}
			r = r[n:]
		}
		for j, x := range r {
			e := exp32(x - m32)
			r[j] = e
			sum += float64(e)
		}
		return sum
	}
	var sum float64
	for j, x := range row {
		e := math.Exp(float64(x) - m)
		row[j] = T(e)
		sum += e
	}
	return sum
}

// expShift replaces each x of row by exp(x - m).
func expShift[T Float](row []T, m float64) {
	if _, ok := any(row).([]float32); ok {
		expShiftSum(row, m)
		return
	}
	for j, x := range row {
		row[j] = T(math.Exp(float64(x) - m))
	}
}

// scaleRow multiplies each element of row by s.
func scaleRow[T Float](row []T, s T) {
	if r, ok := any(row).([]float32); ok && hasAVX512 {
		if n := len(r) &^ 15; n > 0 {
			scaleAVX512(&r[0], n, float32(s))
			row = row[n:]
		}
	}
	for j := range row {
		row[j] *= s
	}
}
