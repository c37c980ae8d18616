package graph

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// LSHShape is the shape of a Reformer (LSH) attention core: Batch
// sequences of Len positions, Heads heads of HeadDim each (values as
// wide as queries), the number of hash buckets and the chunk of a
// bucket's positions whose queries attend together.
type LSHShape struct {
	Batch, Len int
	Heads      int
	HeadDim    int
	Causal     bool    // key j is visible to query i only when j <= i (original positions)
	Scale      float64 // multiplies the scores; 0 means 1/sqrt(HeadDim)
	Buckets    int     // n_b: even, or 1 for no hashing (every position in one bucket)
	Chunk      int     // c: queries per chunk of a bucket's run of the sorted order
}

// Attention is the attention shape of the same sizes (for MergeAttention
// and the maps).
func (s LSHShape) Attention() AttentionShape {
	return AttentionShape{Batch: s.Batch, QLen: s.Len, KLen: s.Len, Heads: s.Heads, KVHeads: s.Heads,
		HeadDim: s.HeadDim, Causal: s.Causal, Scale: s.Scale}
}

// RotationSize is the number of entries of one round's rotations: a
// [HeadDim, Buckets/2] matrix per head, heads in order (0 for Buckets 1).
func (s LSHShape) RotationSize() int { return s.Heads * s.HeadDim * (s.Buckets / 2) }

// Validate reports an impossible shape.
func (s LSHShape) Validate() error {
	if err := s.Attention().Validate(); err != nil {
		return err
	}
	switch {
	case s.Buckets < 1 || s.Buckets > 1 && s.Buckets%2 != 0:
		return fmt.Errorf("lsh attention: buckets must be 1 or even, got %d", s.Buckets)
	case s.Chunk < 1:
		return fmt.Errorf("lsh attention: chunk must be positive, got %d", s.Chunk)
	}
	return nil
}

// LSHAttention is Reformer's LSH attention (Kitaev et al. 2020) over the
// queries q [Batch*Len, Heads*HeadDim] and values v of the same shape,
// with shared query-key projection: the keys are the normalized queries,
// k_j = q_j / |q_j|. Each round r of rots (len(rots) rounds, each of
// RotationSize entries: a random [HeadDim, Buckets/2] matrix R per head)
// hashes position i of a head into the bucket h(i) = argmax([q_i R;
// -q_i R]) (ties to the lower index), sorts the positions stably by
// (bucket, position), and cuts each bucket's run of the sorted order
// (its positions in increasing order) into chunks of Chunk, starting at
// the run's first position: with rank_r(i) the number of earlier
// positions in the bucket of i, the chunk of i is m_r(i) =
// floor(rank_r(i) / Chunk). A query sees the keys j of its bucket with
// m_r(j) = m_r(i) or m_r(i) - 1 (its own chunk and the previous chunk
// of the same bucket, none for a bucket's first chunk) that are unpadded
// (keyMask, by original position) and, when causal, not after it (j <=
// i). A query sees itself only when it sees nothing else (Reformer's
// rule; a padded position sees no key then and outputs 0). The rank of
// i counts only earlier positions of its bucket, so under the causal
// mask what a query sees depends on no later position: the causal form
// is causal. Per round, with V_r(i) the visible keys,
//
//	s_ij = scale q_i . k_j,  lse_r(i) = log sum_{j in V_r(i)} exp(s_ij)
//	out_r(i) = sum_{j in V_r(i)} exp(s_ij - lse_r(i)) v_j
//
// and the rounds merge through their logsumexps (MergeAttention): out is
// softmax attention over the multiset union of the V_r(i), a key visible
// in several rounds counted once per round (the paper instead subtracts
// log N(i, j), the count, which deduplicates). Buckets and the sort are
// not differentiated; the gradient reaches q as query and, through the
// normalization, as key.
//
// Departure from the paper: the paper cuts chunks in the whole sorted
// order, so a chunk can straddle two buckets and a query's chunk depends
// on later positions (how many tokens of lower buckets precede it in the
// sorted order, later positions included), a leak a decoder can exploit;
// here chunks are cut within each bucket, which keeps the causal form
// causal. The same chunking serves both directions. A bucket's last
// chunk may be short, so a round has at most Len/Chunk + Buckets chunks.
// With one bucket the two rules agree.
//
// Forward and backward (one op per round, one worker per (sequence,
// head)): the buckets by one [Len, HeadDim] x [HeadDim, Buckets/2] GEMM,
// a counting sort, the chunk list (per chunk its span of the sorted order
// and the start of its keys: the previous chunk of its bucket, or
// itself), then per chunk the at most Chunk x 2 Chunk scores by GEMM on
// gathered rows, the masked softmax, and the values' GEMM scattered back
// to the original positions. The backward recomputes the buckets, the
// sort and the scores from q and the rotations, and scatters dq, dk (into
// the worker's own rows, then through the normalization into dq) and dv
// race-free. Time O(n_r Len (HeadDim Buckets/2 + Chunk HeadDim)) plus
// O(n_r (Len + Buckets)) for the sorts and chunk lists; memory O(n_r
// Len) logsumexps besides the outputs, and O(Len HeadDim + Chunk^2 +
// Buckets) per thread, never Len x Len.
func LSHAttention(q, v, keyMask *G.Node, rots [][]float64, s LSHShape) (*G.Node, error) {
	if len(rots) == 0 {
		return nil, fmt.Errorf("lsh attention: no hash rounds")
	}
	outs := make([]*G.Node, len(rots))
	lses := make([]*G.Node, len(rots))
	for r, rot := range rots {
		var err error
		if outs[r], lses[r], err = LSHAttentionLSE(q, v, keyMask, rot, s); err != nil {
			return nil, err
		}
	}
	return MergeAttention(outs, lses, s.Attention())
}

