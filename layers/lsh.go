package layers

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// LSH is Reformer's locality-sensitive-hashing attention (Kitaev et al.
// 2020, "Reformer: The Efficient Transformer"). Queries and keys share
// one projection: per head the keys are the normalized queries,
//
//	q = x Wq,  k_j = q_j / |q_j|,  v = x Wv
//	h_r(i) = argmax([q_i R_r; -q_i R_r])           (R_r [d, n_b/2] random, per round and head)
//
// Per round r the positions are sorted by (h_r, position) and the sorted
// order is cut into chunks of c; a query sees the keys of its own and the
// previous chunk that are in its bucket, unpadded and, when causal, not
// after it (original positions), and itself only when it sees nothing
// else (the paper's rule; a padded position then sees no key and outputs
// 0). With s_ij = q_i . k_j / sqrt(d), the rounds' visible pairs pool into
// one softmax,
//
//	head_h(i) = sum_r sum_{j in V_r(i)} exp(s_ij - L_i) v_j,
//	L_i = log sum_r sum_{j in V_r(i)} exp(s_ij)
//
// (per round a logsumexp, merged exactly; graph.LSHAttention), and out =
// concat(heads) Wo. The rotations are drawn once per layer from the
// model's seed and saved with it (the store buffer "rotations"
// [hashes*heads*d, n_b/2], checked on resume); buckets and the sort are
// not differentiated. buckets 1 hashes nothing: one bucket, so with chunk
// >= T it is shared-QK attention under the self rule.
//
// Time O(n_r T d (c + n_b/2)) plus the sorts (counting sorts, O(n_r T)),
// memory O(n_r T) logsumexps and O(n_r T d) round outputs; no T x T
// score is ever formed. Departures from the paper: a key visible in
// several rounds is counted once per round (the paper subtracts log of
// that count, deduplicating); ties in the hash go to the lower bucket;
// chunks are cut in one sorted order of all buckets (as the paper), so a
// bucket larger than a chunk is seen only partly; positions are added to
// the input (learned, sinusoidal) or absent, never rotated into q
// (rope-style schemes and ALiBi are refused); no reversible layers or
// chunked feed-forward (those are the rest of the Reformer, not its
// attention).
type LSH struct {
	spec                   Spec
	buckets, hashes, chunk int
	bias                   bool
}

func init() {
	Register("lsh", "Reformer's LSH attention: shared QK, random-rotation buckets, sort, chunks see own and previous chunk, n rounds merged (Kitaev et al. 2020); O(T c d)",
		Support{Causal: true, Bidirectional: true, Padding: true, Positions: []string{"learned", "sinusoidal", "none"},
			Why:          Refusals{Positions: "its keys are the normalized queries, hashed into buckets; rotary positions and ALiBi are not applied to them"},
			CheckOptions: map[string]any{"buckets": 2, "hashes": 2, "chunk": 2}, NonSmooth: true},
		[]config.OptionSpec{
			{Name: "buckets", Kind: config.Int, Default: 16, Help: "n_b: hash buckets per round, even (1: no hashing, one bucket)"},
			{Name: "hashes", Kind: config.Int, Default: 4, Help: "n_r: hash rounds, merged through their logsumexps"},
			{Name: "chunk", Kind: config.Int, Default: 64, Help: "c: queries per chunk of the sorted order; each sees its own and the previous chunk"},
			{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the q, v and output projections"},
		},
		func(s Spec) (Attention, error) {
			a := &LSH{spec: s, buckets: s.Options.Int("buckets"), hashes: s.Options.Int("hashes"),
				chunk: s.Options.Int("chunk"), bias: s.Options.Bool("bias")}
			switch {
			case a.buckets < 1 || a.buckets > 1 && a.buckets%2 != 0:
				return nil, fmt.Errorf("model.attention.buckets: must be even (or 1 for one bucket), got %d", a.buckets)
			case a.hashes < 1:
				return nil, fmt.Errorf("model.attention.hashes: must be positive, got %d", a.hashes)
			case a.chunk < 1:
				return nil, fmt.Errorf("model.attention.chunk: must be positive, got %d", a.chunk)
			}
			return a, nil
		})
}

// Forward implements Attention.
func (a *LSH) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	d, h, dh := a.spec.DModel, a.spec.Heads, a.spec.HeadDim()
	q, err := Project(s, "wq", x, d, d, a.bias)
	if err != nil {
		return nil, err
	}
	v, err := Project(s, "wv", x, d, d, a.bias)
	if err != nil {
		return nil, err
	}
	ls := graph.LSHShape{Batch: c.Batch, Len: c.SeqLen, Heads: h, HeadDim: dh, Causal: c.Causal, Buckets: a.buckets, Chunk: a.chunk}
	rots, err := a.rotations(s, ls)
	if err != nil {
		return nil, err
	}
	if c.Maps != nil {
		w, err := graph.LSHWeights(q, c.KeyMask, rots, ls)
		if err != nil {
			return nil, fmt.Errorf("recording the lsh map of layer %d: %w", c.Layer, err)
		}
		m := MapSpec{Label: c.mapLabel, Note: c.mapNote, Q: q, K: q, KeyMask: c.KeyMask, Shape: ls.Attention(),
			Weights: w, EmptyRows: c.KeyMask != nil}
		if m.Note == "" {
			m.Note = fmt.Sprintf("shared QK; %d hash rounds of %d buckets, chunks of %d; weights summed over rounds", a.hashes, a.buckets, a.chunk)
		}
		if _, err := c.RecordMap(m); err != nil {
			return nil, err
		}
	}
	if c.Cores != nil {
		var scores int64 // per round and head: each chunk's queries times its keys
		for m := 0; m*a.chunk < c.SeqLen; m++ {
			nq := min(a.chunk, c.SeqLen-m*a.chunk)
			nk := min((m+1)*a.chunk, c.SeqLen) - max(0, (m-1)*a.chunk)
			scores += int64(nq * nk)
		}
		scores *= int64(a.hashes * c.Batch * h)
		c.Cores.Calls = append(c.Cores.Calls, CoreCall{Label: DefaultMapLabel, Scores: scores,
			FlashScores: graph.ScoresComputed(ls.Attention(), nil, graph.DefaultFlashBlock)})
	}
	o, err := graph.LSHAttention(q, v, c.KeyMask, rots, ls)
	if err != nil {
		return nil, err
	}
	return Project(s, "wo", o, d, d, a.bias)
}

// rotations are the layer's random rotations, one [heads*d, n_b/2] block
// per round: drawn (standard normal) into the store buffer "rotations"
// [hashes*heads*d, n_b/2] the first time, read from it after; nil blocks
// for one bucket, which needs none.
func (a *LSH) rotations(s Scope, ls graph.LSHShape) ([][]float64, error) {
	rots := make([][]float64, a.hashes)
	if a.buckets == 1 {
		return rots, nil
	}
	n := ls.RotationSize()
	buf, err := s.Binder().Store().Buffer(s.Name("rotations"), []int{a.hashes * ls.Heads * ls.HeadDim, a.buckets / 2}, graph.Normal(1))
	if err != nil {
		return nil, fmt.Errorf("model.attention (lsh): %w", err)
	}
	vals := buf.Value.Data().([]float64)
	for r := range rots {
		rots[r] = vals[r*n : (r+1)*n]
	}
	return rots, nil
}

// KVCacheElems implements KVCache: a normalized key and a value of D per
// token.
func (a *LSH) KVCacheElems() int { return 2 * a.spec.DModel }
