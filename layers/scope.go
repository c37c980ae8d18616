package layers

import (
	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/graph"
)

// Scope hands out parameters under a name prefix.
type Scope struct {
	b      *graph.Binder
	prefix string
}

// NewScope returns the root scope of a binder.
func NewScope(b *graph.Binder) Scope { return Scope{b: b} }

// Sub returns the scope of a part called name.
func (s Scope) Sub(name string) Scope {
	if s.prefix == "" {
		return Scope{b: s.b, prefix: name}
	}
	return Scope{b: s.b, prefix: s.prefix + "." + name}
}

// Name is the full name of a parameter called name in this scope.
func (s Scope) Name(name string) string { return s.Sub(name).prefix }

// Param returns the node of this scope's parameter called name.
func (s Scope) Param(name string, shape []int, init graph.Init) (*G.Node, error) {
	return s.b.Param(s.Name(name), shape, init)
}

// Graph is the graph the scope builds into.
func (s Scope) Graph() *G.ExprGraph { return s.b.Graph() }

// Binder is the scope's binder, for inputs that are not parameters.
func (s Scope) Binder() *graph.Binder { return s.b }

// Shape describes the batch flowing through a layer: Batch sequences of
// SeqLen positions, stored as [Batch*SeqLen, DModel].
type Shape struct {
	Batch, SeqLen, DModel int
}

// Rows is Batch x SeqLen.
func (s Shape) Rows() int { return s.Batch * s.SeqLen }