// rotationHash names a round's rotations in its op's name, so that ops
// differing only in their rotations are different ops.
func rotationHash(rot []float64) uint64 {
	h := fnv.New64a()
	var b [8]byte
	for _, x := range rot {
		binary.LittleEndian.PutUint64(b[:], math.Float64bits(x))
		h.Write(b[:])
	}
	return h.Sum64()
}

func (s LSHShape) name(kind string, rot []float64, masked bool) string {
	return fmt.Sprintf("%s(%+v,scale=%g,rot=%016x,masked=%t)", kind, s, s.Attention().scale(), rotationHash(rot), masked)
}

func toT[T Float](x []float64) []T {
	out := make([]T, len(x))
	for i, v := range x {
		out[i] = T(v)
	}
	return out
}

// LSHAttentionLSE is one hash round of LSHAttention with the rotations
// rot: its output [Batch*Len, Heads*HeadDim] and logsumexp [Batch*Heads,
// Len] (row b*Heads + h; -Inf for a query that sees no key), both
// differentiable.
func LSHAttentionLSE(q, v, keyMask *G.Node, rot []float64, s LSHShape) (out, lse *G.Node, err error) {
	if err := s.Validate(); err != nil {
		return nil, nil, err
	}
	if len(rot) != s.RotationSize() {
		return nil, nil, fmt.Errorf("lsh attention: %d rotation entries, want %d (heads %d x head dim %d x buckets/2 %d)",
			len(rot), s.RotationSize(), s.Heads, s.HeadDim, s.Buckets/2)
	}
	rot = append([]float64(nil), rot...)
	masked := keyMask != nil
	name := s.name("LSHAttention", rot, masked)
	children := G.Nodes{q, v}
	typ := fnType(2, 2, 1)
	diff := []bool{true, true}
	if masked {
		children = append(children, keyMask)
		typ = fnType(2, 2, 1, 1)
		diff = append(diff, false)
	}
	nOut := s.Batch * s.Len * s.Heads * s.HeadDim
	nLSE := s.Batch * s.Heads * s.Len
	rot32, rot64 := toT[float32](rot), rot
	packed, err := apply(&op{
		name:  name,
		arity: len(children),
		typ:   typ,
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			if err := s.checkShapes(name, in); err != nil {
				return nil, err
			}
			return tensor.Shape{nOut + nLSE}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			is32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), nOut+nLSE)
			if is32 {
				d := data[float32](out)
				lshForward(s, data[float32](in[0]), data[float32](in[1]), maskData[float32](in, 2), rot32, d[:nOut], d[nOut:], nil, nil)
			} else {
				d := data[float64](out)
				lshForward(s, data[float64](in[0]), data[float64](in[1]), maskData[float64](in, 2), rot64, d[:nOut], d[nOut:], nil, nil)
			}
			return out, nil
		},
		diffWRT: diff,
		symDiff: func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
			args := append(append(G.Nodes{}, in...), out, grad)
			pg, err := apply(lshGradOp(name, s, masked, rot32, rot64, nOut), args...)
			if err != nil {
				return nil, err
			}
			grads, err := Views(pg, [2]int{s.Batch * s.Len, s.Heads * s.HeadDim}, [2]int{s.Batch * s.Len, s.Heads * s.HeadDim})
			if err != nil {
				return nil, err
			}
			if masked {
				grads = append(grads, nil)
			}
			return grads, nil
		},
	}, children...)
	if err != nil {
		return nil, nil, err
	}
	if out, err = Slice(packed, 0, s.Batch*s.Len, s.Heads*s.HeadDim); err != nil {
		return nil, nil, err
	}
	if lse, err = Slice(packed, nOut, s.Batch*s.Heads, s.Len); err != nil {
		return nil, nil, err
	}
	return out, lse, nil
}

