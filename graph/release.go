package graph

import (
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// ReleaseValues drops the values a tape machine's run left bound to g's
// computed nodes (every node it ran keeps its output until the next run),
// so that the garbage collector can reclaim them. Inputs, parameters (and
// their gradients, bound as dual values) and constants keep theirs. A
// training loop calls it on the training graph before an evaluation and on
// the evaluation graph after one, so the two graphs' activations are never
// held at the same time: evaluation then adds nothing to training's peak
// memory. The next run of g binds fresh values; nothing is read from the
// released ones.
//
// Gorgonia's unbinding hands each released tensor to gorgonia.org/tensor's
// pool of tensor headers, which is unsafe here: two nodes can share a
// register, and so one *tensor.Dense, and a header returned twice is later
// handed out twice. ReleaseValues therefore turns that pool off (it recycles
// only the small Dense structs, not their data) for the process.
func ReleaseValues(g *G.ExprGraph) {
	tensor.DontUsePool()
	g.UnbindAllNonInputs()
}
