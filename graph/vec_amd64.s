#include "textflag.h"

// AVX-512 loops for the float32 softmax: row maximum, exponentials with
// their sum, scaling. Each takes n, a multiple of 16; the Go callers
// (vec_amd64.go) do the tail.

// func maxAVX512(x *float32, n int, lanes *[16]float32) (nan bool)
// lanes holds the running maximum per lane on entry and on return.
TEXT ·maxAVX512(SB), NOSPLIT, $0-25
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ lanes+16(FP), DI
	VMOVUPS (DI), Z0
	KXORW K1, K1, K1
	SHRQ $4, CX
	JZ maxdone
maxloop:
	VMOVUPS (SI), Z1
	VCMPPS $3, Z1, Z1, K2 // unordered: NaN
	KORW K2, K1, K1
	VMAXPS Z1, Z0, Z0
	ADDQ $64, SI
	DECQ CX
	JNZ maxloop
maxdone:
	VMOVUPS Z0, (DI)
	KMOVW K1, AX
	TESTW AX, AX
	SETNE nan+24(FP)
	VZEROUPPER
	RET

// func expShiftSumAVX512(x *float32, n int, m float32, sums *[8]float64)
// x[i] = exp(x[i] - m) for i < n; adds the results into sums, 8 float64
// lanes. The method is exp32's (math32.go): x = k ln2 + r, |r| <= ln2/2,
// ln 2 split in two (here with fused multiply-adds), the same degree-6
// polynomial, then VSCALEFPS multiplies by 2^k with one rounding, which
// gives +Inf on overflow and correctly rounded subnormals. Inputs above 89
// are clamped to 89 (+Inf either way), NaN kept; lanes below exp32Underflow
// (masked scores are -Inf) are computed as exp(0) and zeroed at the end:
// letting them underflow costs a microcode assist per vector on Intel CPUs,
// which made the masked half of a causal softmax 7x slower than the rest.
TEXT ·expShiftSumAVX512(SB), NOSPLIT, $0-32
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS m+16(FP), Z31
	MOVQ sums+24(FP), DI
	VBROADCASTSS ·expVecConsts+0(SB), Z30 // exp32Underflow
	VBROADCASTSS ·expVecConsts+4(SB), Z29 // 89
	VBROADCASTSS ·expVecConsts+8(SB), Z28 // log2(e)
	VBROADCASTSS ·expVecConsts+12(SB), Z27 // ln2Hi32
	VBROADCASTSS ·expVecConsts+16(SB), Z26 // ln2Lo32
	VBROADCASTSS ·expVecConsts+20(SB), Z25 // expC6
	VBROADCASTSS ·expVecConsts+24(SB), Z24 // expC5
	VBROADCASTSS ·expVecConsts+28(SB), Z23 // expC4
	VBROADCASTSS ·expVecConsts+32(SB), Z22 // expC3
	VBROADCASTSS ·expVecConsts+36(SB), Z21 // expC2
	VBROADCASTSS ·expVecConsts+40(SB), Z20 // 1
	VMOVUPD (DI), Z18
	VPXORQ Z19, Z19, Z19
	VPXORQ Z17, Z17, Z17
	SHRQ $4, CX
	JZ expdone
exploop:
	VMOVUPS (SI), Z0
	VSUBPS Z31, Z0, Z0        // x - m
	VCMPPS $1, Z30, Z0, K2    // K2: x < exp32Underflow (false for NaN)
	VMOVAPS Z17, K2, Z0       // those lanes compute exp(0)
	VMINPS Z0, Z29, Z0        // min(89, x); NaN stays
	VMULPS Z28, Z0, Z1
	VRNDSCALEPS $0, Z1, Z1    // k = round(x log2 e), ties to even
	VMOVAPS Z0, Z2
	VFNMADD231PS Z27, Z1, Z2  // r = x - k ln2Hi
	VFNMADD231PS Z26, Z1, Z2  // r -= k ln2Lo
	VMOVAPS Z25, Z3
	VFMADD213PS Z24, Z2, Z3   // q = c6 r + c5
	VFMADD213PS Z23, Z2, Z3   // q = q r + c4
	VFMADD213PS Z22, Z2, Z3   // q = q r + c3
	VFMADD213PS Z21, Z2, Z3   // q = q r + c2
	VMULPS Z2, Z2, Z4         // r^2
	VFMADD213PS Z2, Z4, Z3    // r + r^2 q
	VADDPS Z20, Z3, Z3        // e^r
	VSCALEFPS Z1, Z3, Z3      // e^r 2^k
	VMOVAPS Z17, K2, Z3       // 0 below exp32Underflow
	VMOVUPS Z3, (SI)
	VCVTPS2PD Y3, Z5
	VADDPD Z5, Z18, Z18
	VEXTRACTF64X4 $1, Z3, Y6
	VCVTPS2PD Y6, Z6
	VADDPD Z6, Z19, Z19
	ADDQ $64, SI
	DECQ CX
	JNZ exploop