func (s LSHShape) checkShapes(name string, in []tensor.Shape) error {
	want := tensor.Shape{s.Batch * s.Len, s.Heads * s.HeadDim}
	if !in[0].Eq(want) || !in[1].Eq(want) {
		return shapeErr(name, "want q and v %v, got %v and %v", want, in[0], in[1])
	}
	if len(in) > 2 && !in[2].Eq(tensor.Shape{s.Batch * s.Len}) {
		return shapeErr(name, "want key mask [%d], got %v", s.Batch*s.Len, in[2])
	}
	return nil
}

// lshGradOp maps (q, v, [mask,] packed O|L, its gradient) to dq|dv.
func lshGradOp(fwdName string, s LSHShape, masked bool, rot32 []float32, rot64 []float64, nOut int) *op {
	name := "Grad" + fwdName
	typ := fnType(2, 2, 1, 1, 1)
	arity := 4
	if masked {
		typ = fnType(2, 2, 1, 1, 1, 1)
		arity = 5
	}
	n := s.Batch * s.Len * s.Heads * s.HeadDim
	return &op{
		name:  name,
		arity: arity,
		typ:   typ,
		shape: func([]tensor.Shape) (tensor.Shape, error) { return tensor.Shape{2 * n}, nil },
		do: func(in []G.Value) (G.Value, error) {
			is32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), 2*n)
			pk, dpk := in[arity-2], in[arity-1]
			if is32 {
				d, p, dp := data[float32](out), data[float32](pk), data[float32](dpk)
				lshBackward(s, data[float32](in[0]), data[float32](in[1]), maskData[float32](in[:arity-2], 2), rot32,
					p[nOut:], dp[:nOut], dp[nOut:], d[:n], d[n:])
			} else {
				d, p, dp := data[float64](out), data[float64](pk), data[float64](dpk)
				lshBackward(s, data[float64](in[0]), data[float64](in[1]), maskData[float64](in[:arity-2], 2), rot64,
					p[nOut:], dp[:nOut], dp[nOut:], d[:n], d[n:])
			}
			return out, nil
		},
	}
}

// LSHWeights returns the weights LSHAttention applies to the values for
// the same q, keyMask, rotations and shape, as a dense map
// [Batch*Heads*Len, Len] (row (b*Heads + h)*Len + i): each key's share
// of the merged softmax, summed over the rounds that show it, 0 for keys
// the query never sees, a row of zeros for a query that sees no key. For
// inspection (trainer attnmap): no gradient, and it materializes every
// map.
func LSHWeights(q, keyMask *G.Node, rots [][]float64, s LSHShape) (*G.Node, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	for _, rot := range rots {
		if len(rot) != s.RotationSize() {
			return nil, fmt.Errorf("lsh attention: %d rotation entries, want %d", len(rot), s.RotationSize())
		}
	}
	if len(rots) == 0 {
		return nil, fmt.Errorf("lsh attention: no hash rounds")
	}
	var all []float64
	for _, rot := range rots {
		all = append(all, rot...)
	}
	masked := keyMask != nil
	name := s.name(fmt.Sprintf("LSHWeights%d", len(rots)), all, masked)
	children := G.Nodes{q}
	typ := fnType(2, 2)
	if masked {
		children = append(children, keyMask)
		typ = fnType(2, 1, 2)
	}
	nLSE := s.Batch * s.Heads * s.Len
	rows := make([][]float64, len(rots))
	for r, rot := range rots {
		rows[r] = append([]float64(nil), rot...)
	}
	return apply(&op{
		name:  name,
		arity: len(children),
		typ:   typ,
		shape: func(in []tensor.Shape) (tensor.Shape, error) {
			want := tensor.Shape{s.Batch * s.Len, s.Heads * s.HeadDim}
			if !in[0].Eq(want) {
				return nil, shapeErr(name, "want q %v, got %v", want, in[0])
			}
			if masked && !in[1].Eq(tensor.Shape{s.Batch * s.Len}) {
				return nil, shapeErr(name, "want key mask [%d], got %v", s.Batch*s.Len, in[1])
			}
			return tensor.Shape{nLSE, s.Len}, nil
		},
		do: func(in []G.Value) (G.Value, error) {
			is32, err := checkDtype(name, in...)
			if err != nil {
				return nil, err
			}
			out := newTensor(in[0].Dtype(), nLSE, s.Len)
			if is32 {
				lshWeights(s, data[float32](in[0]), maskData[float32](in, 1), rows, data[float32](out))
			} else {
				lshWeights(s, data[float64](in[0]), maskData[float64](in, 1), rows, data[float64](out))
			}
			return out, nil
		},
	}, children...)
}

