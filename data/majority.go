package data

import (
	"fmt"
	"math/rand/v2"

	"github.com/attnlab/attnlab/config"
)

// majority: sequence classification with padding, for the encoder model: the
// MAJORITY language from the formal-language study of what Transformer
// encoders can recognise (e.g. Hao, Angluin and Frank, "Formal Language
// Recognition by Hard Attention Transformers", TACL 2022), with a CLS token
// for the classifier to read and padding to exercise key masks.
//
// Token ids: 0 = PAD, 1 = CLS, 2 = 'a', 3 = 'b' (vocab 4). An example is CLS
// followed by an odd number L of uniform random a/b tokens, then PAD up to
// seq_len. L is uniform over the odd values in [min_len, seq_len-1] (min_len
// is rounded up and seq_len-1 down to odd values). The label (class 1 of 2)
// says 'b' outnumbers 'a'; with L odd there are no ties. KeyMask is 1 on CLS
// and the L tokens, 0 on PAD; LossMask is one 1 per example.

const (
	majPad = 0
	majCLS = 1
	majA   = 2
	majB   = 3
)

func init() {
	Register("majority", "label whether 'b' outnumbers 'a' in a padded sequence (classification, 2 classes)",
		[]config.OptionSpec{
			{Name: "seq_len", Kind: config.Int, Default: 32, Help: "padded length, CLS included"},
			{Name: "min_len", Kind: config.Int, Default: 8, Help: "shortest a/b sequence; lengths are odd, in [min_len, seq_len-1]"},
		}, newMajority)
}

type majorityTask struct {
	base
	minLen, maxLen int // odd bounds on L
}

func newMajority(o config.Values, seed uint64) (Task, error) {
	T, m := o.Int("seq_len"), o.Int("min_len")
	if T < 2 {
		return nil, optErr("seq_len", "must be at least 2 (CLS and one token), got %d", T)
	}
	if m < 1 {
		return nil, optErr("min_len", "must be at least 1, got %d", m)
	}
	lo, hi := m|1, T-1 // m rounded up to odd; seq_len-1 rounded down below
	if hi%2 == 0 {
		hi--
	}
	if lo > hi {
		return nil, optErr("min_len", "leaves no odd length in [min_len, seq_len-1] = [%d, %d]; want min_len <= %d", m, T-1, hi)
	}
	t := &majorityTask{base: base{vocab: 4, seqLen: T, classes: 2, pads: true, seed: seed}, minLen: lo, maxLen: hi}
	t.gen = t.generate
	return t, nil
}

// Describe summarises the task's options.
func (t *majorityTask) Describe() string {
	return fmt.Sprintf("majority: seq_len=%d, odd lengths %d..%d", t.seqLen, t.minLen, t.maxLen)
}

func (t *majorityTask) generate(r *rand.Rand, x row) {
	L := t.minLen + 2*r.IntN((t.maxLen-t.minLen)/2+1)
	x.in[0], x.key[0] = majCLS, 1
	bs := 0
	for j := 1; j <= L; j++ {
		tok := majA
		if r.IntN(2) == 1 {
			tok = majB
			bs++
		}
		x.in[j], x.key[j] = tok, 1
	}
	// x.in[L+1:] is already PAD (0), as is x.key there.
	if 2*bs > L {
		x.tgt[0] = 1
	}
	x.loss[0] = 1
}
