package graph

import (
	"math"
	"testing"

	G "gorgonia.org/gorgonia"
)

// The GPU checks' graphs and float64 references, run on the CPU's float32
// ops: every case must pass there with gpucheck's bound (1e-5 relative),
// so a wrong reference or case fails here and not on the device.
func TestGPUCasesOnTheCPU(t *testing.T) {
	rng := testRNG(t)
	for _, c := range GPUCases() {
		t.Run(c.Name+" "+c.Shape, func(t *testing.T) {
			g := G.NewGraph()
			outs, refs, err := c.Build(g, rng)
			if err != nil {
				t.Fatal(err)
			}
			vals := make([]G.Value, len(outs))
			for i, o := range outs {
				G.Read(o, &vals[i])
			}
			vm := G.NewTapeMachine(g)
			defer vm.Close()
			if err := vm.RunAll(); err != nil {
				t.Fatal(err)
			}
			for i, v := range vals {
				got := v.Data().([]float32)
				if len(got) != len(refs[i]) {
					t.Fatalf("output %d: %d values, reference %d", i, len(got), len(refs[i]))
				}
				var num, den float64
				for j, w := range refs[i] {
					d := float64(got[j]) - w
					num, den = num+d*d, den+w*w
				}
				if e := math.Sqrt(num / den); !(e <= 1e-5) {
					t.Errorf("output %d: relative error %.2e over 1e-5", i, e)
				}
			}
		})
	}
}
