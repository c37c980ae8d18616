package graph

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/graph/blockmask"
)

// Sequence parallelism: DISTFLASHATTN (Li et al. 2023, "DISTFLASHATTN:
// Distributed Memory-efficient Attention for Long-context LLMs Training").
//
// The sequence is cut into P chunks of consecutive positions; worker w
// keeps chunk w of the queries, keys and values (and of the output, its
// logsumexp and their gradients). The attention of query chunk i over key
// chunk j is one task: the tiled core (FlashAttention) on that pair, which
// returns a partial output O_ij and logsumexp L_ij. The row's attention
// over every key is their exact merge through the logsumexps,
//
//	L_i = log sum_j exp(L_ij),  O_i = sum_j exp(L_ij - L_i) O_ij,
//
// and the backward of a pair needs only the merged O_i and L_i: with
// P_ij = exp(S_ij - L_i) and D_i = rowsum(dO_i * O_i) - dL_i, the pair's
// dQ_i, dK_j and dV_j are the tiled core's backward on that pair alone,
// summed over the pairs. So the forward keeps O and L (checkpointing at
// the attention output, the paper's rematerialization-aware choice) and
// the backward never recomputes a forward attention.
//
// Each worker runs its pairs' kernels on GOMAXPROCS/P goroutines (at
// least one), its share of the threads. Chunks travel between workers
// through a Transport, never shared memory: the worker that computes a
// task receives the key/value chunk (and, when it is not the query chunk's
// owner, the query rows) and sends the partial result back to the owner,
// who merges in a fixed order (the result does not depend on timing).
//
// Schedules (SeqParSchedule): bidirectional attention is P steps of a
// ring, each worker one full pair a step. Causal attention visits pairs
// j <= i only; the plain ring leaves worker i idle after i+1 steps, so the
// last worker does P pairs and the first one. The balanced schedule of the
// paper gives the idle workers the busy workers' pairs: diagonal t of the
// pair triangle (pairs (i, i-t), P-t of them) runs in the same step as
// diagonal P-t (t pairs, (w+P-t, w) on worker w < t, which owns its key
// chunk and receives the query rows), so that every worker has one pair a
// step; for even P the middle diagonal's pairs are split by query rows
// between their two workers. P/2+1 steps instead of P, and every worker
// visits the same number of tiles up to one chunk's rounding.
//
// Time: the tiled core's, O(T^2 d / P) per worker with the balanced
// schedule (causal); memory O(T d / P) per worker plus one received chunk.

// SeqParTask is one pair of a schedule: query chunk Q (rows [RowLo,
// RowHi) of it) over key/value chunk KV, on one worker.
type SeqParTask struct {
	Q, KV        int
	RowLo, RowHi int // rows of the query chunk
}

// SeqParStep is what each worker does in one step: Tasks[w], or nil for
// none.
type SeqParStep struct {
	Tasks []*SeqParTask
}

// SeqParChunks cuts n positions into p chunks of consecutive positions,
// the first n mod p one longer: chunk w is [bounds[w], bounds[w+1]).
func SeqParChunks(n, p int) []int {
	b := make([]int, p+1)
	for w := 0; w < p; w++ {
		b[w+1] = b[w] + n/p
		if w < n%p {
			b[w+1]++
		}
	}
	return b
}

