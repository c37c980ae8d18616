package layers

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/graph"
)

// Positions are the schemes that add position information to the token
// embeddings before the first block.
var Positions = []string{"learned", "sinusoidal", "none"}

// AddPositions adds the position scheme kind to x [Batch*SeqLen, DModel]:
//
//   - learned: a trained table P [SeqLen, DModel] ("pos"), normal init;
//     x[b, t] += P[t].
//   - sinusoidal: the fixed encoding of Vaswani et al. 2017,
//     PE[t, 2i] = sin(t / 10000^(2i/D)), PE[t, 2i+1] = cos(t / 10000^(2i/D)).
//   - none: x unchanged (the causal mask alone carries order in decoders).
func AddPositions(s Scope, kind string, x *G.Node, sh Shape) (*G.Node, error) {
	switch kind {
	case "none":
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
	return nil, fmt.Errorf("model.positional: unknown scheme %q (known: learned, sinusoidal, none)", kind)
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
