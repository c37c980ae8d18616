package graph

import (
	"fmt"
	"math"
	"math/rand/v2"

	G "gorgonia.org/gorgonia"
)

// The GPU cases of the loss and the training step's ops. An output that
// is an input node (AdamWStep's parameter and moments) is read after the
// run: it was updated in place (on the device, the runner keeps it there
// and copies it back).

// crossEntropyCase checks SoftmaxCrossEntropy over n rows of v classes,
// about a third of them unscored, and its gradient with the loss's
// gradient g (a constant: Gorgonia's gradient of the loss is 1).
func crossEntropyCase(n, v int) GPUCase {
	return GPUCase{Name: "SoftmaxCrossEntropy and its gradient", Shape: fmt.Sprintf("%dx%d", n, v), Build: func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
		zv := gaussF32(rng, n*v, 3)
		tv, wv := make([]float32, n), make([]float32, n)
		for i := range tv {
			tv[i] = float32(rng.IntN(v))
			if rng.IntN(3) > 0 {
				wv[i] = 1
			}
		}
		wv[0] = 1 // at least one row scored
		z := inputF32(g, "z", append([]float32(nil), zv...), n, v)
		t := inputF32(g, "t", append([]float32(nil), tv...), n)
		w := inputF32(g, "w", append([]float32(nil), wv...), n)
		loss, err := SoftmaxCrossEntropy(z, t, w)
		if err != nil {
			return nil, nil, err
		}
		grads, err := G.Grad(loss, z)
		if err != nil {
			return nil, nil, err
		}
		var wsum, lsum float64
		dz := make([]float64, n*v)
		for i := 0; i < n; i++ {
			wsum += float64(wv[i])
		}
		for i := 0; i < n; i++ {
			if wv[i] == 0 {
				continue
			}
			row := f64(zv[i*v : (i+1)*v])
			mx := math.Inf(-1)
			for _, x := range row {
				mx = math.Max(mx, x)
			}
			var se float64
			for _, x := range row {
				se += math.Exp(x - mx)
			}
			lse := mx + math.Log(se)
			lsum += float64(wv[i]) * (lse - row[int(tv[i])])
			for j, x := range row {
				dz[i*v+j] = float64(wv[i]) / wsum * math.Exp(x-lse)
			}
			dz[i*v+int(tv[i])] -= float64(wv[i]) / wsum
		}
		return []*G.Node{loss, grads[0]}, [][]float64{{lsum / wsum}, dz}, nil
	}}
}

// correctCountCase checks CorrectCount on n rows of v classes, with ties
// (logits rounded to halves) and unscored rows.
func correctCountCase(n, v int) GPUCase {
	return GPUCase{Name: "CorrectCount", Shape: fmt.Sprintf("%dx%d", n, v), Build: func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
		zv := make([]float32, n*v)
		for i := range zv {
			zv[i] = float32(rng.IntN(5)) / 2
		}
		tv, wv := make([]float32, n), make([]float32, n)
		var correct, scored float64
		for i := range tv {
			row := zv[i*v : (i+1)*v]
			best := 0
			for j, x := range row {
				if x > row[best] {
					best = j
				}
			}
			tv[i] = float32(rng.IntN(v))
			if rng.IntN(2) == 0 {
				tv[i] = float32(best) // some right
			}
			if rng.IntN(4) > 0 {
				wv[i] = 1
				scored++
				if int(tv[i]) == best {
					correct++
				}
			}
		}
		z := inputF32(g, "z", zv, n, v)
		t := inputF32(g, "t", tv, n)
		w := inputF32(g, "w", wv, n)
		c, err := CorrectCount(z, t, w)
		if err != nil {
			return nil, nil, err
		}
		return []*G.Node{c}, [][]float64{{correct, scored}}, nil
	}}
}

