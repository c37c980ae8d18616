package layers

import (
	"strings"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// TestSequenceParallelLayers: flash, gqa and mqa with their cores run by
// 3 sequence-parallel workers equal the same layers on one worker
// (output, input and parameter gradients to 1e-10) in every check
// setting they take, positions included; a variant whose core is another
// is refused.
func TestSequenceParallelLayers(t *testing.T) {
	for _, kind := range []string{"flash", "gqa", "mqa"} {
		for _, st := range CheckSettings() {
			c := config.Component{Kind: kind}
			if _, err := NewAttention(c, st.spec()); err != nil {
				continue // not applicable
			}
			t.Run(kind+"/"+st.Name, func(t *testing.T) {
				seed := uint64(time.Now().UnixNano())
				t.Logf("seed %d", seed)
				got := runLayerWith(t, c, st, seed, func(c *Context) { c.SequenceParallel = 3 })
				sameLayerRun(t, kind, got, runLayer(t, c, st, seed))
			})
		}
	}
	t.Run("sliding_window refused", func(t *testing.T) {
		st := CheckSettings()[0]
		a, err := NewAttention(config.Component{Kind: "sliding_window"}, st.spec())
		if err != nil {
			t.Fatal(err)
		}
		store, _ := graph.NewStore(tensor.Float64, 1)
		g := G.NewGraph()
		sh := Shape{Batch: st.Batch, SeqLen: st.SeqLen, DModel: st.DModel}
		x := graph.Variable(g, "x", tensor.New(tensor.WithShape(sh.Rows(), sh.DModel), tensor.Of(tensor.Float64)))
		_, err = a.Forward(NewScope(store.Bind(g)).Sub("attn"), x, Context{Shape: sh, Causal: st.Causal, SequenceParallel: 2})
		if err == nil || !strings.Contains(err.Error(), "model.sequence_parallel") {
			t.Fatalf("got %v, want the sequence_parallel refusal", err)
		}
	})
}