// SeqParSchedule is the schedule of p workers over chunks bounds
// (SeqParChunks): the ring for bidirectional attention, for causal
// attention the balanced schedule, or with balanced false the plain ring
// (worker i visits pairs (i, i), (i, i-1), ... (i, 0)), for comparison.
func SeqParSchedule(p int, bounds []int, causal, balanced bool) []SeqParStep {
	whole := func(q, kv int) *SeqParTask {
		return &SeqParTask{Q: q, KV: kv, RowLo: 0, RowHi: bounds[q+1] - bounds[q]}
	}
	var steps []SeqParStep
	newStep := func() []*SeqParTask {
		steps = append(steps, SeqParStep{Tasks: make([]*SeqParTask, p)})
		return steps[len(steps)-1].Tasks
	}
	switch {
	case !causal:
		for t := 0; t < p; t++ {
			tasks := newStep()
			for w := 0; w < p; w++ {
				tasks[w] = whole(w, (w+t)%p)
			}
		}
	case !balanced:
		for t := 0; t < p; t++ {
			tasks := newStep()
			for w := t; w < p; w++ {
				tasks[w] = whole(w, w-t)
			}
		}
	default:
		for t := 0; 2*t <= p; t++ {
			tasks := newStep()
			switch {
			case t == 0:
				for w := 0; w < p; w++ {
					tasks[w] = whole(w, w)
				}
			case 2*t < p: // diagonal t on workers t.., diagonal p-t on workers ..t-1
				for w := t; w < p; w++ {
					tasks[w] = whole(w, w-t)
				}
				for w := 0; w < t; w++ {
					tasks[w] = whole(w+p-t, w)
				}
			default: // p even, t = p/2: the middle diagonal's pairs split by rows
				for w := t; w < p; w++ {
					n := bounds[w+1] - bounds[w]
					tasks[w] = &SeqParTask{Q: w, KV: w - t, RowLo: 0, RowHi: n / 2}
					tasks[w-t] = &SeqParTask{Q: w, KV: w - t, RowLo: n / 2, RowHi: n}
				}
			}
		}
	}
	return steps
}

// SeqParTiles counts the tiles (block x block) each worker's tasks visit:
// a pair on the diagonal the causal mask's tiles, any other pair all of
// them. The schedule's balance is the largest over the mean.
func SeqParTiles(steps []SeqParStep, bounds []int, causal bool, block int) []int {
	tiles := make([]int, len(bounds)-1)
	for _, st := range steps {
		for w, t := range st.Tasks {
			if t == nil {
				continue
			}
			nq, nk := t.RowHi-t.RowLo, bounds[t.KV+1]-bounds[t.KV]
			if causal && t.Q == t.KV {
				tiles[w] += blockmask.Causal(nq, nk, block).Tiles()
			} else {
				tiles[w] += blockmask.Dense(nq, nk, block).Tiles()
			}
		}
	}
	return tiles
}

// SeqParBalance is the busiest worker's tiles over the mean (SeqParTiles):
// 1 is perfect balance.
func SeqParBalance(tiles []int) float64 {
	sum := 0
	for _, x := range tiles {
		sum += x
	}
	return float64(slices.Max(tiles)) * float64(len(tiles)) / float64(sum)
}

// Transport carries chunks between workers: Send copies parts (the
// receiver never sees the sender's memory) and queues them for worker to;
// Recv returns the oldest parts worker from sent to worker to.
type Transport[T Float] interface {
	Send(from, to int, parts ...[]T)
	Recv(to, from int) [][]T
}

// ChanTransport is a Transport between the goroutines of one process: a
// queue per ordered pair of workers.
type ChanTransport[T Float] struct {
	p  int
	ch []chan [][]T
}

// NewChanTransport returns a transport between p workers; each queue holds
// up to depth messages before Send waits.
func NewChanTransport[T Float](p, depth int) *ChanTransport[T] {
	t := &ChanTransport[T]{p: p, ch: make([]chan [][]T, p*p)}
	for i := range t.ch {
		t.ch[i] = make(chan [][]T, depth)
	}
	return t
}

func (t *ChanTransport[T]) Send(from, to int, parts ...[]T) {
	msg := make([][]T, len(parts))
	for i, p := range parts {
		msg[i] = append([]T(nil), p...)
	}
	t.ch[from*t.p+to] <- msg
}

func (t *ChanTransport[T]) Recv(to, from int) [][]T { return <-t.ch[from*t.p+to] }

// seqParRun is one sequence-parallel call: the shape, the chunks, the
// schedule and each worker's chunk of every array.
type seqParRun[T Float] struct {
	s        AttentionShape
	p        int
	block    int
	bounds   []int
	steps    []SeqParStep
	tr       Transport[T]
	q, k, v  [][]T // by worker: [Batch*n_w, width] rows b*n_w + t
	mask     [][]T // [Batch*n_w]
	o, lse   [][]T // o like q; lse [Batch*Heads, n_w]
	do, dlse [][]T
}

