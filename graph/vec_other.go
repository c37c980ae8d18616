//go:build !amd64

package graph

const (
	hasAVX512 = false
	hasAVX2   = false
)

func maxAVX512(x *float32, n int, lanes *[16]float32) bool          { panic("no AVX-512") }
func expShiftSumAVX512(x *float32, n int, m float32, s *[8]float64) { panic("no AVX-512") }
func scaleAVX512(x *float32, n int, s float32)                      { panic("no AVX-512") }
func geluAVX512(x, y *float32, n int)                               { panic("no AVX-512") }
func geluGradAVX512(x, dy, dx *float32, n int)                      { panic("no AVX-512") }
func addToAVX512(dst, src *float32, n int)                          { panic("no AVX-512") }
func addToAVX2(dst, src *float32, n int)                            { panic("no AVX2") }
func adamwAVX512(w, grad *float32, m, v *float64, n int, p *[8]float64, lr, wd float64) {
	panic("no AVX-512")
}
func sumAVX512(x *float32, n int) float64                    { panic("no AVX-512") }
func sumSqDevAVX512(x *float32, n int, mean float64) float64 { panic("no AVX-512") }
