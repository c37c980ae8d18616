package graph

import (
	"math"

	"golang.org/x/sys/cpu"
)

// AVX-512 versions of the float32 softmax loops (vec_amd64.s); the Go
// functions in math32.go call them for the whole 16-element blocks of a row
// and finish the tail themselves.

var (
	hasAVX512 = cpu.X86.HasAVX512F
	hasAVX2   = cpu.X86.HasAVX2
)

// expVecConsts feeds expShiftSumAVX512 the constants of exp32, in the order
// the assembly loads them.
var expVecConsts = [11]float32{exp32Underflow, 89, log2e32, ln2Hi32, ln2Lo32, expC6, expC5, expC4, expC3, expC2, 1}

//go:noescape
func maxAVX512(x *float32, n int, lanes *[16]float32) (nan bool)

//go:noescape
func expShiftSumAVX512(x *float32, n int, m float32, sums *[8]float64)

//go:noescape
func scaleAVX512(x *float32, n int, s float32)

// geluVecTab holds the constants of geluAVX512 and geluGradAVX512, each
// repeated 16 times (one vector), in the order the assembly indexes them.
var geluVecTab = [27][16]float32{
	splat16(log2e32),       // log2e
	splat16(ln2Hi32),       // ln2Hi
	splat16(ln2Lo32),       // ln2Lo
	splat16(expC6),         // c6
	splat16(expC5),         // c5
	splat16(expC4),         // c4
	splat16(expC3),         // c3
	splat16(expC2),         // c2
	splat16(1),             // one
	splat16(invSqrt2_32),   // invSqrt2
	splat16(erfSplit32),    // split
	splat16(9),             // clamp
	splat16(0.5),           // half
	splat16(erfP0),         // P0
	splat16(erfP1),         // P1
	splat16(erfP2),         // P2
	splat16(erfP3),         // P3
	splat16(erfP4),         // P4
	splat16(erfP5),         // P5
	splat16(erfQ0),         // Q0
	splat16(erfQ1),         // Q1
	splat16(erfQ2),         // Q2
	splat16(erfQ3),         // Q3
	splat16(erfQ4),         // Q4
	splat16(erfQ5),         // Q5
	splat16(invSqrt2Pi_32), // invSqrt2Pi
	splat16(math.Float32frombits(0x7fffffff)), // absmask
}

func splat16(v float32) (s [16]float32) {
	for i := range s {
		s[i] = v
	}
	return s
}

//go:noescape
func geluAVX512(x, y *float32, n int)

//go:noescape
func geluGradAVX512(x, dy, dx *float32, n int)

//go:noescape
func addToAVX512(dst, src *float32, n int)

//go:noescape
func addToAVX2(dst, src *float32, n int)

//go:noescape
func adamwAVX512(w, grad *float32, m, v *float64, n int, p *[8]float64, lr, wd float64)

//go:noescape
func sumAVX512(x *float32, n int) float64

//go:noescape
func sumSqDevAVX512(x *float32, n int, mean float64) float64
