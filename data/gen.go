package data

import (
	"fmt"
	"math/rand/v2"
)

const (
	// evalBuckets: an example belongs to Eval iff its hash % evalBuckets == 0.
	evalBuckets = 8
	// fillAttempts bounds the candidates Fill draws for one example before
	// giving up (a panic); probeAttempts bounds New's check that both streams
	// have examples. fillAttempts is much larger, so that a task which passed
	// the probe practically never fails later.
	fillAttempts  = 1 << 22
	probeAttempts = 1 << 16
)

// row is one example's slices inside a Batch: inputs, targets and loss mask
// (one entry each for a classification task) and the key mask (nil unless the
// task pads).
type row struct {
	in, tgt   []int
	loss, key []float64
}

// base holds what every task here shares and implements Task on top of a
// generator gen, which writes one candidate example from r into a zeroed row.
// gen must be safe to call concurrently.
type base struct {
	vocab, seqLen, classes int
	pads                   bool
	seed                   uint64
	gen                    func(r *rand.Rand, x row)
}

func (t *base) Vocab() int   { return t.vocab }
func (t *base) SeqLen() int  { return t.seqLen }
func (t *base) Classes() int { return t.classes }

// Pads reports whether the task's examples contain padding (and so whether its
// batches carry a KeyMask).
func (t *base) Pads() bool { return t.pads }

// Fill writes examples first, first+1, ... of stream s into b. It panics if b
// does not fit the task (not made by NewBatch for it) or s is not a stream.
func (t *base) Fill(b *Batch, s Stream, first uint64) {
	t.check(b)
	if s != Train && s != Eval {
		panic(fmt.Sprintf("data: Fill with unknown %v", s))
	}
	g := newGenerator()
	for k := range b.Size {
		i := first + uint64(k)
		if !g.example(t, s, i, t.row(b, k), fillAttempts) {
			panic(fmt.Sprintf("data: no %s example %d after %d candidates: the task has too few distinct examples to split", s, i, fillAttempts))
		}
	}
}

// prober is implemented by tasks built on base: New uses it to reject
// configurations too small to have both a train and a held-out example.
type prober interface {
	probe(s Stream) bool
}

func (t *base) probe(s Stream) bool {
	b := NewBatch(t, 1)
	return newGenerator().example(t, s, 0, t.row(b, 0), probeAttempts)
}

func (t *base) check(b *Batch) {
	n := b.Size * t.seqLen
	nt := n
	if t.classes > 0 {
		nt = b.Size
	}
	ok := b.Size >= 1 && b.SeqLen == t.seqLen && len(b.Inputs) == n &&
		len(b.Targets) == nt && len(b.LossMask) == nt &&
		(!t.pads || len(b.KeyMask) == n)
	if !ok {
		panic(fmt.Sprintf("data: Fill with a batch of size %d, seq_len %d (%d inputs, %d targets, %d loss mask, %d key mask) not made by NewBatch for this task (seq_len %d)",
			b.Size, b.SeqLen, len(b.Inputs), len(b.Targets), len(b.LossMask), len(b.KeyMask), t.seqLen))
	}
}

func (t *base) row(b *Batch, k int) row {
	n := t.seqLen
	x := row{in: b.Inputs[k*n : (k+1)*n]}
	if t.classes > 0 {
		x.tgt, x.loss = b.Targets[k:k+1], b.LossMask[k:k+1]
	} else {
		x.tgt, x.loss = b.Targets[k*n:(k+1)*n], b.LossMask[k*n:(k+1)*n]
	}
	if t.pads {
		x.key = b.KeyMask[k*n : (k+1)*n]
	}
	return x
}

// generator draws candidates; its PCG source is reseeded for each one, and
// rand.Rand keeps no state of its own, so candidates are independent.
type generator struct {
	src *rand.PCG
	r   *rand.Rand
}

func newGenerator() generator {
	src := rand.NewPCG(0, 0)
	return generator{src: src, r: rand.New(src)}
}

// example writes example i of stream s into x, trying at most budget
// candidates; it reports whether one fell in s's part.
func (g generator) example(t *base, s Stream, i uint64, x row, budget int) bool {
	for attempt := range uint64(budget) {
		g.src.Seed(t.seed, mix(s, i, attempt))
		clear(x.in)
		clear(x.tgt)
		clear(x.loss)
		clear(x.key)
		t.gen(g.r, x)
		if streamOf(hashExample(x.in, x.tgt)) == s {
			return true
		}
	}
	return false
}

// streamOf returns the stream an example with FNV-1a hash h belongs to.
//
// The FNV hash is scrambled by splitmix before taking it modulo 8: the low
// bits of an FNV-1a hash depend only on the low bits of each input byte, and
// with ids written as 8-byte words h%8 is just 5 XOR (the XOR of every id's
// low 3 bits), so with ids below 4 (majority) no example could ever go to Eval.
func streamOf(h uint64) Stream {
	if splitmix(h)%evalBuckets == 0 {
		return Eval
	}
	return Train
}

// hashExample is FNV-1a (64 bits) over in and then tgt, each id written as 8
// little-endian bytes: the same as hash/fnv.New64a over those bytes.
func hashExample(in, tgt []int) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for _, s := range [2][]int{in, tgt} {
		for _, v := range s {
			u := uint64(v)
			for range 8 {
				h ^= u & 0xff
				h *= prime
				u >>= 8
			}
		}
	}
	return h
}

// mix combines stream, index and attempt into the second half of a PCG seed
// (the task's seed is the first). For a fixed stream and attempt it is a
// bijection of the index.
func mix(s Stream, i, attempt uint64) uint64 {
	return splitmix(splitmix(splitmix(uint64(s))^attempt) ^ i)
}

// splitmix is the SplitMix64 output function: a bijection that scrambles all
// bits.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