// lshWeights fills the merged dense map: the rounds' logsumexps first,
// merged, then every visible score's exp(s_ij - lse(i)) added in.
func lshWeights[T Float](s LSHShape, q, mask []T, rots [][]float64, w []T) {
	n := s.Batch * s.Heads * s.Len
	lses := make([][]T, len(rots))
	for r, rot := range rots {
		lses[r] = make([]T, n)
		lshForward(s, q, nil, mask, toT[T](rot), nil, lses[r], nil, nil)
	}
	total := make([]T, n)
	for i := range total {
		mx := math.Inf(-1)
		for _, l := range lses {
			mx = max(mx, float64(l[i]))
		}
		if math.IsInf(mx, -1) {
			total[i] = T(mx)
			continue
		}
		sum := 0.0
		for _, l := range lses {
			sum += math.Exp(float64(l[i]) - mx)
		}
		total[i] = T(mx + math.Log(sum))
	}
	clear(w)
	for _, rot := range rots {
		lshForward(s, q, nil, mask, toT[T](rot), nil, make([]T, n), w, total)
	}
}

// lshChunk is one chunk of a bucket's run of the sorted order: its
// queries are perm[q0:q1], its keys perm[k0:q1], k0 the start of the
// previous chunk of the same bucket (q0 - Chunk), or q0 for the bucket's
// first chunk. The keys are contiguous in the sorted order because the
// previous chunk of a bucket ends where the chunk starts.
type lshChunk struct{ q0, q1, k0 int }

// lshHead is one worker's state for a (sequence, head): the normalized
// keys, the buckets, the sorted order and its chunks, and chunk buffers.
type lshHead[T Float] struct {
	s              LSHShape
	kn             []T       // [Len, HeadDim] normalized queries
	inv            []float64 // 1 / |q_j|, 0 for a zero query
	proj           []T       // [Len, Buckets/2]
	bucket, perm   []int
	count          []int
	chunks         []lshChunk
	qc, kc, vc, sc []T // gathered chunk rows and scores
}

func newLSHHead[T Float](s LSHShape) *lshHead[T] {
	c, d := s.Chunk, s.HeadDim
	return &lshHead[T]{s: s, kn: make([]T, s.Len*d), inv: make([]float64, s.Len), proj: make([]T, s.Len*max(s.Buckets/2, 1)),
		bucket: make([]int, s.Len), perm: make([]int, s.Len), count: make([]int, s.Buckets+1),
		qc: make([]T, c*d), kc: make([]T, 2*c*d), vc: make([]T, 2*c*d), sc: make([]T, 2*c*c),
		chunks: make([]lshChunk, 0, s.Len/c+min(s.Buckets, s.Len)+1)}
}