expdone:
	VADDPD Z19, Z18, Z18
	VMOVUPD Z18, (DI)
	VZEROUPPER
	RET

// func scaleAVX512(x *float32, n int, s float32)
// x[i] *= s for i < n.
TEXT ·scaleAVX512(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS s+16(FP), Z1
	SHRQ $4, CX
	JZ scaledone
scaleloop:
	VMULPS (SI), Z1, Z0
	VMOVUPS Z0, (SI)
	ADDQ $64, SI
	DECQ CX
	JNZ scaleloop
scaledone:
	VZEROUPPER
	RET

// The exact GELU x Phi(x) and its derivative Phi(x) + x phi(x) for whole
// 16-element blocks, by normCDF32's method (math32.go): with u = x/sqrt 2,
// Phi = (1 + u P(u^2))/2 for |u| < erfSplit32, else erfc(|u|)/2 = exp(-u^2)
// Q(1/(1 + |u|/2))/2 taken from 1 or not by the sign of u. Both branches
// are computed and blended with masks; |u| is clamped to 9 in the tail
// branch (exp(-81) is a normal float32; Phi is 1 or below 1e-36 there), and
// NaN propagates. The constants come from geluVecTab, 16 copies each.

// GELU_PHI: Z0 = x -> Z14 = Phi(x), Z9 = exp(-x^2/2) (and temporaries Z1-Z13,
// K1, K2; Z16 must be 0). Steps: u = x/sqrt 2; |u|; K1 = |u| < erfSplit32;
// Phi for small |u| = (1 + u P(u^2))/2 in Z4; a = min(|u|, 9), NaN kept;
// e = exp(-a^2) as in expShiftSumAVX512; t = 1/(1 + a/2); c = e Q(t)/2 =
// Phi(-|x|); Phi = c below 0, 1 - c above, Z4 where K1.
#define GELU_PHI \
	VMULPS ·geluVecTab+576(SB), Z0, Z1; \
	VPANDD ·geluVecTab+1664(SB), Z1, Z2; \
	VCMPPS $1, ·geluVecTab+640(SB), Z2, K1; \
	VMULPS Z1, Z1, Z3; \
	VMOVUPS ·geluVecTab+1152(SB), Z4; \
	VFMADD213PS ·geluVecTab+1088(SB), Z3, Z4; \
	VFMADD213PS ·geluVecTab+1024(SB), Z3, Z4; \
	VFMADD213PS ·geluVecTab+960(SB), Z3, Z4; \
	VFMADD213PS ·geluVecTab+896(SB), Z3, Z4; \
	VFMADD213PS ·geluVecTab+832(SB), Z3, Z4; \
	VMULPS Z1, Z4, Z4; \
	VMULPS ·geluVecTab+768(SB), Z4, Z4; \
	VADDPS ·geluVecTab+768(SB), Z4, Z4; \
	VMOVUPS ·geluVecTab+704(SB), Z5; \
	VMINPS Z2, Z5, Z5; \
	VMULPS Z5, Z5, Z6; \
	VSUBPS Z6, Z16, Z6; \
	VMULPS ·geluVecTab+0(SB), Z6, Z7; \
	VRNDSCALEPS $0, Z7, Z7; \
	VMOVUPS Z6, Z8; \
	VFNMADD231PS ·geluVecTab+64(SB), Z7, Z8; \
	VFNMADD231PS ·geluVecTab+128(SB), Z7, Z8; \
	VMOVUPS ·geluVecTab+192(SB), Z9; \
	VFMADD213PS ·geluVecTab+256(SB), Z8, Z9; \
	VFMADD213PS ·geluVecTab+320(SB), Z8, Z9; \
	VFMADD213PS ·geluVecTab+384(SB), Z8, Z9; \
	VFMADD213PS ·geluVecTab+448(SB), Z8, Z9; \
	VMULPS Z8, Z8, Z10; \
	VFMADD213PS Z8, Z10, Z9; \
	VADDPS ·geluVecTab+512(SB), Z9, Z9; \
	VSCALEFPS Z7, Z9, Z9; \
	VMOVUPS ·geluVecTab+768(SB), Z10; \
	VFMADD213PS ·geluVecTab+512(SB), Z5, Z10; \
	VMOVUPS ·geluVecTab+512(SB), Z11; \
	VDIVPS Z10, Z11, Z11; \
	VMOVUPS ·geluVecTab+1536(SB), Z12; \
	VFMADD213PS ·geluVecTab+1472(SB), Z11, Z12; \
	VFMADD213PS ·geluVecTab+1408(SB), Z11, Z12; \
	VFMADD213PS ·geluVecTab+1344(SB), Z11, Z12; \
	VFMADD213PS ·geluVecTab+1280(SB), Z11, Z12; \
	VFMADD213PS ·geluVecTab+1216(SB), Z11, Z12; \
	VMULPS Z9, Z12, Z13; \
	VMULPS ·geluVecTab+768(SB), Z13, Z13; \
	VMOVUPS ·geluVecTab+512(SB), Z14; \
	VSUBPS Z13, Z14, Z14; \
	VCMPPS $1, Z16, Z1, K2; \
	VMOVAPS Z13, K2, Z14; \
	VMOVAPS Z4, K1, Z14

// func geluAVX512(x, y *float32, n int)
TEXT ·geluAVX512(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), SI
	MOVQ y+8(FP), DI
	MOVQ n+16(FP), CX
	VPXORD Z16, Z16, Z16
	SHRQ $4, CX
	JZ gelddone
geluloop:
	VMOVUPS (SI), Z0
	GELU_PHI
	VMULPS Z14, Z0, Z14                 // x Phi(x)
	VMOVUPS Z14, (DI)
	ADDQ $64, SI
	ADDQ $64, DI
	DECQ CX
	JNZ geluloop
gelddone:
	VZEROUPPER
	RET

// func geluGradAVX512(x, dy, dx *float32, n int)
// dx = dy (Phi(x) + x phi(x)), phi(x) = exp(-u^2)/sqrt(2 pi).
TEXT ·geluGradAVX512(SB), NOSPLIT, $0-32
	MOVQ x+0(FP), SI
	MOVQ dy+8(FP), BX
	MOVQ dx+16(FP), DI
	MOVQ n+24(FP), CX
	VPXORD Z16, Z16, Z16
	SHRQ $4, CX
	JZ gradone
gradloop:
	VMOVUPS (SI), Z0
	GELU_PHI
	VMULPS ·geluVecTab+1600(SB), Z9, Z15   // phi(x)
	VFMADD213PS Z14, Z0, Z15            // Phi + x phi
	VMULPS (BX), Z15, Z15
	VMOVUPS Z15, (DI)
	ADDQ $64, SI
	ADDQ $64, BX
	ADDQ $64, DI
	DECQ CX
	JNZ gradloop
gradone:
	VZEROUPPER
	RET

// func addToAVX512(dst, src *float32, n int)
// dst[i] += src[i] for i < n (n a multiple of 16).
TEXT ·addToAVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	SHRQ $4, CX
	JZ adddone
addloop:
	VMOVUPS (DI), Z0
	VADDPS (SI), Z0, Z0
	VMOVUPS Z0, (DI)
	ADDQ $64, SI
	ADDQ $64, DI
	DECQ CX
	JNZ addloop
adddone:
	VZEROUPPER
	RET

// func addToAVX2(dst, src *float32, n int)
// dst[i] += src[i] for i < n (n a multiple of 8).
TEXT ·addToAVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	SHRQ $3, CX
	JZ add2done
add2loop:
	VMOVUPS (DI), Y0
	VADDPS (SI), Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	DECQ CX
	JNZ add2loop
add2done:
	VZEROUPPER
	RET

// func adamwAVX512(w, grad *float32, m, v *float64, n int, p *[8]float64, lr, wd float64)
// The AdamW update of train.adamw on 8 elements at a time (n a multiple of
// 8), in float64 with the same operations in the same order (no fused
// multiply-adds). p holds scale, b1, 1-b1, b2, 1-b2, c1, c2, eps.
TEXT ·adamwAVX512(SB), NOSPLIT, $0-64
	MOVQ w+0(FP), DI
	MOVQ grad+8(FP), SI
	MOVQ m+16(FP), R8
	MOVQ v+24(FP), R9
	MOVQ n+32(FP), CX
	MOVQ p+40(FP), AX
	VBROADCASTSD 0(AX), Z20  // scale
	VBROADCASTSD 8(AX), Z21  // b1
	VBROADCASTSD 16(AX), Z22 // 1 - b1
	VBROADCASTSD 24(AX), Z23 // b2
	VBROADCASTSD 32(AX), Z24 // 1 - b2
	VBROADCASTSD 40(AX), Z25 // c1
	VBROADCASTSD 48(AX), Z26 // c2
	VBROADCASTSD 56(AX), Z27 // eps
	VBROADCASTSD lr+48(FP), Z28
	VBROADCASTSD wd+56(FP), Z29
	SHRQ $3, CX
	JZ adamdone
adamloop:
	VCVTPS2PD (SI), Z0        // g
	VMULPD Z20, Z0, Z0        // gj = g scale
	VMULPD (R8), Z21, Z1      // b1 m
	VMULPD Z22, Z0, Z2        // (1-b1) gj
	VADDPD Z2, Z1, Z1         // m
	VMOVUPD Z1, (R8)
	VMULPD (R9), Z23, Z3      // b2 v
	VMULPD Z24, Z0, Z4        // (1-b2) gj
	VMULPD Z0, Z4, Z4         // (1-b2) gj gj
	VADDPD Z4, Z3, Z3         // v
	VMOVUPD Z3, (R9)
	VDIVPD Z25, Z1, Z1        // m / c1
	VDIVPD Z26, Z3, Z3        // v / c2
	VSQRTPD Z3, Z3
	VADDPD Z27, Z3, Z3        // sqrt + eps
	VDIVPD Z3, Z1, Z1         // (m/c1) / (sqrt(v/c2) + eps)
	VCVTPS2PD (DI), Z5        // x
	VMULPD Z29, Z5, Z6        // wd x
	VADDPD Z1, Z6, Z6         // wd x + ...
	VMULPD Z28, Z6, Z6        // lr (...)
	VSUBPD Z6, Z5, Z5         // x - lr (...)
	VCVTPD2PS Z5, Y5
	VMOVUPS Y5, (DI)
	ADDQ $32, DI
	ADDQ $32, SI
	ADDQ $64, R8
	ADDQ $64, R9
	DECQ CX
	JNZ adamloop
adamdone:
	VZEROUPPER
	RET

// func sumAVX512(x *float32, n int) float64
// The sum of x[0:n] (n a multiple of 16) in float64: two 8-lane float64
// accumulators, each element converted exactly.
TEXT ·sumAVX512(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VPXORQ Z0, Z0, Z0
	VPXORQ Z1, Z1, Z1
	SHRQ $4, CX
	JZ sumdone
sumloop:
	VCVTPS2PD (SI), Z2
	VCVTPS2PD 32(SI), Z3
	VADDPD Z2, Z0, Z0
	VADDPD Z3, Z1, Z1
	ADDQ $64, SI
	DECQ CX
	JNZ sumloop
sumdone:
	VADDPD Z1, Z0, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPD Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPD X1, X0, X0
	VPERMILPD $1, X0, X1
	VADDSD X1, X0, X0
	VMOVSD X0, ret+16(FP)
	VZEROUPPER
	RET

// func sumSqDevAVX512(x *float32, n int, mean float64) float64
// The sum of (x[i] - mean)^2 for i < n (n a multiple of 16), in float64.
TEXT ·sumSqDevAVX512(SB), NOSPLIT, $0-32
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSD mean+16(FP), Z4
	VPXORQ Z0, Z0, Z0
	VPXORQ Z1, Z1, Z1
	SHRQ $4, CX
	JZ sqdone
sqloop:
	VCVTPS2PD (SI), Z2
	VCVTPS2PD 32(SI), Z3
	VSUBPD Z4, Z2, Z2
	VSUBPD Z4, Z3, Z3
	VFMADD231PD Z2, Z2, Z0
	VFMADD231PD Z3, Z3, Z1
	ADDQ $64, SI
	DECQ CX
	JNZ sqloop
sqdone:
	VADDPD Z1, Z0, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPD Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPD X1, X0, X0
	VPERMILPD $1, X0, X1
	VADDSD X1, X0, X0
	VMOVSD X0, ret+24(FP)
	VZEROUPPER
	RET
