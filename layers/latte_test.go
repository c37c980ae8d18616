package layers

import (
	"math"
	"strings"
	"testing"

	"github.com/attnlab/attnlab/config"
)

// Latte's options: bad sizes are config errors naming their key; the
// recurrent state is H x L x (D/H + 1) (the sums N and D per head), and
// there is no KV cache.
func TestLatteOptionsAndState(t *testing.T) {
	for _, c := range []struct {
		name    string
		opts    map[string]any
		wantErr string
		state   int
	}{
		{"defaults", nil, "", 4 * DefaultLatteLatents * (16 + 1)},
		{"latents 5", map[string]any{"latents": 5}, "", 4 * 5 * 17},
		{"no latents", map[string]any{"latents": 0}, "model.attention.latents", 0},
		{"no chunk", map[string]any{"chunk": 0}, "model.attention.chunk", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, err := NewAttention(config.Component{Kind: "latte", Options: c.opts}, Spec{DModel: 64, Heads: 4, NLayers: 2, Causal: true, Pos: Position{Kind: "learned"}})
			if c.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), c.wantErr+":") {
					t.Fatalf("error %v, want one naming %s", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			st, ok := a.(RecurrentState)
			if !ok || st.StateElems() != c.state {
				t.Fatalf("state %v (%v), want %d", ok, st, c.state)
			}
			if _, kv := a.(KVCache); kv {
				t.Error("latte claims a KV cache")
			}
		})
	}
}

// The chunk size of the causal scan changes nothing but rounding: the
// layer's output with chunks of 1, 2, 4 and 64 (more than T) agree to
// 1e-12, causal and padded, and bidirectional.
func TestLatteChunkDoesNotChangeOutput(t *testing.T) {
	for _, st := range []CheckSetting{
		{Name: "causal-padded", Causal: true, Padded: true, Batch: 2, SeqLen: 9, DModel: 8, Heads: 2},
		{Name: "bidirectional-padded", Padded: true, Batch: 2, SeqLen: 9, DModel: 8, Heads: 2},
	} {
		var ref []float64
		for _, chunk := range []int{64, 1, 2, 4} {
			st.Options = map[string]any{"latents": 3, "chunk": chunk}
			out, _, err := mapRun(t, "latte", st, 17, false)
			if err != nil {
				t.Fatal(err)
			}
			if ref == nil {
				ref = out
				continue
			}
			d := 0.0
			for i := range out {
				d = math.Max(d, math.Abs(out[i]-ref[i]))
			}
			if !(d <= 1e-12) {
				t.Errorf("%s: chunk %d differs from chunk 64 by %g", st.Name, chunk, d)
			}
		}
		for i, y := range ref {
			if math.IsNaN(y) || math.IsInf(y, 0) {
				t.Fatalf("%s: output %d is %v", st.Name, i, y)
			}
		}
	}
}