// prepare normalizes the keys of sequence b, head h, hashes them with rot,
// sorts the positions by (bucket, position) and cuts each bucket's run of
// the sorted order into chunks.
func (w *lshHead[T]) prepare(q, rot []T, b, h int) {
	s := w.s
	d, dq := s.HeadDim, s.Heads*s.HeadDim
	off := b*s.Len*dq + h*d
	for j := 0; j < s.Len; j++ {
		qj := q[off+j*dq:][:d]
		nrm := math.Sqrt(float64(dot(qj, qj)))
		w.inv[j] = 0
		if nrm > 0 {
			w.inv[j] = 1 / nrm
		}
		kj := w.kn[j*d:][:d]
		for c := range kj {
			kj[c] = T(float64(qj[c]) * w.inv[j])
		}
	}
	clear(w.count)
	half := s.Buckets / 2
	if half == 0 {
		clear(w.bucket)
	} else {
		gemm(false, false, s.Len, half, d, 1, q[off:], dq, rot[h*d*half:], half, 0, w.proj, half)
		for j := 0; j < s.Len; j++ {
			row := w.proj[j*half:][:half]
			best, arg := math.Inf(-1), 0
			for c, x := range row {
				if float64(x) > best {
					best, arg = float64(x), c
				}
			}
			for c, x := range row {
				if -float64(x) > best {
					best, arg = -float64(x), half+c
				}
			}
			w.bucket[j] = arg
		}
	}
	for _, bk := range w.bucket {
		w.count[bk+1]++
	}
	for i := 1; i < len(w.count); i++ {
		w.count[i] += w.count[i-1]
	}
	for j, bk := range w.bucket { // stable: positions ascending within a bucket
		w.perm[w.count[bk]] = j
		w.count[bk]++
	}
	// Now count[u] is the end of bucket u's run (count[u-1], or 0, its
	// start): chunks of Chunk from the run's start, each keyed by itself
	// and the previous chunk of the run.
	w.chunks = w.chunks[:0]
	c := s.Chunk
	for u, start := 0, 0; u < s.Buckets; u++ {
		end := w.count[u]
		for q0 := start; q0 < end; q0 += c {
			w.chunks = append(w.chunks, lshChunk{q0: q0, q1: min(q0+c, end), k0: max(start, q0-c)})
		}
		start = end
	}
}

// chunk gathers chunk m's queries and keys (its own and the previous
// chunk of its bucket, all in its bucket) and fills sc [nq, nk] with the
// scores, -Inf where the query may not see the key: padded, after it
// (causal), or itself while it sees another key. It returns the chunk's
// query and key positions.
func (w *lshHead[T]) chunk(q, mask []T, b, h, m int) (qs, ks []int) {
	s := w.s
	d, dq := s.HeadDim, s.Heads*s.HeadDim
	off := b*s.Len*dq + h*d
	ch := w.chunks[m]
	qs, ks = w.perm[ch.q0:ch.q1], w.perm[ch.k0:ch.q1]
	nq, nk := len(qs), len(ks)
	for r, i := range qs {
		copy(w.qc[r*d:][:d], q[off+i*dq:][:d])
	}
	for x, j := range ks {
		copy(w.kc[x*d:][:d], w.kn[j*d:][:d])
	}
	gemm(false, true, nq, nk, d, T(s.Attention().scale()), w.qc, d, w.kc, d, 0, w.sc, nk)
	neg := T(math.Inf(-1))
	for r, i := range qs {
		row := w.sc[r*nk:][:nk]
		others, self := 0, -1
		for x, j := range ks {
			if s.Causal && j > i || mask != nil && mask[b*s.Len+j] == 0 {
				row[x] = neg
				continue
			}
			if j == i {
				self = x
				continue
			}
			others++
		}
		if self >= 0 && others > 0 {
			row[self] = neg // a query sees itself only when it sees nothing else
		}
	}
	return qs, ks
}

// lshForward runs one hash round: out (when v is not nil) and lse, or,
// when weights is not nil, adds exp(s_ij - wlse(i)) of every visible pair
// into the dense map weights.
func lshForward[T Float](s LSHShape, q, v, mask, rot, out, lse, weights, wlse []T) {
	d, dq := s.HeadDim, s.Heads*s.HeadDim
	parallelFor(s.Batch*s.Heads, s.Len*(s.Chunk+max(s.Buckets/2, 1))*d*4, func(lo, hi int) {
		w := newLSHHead[T](s)
		oc := make([]T, s.Chunk*d)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/s.Heads, bh%s.Heads
			off := b*s.Len*dq + h*d
			w.prepare(q, rot, b, h)
			for m := range w.chunks {
				qs, ks := w.chunk(q, mask, b, h, m)
				nk := len(ks)
				for r, i := range qs {
					row := bh*s.Len + i
					sr := w.sc[r*nk:][:nk]
					mx := math.Inf(-1)
					for _, x := range sr {
						mx = max(mx, float64(x))
					}
					if math.IsInf(mx, -1) {
						lse[row] = T(mx)
						clear(sr)
						continue
					}
					sum := 0.0
					for _, x := range sr {
						sum += math.Exp(float64(x) - mx)
					}
					L := mx + math.Log(sum)
					lse[row] = T(L)
					if weights != nil {
						for x, j := range ks {
							if !math.IsInf(float64(sr[x]), -1) {
								weights[row*s.Len+j] += T(math.Exp(float64(sr[x]) - float64(wlse[row])))
							}
						}
					}
					for x := range sr {
						sr[x] = T(math.Exp(float64(sr[x]) - L))
					}
				}
				if v == nil {
					continue
				}
				for x, j := range ks {
					copy(w.vc[x*d:][:d], v[off+j*dq:][:d])
				}
				gemm(false, false, len(qs), d, nk, 1, w.sc, nk, w.vc, d, 0, oc, d)
				for r, i := range qs {
					copy(out[off+i*dq:][:d], oc[r*d:][:d])
				}
			}
		}
	})
}

