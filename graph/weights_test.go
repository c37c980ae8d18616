package graph

import (
	"math"
	"testing"

	G "gorgonia.org/gorgonia"
)

// The weights AttentionWeights returns are the ones the cores use: P V
// equals the dense core's and the flash core's output (float64, 1e-12),
// each row sums to 1 over the keys it may see, and keys it may not see
// (causal, padding) get exactly 0.
func TestAttentionWeightsTimesValuesIsTheCore(t *testing.T) {
	rng := testRNG(t)
	for _, c := range attentionCases() {
		t.Run(c.name, func(t *testing.T) {
			s := c.shape
			g := G.NewGraph()
			dense, q, k, v, m, err := buildAttention(g, rng, s, c.masked, Attention)
			if err != nil {
				t.Fatal(err)
			}
			flash, err := FlashAttention(q, k, v, m, s, 2)
			if err != nil {
				t.Fatal(err)
			}
			w, err := AttentionWeights(q, k, m, s, nil)
			if err != nil {
				t.Fatal(err)
			}
			vm := G.NewTapeMachine(g)
			defer vm.Close()
			if err := vm.RunAll(); err != nil {
				t.Fatal(err)
			}
			if got, want := w.Shape(), []int{s.Batch * s.Heads * s.QLen, s.KLen}; got[0] != want[0] || got[1] != want[1] {
				t.Fatalf("weights of shape %v, want %v", got, want)
			}
			P, V := Float64s(w.Value()), Float64s(v.Value())
			var mask []float64
			if m != nil {
				mask = Float64s(m.Value())
			}
			dv := s.VDim()
			pv := make([]float64, s.Batch*s.QLen*s.Heads*dv)
			shift := s.KLen - s.QLen
			for b := 0; b < s.Batch; b++ {
				for h := 0; h < s.Heads; h++ {
					kh := h / (s.Heads / s.KVHeads)
					for i := 0; i < s.QLen; i++ {
						row := P[((b*s.Heads+h)*s.QLen+i)*s.KLen:][:s.KLen]
						var sum float64
						visible := 0
						for j, p := range row {
							hidden := (s.Causal && j > i+shift) || (mask != nil && mask[b*s.KLen+j] == 0)
							if hidden && p != 0 {
								t.Fatalf("b %d h %d query %d: weight %g on hidden key %d", b, h, i, p, j)
							}
							if !hidden {
								visible++
							}
							sum += p
							for c := 0; c < dv; c++ {
								pv[(b*s.QLen+i)*s.Heads*dv+h*dv+c] += p * V[(b*s.KLen+j)*s.KVHeads*dv+kh*dv+c]
							}
						}
						if want := math.Min(float64(visible), 1); math.Abs(sum-want) > 1e-12 {
							t.Errorf("b %d h %d query %d: weights sum to %v, want %v", b, h, i, sum, want)
						}
					}
				}
			}
			for _, core := range []struct {
				name string
				out  *G.Node
			}{{"dense", dense}, {"flash", flash}} {
				if d := maxRelDiff(pv, Float64s(core.out.Value())); d > 1e-12 {
					t.Errorf("weights x values differ from the %s core by %g (relative)", core.name, d)
				}
			}
		})
	}
}

// Shapes the cores would refuse are refused here too.
func TestAttentionWeightsShapeErrors(t *testing.T) {
	g := G.NewGraph()
	s := AttentionShape{Batch: 1, QLen: 3, KLen: 3, Heads: 2, KVHeads: 2, HeadDim: 2}
	q := Variable(g, "q", RandomTensor(testRNG(t), 1, 3, 4))
	k := Variable(g, "k", RandomTensor(testRNG(t), 1, 3, 2)) // one head's worth, not two
	if _, err := AttentionWeights(q, k, nil, s, nil); err == nil {
		t.Error("mismatched key shape accepted")
	}
	bad := s
	bad.KVHeads = 3
	if _, err := AttentionWeights(q, q, nil, bad, nil); err == nil {
		t.Error("3 kv heads for 2 query heads accepted")
	}
}
