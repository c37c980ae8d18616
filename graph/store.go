package graph

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Init fills a new parameter. rng is seeded from the store's seed and the
// parameter's name, so a parameter's initial value does not depend on which
// other parameters exist or in what order they were made.
type Init func(rng *rand.Rand, x []float64)

// Normal draws from N(0, std^2).
func Normal(std float64) Init {
	return func(rng *rand.Rand, x []float64) {
		for i := range x {
			x[i] = rng.NormFloat64() * std
		}
	}
}

// Uniform draws from U(-bound, bound).
func Uniform(bound float64) Init {
	return func(rng *rand.Rand, x []float64) {
		for i := range x {
			x[i] = bound * (2*rng.Float64() - 1)
		}
	}
}

// Constant sets every element to c (0 for biases, 1 for norm gains).
func Constant(c float64) Init {
	return func(_ *rand.Rand, x []float64) {
		for i := range x {
			x[i] = c
		}
	}
}

// Param is one named, trainable tensor.
type Param struct {
	Name  string
	Value *tensor.Dense
	// Mutable marks a buffer that training changes (StateBuffer): a
	// checkpoint restores it rather than checking it against the draw.
	Mutable bool
}

// Store holds a model's parameters by name, independent of any graph: the
// training graph and the evaluation graph (other batch shapes) bind the same
// tensors, the optimizer updates them in place, and checkpoints read and
// write them.
type Store struct {
	// Placement is where the graphs built on the store's parameters run
	// (NewGraph): OnGPU or OnGPUTF32 for device cuda. Without the CUDA
	// build it changes nothing.
	Placement Placement

	dtype   tensor.Dtype
	seed    uint64
	params  []*Param
	byName  map[string]*Param
	buffers []*Param
}

// NewStore returns an empty store of dtype (Float32 or Float64) whose
// initializers are seeded from seed.
func NewStore(dtype tensor.Dtype, seed uint64) (*Store, error) {
	if dtype != tensor.Float32 && dtype != tensor.Float64 {
		return nil, fmt.Errorf("parameter store: unsupported dtype %v (want float32 or float64)", dtype)
	}
	return &Store{dtype: dtype, seed: seed, byName: map[string]*Param{}}, nil
}

// Dtype is the element type of every parameter.
func (s *Store) Dtype() tensor.Dtype { return s.dtype }

// Seed is the seed the store's initializers (and anything else a layer
// draws from the store's randomness, such as Performer's random features)
// are seeded from.
func (s *Store) Seed() uint64 { return s.seed }

// Params returns the parameters in creation order.
func (s *Store) Params() []*Param { return s.params }

// Get returns the parameter called name, or nil.
func (s *Store) Get(name string) *Param { return s.byName[name] }

// NumElements is the total number of parameter values.
func (s *Store) NumElements() int {
	n := 0
	for _, p := range s.params {
		n += p.Value.Shape().TotalSize()
	}
	return n
}

// Param returns the parameter called name, creating it with init if it does
// not exist yet. Asking again with another shape is an error.
func (s *Store) Param(name string, shape []int, init Init) (*Param, error) {
	if p, ok := s.byName[name]; ok {
		if !slices.Equal(p.Value.Shape(), tensor.Shape(shape)) {
			return nil, fmt.Errorf("parameter %s: exists with shape %v, asked for %v", name, p.Value.Shape(), shape)
		}
		return p, nil
	}
	size := 1
	for _, d := range shape {
		if d <= 0 {
			return nil, fmt.Errorf("parameter %s: impossible shape %v", name, shape)
		}
		size *= d
	}
	vals := make([]float64, size)
	h := fnv.New64a()
	h.Write([]byte(name))
	init(rand.New(rand.NewPCG(s.seed, h.Sum64())), vals)
	t := newTensor(s.dtype, shape...)
	switch d := t.Data().(type) {
	case []float32:
		for i, v := range vals {
			d[i] = float32(v)
		}
	case []float64:
		copy(d, vals)
	}
	p := &Param{Name: name, Value: t}
	s.params = append(s.params, p)
	s.byName[name] = p
	return p, nil
}

// Buffer returns the non-trainable tensor called name, creating it with
// init (seeded from the store's seed and the name, as parameters are) if
// it does not exist yet: state a layer draws once and keeps with the
// model, such as BigBird's random blocks. Checkpoints save and check
// buffers; the optimizer and the parameter count do not see them.
func (s *Store) Buffer(name string, shape []int, init Init) (*Param, error) {
	for _, b := range s.buffers {
		if b.Name == name {
			if !slices.Equal(b.Value.Shape(), tensor.Shape(shape)) {
				return nil, fmt.Errorf("buffer %s: exists with shape %v, asked for %v", name, b.Value.Shape(), shape)
			}
			return b, nil
		}
	}
	if _, clash := s.byName[name]; clash {
		return nil, fmt.Errorf("buffer %s: a parameter has that name", name)
	}
	tmp := &Store{dtype: tensor.Float64, seed: s.seed, byName: map[string]*Param{}}
	p, err := tmp.Param(name, shape, init)
	if err != nil {
		return nil, err
	}
	s.buffers = append(s.buffers, p) // float64 whatever the dtype: buffers hold indices
	return p, nil
}

