package layers

import (
	"fmt"
	"math"
	"strings"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/graph"
)

// Positions are the position schemes, in the order errors list them.
var Positions = []string{"learned", "sinusoidal", "none", "rope", "partial_rope", "alibi", "xpos"}

// Position is a model's position scheme. learned and sinusoidal are added
// to the token embeddings (AddPositions); rope, partial_rope and xpos rotate
// each head's queries and keys inside attention (Rotate); alibi biases the
// attention scores (ALiBi). none adds nothing: the causal mask alone carries
// order in decoders.
type Position struct {
	Kind          string
	RopeBase      float64 // rope, partial_rope, xpos: frequency base
	RopeFraction  float64 // partial_rope: fraction of each head's dims rotated
	XPosScaleBase float64 // xpos: decay length scale
}

// ALiBi reports whether attention scores get ALiBi's linear distance bias.
func (p Position) ALiBi() bool { return p.Kind == "alibi" }

// Rotary reports whether queries and keys are rotated.
func (p Position) Rotary() bool {
	return p.Kind == "rope" || p.Kind == "partial_rope" || p.Kind == "xpos"
}

// Allow returns a config error unless the scheme is one of allowed; variant
// names the attention kind and why says what it lacks.
func (p Position) Allow(variant, why string, allowed ...string) error {
	for _, a := range allowed {
		if p.Kind == a {
			return nil
		}
	}
	return fmt.Errorf("model.positional: %s attention cannot use %q (%s); use %s", variant, p.Kind, why, strings.Join(allowed, ", "))
}

// RotDims is how many of headDim dims the scheme rotates (even; all of
// them for rope and xpos).
func (p Position) RotDims(headDim int) int {
	if p.Kind == "partial_rope" {
		return int(p.RopeFraction*float64(headDim)) / 2 * 2
	}
	return headDim / 2 * 2
}

// Check reports a head size the scheme cannot rotate.
func (p Position) Check(headDim int) error {
	if p.Rotary() && p.RotDims(headDim) < 2 {
		return fmt.Errorf("model.positional: %s rotates pairs of dims, and %d of a head's %d dims (model.rope_fraction %g) is less than one pair",
			p.Kind, p.RotDims(headDim), headDim, p.RopeFraction)
	}
	return nil
}

// Rotate applies the scheme's rotation to x [Batch*SeqLen, heads*headDim]
// (queries if query, else keys); schemes without one return x.
func (p Position) Rotate(x *G.Node, sh Shape, heads, headDim int, query bool) (*G.Node, error) {
	if !p.Rotary() {
		return x, nil
	}
	rs := graph.RotaryShape{Batch: sh.Batch, SeqLen: sh.SeqLen, Heads: heads, HeadDim: headDim,
		RotDims: p.RotDims(headDim), Base: p.RopeBase, Query: query}
	if p.Kind == "xpos" {
		rs.XPosScaleBase = p.XPosScaleBase
	}
	return graph.Rotary(x, rs)
}

// AddPositions adds the additive position scheme of p to x [Batch*SeqLen,
// DModel]; the other schemes leave x unchanged:
//
//   - learned: a trained table P [SeqLen, DModel] ("pos"), normal init;
//     x[b, t] += P[t].
//   - sinusoidal: the fixed encoding of Vaswani et al. 2017,
//     PE[t, 2i] = sin(t / 10000^(2i/D)), PE[t, 2i+1] = cos(t / 10000^(2i/D)).
func AddPositions(s Scope, p Position, x *G.Node, sh Shape) (*G.Node, error) {
	switch p.Kind {
	case "none", "rope", "partial_rope", "alibi", "xpos":
		return x, nil
	case "learned":
		table, err := s.Param("pos", []int{sh.SeqLen, sh.DModel}, graph.Normal(EmbedStd))
		if err != nil {
			return nil, err
		}
		pos := s.Binder().Input(s.Name("positions"), sh.Rows())
		idx := make([]int, sh.Rows())
		for i := range idx {
			idx[i] = i % sh.SeqLen
		}
		if err := graph.SetInts(pos, idx); err != nil {
			return nil, err
		}
		pe, err := graph.Embedding(pos, table)
		if err != nil {
			return nil, err
		}
		return G.Add(x, pe)
	case "sinusoidal":
		pe := s.Binder().Input(s.Name("sinusoidal"), sh.Rows(), sh.DModel)
		if err := graph.SetValues(pe, Sinusoidal(sh.Batch, sh.SeqLen, sh.DModel)); err != nil {
			return nil, err
		}
		return G.Add(x, pe)
	}
	return nil, fmt.Errorf("model.positional: unknown scheme %q (known: %s)", p.Kind, strings.Join(Positions, ", "))
}

// Sinusoidal returns the sinusoidal encoding for batch sequences of seqLen
// positions, [batch*seqLen*d] row-major.
func Sinusoidal(batch, seqLen, d int) []float64 {
	out := make([]float64, batch*seqLen*d)
	for t := 0; t < seqLen; t++ {
		for i := 0; i < d; i += 2 {
			angle := float64(t) / math.Pow(10000, float64(i)/float64(d))
			for b := 0; b < batch; b++ {
				row := out[(b*seqLen+t)*d:]
				row[i] = math.Sin(angle)
				if i+1 < d {
					row[i+1] = math.Cos(angle)
				}
			}
		}
	}
	return out
}