func newSeqParRun[T Float](s AttentionShape, p, block int, balanced bool) (*seqParRun[T], error) {
	switch {
	case p < 1:
		return nil, fmt.Errorf("sequence parallel: %d workers", p)
	case s.QLen != s.KLen:
		return nil, fmt.Errorf("sequence parallel: %d queries over %d keys: self-attention only", s.QLen, s.KLen)
	case s.QLen < p:
		return nil, fmt.Errorf("sequence parallel: %d positions over %d workers", s.QLen, p)
	}
	b := SeqParChunks(s.QLen, p)
	return &seqParRun[T]{s: s, p: p, block: block, bounds: b, steps: SeqParSchedule(p, b, s.Causal, balanced),
		tr: NewChanTransport[T](p, 4*p+8)}, nil
}

// rowsOf gathers positions [lo, hi) of every sequence of x (rows b*n + t,
// width columns) into a new [Batch*(hi-lo), width] array; scatter is its
// inverse (adding when add is set).
func rowsOf[T Float](x []T, batch, n, width, lo, hi int) []T {
	m := hi - lo
	out := make([]T, batch*m*width)
	for b := 0; b < batch; b++ {
		copy(out[b*m*width:(b+1)*m*width], x[(b*n+lo)*width:(b*n+hi)*width])
	}
	return out
}

func scatterRows[T Float](dst, part []T, batch, n, width, lo, hi int, add bool) {
	m := hi - lo
	for b := 0; b < batch; b++ {
		d, p := dst[(b*n+lo)*width:(b*n+hi)*width], part[b*m*width:(b+1)*m*width]
		if !add {
			copy(d, p)
			continue
		}
		for i, x := range p {
			d[i] += x
		}
	}
}

// The logsumexp is [Batch*Heads, n]: its rows are (b, h) and its columns
// positions, so a chunk of positions is a column range of every row.
func lseCols[T Float](x []T, rows, n, lo, hi int) []T {
	m := hi - lo
	out := make([]T, rows*m)
	for r := 0; r < rows; r++ {
		copy(out[r*m:(r+1)*m], x[r*n+lo:r*n+hi])
	}
	return out
}

func scatterLSECols[T Float](dst, part []T, rows, n, lo, hi int) {
	m := hi - lo
	for r := 0; r < rows; r++ {
		copy(dst[r*n+lo:r*n+hi], part[r*m:(r+1)*m])
	}
}

// split gives each worker its chunk of the inputs.
func (r *seqParRun[T]) split(q, k, v, mask []T) {
	s := r.s
	dq, dk, dvk := s.Heads*s.HeadDim, s.KVHeads*s.HeadDim, s.KVHeads*s.VDim()
	r.q, r.k, r.v, r.mask = make([][]T, r.p), make([][]T, r.p), make([][]T, r.p), make([][]T, r.p)
	for w := 0; w < r.p; w++ {
		lo, hi := r.bounds[w], r.bounds[w+1]
		r.q[w] = rowsOf(q, s.Batch, s.QLen, dq, lo, hi)
		r.k[w] = rowsOf(k, s.Batch, s.KLen, dk, lo, hi)
		r.v[w] = rowsOf(v, s.Batch, s.KLen, dvk, lo, hi)
		if mask != nil {
			r.mask[w] = rowsOf(mask, s.Batch, s.KLen, 1, lo, hi)
		}
	}
}

// pairShape is the tiled core's shape for task t: its query rows over its
// key chunk, causal only on the diagonal (a pair below it sees every key).
func (r *seqParRun[T]) pairShape(t *SeqParTask) AttentionShape {
	ps := r.s
	ps.QLen, ps.KLen = t.RowHi-t.RowLo, r.bounds[t.KV+1]-r.bounds[t.KV]
	ps.Causal = r.s.Causal && t.Q == t.KV
	ps.Scale = r.s.scale()
	// ALiBi's distances in the sequence's positions: the query rows start
	// at bounds[Q]+RowLo, the keys at bounds[KV]
	ps.posShift = r.bounds[t.Q] + t.RowLo - r.bounds[t.KV] - (ps.KLen - ps.QLen)
	// each worker on its share of the threads
	ps.threads = max(1, runtime.GOMAXPROCS(0)/r.p)
	return ps
}

