package layers

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// Performer is FAVOR+ attention (Choromanski et al. 2021, "Rethinking
// Attention with Performers"): softmax attention's kernel exp(q . k /
// sqrt(d)) estimated by m random features, so that attention becomes
// linear attention over the features. Per head, with x' = x / d^(1/4) and
// w [m, d] a random projection shared by the heads of the layer,
//
//	softmax kernel (FAVOR+): phi(x) = exp(w x' - |x'|^2/2) / sqrt(m)
//	relu kernel:             phi(x) = relu(w x') / sqrt(m)
//	out_i = sum_j a_ij v_j / sum_j a_ij,   a_ij = phi(q_i) . phi(k_j)
//
// over the unpadded keys j (j <= i when causal: the chunked scan of
// graph.LinearAttention). E[phi(q) . phi(k)] = exp(q . k / sqrt(d)) for
// the softmax kernel, whose features are positive, so the estimate is
// unbiased and its normalizer never 0; it divides exactly (graph.NormExact),
// and the stabilizers subtracted in the exponent (per query row, per key
// sequence and head; graph.StabilizeRow, graph.StabilizeSequence) cancel.
// The relu kernel is the generalized attention LRA ran on most tasks; its
// features may all be 0, and it divides by the sum + graph.LinearEps.
//
// w is drawn, not learned (graph.DrawFeatures): orthogonal random features
// by default (blocks of d orthogonal rows with chi-distributed norms), or
// i.i.d. Gaussian rows. It is redrawn every `redraw` training steps (0:
// never), each draw a pure function of the store's seed, the layer's name
// and the redraw index step / redraw (graph.FeatureRNG), held in a graph
// input the model refills per step (Context.Steps, models.Model.SetStep):
// a resumed run draws what an uninterrupted one does, and the evaluation
// graph uses the training step's draw.
//
// Time O(T m d) per head (features, and the sums or the scan, plus O(T
// chunk m) for the causal scan's intra-chunk products); memory O(T m) per
// head: no T x T matrix. Decoding keeps a recurrent state of m x d + m per
// head. Departures from the public implementations: no small constant is
// added to the features (google-research's FAVOR+ adds 1e-6; the exact
// normalization needs none, the features being positive); the stabilizer
// is the largest exponent w x' - |x'|^2/2 rather than the largest w x';
// redraws follow the training step, not a count of forward calls
// (lucidrains'). As in both, the key stabilizer of a causal layer is taken
// over the whole sequence: it cancels, but a decoder computing token by
// token would need a running maximum instead.
type Performer struct {
	spec       Spec
	m          int
	orthogonal bool
	redraw     int
	kernel     string
	chunk      int
	bias       bool
}

