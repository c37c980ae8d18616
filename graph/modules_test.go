package graph

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The module ops (modules.go) against slow references written from their
// definitions, in float64 and float32, and gradient-checked by finite
// differences, causal and bidirectional, with and without padding.

// refPrefix is the definition of PrefixMean / PrefixMax: for each row t,
// the statistic over the real positions s of the same sequence with s <= t
// (causal) or any s.
func refPrefix(x, mask []float64, batch, seqLen, c int, causal, isMax bool) []float64 {
	out := make([]float64, len(x))
	for b := 0; b < batch; b++ {
		for t := 0; t < seqLen; t++ {
			for j := 0; j < c; j++ {
				n, sum, mx := 0, 0.0, math.Inf(-1)
				for s := 0; s < seqLen; s++ {
					if (causal && s > t) || (mask != nil && mask[b*seqLen+s] == 0) {
						continue
					}
					v := x[(b*seqLen+s)*c+j]
					n++
					sum += v
					mx = math.Max(mx, v)
				}
				if n == 0 {
					continue
				}
				if isMax {
					out[(b*seqLen+t)*c+j] = mx
				} else {
					out[(b*seqLen+t)*c+j] = sum / float64(n)
				}
			}
		}
	}
	return out
}

func refSeqConv(x, w, mask []float64, batch, seqLen, c int, offsets []int) []float64 {
	out := make([]float64, len(x))
	for b := 0; b < batch; b++ {
		for t := 0; t < seqLen; t++ {
			for j, off := range offsets {
				s := t + off
				if s < 0 || s >= seqLen || (mask != nil && mask[b*seqLen+s] == 0) {
					continue
				}
				for k := 0; k < c; k++ {
					out[(b*seqLen+t)*c+k] += w[j*c+k] * x[(b*seqLen+s)*c+k]
				}
			}
		}
	}
	return out
}

// evalOp runs build on float tensors of dtype dt holding vals and returns
// its output as float64.
func evalOp(t *testing.T, dt tensor.Dtype, vals [][]float64, shapes [][]int, build func(in []*G.Node) (*G.Node, error)) []float64 {
	t.Helper()
	g := G.NewGraph()
	in := make([]*G.Node, len(vals))
	for i, v := range vals {
		if v == nil {
			continue
		}
		tv := newTensor(dt, shapes[i]...)
		switch d := tv.Data().(type) {
		case []float32:
			for k, x := range v {
				d[k] = float32(x)
			}
		case []float64:
			copy(d, v)
		}
		in[i] = G.NewTensor(g, dt, len(shapes[i]), G.WithShape(shapes[i]...), G.WithName(fmt.Sprint("in", i)), G.WithValue(tv))
	}
	out, err := build(in)
	if err != nil {
		t.Fatal(err)
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	return Float64s(out.Value())
}

// moduleMask is a padding mask for batch sequences that keeps the first
// position of each sequence, pads at random inside, and pads the tail of
// the last sequence (padding in the middle and at the end).
func moduleMask(rng *rand.Rand, batch, seqLen int) []float64 {
	m := make([]float64, batch*seqLen)
	for i := range m {
		if i%seqLen == 0 || rng.Float64() < 0.6 {
			m[i] = 1
		}
	}
	m[batch*seqLen-1] = 0
	return m
}

type moduleOpCase struct {
	name   string
	causal bool
	masked bool
}

var moduleOpCases = []moduleOpCase{
	{"causal", true, false}, {"causal-padded", true, true},
	{"bidirectional", false, false}, {"bidirectional-padded", false, true},
}

func TestPrefixStatsMatchReference(t *testing.T) {
	rng := testRNG(t)
	const batch, seqLen, c = 3, 7, 4
	for _, isMax := range []bool{false, true} {
		for _, cs := range moduleOpCases {
			t.Run(fmt.Sprintf("max=%t/%s", isMax, cs.name), func(t *testing.T) {
				x := RandomTensor(rng, 1, batch*seqLen, c).Data().([]float64)
				var mask []float64
				if cs.masked {
					mask = moduleMask(rng, batch, seqLen)
				}
				want := refPrefix(x, mask, batch, seqLen, c, cs.causal, isMax)
				for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
					got := evalOp(t, dt, [][]float64{x, mask}, [][]int{{batch * seqLen, c}, {batch * seqLen}}, func(in []*G.Node) (*G.Node, error) {
						if isMax {
							return PrefixMax(in[0], in[1], batch, seqLen, cs.causal)
						}
						return PrefixMean(in[0], in[1], batch, seqLen, cs.causal)
					})
					tol := 1e-12
					if dt == tensor.Float32 {
						tol = 1e-6
					}
					if d := maxAbsDiff(got, want); d > tol {
						t.Errorf("%v: max |got - reference| = %.3g > %g", dt, d, tol)
					}
				}
			})
		}
	}
}

func TestPrefixStatsGradients(t *testing.T) {
	rng := testRNG(t)
	const batch, seqLen, c = 2, 6, 3
	for _, isMax := range []bool{false, true} {
		for _, cs := range moduleOpCases {
			t.Run(fmt.Sprintf("max=%t/%s", isMax, cs.name), func(t *testing.T) {
				g := G.NewGraph()
				// distinct values, so no finite-difference step crosses a tie of the max
				x := Variable(g, "x", RandomTensor(rng, 1, batch*seqLen, c))
				var m *G.Node
				if cs.masked {
					m = Variable(g, "mask", tensor.New(tensor.WithShape(batch*seqLen), tensor.WithBacking(moduleMask(rng, batch, seqLen))))
				}
				var out *G.Node
				var err error
				if isMax {
					out, err = PrefixMax(x, m, batch, seqLen, cs.causal)
				} else {
					out, err = PrefixMean(x, m, batch, seqLen, cs.causal)
				}
				if err != nil {
					t.Fatal(err)
				}
				res, err := GradCheck{MaxPerInput: -1}.Run(g, out, []*G.Node{x})
				if err != nil {
					t.Fatal(err)
				}
				if !res.Pass {
					t.Errorf("gradient check failed: %v", res)
				}
			})
		}
	}
}