// adamWCase checks GradSquaredNorm over two gradients and AdamWStep on a
// matrix (with weight decay) and a vector, clipped when clip is true (the
// clip a third of the norm), from moments that are not zero (step 3).
func adamWCase(clip bool) GPUCase {
	const rows, cols = 37, 70
	return GPUCase{Name: fmt.Sprintf("GradSquaredNorm and AdamWStep (clipped=%t)", clip), Shape: fmt.Sprintf("%dx%d and %d", rows, cols, cols), Build: func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
		sizes := []int{rows * cols, cols}
		var outs []*G.Node
		var refs [][]float64
		var grads G.Nodes
		var gvals [][]float32
		var sq float64
		for k, n := range sizes {
			gv := gaussF32(rng, n, 1)
			for _, x := range gv {
				sq += float64(x) * float64(x)
			}
			shape := []int{n}
			if k == 0 {
				shape = []int{rows, cols}
			}
			grads = append(grads, inputF32(g, fmt.Sprintf("g%d", k), append([]float32(nil), gv...), shape...))
			gvals = append(gvals, gv)
		}
		loss := G.NewScalar(g, G.Float32, G.WithName("loss"), G.WithValue(float32(1.5)))
		sqn, err := GradSquaredNorm(loss, grads, nil)
		if err != nil {
			return nil, nil, err
		}
		c := 0.0
		if clip {
			c = math.Sqrt(sq) / 3
		}
		h := AdamWHyper(1e-2, 0.9, 0.95, 1e-8, c, 3)
		hv := make([]float32, len(h))
		for i, x := range h {
			hv[i] = float32(x)
		}
		hyper := inputF32(g, "hyper", hv, len(hv))
		outs = append(outs, sqn)
		refs = append(refs, []float64{sq})
		for k, n := range sizes {
			wv, mv := gaussF32(rng, n, 1), gaussF32(rng, n, 0.1)
			vv := make([]float32, n)
			for i := range vv {
				vv[i] = float32(rng.Float64() * 0.01)
			}
			shape := grads[k].Shape()
			w := inputF32(g, fmt.Sprintf("w%d", k), append([]float32(nil), wv...), shape...)
			m := inputF32(g, fmt.Sprintf("m%d", k), append([]float32(nil), mv...), shape...)
			v := inputF32(g, fmt.Sprintf("v%d", k), append([]float32(nil), vv...), shape...)
			wd := 0.0
			if k == 0 {
				wd = 0.1
			}
			if _, err := AdamWStep(w, grads[k], m, v, sqn, hyper, wd); err != nil {
				return nil, nil, err
			}
			// the reference, written out here (not adamwStep, the CPU op
			// it checks), in float64 from the same float32 values
			h64 := f64(hv)
			lr, b1, b2, eps, c1, c2 := h64[0], h64[1], h64[2], h64[3], h64[4], h64[5]
			scale := 1.0
			if clip {
				scale = h64[6] / math.Sqrt(sq)
			}
			w64, m64, v64 := make([]float64, n), make([]float64, n), make([]float64, n)
			for i := range w64 {
				gi := float64(gvals[k][i]) * scale
				m64[i] = b1*float64(mv[i]) + (1-b1)*gi
				v64[i] = b2*float64(vv[i]) + (1-b2)*gi*gi
				x := float64(wv[i])
				w64[i] = x - lr*(float64(float32(wd))*x+(m64[i]/c1)/(math.Sqrt(v64[i]/c2)+eps))
			}
			outs = append(outs, w, m, v)
			refs = append(refs, w64, m64, v64)
		}
		return outs, refs, nil
	}}
}

// dotCase checks Dot and its gradient.
func dotCase(n, d int) GPUCase {
	return GPUCase{Name: "Dot and its gradient", Shape: fmt.Sprintf("%dx%d", n, d), Build: func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
		xv, rv := gaussF32(rng, n*d, 1), gaussF32(rng, n*d, 1)
		x := inputF32(g, "x", append([]float32(nil), xv...), n, d)
		r := inputF32(g, "r", append([]float32(nil), rv...), n, d)
		y, err := Dot(x, r)
		if err != nil {
			return nil, nil, err
		}
		grads, err := G.Grad(y, x)
		if err != nil {
			return nil, nil, err
		}
		var s float64
		for i := range xv {
			s += float64(xv[i]) * float64(rv[i])
		}
		return []*G.Node{y, grads[0]}, [][]float64{{s}, f64(rv)}, nil
	}}
}

// rotaryCase checks Rotary (partial RoPE, or xPos on the query or key
// side) and its gradient against the CPU op in float64.
func rotaryCase(s RotaryShape) GPUCase {
	kind := "RoPE"
	if s.XPosScaleBase > 0 {
		kind = fmt.Sprintf("xPos (query=%t)", s.Query)
	}
	return GPUCase{Name: "Rotary and its gradient, " + kind, Shape: fmt.Sprintf("B%d T%d H%d d%d rotated %d", s.Batch, s.SeqLen, s.Heads, s.HeadDim, s.RotDims), Build: func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
		rows, cols := s.Batch*s.SeqLen, s.Heads*s.HeadDim
		xv, rv := gaussF32(rng, rows*cols, 1), gaussF32(rng, rows*cols, 1)
		x := inputF32(g, "x", append([]float32(nil), xv...), rows, cols)
		r := inputF32(g, "r", append([]float32(nil), rv...), rows, cols)
		y, err := Rotary(x, s)
		if err != nil {
			return nil, nil, err
		}
		grads, err := weightedSumGrads(y, r, x)
		if err != nil {
			return nil, nil, err
		}
		cos, sin := s.factors()
		wantY, wantDX := make([]float64, rows*cols), make([]float64, rows*cols)
		rotate(s, cos, sin, false, f64(xv), wantY)
		rotate(s, cos, sin, true, f64(rv), wantDX) // the gradient is the transpose
		return []*G.Node{y, grads[0]}, [][]float64{wantY, wantDX}, nil
	}}
}

