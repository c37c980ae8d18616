package data

import (
	"fmt"
	"math/rand/v2"

	"github.com/attnlab/attnlab/config"
)

// copy: reproduce a random prefix after a separator, the copying task used to
// probe what attention can retrieve (as in "Repeat After Me: Transformers are
// Better than State Space Models at Copying", Jelassi et al., 2024).
//
// Token 0 is the separator; data tokens are drawn uniformly from [1, vocab).
// With T = seq_len and n = T/2 (rounded down), the full sequence is
//
//	x1 .. xn SEP x1 .. xn
//
// (2n+1 tokens). The inputs are its first T tokens and the targets are the
// next tokens, so the model, having read SEP, must emit x1, then x2, ... The
// loss mask is 1 exactly where the target is a copied token: n positions,
// from the SEP onwards. For even T the sequence has T+1 tokens, exactly
// enough. For odd T it has T tokens: the inputs are the whole sequence, and
// the last position, whose next token lies past the end, has target 0 and is
// not scored.

const copySep = 0

func init() {
	Register("copy", "reproduce a random prefix after a separator token (language model)",
		[]config.OptionSpec{
			{Name: "seq_len", Kind: config.Int, Default: 64, Help: "model input length T; the prefix has T/2 tokens"},
			{Name: "vocab", Kind: config.Int, Default: 16, Help: "vocabulary size including the separator (token 0)"},
		}, newCopy)
}

type copyTask struct {
	base
	n int // prefix length
}

func newCopy(o config.Values, seed uint64) (Task, error) {
	T, V := o.Int("seq_len"), o.Int("vocab")
	if T < 2 {
		return nil, optErr("seq_len", "must be at least 2 (one data token and the separator), got %d", T)
	}
	if V < 3 {
		return nil, optErr("vocab", "must be at least 3 (the separator and two data tokens), got %d", V)
	}
	t := &copyTask{base: base{vocab: V, seqLen: T, seed: seed}, n: T / 2}
	t.gen = t.generate
	return t, nil
}

// Describe summarises the task's options.
func (t *copyTask) Describe() string {
	return fmt.Sprintf("copy: seq_len=%d vocab=%d (prefix of %d tokens, separator 0)", t.seqLen, t.vocab, t.n)
}

func (t *copyTask) generate(r *rand.Rand, x row) {
	n, T := t.n, t.seqLen
	for j := range n {
		x.in[j] = 1 + r.IntN(t.vocab-1)
	}
	// seq returns token i of the full sequence, i <= 2n, once x.in[:n] is set.
	seq := func(i int) int {
		switch {
		case i < n:
			return x.in[i]
		case i == n:
			return copySep
		default:
			return x.in[i-n-1]
		}
	}
	for j := n; j < T; j++ {
		x.in[j] = seq(j)
	}
	for j := range T {
		if j+1 > 2*n {
			break // odd T: the last position has no next token
		}
		x.tgt[j] = seq(j + 1)
		if j+1 > n {
			x.loss[j] = 1
		}
	}
}
