package train

import (
	"math"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/graph"
)

func TestSchedule(t *testing.T) {
	cases := []struct {
		s    Schedule
		step int
		want float64
	}{
		{Schedule{Kind: "cosine", Peak: 1, MinRatio: 0.1, Warmup: 10, Total: 110}, 5, 0.5},
		{Schedule{Kind: "cosine", Peak: 1, MinRatio: 0.1, Warmup: 10, Total: 110}, 10, 1},
		{Schedule{Kind: "cosine", Peak: 1, MinRatio: 0.1, Warmup: 10, Total: 110}, 60, 0.55},
		{Schedule{Kind: "cosine", Peak: 1, MinRatio: 0.1, Warmup: 10, Total: 110}, 110, 0.1},
		{Schedule{Kind: "linear", Peak: 2, MinRatio: 0, Warmup: 0, Total: 100}, 50, 1},
		{Schedule{Kind: "constant", Peak: 3, Warmup: 4, Total: 100}, 2, 1.5},
		{Schedule{Kind: "constant", Peak: 3, Warmup: 4, Total: 100}, 90, 3},
	}
	for _, c := range cases {
		if got := c.s.At(c.step); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("%+v at %d: %v, want %v", c.s, c.step, got, c.want)
		}
	}
}

// One AdamW step by hand: after bias correction the first update moves each
// weight by lr * (g/|g| + wd*w) for matrices, lr * g/|g| for vectors.
func TestAdamWFirstStep(t *testing.T) {
	store, _ := graph.NewStore(tensor.Float64, 1)
	w, _ := store.Param("w", []int{1, 2}, graph.Constant(2))
	b, _ := store.Param("b", []int{2}, graph.Constant(2))
	opt := NewAdamW(store, 0.9, 0.999, 0, 0.1)
	grads := []G.Value{
		tensor.New(tensor.WithShape(1, 2), tensor.WithBacking([]float64{0.5, -3})),
		tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{4, -0.25})),
	}
	if err := opt.Update(grads, 0.01, 1); err != nil {
		t.Fatal(err)
	}
	want := map[*graph.Param][]float64{w: {2 - 0.01*(1+0.2), 2 - 0.01*(-1+0.2)}, b: {2 - 0.01, 2 + 0.01}}
	for p, ws := range want {
		for i, x := range p.Value.Data().([]float64) {
			if math.Abs(x-ws[i]) > 1e-12 {
				t.Errorf("%s[%d] = %v, want %v", p.Name, i, x, ws[i])
			}
		}
	}
	if GlobalNorm(grads) != math.Sqrt(0.25+9+16+0.0625) {
		t.Errorf("global norm %v", GlobalNorm(grads))
	}
}
