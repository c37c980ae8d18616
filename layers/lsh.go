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
// Per round r the positions are sorted by (h_r, position) and each
// bucket's run of the sorted order (its positions, in increasing order) is
// cut into chunks of c from the run's first position: the chunk of i is
// m_r(i) = floor(rank_r(i) / c), rank_r(i) the number of earlier positions
// in its bucket. A query sees the keys of its own chunk and of the
// previous chunk of the same bucket that are unpadded and, when causal,
// not after it (original positions), and itself only when it sees nothing
// else (the paper's rule; a padded position then sees no key and outputs
// 0). The rank counts only earlier positions of the bucket, so the causal
// form is causal: no output depends on a later position. With
// s_ij = q_i . k_j / sqrt(d), the rounds' visible pairs pool into one softmax,
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
// the paper cuts chunks in the whole sorted order, so a chunk can straddle
// two buckets and a query's chunk depends on later positions (how many
// tokens of lower buckets precede it, later ones included); here chunks
// are cut within each bucket, which keeps the causal form causal (one
// chunking for both directions; a bucket larger than 2c is still seen
// only partly, a bucket's last chunk may be short; the Cores log's score
// count is an upper bound, exact for one bucket); positions are added to
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
	Register("lsh", "Reformer's LSH attention: shared QK, random-rotation buckets, sort, chunks cut within each bucket see own and previous chunk, n rounds merged (Kitaev et al. 2020); O(T c d)",
		Support{Causal: true, Bidirectional: true, Padding: true, Positions: []string{"learned", "sinusoidal", "none"},
			Why:          Refusals{Positions: "its keys are the normalized queries, hashed into buckets; rotary positions and ALiBi are not applied to them"},
			CheckOptions: map[string]any{"buckets": 2, "hashes": 2, "chunk": 2}, NonSmooth: true},
		[]config.OptionSpec{
			{Name: "buckets", Kind: config.Int, Default: 16, Help: "n_b: hash buckets per round, even (1: no hashing, one bucket)"},
			{Name: "hashes", Kind: config.Int, Default: 4, Help: "n_r: hash rounds, merged through their logsumexps"},
			{Name: "chunk", Kind: config.Int, Default: 64, Help: "c: queries per chunk, cut within each bucket; each sees its own and its bucket's previous chunk"},
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
		// An upper bound, exact when every position of a round and head
		// falls in one bucket: the chunks' queries times their keys as if
		// one bucket held all T positions. The exact count depends on the
		// bucket sizes n_u, known only in the forward: sum_u f(n_u) with
		// f(n) = sum_m nq_m^2 + c max(0, n - c), nq_m the chunk sizes,
		// and f is superadditive (so sum_u f(n_u) <= f(T)).
		var scores int64
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
