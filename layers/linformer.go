package layers

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// Linformer is low-rank attention (Wang et al. 2020, "Linformer:
// Self-Attention with Linear Complexity"): the keys and values are
// projected along the sequence to k rows by learned E, F [k, T] before
// attention,
//
//	head_h = softmax(Q_h (E K_h)^T / sqrt(d)) (F V_h)
//
// so each query attends to k projected rows: O(T k D) time and O(T D + T k)
// memory per layer. E mixes every position, future ones included, so the
// variant is bidirectional only; padded keys are zeroed before the
// projection. E and F have one column per position: the model's sequence
// length is fixed at build.
type Linformer struct {
	spec    Spec
	k       int
	shareKV bool
	bias    bool
}

func init() {
	Register("linformer", "low-rank attention (Linformer, Wang et al. 2020): keys and values projected along the sequence to k rows by learned E, F; O(T k); encoder only",
		Support{Bidirectional: true, Padding: true, Positions: []string{"learned", "sinusoidal", "none"},
			Why: Refusals{Causal: "projects every position, later ones included, into each of its k rows",
				Positions: "its k projected keys have no position to rotate or measure a distance to"},
			CheckOptions: map[string]any{"k": 3}},
		[]config.OptionSpec{
			{Name: "k", Kind: config.Int, Default: 64, Help: "rows the keys and values are projected to (the paper: 128 or 256; LRA: 16)"},
			{Name: "share_kv", Kind: config.Bool, Default: false, Help: "one projection E = F for keys and values"},
			{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the q, k, v and output projections"},
		},
		func(s Spec) (Attention, error) {
			a := &Linformer{spec: s, k: s.Options.Int("k"), shareKV: s.Options.Bool("share_kv"), bias: s.Options.Bool("bias")}
			if a.k < 1 {
				return nil, fmt.Errorf("model.attention.k: must be at least 1, got %d", a.k)
			}
			return a, nil
		})
}

// Forward implements Attention.
func (a *Linformer) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	d, H := a.spec.DModel, a.spec.Heads
	q, k, v, err := ProjectQKV(s, x, d, d, d, d, a.bias)
	if err != nil {
		return nil, err
	}
	init := graph.Uniform(1 / math.Sqrt(float64(c.SeqLen))) // as a linear map from T positions to k
	e, err := s.Param("proj_e", []int{a.k, c.SeqLen}, init)
	if err != nil {
		return nil, err
	}
	f := e
	if !a.shareKV {
		if f, err = s.Param("proj_f", []int{a.k, c.SeqLen}, init); err != nil {
			return nil, err
		}
	}
	pk, err := graph.SeqProject(e, k, c.KeyMask, c.Batch, c.SeqLen)
	if err != nil {
		return nil, err
	}
	pv, err := graph.SeqProject(f, v, c.KeyMask, c.Batch, c.SeqLen)
	if err != nil {
		return nil, err
	}
	o, _, err := c.Attend(q, pk, pv, CoreSpec{Heads: Heads{Heads: H, HeadDim: d / H},
		Shape: graph.AttentionShape{Batch: c.Batch, QLen: c.SeqLen, KLen: a.k},
		Map:   MapSpec{Cols: "projected", Note: "each query over the k projected keys E K"}})
	if err != nil {
		return nil, err
	}
	return Project(s, "wo", o, d, d, a.bias)
}
