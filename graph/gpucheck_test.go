package graph

import (
	"testing"

	G "gorgonia.org/gorgonia"
)

// The GPU checks' graphs and float64 references (Gorgonia's ops and the
// package's), run on the CPU's float32 ops: every case must pass there with gpucheck's bound (1e-5 relative),
// so a wrong reference or case fails here and not on the device.
func TestGPUCasesOnTheCPU(t *testing.T) {
	rng := testRNG(t)
	for _, c := range append(GorgoniaGPUCases(), GPUCases()...) {
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
				if e := GPURelErr(v.Data().([]float32), refs[i]); !(e <= 1e-5) {
					t.Errorf("output %d: relative error %.2e over 1e-5", i, e)
				}
			}
		})
	}
}
