package graph

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// LayerNorm normalizes each row of x [N, D] to zero mean and unit variance
// (biased variance, eps inside the square root), then scales by gamma [D] and
// shifts by beta [D] (Ba et al. 2016).
//
// Backward, with xhat = (x - mean) * rstd and g = dy * gamma:
// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), dgamma = sum over rows of
// dy * xhat, dbeta = sum over rows of dy. Mean and rstd are recomputed in the
// backward ops (O(N D)) rather than kept.
func LayerNorm(x, gamma, beta *G.Node, eps float64) (*G.Node, error) {
	name := fmt.Sprintf("LayerNorm(eps=%g)", eps)
	return apply(&op{
		name:  name,
		arity: 3,
		typ:   fnType(2, 1, 1, 2),
		shape: normShape(name, 3),
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			s := in[0].Shape()
			out := newTensor(in[0].Dtype(), s...)
			if f32 {
				layerNormForward(data[float32](in[0]), data[float32](in[1]), data[float32](in[2]), data[float32](out), s[0], s[1], eps)
			} else {
				layerNormForward(data[float64](in[0]), data[float64](in[1]), data[float64](in[2]), data[float64](out), s[0], s[1], eps)
			}
			return out, nil
		},
		diffWRT: []bool{true, true, true},
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			dx, err := apply(normGradOp("LayerNormGradX", eps, true, false), in[0], in[1], grad)
			if err != nil {
				return nil, err
			}
			dg, err := apply(normGradOp("LayerNormGradGamma", eps, true, true), in[0], grad)
			if err != nil {
				return nil, err
			}
			db, err := ColSum(grad)
			return G.Nodes{dx, dg, db}, err
		},
		gpu: normKernel(eps, true, "forward"),
	}, x, gamma, beta)
}

// RMSNorm scales each row of x [N, D] by the inverse of its root mean square
// (eps inside the square root) and by gamma [D] (Zhang and Sennrich 2019).
// Backward, with xhat = x * r and g = dy * gamma: dx = r * (g - xhat *
// mean(g * xhat)), dgamma = sum over rows of dy * xhat.
func RMSNorm(x, gamma *G.Node, eps float64) (*G.Node, error) {
	name := fmt.Sprintf("RMSNorm(eps=%g)", eps)
	return apply(&op{
		name:  name,
		arity: 2,
		typ:   fnType(2, 1, 2),
		shape: normShape(name, 2),
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			s := in[0].Shape()
			out := newTensor(in[0].Dtype(), s...)
			if f32 {
				rmsNormForward(data[float32](in[0]), data[float32](in[1]), data[float32](out), s[0], s[1], eps)
			} else {
				rmsNormForward(data[float64](in[0]), data[float64](in[1]), data[float64](out), s[0], s[1], eps)
			}
			return out, nil
		},
		diffWRT: []bool{true, true},
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			dx, err := apply(normGradOp("RMSNormGradX", eps, false, false), in[0], in[1], grad)
			if err != nil {
				return nil, err
			}
			dg, err := apply(normGradOp("RMSNormGradGamma", eps, false, true), in[0], grad)
			return G.Nodes{dx, dg}, err
		},
		gpu: normKernel(eps, false, "forward"),
	}, x, gamma)
}

func normShape(name string, arity int) func([]tensor.Shape) (tensor.Shape, error) {
	return func(in []tensor.Shape) (tensor.Shape, error) {
		x := in[0]
		if len(x) != 2 {
			return nil, shapeErr(name, "want x [N,D], got %v", x)
		}
		for _, p := range in[1:arity] {
			if len(p) != 1 || p[0] != x[1] {
				return nil, shapeErr(name, "want parameters of shape [%d], got %v", x[1], p)
			}
		}
		return x.Clone(), nil
	}
}

// rowStats returns the mean (0 for RMSNorm) and the inverse standard deviation
// (or root mean square) of one row, summing in float64: for float32 rows
// whose length is a multiple of 16, with AVX-512 (vec_amd64.s), otherwise in
// four accumulators (one chain of dependent adds would be latency-bound).
func rowStats[T Float](row []T, centered bool, eps float64) (mean, rstd float64) {
	d := float64(len(row))
	if r, ok := any(row).([]float32); ok && hasAVX512 && len(r)&15 == 0 && len(r) > 0 {
		if centered {
			mean = sumAVX512(&r[0], len(r)) / d
		}
		return mean, 1 / math.Sqrt(sumSqDevAVX512(&r[0], len(r), mean)/d+eps)
	}
	if centered {
		var s0, s1, s2, s3 float64
		i := 0
		for ; i+4 <= len(row); i += 4 {
			s0 += float64(row[i])
			s1 += float64(row[i+1])
			s2 += float64(row[i+2])
			s3 += float64(row[i+3])
		}
		for ; i < len(row); i++ {
			s0 += float64(row[i])
		}
		mean = ((s0 + s1) + (s2 + s3)) / d
	}
	var q0, q1, q2, q3 float64
	i := 0
	for ; i+4 <= len(row); i += 4 {
		c0, c1, c2, c3 := float64(row[i])-mean, float64(row[i+1])-mean, float64(row[i+2])-mean, float64(row[i+3])-mean
		q0 += c0 * c0
		q1 += c1 * c1
		q2 += c2 * c2
		q3 += c3 * c3
	}
	for ; i < len(row); i++ {
		c := float64(row[i]) - mean
		q0 += c * c
	}
	return mean, 1 / math.Sqrt(((q0+q1)+(q2+q3))/d+eps)
}

