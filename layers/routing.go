package layers

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// Routing is the attention of the Routing Transformer (Roy, Saffar,
// Vaswani and Grangier 2021, "Efficient Content-Based Sparse Attention with
// Routing Transformers"): queries and keys are routed by online k-means to
// their nearest centroid, and each query attends to keys of its own
// cluster. Per routing head, with q and k projected as in standard
// attention (and rotated by rope, partial_rope or xpos), q^_i = q_i/|q_i|,
// k^_j = k_j/|k_j| and C centroids mu_c (unit-normalized at use),
//
//	c_q(i) = argmax_c mu_c . q^_i,  c_k(j) = argmax_c mu_c . k^_j   (ties to the lower c)
//	K_c    = the unpadded key positions j with c_k(j) = c, in increasing order
//	V(i)   = causal: the last min(w, n) keys of K_{c_q(i)} with j <= i (n of them)
//	         bidirectional: K_c[lo, lo+w), lo = clamp(r - w/2, 0, max(0, |K_c| - w)),
//	         r = #{j in K_c: j < i} (all of K_c when |K_c| <= w)
//	s_ij   = q_i . k_j / sqrt(d) (- slope_h |i - j| with alibi)
//	head_h(i) = sum_{j in V(i)} softmax_{V(i)}(s_ij) v_j,  out = concat(heads) Wo
//
// A query with no visible key sees its own key if that is unpadded, else
// outputs 0. With local_window > 0 the first floor(H/2) heads are the
// paper's local heads: a sliding window of the last local_window unpadded
// keys up to i (causal) or of local_window keys around i (bidirectional),
// no centroids. The assignments are not differentiated.
//
// Centroids: a store state buffer "centroids" [routing heads * C, d],
// drawn N(0, 1), that checkpoints save and restore. Each forward pass
// adds per cluster the sum and count of the unit queries and keys
// assigned to it (unpadded tokens, summed over the batch) to a sink of
// its graph (one per layer, shared by the segments of a memory model);
// after each optimizer step the training model applies the
// EMA (Context.AddStateUpdate) mu_c <- lambda mu_c + (1 - lambda) sum_c /
// count_c for clusters with count > 0, renormalizes mu_c to unit length,
// and clears the sink. The evaluation graph's updates never run, so
// evaluating moves no centroid. The core (graph.RoutingAttention) reads
// the buffer when it runs and saves the forward's assignments for the
// backward.
//
// Time O(T (w + C) d) per head (assignments O(T C d), scores and values
// O(T w d), computed by GEMMs over blocks of 16 queries of a cluster),
// memory O(T) for the assignments besides q, k, v; no T x T.
// Decoding keeps every key and value (a later query may route to any
// cluster). Departures from the paper: no commitment loss (the paper adds
// 1e-4 |x - mu|^2, which only moves q and k toward their centroids); the
// EMA moves toward the mean of the assigned vectors rather than the
// paper's sums (a sum grows with the batch and sequence, so its scale
// would set the effective step); within a cluster each query sees a
// sliding window of w of the cluster's keys (the last w up to it when
// causal) instead of the paper's sort by cluster and equal chunks of w,
// because chunks cut in the sorted order make a query's keys depend on how
// many later tokens route before it, which breaks causality; the
// centroids are per head, not shared by the heads of a layer; ties go to
// the lower cluster.
type Routing struct {
	spec                          Spec
	clusters, window, localWindow int
	decay                         float64
	bias                          bool
}