// lshBackward maps one round's logsumexp and the gradients of its output
// and logsumexp to dq and dv, recomputing the buckets, the sort and the
// scores.
func lshBackward[T Float](s LSHShape, q, v, mask, rot, lse, do, dlse, dqOut, dvOut []T) {
	d, dq := s.HeadDim, s.Heads*s.HeadDim
	c := s.Chunk
	scale := s.Attention().scale()
	clear(dqOut)
	clear(dvOut)
	parallelFor(s.Batch*s.Heads, s.Len*(3*c+max(s.Buckets/2, 1))*d*4, func(lo, hi int) {
		w := newLSHHead[T](s)
		dkn := make([]T, s.Len*d)
		doc := make([]T, c*d)
		dp := make([]T, 2*c*c)
		gq := make([]T, c*d)
		gk := make([]T, 2*c*d)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/s.Heads, bh%s.Heads
			off := b*s.Len*dq + h*d
			w.prepare(q, rot, b, h)
			clear(dkn)
			for m := range w.chunks {
				qs, ks := w.chunk(q, mask, b, h, m)
				nq, nk := len(qs), len(ks)
				for r, i := range qs {
					copy(doc[r*d:][:d], do[off+i*dq:][:d])
				}
				for x, j := range ks {
					copy(w.vc[x*d:][:d], v[off+j*dq:][:d])
				}
				gemm(false, true, nq, nk, d, 1, doc, d, w.vc, d, 0, dp, nk) // dP = dO V^T
				for r, i := range qs {
					row := bh*s.Len + i
					L := float64(lse[row])
					sr, pr := w.sc[r*nk:][:nk], dp[r*nk:][:nk]
					if math.IsInf(L, -1) {
						clear(sr)
						clear(pr)
						continue
					}
					dsum := -float64(dlse[row])
					for x := range sr {
						p := 0.0
						if !math.IsInf(float64(sr[x]), -1) {
							p = math.Exp(float64(sr[x]) - L)
						}
						sr[x] = T(p)
						dsum += p * float64(pr[x])
					}
					for x := range pr { // pr becomes scale dS
						pr[x] = T(scale * float64(sr[x]) * (float64(pr[x]) - dsum))
					}
				}
				gemm(false, false, nq, d, nk, 1, dp, nk, w.kc, d, 0, gq, d)   // dQ = scale dS K
				gemm(true, false, nk, d, nq, 1, dp, nk, w.qc, d, 0, gk, d)    // dK = scale dS^T Q
				gemm(true, false, nk, d, nq, 1, w.sc, nk, doc, d, 0, w.vc, d) // dV = P^T dO
				for r, i := range qs {
					dst, src := dqOut[off+i*dq:][:d], gq[r*d:][:d]
					for x := range dst {
						dst[x] += src[x]
					}
				}
				for x, j := range ks {
					dk, src := dkn[j*d:][:d], gk[x*d:][:d]
					dv, vs := dvOut[off+j*dq:][:d], w.vc[x*d:][:d]
					for y := range dk {
						dk[y] += src[y]
						dv[y] += vs[y]
					}
				}
			}
			// k_j = q_j / |q_j|: dq_j += (dk_j - k_j (k_j . dk_j)) / |q_j|
			for j := 0; j < s.Len; j++ {
				if w.inv[j] == 0 {
					continue
				}
				kj, gj := w.kn[j*d:][:d], dkn[j*d:][:d]
				kg := float64(dot(kj, gj))
				dst := dqOut[off+j*dq:][:d]
				for x := range dst {
					dst[x] += T((float64(gj[x]) - float64(kj[x])*kg) * w.inv[j])
				}
			}
		}
	})
}