// combineCase checks Combine and its gradients.
func combineCase(n, d int) GPUCase {
	const alpha, beta = 0.3, -1.7
	return GPUCase{Name: "Combine and its gradients", Shape: fmt.Sprintf("%dx%d", n, d), Build: func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
		av, bv, rv := gaussF32(rng, n*d, 1), gaussF32(rng, n*d, 1), gaussF32(rng, n*d, 1)
		a := inputF32(g, "a", append([]float32(nil), av...), n, d)
		b := inputF32(g, "b", append([]float32(nil), bv...), n, d)
		r := inputF32(g, "r", append([]float32(nil), rv...), n, d)
		y, err := Combine(a, b, alpha, beta)
		if err != nil {
			return nil, nil, err
		}
		grads, err := weightedSumGrads(y, r, a, b)
		if err != nil {
			return nil, nil, err
		}
		want, da, db := make([]float64, n*d), make([]float64, n*d), make([]float64, n*d)
		for i := range want {
			want[i] = alpha*float64(av[i]) + beta*float64(bv[i])
			da[i], db[i] = alpha*float64(rv[i]), beta*float64(rv[i])
		}
		return []*G.Node{y, grads[0], grads[1]}, [][]float64{want, da, db}, nil
	}}
}

// concatHeadsCase checks ConcatHeads (b per head, or shared by the heads)
// and its gradients against the CPU functions in float64.
func concatHeadsCase(n, heads, da, db int, shared bool) GPUCase {
	hb := heads
	if shared {
		hb = 1
	}
	return GPUCase{Name: fmt.Sprintf("ConcatHeads (shared=%t) and its gradients", shared), Shape: fmt.Sprintf("%d rows, %d heads of %d+%d", n, heads, da, db), Build: func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
		w := heads * (da + db)
		av, bv, rv := gaussF32(rng, n*heads*da, 1), gaussF32(rng, n*hb*db, 1), gaussF32(rng, n*w, 1)
		a := inputF32(g, "a", append([]float32(nil), av...), n, heads*da)
		b := inputF32(g, "b", append([]float32(nil), bv...), n, hb*db)
		r := inputF32(g, "r", append([]float32(nil), rv...), n, w)
		y, err := ConcatHeads(a, b, heads, shared)
		if err != nil {
			return nil, nil, err
		}
		grads, err := weightedSumGrads(y, r, a, b)
		if err != nil {
			return nil, nil, err
		}
		want, ga, gb := make([]float64, n*w), make([]float64, n*heads*da), make([]float64, n*hb*db)
		concatHeads(n, heads, da, hb, db, f64(av), f64(bv), want)
		splitHeads(n, heads, da, hb, db, f64(rv), ga, gb)
		return []*G.Node{y, grads[0], grads[1]}, [][]float64{want, ga, gb}, nil
	}}
}

// mohCase checks MoHGates and its gradient (shared and routed heads, or
// routed only) against the CPU functions in float64.
func mohCase(n, heads, shared, topK int) GPUCase {
	m := mohRouting{heads: heads, shared: shared, topK: topK, softmax: true}
	return GPUCase{Name: "MoHGates and its gradient", Shape: fmt.Sprintf("%d tokens, %d heads (%d shared, top %d)", n, heads, shared, topK), Build: func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
		w := m.width()
		zv, rv := gaussF32(rng, n*w, 2), gaussF32(rng, n*heads, 1)
		z := inputF32(g, "z", append([]float32(nil), zv...), n, w)
		r := inputF32(g, "r", append([]float32(nil), rv...), n, heads)
		y, err := MoHGates(z, heads, shared, topK, true)
		if err != nil {
			return nil, nil, err
		}
		grads, err := weightedSumGrads(y, r, z)
		if err != nil {
			return nil, nil, err
		}
		want, dz := make([]float64, n*heads), make([]float64, n*w)
		mohForward(m, n, f64(zv), want)
		mohBackward(m, n, f64(zv), f64(rv), dz)
		return []*G.Node{y, grads[0]}, [][]float64{want, dz}, nil
	}}
}

// scaleHeadsCase checks ScaleHeads and its gradients (the second through
// HeadDots) against the CPU functions in float64.
func scaleHeadsCase(n, heads, d int) GPUCase {
	return GPUCase{Name: "ScaleHeads and its gradients", Shape: fmt.Sprintf("%d rows, %d heads of %d", n, heads, d), Build: func(g *G.ExprGraph, rng *rand.Rand) ([]*G.Node, [][]float64, error) {
		ov, gv, rv := gaussF32(rng, n*heads*d, 1), gaussF32(rng, n*heads, 1), gaussF32(rng, n*heads*d, 1)
		o := inputF32(g, "o", append([]float32(nil), ov...), n, heads*d)
		gt := inputF32(g, "g", append([]float32(nil), gv...), n, heads)
		r := inputF32(g, "r", append([]float32(nil), rv...), n, heads*d)
		y, err := ScaleHeads(o, gt)
		if err != nil {
			return nil, nil, err
		}
		grads, err := weightedSumGrads(y, r, o, gt)
		if err != nil {
			return nil, nil, err
		}
		want, do, dg := make([]float64, n*heads*d), make([]float64, n*heads*d), make([]float64, n*heads)
		scaleHeads(n, heads, d, f64(ov), f64(gv), want)
		scaleHeads(n, heads, d, f64(rv), f64(gv), do)
		headDots(n, heads, d, f64(rv), f64(ov), dg)
		return []*G.Node{y, grads[0], grads[1]}, [][]float64{want, do, dg}, nil
	}}
}