// TestPrefixMaxTiesGoToTheEarliest: with equal maxima the whole gradient
// goes to the first of them.
func TestPrefixMaxTiesGoToTheEarliest(t *testing.T) {
	g := G.NewGraph()
	x := Variable(g, "x", tensor.New(tensor.WithShape(4, 1), tensor.WithBacking([]float64{1, 3, 3, 2})))
	out, err := PrefixMax(x, nil, 1, 4, true)
	if err != nil {
		t.Fatal(err)
	}
	loss, err := G.Sum(out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := G.Grad(loss, x); err != nil {
		t.Fatal(err)
	}
	m := G.NewTapeMachine(g, G.BindDualValues(x))
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	gv, _ := x.Grad()
	if got, want := Float64s(gv), []float64{1, 3, 0, 0}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("gradient %v, want %v", got, want)
	}
}

var seqConvOffsets = map[string][]int{
	"causal-dilated":  {0, -1, -2, 0, -2, -4},
	"centred-dilated": {-2, 0, 2, -1, 0, 1},
	"beyond-sequence": {-9, 0, 3},
}

func TestSeqConvMatchesReference(t *testing.T) {
	rng := testRNG(t)
	const batch, seqLen, c = 2, 7, 3
	for name, offs := range seqConvOffsets {
		for _, masked := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/masked=%t", name, masked), func(t *testing.T) {
				x := RandomTensor(rng, 1, batch*seqLen, c).Data().([]float64)
				w := RandomTensor(rng, 1, len(offs), c).Data().([]float64)
				var mask []float64
				if masked {
					mask = moduleMask(rng, batch, seqLen)
				}
				want := refSeqConv(x, w, mask, batch, seqLen, c, offs)
				for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
					got := evalOp(t, dt, [][]float64{x, w, mask}, [][]int{{batch * seqLen, c}, {len(offs), c}, {batch * seqLen}},
						func(in []*G.Node) (*G.Node, error) { return SeqConv(in[0], in[1], in[2], batch, seqLen, offs) })
					tol := 1e-12
					if dt == tensor.Float32 {
						tol = 1e-5
					}
					if d := maxAbsDiff(got, want); d > tol {
						t.Errorf("%v: max |got - reference| = %.3g > %g", dt, d, tol)
					}
				}
			})
		}
	}
}

func TestSeqConvGradients(t *testing.T) {
	rng := testRNG(t)
	const batch, seqLen, c = 2, 6, 3
	for name, offs := range seqConvOffsets {
		for _, masked := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/masked=%t", name, masked), func(t *testing.T) {
				g := G.NewGraph()
				x := Variable(g, "x", RandomTensor(rng, 1, batch*seqLen, c))
				w := Variable(g, "w", RandomTensor(rng, 1, len(offs), c))
				var m *G.Node
				if masked {
					m = Variable(g, "mask", tensor.New(tensor.WithShape(batch*seqLen), tensor.WithBacking(moduleMask(rng, batch, seqLen))))
				}
				out, err := SeqConv(x, w, m, batch, seqLen, offs)
				if err != nil {
					t.Fatal(err)
				}
				res, err := GradCheck{MaxPerInput: -1}.Run(g, out, []*G.Node{x, w})
				if err != nil {
					t.Fatal(err)
				}
				if !res.Pass {
					t.Errorf("gradient check failed: %v", res)
				}
			})
		}
	}
}

func TestRowMaxAndRowScale(t *testing.T) {
	rng := testRNG(t)
	x := RandomTensor(rng, 1, 5, 4).Data().([]float64)
	gate := RandomTensor(rng, 1, 5).Data().([]float64)
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		mx := evalOp(t, dt, [][]float64{x}, [][]int{{5, 4}}, func(in []*G.Node) (*G.Node, error) { return RowMax(in[0]) })
		sc := evalOp(t, dt, [][]float64{x, gate}, [][]int{{5, 4}, {5}}, func(in []*G.Node) (*G.Node, error) { return RowScale(in[0], in[1]) })
		for i := 0; i < 5; i++ {
			want := math.Inf(-1)
			for j := 0; j < 4; j++ {
				want = math.Max(want, x[i*4+j])
				if d := math.Abs(sc[i*4+j] - x[i*4+j]*gate[i]); d > 1e-6 {
					t.Errorf("%v: RowScale[%d,%d] off by %.3g", dt, i, j, d)
				}
			}
			if d := math.Abs(mx[i] - want); d > 1e-6 {
				t.Errorf("%v: RowMax[%d] = %v, want %v", dt, i, mx[i], want)
			}
		}
	}
	for _, name := range []string{"RowMax", "RowScale"} {
		g := G.NewGraph()
		xn := Variable(g, "x", RandomTensor(rng, 1, 5, 4))
		gn := Variable(g, "g", RandomTensor(rng, 1, 5))
		var out *G.Node
		var err error
		wrt := []*G.Node{xn}
		if name == "RowMax" {
			out, err = RowMax(xn)
		} else {
			out, err = RowScale(xn, gn)
			wrt = append(wrt, gn)
		}
		if err != nil {
			t.Fatal(err)
		}
		res, err := GradCheck{MaxPerInput: -1}.Run(g, out, wrt)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Pass {
			t.Errorf("%s: gradient check failed: %v", name, res)
		}
	}
}