func init() {
	Register("performer", "FAVOR+ attention (Performer, Choromanski et al. 2021): softmax's kernel estimated by m random features, redrawn periodically; linear attention over them, O(T m d), no T x T",
		Support{Causal: true, Bidirectional: true, Padding: true, Positions: []string{"learned", "sinusoidal", "none"},
			Why:          Refusals{Positions: "it never forms the scores alibi biases, and rotating queries and keys before the random features is not the paper's method"},
			CheckOptions: map[string]any{"features": 5, "chunk": 4}},
		[]config.OptionSpec{
			{Name: "features", Kind: config.Int, Default: 0, Help: "random features m per head; 0 = floor(d ln d) for head dim d (at least 1), as lucidrains' performer-pytorch"},
			{Name: "orthogonal", Kind: config.Bool, Default: true, Help: "orthogonal random features (blocks of d orthogonal rows with chi norms) instead of i.i.d. Gaussian rows"},
			{Name: "redraw", Kind: config.Int, Default: 1000, Help: "training steps between redraws of the features; 0 never redraws"},
			{Name: "kernel", Kind: config.String, Default: graph.KernelSoftmax, Help: "softmax (FAVOR+ positive features, exact normalization) or relu (generalized attention, normalizer + 1e-6)"},
			{Name: "chunk", Kind: config.Int, Default: 64, Help: "positions per chunk of the causal scan"},
			{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the q, k, v and output projections"},
		},
		func(s Spec) (Attention, error) {
			a := &Performer{spec: s, orthogonal: s.Options.Bool("orthogonal"), redraw: s.Options.Int("redraw"),
				kernel: s.Options.String("kernel"), chunk: s.Options.Int("chunk"), bias: s.Options.Bool("bias")}
			m := s.Options.Int("features")
			if m < 0 {
				return nil, fmt.Errorf("model.attention.features: must be 0 (floor(d ln d)) or positive, got %d", m)
			}
			a.m = PerformerFeatures(s.HeadDim(), m)
			if a.redraw < 0 {
				return nil, fmt.Errorf("model.attention.redraw: must be 0 (never) or positive, got %d", a.redraw)
			}
			if a.kernel != graph.KernelSoftmax && a.kernel != graph.KernelReLU {
				return nil, fmt.Errorf("model.attention.kernel: want %s or %s, got %q", graph.KernelSoftmax, graph.KernelReLU, a.kernel)
			}
			if a.chunk < 1 {
				return nil, fmt.Errorf("model.attention.chunk: must be at least 1, got %d", a.chunk)
			}
			return a, nil
		})
}

// PerformerFeatures is the number of random features per head the
// performer variant uses for head dim d and option value features: the
// option when positive, else floor(d ln d), at least 1.
func PerformerFeatures(d, features int) int {
	if features > 0 {
		return features
	}
	return max(1, int(float64(d)*math.Log(float64(d))))
}

// StateElems implements RecurrentState: per head the m x d sum S and the
// m-vector z of the causal recurrence over the features.
func (a *Performer) StateElems() int {
	return a.spec.Heads * (a.m*a.spec.HeadDim() + a.m)
}

// Window is the redraw index of step: step / redraw, or 0 when the layer
// never redraws.
func (a *Performer) Window(step int) int {
	if a.redraw == 0 {
		return 0
	}
	return step / a.redraw
}

// draws returns the Fill of the layer's feature input: the draw of step's
// window for the layer called name in a store seeded with seed, kept
// until the window changes.
func (a *Performer) draws(seed uint64, name string) func(step int, dst []float64) {
	last := -1
	var w []float64
	return func(step int, dst []float64) {
		if r := a.Window(step); r != last || w == nil {
			w = graph.DrawFeatures(graph.FeatureRNG(seed, name, r), a.m, a.spec.HeadDim(), a.orthogonal)
			last = r
		}
		copy(dst, w)
	}
}

// Forward implements Attention.
func (a *Performer) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	D, H := a.spec.DModel, a.spec.Heads
	d := D / H
	q, k, v, err := ProjectQKV(s, x, D, D, D, D, a.bias)
	if err != nil {
		return nil, err
	}
	name := s.Name("features")
	w := s.Binder().Input(name, a.m, d) // [m, d], shared by the heads
	if err := c.AddStepInput(w, a.draws(s.Binder().Store().Seed(), name)); err != nil {
		return nil, err
	}
	fs := graph.FeatureShape{Batch: c.Batch, SeqLen: c.SeqLen, Heads: H, HeadDim: d, Features: a.m, Kernel: a.kernel}
	norm, note := graph.NormEps, "phi(q_i) . phi(k_j) over its row's sum, relu random features (the layer adds 1e-6 to the sum)"
	if a.kernel == graph.KernelSoftmax {
		norm, note = graph.NormExact, "phi(q_i) . phi(k_j) over its row's sum, FAVOR+ positive random features: an estimate of softmax(q k^T / sqrt(d))"
		fs.Stabilizer = graph.StabilizeRow
	}
	fq, err := graph.RandomFeatures(q, w, nil, fs) // [Batch*T, H*m]
	if err != nil {
		return nil, err
	}
	if a.kernel == graph.KernelSoftmax {
		fs.Stabilizer = graph.StabilizeSequence
	}
	fk, err := graph.RandomFeatures(k, w, c.KeyMask, fs) // [Batch*T, H*m], padded keys 0
	if err != nil {
		return nil, err
	}
	chunk := a.chunk
	if c.Tile > 0 { // a gradient check's small chunks
		chunk = c.Tile
	}
	sh := graph.LinearShape{Batch: c.Batch, SeqLen: c.SeqLen, Heads: H, HeadDim: a.m, ValueDim: d, Causal: c.Causal,
		Feature: graph.FeatureIdentity, Chunk: chunk, Norm: norm}
	if c.Maps != nil {
		mw, err := graph.LinearAttentionWeights(fq, fk, c.KeyMask, sh)
		if err != nil {
			return nil, err
		}
		as := graph.AttentionShape{Batch: c.Batch, QLen: c.SeqLen, KLen: c.SeqLen, Heads: H, KVHeads: H, HeadDim: d, Causal: c.Causal}
		if _, err := c.RecordMap(MapSpec{Weights: mw, Shape: as, KeyMask: c.KeyMask, EmptyRows: a.kernel == graph.KernelReLU, Note: note}); err != nil {
			return nil, err
		}
	}
	o, err := graph.LinearAttention(fq, fk, v, c.KeyMask, sh) // [Batch*T, D]
	if err != nil {
		return nil, err
	}
	return Project(s, "wo", o, D, D, a.bias)
}
