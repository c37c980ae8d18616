package layers

import (
	"errors"
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/graph"
)

// Agent is agent attention (Han et al. 2024, "Agent Attention: On the
// Integration of Softmax and Linear Attention", ECCV): n_a agent tokens A,
// pooled from the queries, first gather from every key and then answer
// every query, two softmax attentions of size n x n_a in place of one n x n:
//
//	Q = x Wq, K = x Wk, V = x Wv   (each split into H heads of d = D/H)
//	A = pool(Q)                              n_a agent tokens per sequence
//	V_A = softmax(A_h K_h^T / sqrt(d)) V_h    agent aggregation
//	head_h = softmax(Q_h A_h^T / sqrt(d)) V_A  agent broadcast
//	out = concat(head_1..head_H) Wo
//
// pool is the mean over n_a contiguous segments of the sequence (segment s
// covers positions [floor(s T / n_a), floor((s+1) T / n_a)),
// graph.SegmentMean). The paper pools Q with adaptive average pooling, whose
// windows [floor(s T / n_a), ceil((s+1) T / n_a)) overlap by a position
// where n_a does not divide T; the two agree where it does. The paper's
// output also adds a depthwise convolution of V (its diversity-restoring
// term) and learned agent biases in both softmaxes; both are left out here,
// so this is the pure two-softmax form, the paper's generalized linear
// attention softmax(Q A^T) softmax(A K^T) V.
//
// Padding: padded positions are left out of the agent means and masked as
// keys in the aggregation, and an agent whose segment is padding only is
// masked out of the broadcast (it summarizes no token), so outputs at real
// positions do not depend on padded inputs. Segments are cut over the
// padded length T, so the agents of a sequence do depend on how far it is
// padded.
//
// Agents pool the whole sequence, so the layer is not causal: decoder models
// are refused. Position schemes: learned, sinusoidal and none act before the
// layer; rope, partial_rope and xpos rotate Q and K before pooling, so each
// agent is the mean of its segment's rotated queries. An agent reads keys as
// a query and is read by queries as a key, so for xpos (whose query and key
// scalings differ) the agents of the broadcast are pooled from Q with the
// key-side rotation, and both scores stay functions of relative position.
// alibi is refused: agents have no position to measure distance from.
//
// Time O(T n_a D) per sequence for the two attentions (plus O(T D^2) for the
// projections), memory O((T + n_a) D): the flash core never materializes
// even the T x n_a scores.
type Agent struct {
	spec   Spec
	agents int
	bias   bool
}

func init() {
	Register("agent", "agent attention (Han et al. 2024): n_a pooled agent tokens gather from the keys and answer the queries; O(T n_a), bidirectional",
		Support{Bidirectional: true, Padding: true, Positions: []string{"learned", "sinusoidal", "none", "rope", "partial_rope", "xpos"},
			Why: Refusals{Causal: "pools agent tokens over the whole sequence", Positions: "agent tokens have no position to measure distance from"}},
		[]config.OptionSpec{
			{Name: "agents", Kind: config.Int, Default: 4, Help: "agent tokens n_a, mean-pooled from the queries over contiguous segments; at most the sequence length"},
			{Name: "bias", Kind: config.Bool, Default: true, Help: "biases in the q, k, v and output projections"},
		},
		func(s Spec) (Attention, error) {
			n := s.Options.Int("agents")
			if n < 1 {
				return nil, fmt.Errorf("model.attention.agents: must be positive, got %d", n)
			}
			return &Agent{spec: s, agents: n, bias: s.Options.Bool("bias")}, nil
		})
}

// Forward implements Attention.
func (a *Agent) Forward(s Scope, x *G.Node, c Context) (*G.Node, error) {
	if c.Causal {
		return nil, errors.New("model.kind: agent attention cannot be causal; use it in encoder models")
	}
	if a.agents > c.SeqLen {
		return nil, fmt.Errorf("model.attention.agents: %d agent tokens for sequences of %d positions; at most one agent per position", a.agents, c.SeqLen)
	}
	d, dh, h := a.spec.DModel, a.spec.HeadDim(), a.spec.Heads
	q, k, v, err := ProjectQKV(s, x, d, d, d, d, a.bias)
	if err != nil {
		return nil, err
	}
	if k, err = a.spec.Pos.Rotate(k, c.Shape, h, dh, false); err != nil {
		return nil, err
	}
	// Agents as queries (aggregation) and as keys (broadcast): the same
	// means unless xpos scales the two sides differently.
	qRot, err := a.spec.Pos.Rotate(q, c.Shape, h, dh, true)
	if err != nil {
		return nil, err
	}
	aq, err := graph.SegmentMean(qRot, c.KeyMask, c.Batch, c.SeqLen, a.agents)
	if err != nil {
		return nil, err
	}
	ak := aq
	if a.spec.Pos.Kind == "xpos" {
		qk, err := a.spec.Pos.Rotate(q, c.Shape, h, dh, false)
		if err != nil {
			return nil, err
		}
		if ak, err = graph.SegmentMean(qk, c.KeyMask, c.Batch, c.SeqLen, a.agents); err != nil {
			return nil, err
		}
	}
	agentMask, err := segmentMask(c.KeyMask, c.Batch, c.SeqLen, a.agents)
	if err != nil {
		return nil, err
	}
	heads := Heads{Heads: h, HeadDim: dh}
	va, _, err := c.Attend(aq, k, v, CoreSpec{Heads: heads,
		Shape: graph.AttentionShape{Batch: c.Batch, QLen: a.agents, KLen: c.SeqLen}, KeyMask: c.KeyMask,
		Map: MapSpec{Label: "agents<-keys", Note: "aggregation: each agent (mean of a segment's queries) reads the keys", Rows: AxisAgent, RowMask: agentMask}})
	if err != nil {
		return nil, err
	}
	o, _, err := c.Attend(qRot, ak, va, CoreSpec{Heads: heads,
		Shape: graph.AttentionShape{Batch: c.Batch, QLen: c.SeqLen, KLen: a.agents}, KeyMask: agentMask,
		Map: MapSpec{Label: "queries<-agents", Note: "broadcast: each query reads the agents", Cols: AxisAgent}})
	if err != nil {
		return nil, err
	}
	return Project(s, "wo", o, d, d, a.bias)
}

// segmentMask is the key mask [batch*segments] of segment tokens pooled by
// graph.SegmentMean from sequences with key mask keyMask: 1 where the
// segment has a real position, 0 where it is padding only; nil when
// keyMask is nil (every segment is real).
func segmentMask(keyMask *G.Node, batch, seqLen, segments int) (*G.Node, error) {
	if keyMask == nil {
		return nil, nil
	}
	col, err := G.Reshape(keyMask, tensor.Shape{batch * seqLen, 1})
	if err != nil {
		return nil, err
	}
	// The mean of a segment's mask over its real positions is n x (1/n),
	// 1 up to rounding, and exactly 0 for a segment of padding only; the
	// attention cores test a key mask against 0 only.
	m, err := graph.SegmentMean(col, keyMask, batch, seqLen, segments)
	if err != nil {
		return nil, err
	}
	return G.Reshape(m, tensor.Shape{batch * segments})
}
