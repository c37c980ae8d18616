// Package data generates the synthetic tasks that attnlab trains and
// evaluates its Transformers on.
//
// A task is chosen by configuration, as a config.Component such as
//
//	task: {kind: assoc_recall, seq_len: 64, kv_pairs: 8}
//
// and built by New, which checks the options against the task's declared
// specs (Entries lists them) and reports a bad value by its key
// ("task.seq_len: ..."). Each task lives in its own file and registers itself
// from init with Register:
//
//   - assoc_recall: multi-query associative recall (MQAR) from Zoology
//     (Arora et al., 2023), a language-model task;
//   - copy: reproduce a random prefix after a separator, a language-model
//     task;
//   - majority: classify whether 'b' outnumbers 'a' in a padded sequence,
//     a sequence-classification task for the encoder model.
//
// # Determinism
//
// A task produces no data on its own: Fill writes examples first, first+1,
// ... of a stream into a Batch made by NewBatch. Example i of stream s depends
// only on the task's options, its seed, s and i: it is drawn from a
// math/rand/v2 PCG generator seeded with (seed, mix(s, i, attempt)), where mix
// is a SplitMix64 combination and attempt is explained below. Nothing is
// carried from one example to the next, so any batch can be rebuilt from its
// first index alone; resuming training exactly only needs the index of the
// next example. Fill may be called from several goroutines at once.
//
// # Disjoint train and held-out streams
//
// The Train and Eval streams never share an example, by construction. Each
// candidate example is hashed with FNV-1a (64 bits) over its inputs and then
// its targets, every token id written as 8 little-endian bytes, and the hash
// is scrambled with the SplitMix64 finaliser (a bijection). The example
// belongs to Eval if the scrambled hash is 0 modulo 8 and to Train otherwise.
// (Without the scrambling, FNV-1a modulo 8 is only the XOR of the ids' low
// three bits, which for a vocabulary of 4 never selects Eval.) To make
// example i of stream s, candidates are drawn with attempt = 0, 1, 2, ... until
// one falls in s's part; about 1 in 8 candidates goes to Eval, so an Eval
// example takes 8 attempts on average and a Train example a little over 1.
// Inputs and targets determine the whole example for every task here (the loss
// and key masks follow from them), so equal hashes are needed for two streams
// to share an example, and equal examples always have equal hashes.
//
// A configuration so small that one of the parts is empty (or nearly so)
// cannot be split: New tries the first example of both streams and returns an
// error if either cannot be found, and Fill panics in the unlikely case that a
// later example cannot.
package data