func layerNormForward[T Float](x, gamma, beta, y []T, n, d int, eps float64) {
	parallelFor(n, 4*d, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			row, out := x[r*d:(r+1)*d], y[r*d:(r+1)*d]
			mean, rstd := rowStats(row, true, eps)
			for j, v := range row {
				out[j] = T((float64(v)-mean)*rstd)*gamma[j] + beta[j]
			}
		}
	})
}

func rmsNormForward[T Float](x, gamma, y []T, n, d int, eps float64) {
	parallelFor(n, 3*d, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			row, out := x[r*d:(r+1)*d], y[r*d:(r+1)*d]
			_, rstd := rowStats(row, false, eps)
			for j, v := range row {
				out[j] = T(float64(v)*rstd) * gamma[j]
			}
		}
	})
}

// normGradOp is the backward of LayerNorm (centered) or RMSNorm: with
// gammaGrad it maps (x, dy) to dgamma [D], otherwise (x, gamma, dy) to dx.
func normGradOp(name string, eps float64, centered, gammaGrad bool) *op {
	name = fmt.Sprintf("%s(eps=%g)", name, eps)
	arity, typ, kernel := 3, fnType(2, 1, 2, 2), normKernel(eps, centered, "grad_x")
	if gammaGrad {
		arity, typ, kernel = 2, fnType(2, 2, 1), normKernel(eps, centered, "grad_gamma")
	}
	return &op{
		name:  name,
		arity: arity,
		typ:   typ,
		gpu:   kernel,
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if gammaGrad {
				return tensor.Shape{in[0][1]}, nil
			}
			return in[0].Clone(), nil
		},
		do: func(in []G.Value) (G.Value, error) {
			f32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			s := in[0].Shape()
			n, d := s[0], s[1]
			if gammaGrad {
				out := newTensor(in[0].Dtype(), d)
				if f32 {
					normGradGamma(data[float32](in[0]), data[float32](in[1]), data[float32](out), n, d, centered, eps)
				} else {
					normGradGamma(data[float64](in[0]), data[float64](in[1]), data[float64](out), n, d, centered, eps)
				}
				return out, nil
			}
			out := newTensor(in[0].Dtype(), n, d)
			if f32 {
				normGradX(data[float32](in[0]), data[float32](in[1]), data[float32](in[2]), data[float32](out), n, d, centered, eps)
			} else {
				normGradX(data[float64](in[0]), data[float64](in[1]), data[float64](in[2]), data[float64](out), n, d, centered, eps)
			}
			return out, nil
		},
	}
}

func normGradX[T Float](x, gamma, dy, dx []T, n, d int, centered bool, eps float64) {
	parallelFor(n, 8*d, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			row, g, out := x[r*d:(r+1)*d], dy[r*d:(r+1)*d], dx[r*d:(r+1)*d]
			mean, rstd := rowStats(row, centered, eps)
			// Two accumulators per sum (the chains of adds bound the speed).
			var sg0, sg1, sgx0, sgx1 float64
			j := 0
			for ; j+2 <= d; j += 2 {
				g0, g1 := float64(g[j]*gamma[j]), float64(g[j+1]*gamma[j+1])
				sg0 += g0
				sg1 += g1
				sgx0 += g0 * (float64(row[j]) - mean) * rstd
				sgx1 += g1 * (float64(row[j+1]) - mean) * rstd
			}
			for ; j < d; j++ {
				g0 := float64(g[j] * gamma[j])
				sg0 += g0
				sgx0 += g0 * (float64(row[j]) - mean) * rstd
			}
			sg := (sg0 + sg1) / float64(d)
			sgx := (sgx0 + sgx1) / float64(d)
			if !centered {
				sg = 0
			}
			for j, v := range row {
				gj := float64(g[j] * gamma[j])
				xhat := (float64(v) - mean) * rstd
				out[j] = T(rstd * (gj - sg - xhat*sgx))
			}
		}
	})
}

func normGradGamma[T Float](x, dy, dgamma []T, n, d int, centered bool, eps float64) {
	acc := make([]float64, d)
	for r := 0; r < n; r++ {
		row, g := x[r*d:(r+1)*d], dy[r*d:(r+1)*d]
		mean, rstd := rowStats(row, centered, eps)
		for j, v := range row {
			acc[j] += float64(g[j]) * (float64(v) - mean) * rstd
		}
	}
	for j := range acc {
		dgamma[j] = T(acc[j])
	}
}
