package layers

import (
	"strings"
	"testing"
	"time"

	"github.com/attnlab/attnlab/config"
)

// TestTopKAllKeysIsStandard: topk with k >= T keeps every visible key, so
// the whole layer is standard attention: outputs and the gradients of the
// input and of every parameter to 1e-10 (float64), in every gradient-check
// setting (causal and bidirectional, padded, the position schemes, several
// tiles). Unpadded, with k < T (k = 2) it must differ, or the test could
// not fail (padded, every row may see at most 2 keys).
func TestTopKAllKeysIsStandard(t *testing.T) {
	for _, st := range CheckSettings() {
		t.Run(st.Name, func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			want := runLayer(t, config.Component{Kind: "standard"}, st, seed)
			got := runLayer(t, config.Component{Kind: "topk", Options: map[string]any{"k": st.SeqLen}}, st, seed)
			if d := relDiff(got.out, want.out); !(d <= 1e-10) {
				t.Errorf("output: relative difference %g", d)
			}
			if d := relDiff(got.dx, want.dx); !(d <= 1e-10) {
				t.Errorf("input gradient: relative difference %g", d)
			}
			for name, w := range want.dparams {
				g, ok := got.dparams[name]
				if !ok {
					t.Errorf("topk has no parameter %s", name)
					continue
				}
				if d := relDiff(g, w); !(d <= 1e-10) {
					t.Errorf("gradient of %s: relative difference %g", name, d)
				}
			}
			if len(got.dparams) != len(want.dparams) {
				t.Errorf("topk has %d parameters, standard %d", len(got.dparams), len(want.dparams))
			}
			if st.Padded {
				return
			}
			small := runLayer(t, config.Component{Kind: "topk", Options: map[string]any{"k": 2}}, st, seed)
			if d := relDiff(small.out, want.out); d < 1e-6 {
				t.Errorf("k=2 of %d: output equals standard's (relative difference %g)", st.SeqLen, d)
			}
		})
	}
}

// TestTopKOptions: k must be positive, and the error names its key.
func TestTopKOptions(t *testing.T) {
	st := CheckSettings()[0]
	for _, k := range []int{0, -3} {
		_, err := NewAttention(config.Component{Kind: "topk", Options: map[string]any{"k": k}}, st.spec())
		if err == nil {
			t.Errorf("k=%d: no error", k)
		} else if want := "model.attention.k"; !strings.Contains(err.Error(), want) {
			t.Errorf("k=%d: error %q does not name %s", k, err, want)
		}
	}
}
