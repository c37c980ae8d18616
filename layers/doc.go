// Package layers builds the parts of a Transformer as Gorgonia graphs: the
// attention interface and the registry of attention variants (one file per
// variant, each registering itself with what it supports: causal,
// bidirectional, padding, position schemes; see Support), norms, the
// feed-forward network, the pre-norm residual block and the position
// schemes.
//
// Every layer maps [rows, d_model] to [rows, d_model] with rows = batch x
// positions, and takes its parameters from a Scope, which names them
// ("blocks.0.attn.wq") in the shared parameter store.
package layers