// each runs fn on every worker, one goroutine each, and waits.
func (r *seqParRun[T]) each(fn func(w int)) {
	var wg sync.WaitGroup
	for w := 0; w < r.p; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(w)
		}()
	}
	wg.Wait()
}

// sendInputs sends, in step st, worker w's chunks to the workers whose
// tasks need them: the key/value chunk, and the query rows (with extra
// row-aligned arrays: the output, its gradient) to a helper.
func (r *seqParRun[T]) sendInputs(st SeqParStep, w int, kv [][]T, rows func(t *SeqParTask) [][]T) {
	for x, t := range st.Tasks {
		if t == nil || x == w {
			continue
		}
		if t.KV == w {
			r.tr.Send(w, x, kv...)
		}
		if t.Q == w {
			r.tr.Send(w, x, rows(t)...)
		}
	}
}

// recvInputs returns task t's key/value chunk and query rows on worker w.
func (r *seqParRun[T]) recvInputs(t *SeqParTask, w int, kv [][]T, rows func(t *SeqParTask) [][]T) (tkv, trows [][]T) {
	tkv, trows = kv, nil
	if t.KV != w {
		tkv = r.tr.Recv(w, t.KV)
	}
	if t.Q != w {
		trows = r.tr.Recv(w, t.Q)
	} else {
		trows = rows(t)
	}
	return tkv, trows
}

// seqParForward computes O and L of the whole sequence (out [Batch*QLen,
// Heads*VDim], lse [Batch*Heads, QLen]) with p workers.
func seqParForward[T Float](r *seqParRun[T], q, k, v, mask, out, lse []T) {
	s := r.s
	dq, ov, rowsL := s.Heads*s.HeadDim, s.Heads*s.VDim(), s.Batch*s.Heads
	r.split(q, k, v, mask)
	r.o, r.lse = make([][]T, r.p), make([][]T, r.p)
	queryRows := func(w int) func(t *SeqParTask) [][]T {
		return func(t *SeqParTask) [][]T {
			n := r.bounds[w+1] - r.bounds[w]
			if t.RowLo == 0 && t.RowHi == n { // the whole chunk: no copy (Send copies)
				return [][]T{r.q[w]}
			}
			return [][]T{rowsOf(r.q[w], s.Batch, n, dq, t.RowLo, t.RowHi)}
		}
	}
	r.each(func(w int) {
		n := r.bounds[w+1] - r.bounds[w]
		o := make([]T, s.Batch*n*ov)
		l := make([]T, rowsL*n)
		for i := range l {
			l[i] = T(math.Inf(-1))
		}
		kv := [][]T{r.k[w], r.v[w], r.mask[w]}
		for _, st := range r.steps {
			r.sendInputs(st, w, kv, queryRows(w))
			if t := st.Tasks[w]; t != nil {
				tkv, rows := r.recvInputs(t, w, kv, queryRows(w))
				ps := r.pairShape(t)
				po, pl := make([]T, ps.Batch*ps.QLen*ov), make([]T, rowsL*ps.QLen)
				var pm []T
				if mask != nil {
					pm = tkv[2]
				}
				tiledForward(ps, FullPattern(ps, r.block), rows[0], tkv[0], tkv[1], pm, po, pl)
				if t.Q == w {
					mergePartial(o, l, po, pl, s, n, t.RowLo, t.RowHi)
				} else {
					r.tr.Send(w, t.Q, po, pl)
				}
			}
			// the partial results helpers computed for this worker's rows, in worker order
			for x, t := range st.Tasks {
				if t != nil && x != w && t.Q == w {
					res := r.tr.Recv(w, x)
					mergePartial(o, l, res[0], res[1], s, n, t.RowLo, t.RowHi)
				}
			}
		}
		r.o[w], r.lse[w] = o, l
	})
	for w := 0; w < r.p; w++ {
		lo, hi := r.bounds[w], r.bounds[w+1]
		scatterRows(out, r.o[w], s.Batch, s.QLen, ov, lo, hi, false)
		scatterLSECols(lse, r.lse[w], rowsL, s.QLen, lo, hi)
	}
}