func init() {
	Register("routing", "Routing Transformer (Roy et al. 2021): online k-means (EMA centroids) routes queries and keys; each query sees a window of w keys of its cluster; clusters 8, window 64, decay 0.999, local_window 0 (>0: half the heads local); O(T w d + T C d), no T x T",
		Support{Causal: true, Bidirectional: true, Padding: true, Positions: Positions,
			CheckOptions: map[string]any{"clusters": 2, "window": 3, "local_window": 2}, NonSmooth: true},
		[]config.OptionSpec{
			{Name: "clusters", Kind: config.Int, Default: 8, Help: "C: k-means centroids per routing head"},
			{Name: "window", Kind: config.Int, Default: 64, Help: "w: keys of its cluster each query sees (causal: the last w up to it; bidirectional: w around it)"},
			{Name: "decay", Kind: config.Float, Default: 0.999, Help: "lambda in [0, 1): EMA decay of the centroids toward the mean of what was assigned to them"},
			{Name: "local_window", Kind: config.Int, Default: 0, Help: "0: every head routes; > 0: the first floor(H/2) heads are sliding windows of this many keys"},
			{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the q, k, v and output projections"},
		},
		func(s Spec) (Attention, error) {
			a := &Routing{spec: s, clusters: s.Options.Int("clusters"), window: s.Options.Int("window"),
				decay: s.Options.Float("decay"), localWindow: s.Options.Int("local_window"), bias: s.Options.Bool("bias")}
			switch {
			case a.clusters < 1:
				return nil, fmt.Errorf("model.attention.clusters: must be positive, got %d", a.clusters)
			case a.window < 1:
				return nil, fmt.Errorf("model.attention.window: must be positive, got %d", a.window)
			case !(a.decay >= 0 && a.decay < 1):
				return nil, fmt.Errorf("model.attention.decay: must be in [0, 1), got %g", a.decay)
			case a.localWindow < 0:
				return nil, fmt.Errorf("model.attention.local_window: must be 0 (no local heads) or positive, got %d", a.localWindow)
			}
			return a, nil
		})
}

// localHeads is the number of local heads: floor(H/2) with a local
// window, else 0.
func (a *Routing) localHeads() int {
	if a.localWindow > 0 {
		return a.spec.Heads / 2
	}
	return 0
}

// Forward implements Attention.
func (a *Routing) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	d, h, dh := a.spec.DModel, a.spec.Heads, a.spec.HeadDim()
	q, k, v, err := ProjectQKV(s, x, d, d, d, d, a.bias)
	if err != nil {
		return nil, err
	}
	pos := a.spec.Pos
	if q, err = pos.Rotate(q, c.Shape, h, dh, true); err != nil {
		return nil, err
	}
	if k, err = pos.Rotate(k, c.Shape, h, dh, false); err != nil {
		return nil, err
	}
	rs := graph.RoutingShape{
		AttentionShape: graph.AttentionShape{Batch: c.Batch, QLen: c.SeqLen, KLen: c.SeqLen, Heads: h, KVHeads: h, HeadDim: dh,
			Causal: c.Causal, ALiBi: pos.ALiBi()},
		Clusters: a.clusters, Window: a.window, LocalHeads: a.localHeads(), LocalWindow: a.localWindow,
	}
	var centroids *graph.Param
	var stats *graph.RoutingStats
	if rs.RoutingHeads() > 0 {
		if centroids, err = s.Binder().Store().StateBuffer(s.Name("centroids"), rs.CentroidShape(), graph.Normal(1)); err != nil {
			return nil, fmt.Errorf("model.attention (routing): %w", err)
		}
		// The sink belongs to this graph, one per layer however often its
		// Forward runs (each segment of a memory model), so that one
		// update per step sees all of them; only the training model runs
		// its update (Context.AddStateUpdate).
		mu := centroids
		newSink := func() any {
			st := graph.NewRoutingStats(rs)
			c.AddStateUpdate(func() error {
				st.UpdateCentroids(mu.Value.Data().([]float64), a.decay)
				return nil
			})
			return st
		}
		if c.Steps != nil {
			stats = c.Steps.Shared(s.Name("centroids"), newSink).(*graph.RoutingStats)
		} else {
			stats = newSink().(*graph.RoutingStats)
		}
	}
	o, err := a.core(q, k, v, c, rs, centroids, stats)
	if err != nil {
		return nil, err
	}
	return Project(s, "wo", o, d, d, a.bias)
}

// core records the map and the scores computed, then applies the core.
func (a *Routing) core(q, k, v *G.Node, c Context, rs graph.RoutingShape, centroids *graph.Param, stats *graph.RoutingStats) (*G.Node, error) {
	if c.Maps != nil {
		w, err := graph.RoutingWeights(q, k, c.KeyMask, centroids, rs)
		if err != nil {
			return nil, fmt.Errorf("recording the routing map of layer %d: %w", c.Layer, err)
		}
		m := MapSpec{Label: c.mapLabel, Note: c.mapNote, Q: q, K: k, KeyMask: c.KeyMask, Shape: rs.AttentionShape,
			Weights: w, EmptyRows: c.KeyMask != nil}
		if m.Note == "" {
			m.Note = fmt.Sprintf("each query sees %d keys of its k-means cluster (%d clusters)", a.window, a.clusters)
			if rs.LocalHeads > 0 {
				m.Note += fmt.Sprintf("; heads 0..%d: local windows of %d", rs.LocalHeads-1, a.localWindow)
			}
		}
		if _, err := c.RecordMap(m); err != nil {
			return nil, err
		}
	}
	if c.Cores != nil {
		// The scores the windows hold: at most min(w, T) per query of a
		// routing head (its cluster may be smaller), min(local_window, T)
		// per query of a local head. (The core's GEMM blocks of 16 queries
		// compute up to 16 more per query and discard them.)
		per := int64(rs.RoutingHeads()*min(a.window, c.SeqLen) + rs.LocalHeads*min(a.localWindow, c.SeqLen))
		c.Cores.Calls = append(c.Cores.Calls, CoreCall{Label: DefaultMapLabel, Scores: per * int64(c.Batch*c.SeqLen),
			FlashScores: graph.ScoresComputed(rs.AttentionShape, nil, graph.DefaultFlashBlock)})
	}
	return graph.RoutingAttention(q, k, v, c.KeyMask, centroids, stats, rs)
}

// KVCacheElems implements KVCache: every key and value stays a candidate
// (a later query may route to any cluster), so a key and a value of D per
// token.
func (a *Routing) KVCacheElems() int { return 2 * a.spec.DModel }