// StateBuffer is Buffer for state that training moves without gradients,
// such as the Routing Transformer's k-means centroids: init gives its
// starting value, and a checkpoint restores the saved value (Buffer's are
// checked against the draw instead). Asking for a name Buffer created, or
// the reverse, is an error.
func (s *Store) StateBuffer(name string, shape []int, init Init) (*Param, error) {
	fresh := !slices.ContainsFunc(s.buffers, func(b *Param) bool { return b.Name == name })
	p, err := s.Buffer(name, shape, init)
	if err != nil {
		return nil, err
	}
	if fresh {
		p.Mutable = true
	} else if !p.Mutable {
		return nil, fmt.Errorf("buffer %s: exists as a fixed buffer, asked for as state", name)
	}
	return p, nil
}

// Buffers returns the buffers in creation order.
func (s *Store) Buffers() []*Param { return s.buffers }

// Bind returns a binder that makes the store's parameters nodes of g.
func (s *Store) Bind(g *G.ExprGraph) *Binder {
	return &Binder{store: s, g: g, nodes: map[string]*G.Node{}}
}

// Binder makes parameters into nodes of one graph, one node per parameter
// however often it is asked for, each bound to the store's tensor.
type Binder struct {
	store *Store
	g     *G.ExprGraph
	nodes map[string]*G.Node
	order []*G.Node
}

// Graph is the graph the binder adds nodes to.
func (b *Binder) Graph() *G.ExprGraph { return b.g }

// Store is the store the binder reads.
func (b *Binder) Store() *Store { return b.store }

// Param returns the node of the parameter called name, creating the
// parameter (with init) and its node as needed.
func (b *Binder) Param(name string, shape []int, init Init) (*G.Node, error) {
	if n, ok := b.nodes[name]; ok {
		if !slices.Equal(n.Shape(), tensor.Shape(shape)) {
			return nil, fmt.Errorf("parameter %s: exists with shape %v, asked for %v", name, n.Shape(), shape)
		}
		return n, nil
	}
	p, err := b.store.Param(name, shape, init)
	if err != nil {
		return nil, err
	}
	n := G.NewTensor(b.g, b.store.dtype, len(shape), G.WithShape(shape...), G.WithName(name), G.WithValue(p.Value))
	b.nodes[name] = n
	b.order = append(b.order, n)
	return n, nil
}

// Nodes returns the parameter nodes of this graph in the order they were made.
func (b *Binder) Nodes() []*G.Node { return b.order }

// Input makes a non-trainable input node of g bound to a new zeroed tensor of
// the store's dtype; callers write into Value(n) before each run.
func (b *Binder) Input(name string, shape ...int) *G.Node {
	t := newTensor(b.store.dtype, shape...)
	return G.NewTensor(b.g, b.store.dtype, len(shape), G.WithShape(shape...), G.WithName(name), G.WithValue(t))
}

// SetValues copies vals into the tensor bound to node n (an input made by
// Input, or a parameter), converting to its dtype.
func SetValues(n *G.Node, vals []float64) error {
	v := n.Value()
	if v == nil {
		return fmt.Errorf("%s has no value", n.Name())
	}
	switch d := v.Data().(type) {
	case []float32:
		if len(d) != len(vals) {
			return fmt.Errorf("%s: %d values for %d elements", n.Name(), len(vals), len(d))
		}
		for i, x := range vals {
			d[i] = float32(x)
		}
	case []float64:
		if len(d) != len(vals) {
			return fmt.Errorf("%s: %d values for %d elements", n.Name(), len(vals), len(d))
		}
		copy(d, vals)
	default:
		return fmt.Errorf("%s: unsupported dtype %v", n.Name(), v.Dtype())
	}
	return nil
}

// SetInts is SetValues for token ids and class ids.
func SetInts(n *G.Node, ids []int) error {
	vals := make([]float64, len(ids))
	for i, x := range ids {
		vals[i] = float64(x)
	}
	return SetValues(n, vals)
}

// Float64s returns a copy of a value's elements as float64 (a scalar gives one).
func Float64s(v G.Value) []float64 {
	switch d := v.Data().(type) {
	case []float32:
		out := make([]float64, len(d))
		for i, x := range d {
			out[i] = float64(x)
		}
		return out
	case []float64:
		return slices.Clone(d)
	case float32:
		return []float64{float64(d)}
	case float64:
		return []float64{d}
	}
	return nil
}