// mergePartial merges a partial output po and logsumexp pl of a chunk's
// rows [lo, hi) into the chunk's running o and l (n rows): the softmax
// over both key sets (MergeAttention's formula).
func mergePartial[T Float](o, l, po, pl []T, s AttentionShape, n, lo, hi int) {
	dv, m := s.VDim(), hi-lo
	ov := s.Heads * dv
	for b := 0; b < s.Batch; b++ {
		for h := 0; h < s.Heads; h++ {
			row := b*s.Heads + h
			for i := 0; i < m; i++ {
				np := float64(pl[row*m+i])
				if math.IsInf(np, -1) { // these keys are all hidden from the query
					continue
				}
				prev := float64(l[row*n+lo+i])
				dst := o[(b*n+lo+i)*ov+h*dv : (b*n+lo+i)*ov+(h+1)*dv]
				src := po[(b*m+i)*ov+h*dv : (b*m+i)*ov+(h+1)*dv]
				if math.IsInf(prev, -1) {
					copy(dst, src)
					l[row*n+lo+i] = T(np)
					continue
				}
				both := max(prev, np) + math.Log1p(math.Exp(-math.Abs(prev-np)))
				wPrev, wNew := T(math.Exp(prev-both)), T(math.Exp(np-both))
				for c := range dst {
					dst[c] = dst[c]*wPrev + src[c]*wNew
				}
				l[row*n+lo+i] = T(both)
			}
		}
	}
}

// seqParBackward computes dq, dk and dv (zeroed on entry) from the
// forward's merged o and lse and their gradients do and dlse, with the
// same workers and schedule; each pair's gradients are summed by the
// chunks' owners in a fixed order.
func seqParBackward[T Float](r *seqParRun[T], q, k, v, mask, o, lse, do, dlse, dq, dk, dv []T) {
	s := r.s
	wq, wk, wv, ov, rowsL := s.Heads*s.HeadDim, s.KVHeads*s.HeadDim, s.KVHeads*s.VDim(), s.Heads*s.VDim(), s.Batch*s.Heads
	r.split(q, k, v, mask)
	r.o, r.lse, r.do, r.dlse = make([][]T, r.p), make([][]T, r.p), make([][]T, r.p), make([][]T, r.p)
	for w := 0; w < r.p; w++ {
		lo, hi := r.bounds[w], r.bounds[w+1]
		r.o[w] = rowsOf(o, s.Batch, s.QLen, ov, lo, hi)
		r.do[w] = rowsOf(do, s.Batch, s.QLen, ov, lo, hi)
		r.lse[w] = lseCols(lse, rowsL, s.QLen, lo, hi)
		r.dlse[w] = lseCols(dlse, rowsL, s.QLen, lo, hi)
	}
	gq, gk, gv := make([][]T, r.p), make([][]T, r.p), make([][]T, r.p)
	queryRows := func(w int) func(t *SeqParTask) [][]T {
		return func(t *SeqParTask) [][]T {
			n := r.bounds[w+1] - r.bounds[w]
			if t.RowLo == 0 && t.RowHi == n { // the whole chunk: no copy (Send copies)
				return [][]T{r.q[w], r.o[w], r.do[w], r.lse[w], r.dlse[w]}
			}
			return [][]T{
				rowsOf(r.q[w], s.Batch, n, wq, t.RowLo, t.RowHi),
				rowsOf(r.o[w], s.Batch, n, ov, t.RowLo, t.RowHi),
				rowsOf(r.do[w], s.Batch, n, ov, t.RowLo, t.RowHi),
				lseCols(r.lse[w], rowsL, n, t.RowLo, t.RowHi),
				lseCols(r.dlse[w], rowsL, n, t.RowLo, t.RowHi),
			}
		}
	}
	r.each(func(w int) {
		n := r.bounds[w+1] - r.bounds[w]
		myQ, myK, myV := make([]T, s.Batch*n*wq), make([]T, s.Batch*n*wk), make([]T, s.Batch*n*wv)
		kv := [][]T{r.k[w], r.v[w], r.mask[w]}
		addKV := func(pk, pv []T) {
			for i, x := range pk {
				myK[i] += x
			}
			for i, x := range pv {
				myV[i] += x
			}
		}
		for _, st := range r.steps {
			r.sendInputs(st, w, kv, queryRows(w))
			if t := st.Tasks[w]; t != nil {
				tkv, rows := r.recvInputs(t, w, kv, queryRows(w))
				ps := r.pairShape(t)
				pq, pk, pv := make([]T, ps.Batch*ps.QLen*wq), make([]T, ps.Batch*ps.KLen*wk), make([]T, ps.Batch*ps.KLen*wv)
				var pm []T
				if mask != nil {
					pm = tkv[2]
				}
				tiledBackward(ps, FullPattern(ps, r.block), rows[0], tkv[0], tkv[1], pm, rows[1], rows[3], rows[2], rows[4], pq, pk, pv)
				if t.Q == w {
					scatterRows(myQ, pq, s.Batch, n, wq, t.RowLo, t.RowHi, true)
				} else {
					r.tr.Send(w, t.Q, pq)
				}
				if t.KV == w {
					addKV(pk, pv)
				} else {
					r.tr.Send(w, t.KV, pk, pv)
				}
			}
			for x, t := range st.Tasks { // helpers' gradients of this worker's chunks, in worker order
				if t == nil || x == w {
					continue
				}
				if t.Q == w {
					res := r.tr.Recv(w, x)
					scatterRows(myQ, res[0], s.Batch, n, wq, t.RowLo, t.RowHi, true)
				}
				if t.KV == w {
					res := r.tr.Recv(w, x)
					addKV(res[0], res[1])
				}
			}
		}
		gq[w], gk[w], gv[w] = myQ, myK, myV
	})
	for w := 0; w < r.p; w++ {
		lo, hi := r.bounds[w], r.bounds[w+1]
		scatterRows(dq, gq[w], s.Batch, s.QLen, wq, lo, hi, true)
		scatterRows(dk, gk[w], s.Batch, s.KLen, wk, lo, hi, true)
		scatterRows(dv, gv[w], s.Batch, s.KLen, wv, lo, hi, true)
	}
}

