package graph

import (
	"fmt"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
)

func randSlice(rng *rand.Rand, n int) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = rng.NormFloat64()
	}
	return x
}

// TestSeqParMatchesOneWorker: P = 2, 4, 8 workers give the tiled core's
// output, logsumexp and input gradients (float64, fresh random inputs,
// upstream gradients of both O and L) to 1e-10, causal and bidirectional,
// with key padding, GQA and ALiBi, at lengths that are no multiple of P x tile.
func TestSeqParMatchesOneWorker(t *testing.T) {
	rng := testRNG(t)
	const block = 8
	for _, causal := range []bool{true, false} {
		for _, c := range []struct {
			T, heads, kvHeads int
			masked, alibi     bool
		}{{203, 2, 2, false, false}, {97, 4, 2, true, false}, {61, 2, 1, true, false}, {150, 3, 3, false, true}, {77, 4, 2, true, true}} {
			for _, p := range []int{2, 4, 8} {
				s := AttentionShape{Batch: 2, QLen: c.T, KLen: c.T, Heads: c.heads, KVHeads: c.kvHeads, HeadDim: 5, ValueDim: 3, Causal: causal, ALiBi: c.alibi}
				t.Run(fmt.Sprintf("causal=%v/T=%d/H=%d,%d/masked=%v/alibi=%v/P=%d", causal, c.T, c.heads, c.kvHeads, c.masked, c.alibi, p), func(t *testing.T) {
					nq, nk, nv := s.Batch*s.QLen*s.Heads*s.HeadDim, s.Batch*s.KLen*s.KVHeads*s.HeadDim, s.Batch*s.KLen*s.KVHeads*s.VDim()
					nOut, nL := s.Batch*s.QLen*s.Heads*s.VDim(), s.Batch*s.Heads*s.QLen
					q, k, v := randSlice(rng, nq), randSlice(rng, nk), randSlice(rng, nv)
					var mask []float64
					if c.masked {
						mask = padMask(rng, s.Batch, s.KLen)
					}
					do, dlse := randSlice(rng, nOut), randSlice(rng, nL)
					// one worker: the tiled core
					full := FullPattern(s, block)
					o1, l1 := make([]float64, nOut), make([]float64, nL)
					tiledForward(s, full, q, k, v, mask, o1, l1)
					dq1, dk1, dv1 := make([]float64, nq), make([]float64, nk), make([]float64, nv)
					tiledBackward(s, full, q, k, v, mask, o1, l1, do, dlse, dq1, dk1, dv1)
					// p workers
					r, err := newSeqParRun[float64](s, p, block, true)
					if err != nil {
						t.Fatal(err)
					}
					o, l := make([]float64, nOut), make([]float64, nL)
					seqParForward(r, q, k, v, mask, o, l)
					r, _ = newSeqParRun[float64](s, p, block, true)
					dq, dk, dv := make([]float64, nq), make([]float64, nk), make([]float64, nv)
					seqParBackward(r, q, k, v, mask, o, l, do, dlse, dq, dk, dv)
					for _, cmp := range []struct {
						name      string
						got, want []float64
					}{{"O", o, o1}, {"L", l, l1}, {"dQ", dq, dq1}, {"dK", dk, dk1}, {"dV", dv, dv1}} {
						if d := maxAbsDiff(cmp.got, cmp.want); !(d <= 1e-10) {
							t.Errorf("%s: largest difference %.3g from one worker's", cmp.name, d)
						}
					}
				})
			}
		}
	}
}

// TestSeqParBalance: with the balanced schedule the busiest worker visits
// at most 1.1 times the mean number of tiles (causal), where the plain
// ring's busiest visits about twice the mean; every visible pair of chunks
// is visited exactly once (whole or as its two row halves), and the
// balanced schedule takes P/2 + 1 steps.
func TestSeqParBalance(t *testing.T) {
	for _, p := range []int{2, 3, 4, 8} {
		for _, T := range []int{32768, 16484} { // chunks of 32 tiles and more: a ragged tile row weighs little
			b := SeqParChunks(T, p)
			bal := SeqParSchedule(p, b, true, true)
			ring := SeqParSchedule(p, b, true, false)
			if want := p/2 + 1; len(bal) != want {
				t.Errorf("P=%d: %d steps, want %d", p, len(bal), want)
			}
			rb, rr := SeqParBalance(SeqParTiles(bal, b, true, 64)), SeqParBalance(SeqParTiles(ring, b, true, 64))
			if rb > 1.1 {
				t.Errorf("P=%d, T=%d: balanced schedule's busiest/mean %.3f > 1.1", p, T, rb)
			}
			if p >= 4 && rr < 1.5 {
				t.Errorf("P=%d, T=%d: the plain ring's busiest/mean %.3f: not the imbalance the schedule removes", p, T, rr)
			}
			// coverage: rows of each pair (i, j <= i) visited once
			rows := map[[2]int]int{}
			for _, st := range bal {
				for _, task := range st.Tasks {
					if task != nil {
						rows[[2]int{task.Q, task.KV}] += task.RowHi - task.RowLo
					}
				}
			}
			for i := 0; i < p; i++ {
				for j := 0; j <= i; j++ {
					if got := rows[[2]int{i, j}]; got != b[i+1]-b[i] {
						t.Errorf("P=%d: pair (%d, %d) covers %d rows, want %d", p, i, j, got, b[i+1]-b[i])
					}
				}
			}
			if len(rows) != p*(p+1)/2 {
				t.Errorf("P=%d: %d pairs visited, want %d", p, len(rows), p*(p+1)/2)
			}
		}
	}
}

// TestSequenceParallelAttentionOp: the graph op with 3 workers has the
// tiled op's value and passes the finite-difference gradient check.
func TestSequenceParallelAttentionOp(t *testing.T) {
	rng := testRNG(t)
	s := AttentionShape{Batch: 1, QLen: 70, KLen: 70, Heads: 2, KVHeads: 1, HeadDim: 4, Causal: true}
	build := func() (*G.ExprGraph, *G.Node, []*G.Node) {
		g := G.NewGraph()
		q := Variable(g, "q", RandomTensor(rng, 1, s.QLen, s.Heads*s.HeadDim))
		k := Variable(g, "k", RandomTensor(rng, 1, s.KLen, s.KVHeads*s.HeadDim))
		v := Variable(g, "v", RandomTensor(rng, 1, s.KLen, s.KVHeads*s.HeadDim))
		out, err := SequenceParallelAttention(q, k, v, nil, s, 3)
		if err != nil {
			t.Fatal(err)
		}
		return g, out, []*G.Node{q, k, v}
	}
	g, out, in := build()
	ref, err := TiledAttention(in[0], in[1], in[2], nil, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	vm.Close()
	if d := maxAbsDiff(out.Value().Data().([]float64), ref.Value().Data().([]float64)); d > 1e-12 {
		t.Errorf("value differs from the tiled op's by %.3g", d)
	}
	g, out, in = build()
	res, err := GradCheck{Seed: 7}.Run(g, out, in)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Pass {
		t.Error(res)
	}
}