// SequenceParallelAttention is the tiled attention core (TiledAttention
// with the full, or causal, pattern; key padding; GQA; ALiBi) computed by p
// workers over chunks of the sequence, with the balanced causal schedule
// (see the comment at the top of this file): the same function, up to the
// order of floating-point sums. p = 1 is one worker, the tiled core.
func SequenceParallelAttention(q, k, v, keyMask *G.Node, s AttentionShape, p int) (*G.Node, error) {
	out, _, err := SequenceParallelAttentionLSE(q, k, v, keyMask, s, p)
	return out, err
}

// SequenceParallelAttentionLSE is SequenceParallelAttention that also
// returns each query's logsumexp, as TiledAttentionLSE.
func SequenceParallelAttentionLSE(q, k, v, keyMask *G.Node, s AttentionShape, p int) (out, lse *G.Node, err error) {
	if err := s.Validate(); err != nil {
		return nil, nil, err
	}
	if _, err := newSeqParRun[float64](s, p, DefaultFlashBlock, true); err != nil {
		return nil, nil, err
	}
	name := fmt.Sprintf("SequenceParallelAttention(%+v,scale=%g,block=%d,masked=%t,workers=%d)", s, s.scale(), DefaultFlashBlock, keyMask != nil, p)
	return applyCore(name, s, q, k, v, keyMask, seqParFuncs[float32](s, p), seqParFuncs[float64](s, p), nil)
}

func seqParFuncs[T Float](s AttentionShape, p int) coreFuncs[T] {
	run := func() *seqParRun[T] {
		r, err := newSeqParRun[T](s, p, DefaultFlashBlock, true)
		if err != nil {
			panic(err) // checked when the op was built
		}
		return r
	}
	return coreFuncs[T]{
		forward: func(q, k, v, mask, out, lse, _ []T) { seqParForward(run(), q, k, v, mask, out, lse) },
		backward: func(q, k, v, mask, o, lse, _, do, dlse, dq, dk, dv []T) {
			seqParBackward(run(), q, k, v, mask, o, lse, do, dlse, dq, dk, dv)
		},
	}
}
