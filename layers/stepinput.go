package layers

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/graph"
)

// StepInput is a graph input whose value depends on the training step:
// Performer's random features, redrawn every so many steps. Gorgonia
// deduplicates nodes by their op and children, so a value that changes
// from step to step cannot be a constant or an op's parameter: it is an
// input node (graph.Binder.Input) that Fill rewrites in place before the
// step's forward pass.
//
// Fill writes the value for step into dst (as many elements as Node has,
// in float64; SetStep converts to the node's dtype). It must be a pure
// function of step and of what the layer was built with (the store's seed,
// the layer's name), never of the steps filled before: a run resumed from
// a checkpoint at step s then sees exactly the values an uninterrupted run
// sees, and a training graph and an evaluation graph built from the same
// store agree at every step.
type StepInput struct {
	Node *G.Node
	Fill func(step int, dst []float64)
}

// StepInputs collects the step inputs of one model's graph (Context.Steps);
// models.Model.SetStep fills them all. The zero value is empty and ready.
type StepInputs struct {
	inputs  []StepInput
	updates []func() error
	shared  map[string]any
	buf     []float64
}

// Add adds in to the collection. It does not fill it: Context.AddStepInput
// does, for step 0.
func (s *StepInputs) Add(in StepInput) {
	s.inputs = append(s.inputs, in)
}

// Inputs returns the collected step inputs in the order they were added.
func (s *StepInputs) Inputs() []StepInput {
	if s == nil {
		return nil
	}
	return s.inputs
}

// Set fills every step input for step (0 or more); a nil collection has
// nothing to fill.
func (s *StepInputs) Set(step int) error {
	if s == nil {
		return nil
	}
	if step < 0 {
		return fmt.Errorf("step inputs: step %d is negative", step)
	}
	for _, in := range s.inputs {
		if err := fillStepInput(in, step, &s.buf); err != nil {
			return err
		}
	}
	return nil
}

// fillStepInput writes in's value for step into its node, through buf.
func fillStepInput(in StepInput, step int, buf *[]float64) error {
	n := in.Node.Shape().TotalSize()
	if cap(*buf) < n {
		*buf = make([]float64, n)
	}
	dst := (*buf)[:n]
	clear(dst)
	in.Fill(step, dst)
	if err := graph.SetValues(in.Node, dst); err != nil {
		return fmt.Errorf("step input %s: %w", in.Node.Name(), err)
	}
	return nil
}

// AddStepInput fills the input node n with fill's value for step 0 and,
// when c.Steps is not nil (a model's graph, models.Build), adds it there
// so that the model refills it for each step (models.Model.SetStep). With
// c.Steps nil (layer tests, gradient checks, trainer bench attention) n
// keeps its step-0 value for good.
func (c Context) AddStepInput(n *G.Node, fill func(step int, dst []float64)) error {
	in := StepInput{Node: n, Fill: fill}
	var buf []float64
	if err := fillStepInput(in, 0, &buf); err != nil {
		return err
	}
	if c.Steps != nil {
		c.Steps.Add(in)
	}
	return nil
}

// AddUpdate adds a state update: a function the model runs after each
// training step's optimizer update (models.Model.AfterStep). It is for a
// layer's non-gradient state, such as the Routing Transformer's k-means
// centroids moved by an exponential moving average of what the step's
// forward pass assigned to them. The state lives in store buffers
// (graph.Store.Buffer), which checkpoints save, so that a run resumed at
// step s continues from the state the uninterrupted run had after step s.
// Context.AddStateUpdate is how a layer adds one.
func (s *StepInputs) AddUpdate(update func() error) {
	s.updates = append(s.updates, update)
}

// AfterStep runs the state updates in the order they were added; a nil
// collection has none.
func (s *StepInputs) AfterStep() error {
	if s == nil {
		return nil
	}
	for _, u := range s.updates {
		if err := u(); err != nil {
			return err
		}
	}
	return nil
}

// AddStateUpdate adds update to c.Steps (see StepInputs.AddUpdate), to run
// after each training step of a model's graph (models.Build). With c.Steps
// nil (layer tests, gradient checks, trainer bench attention, evaluation
// graphs built for inspection) it is dropped: the state stays as it is.
func (c Context) AddStateUpdate(update func() error) {
	if c.Steps != nil {
		c.Steps.AddUpdate(update)
	}
}

// Shared returns the value a layer keeps under key for this model's
// graph, made by build the first time: state that several calls of one
// layer's Forward in one graph share (a routing layer run on each segment
// of a memory model keeps one statistics sink and registers one update).
func (s *StepInputs) Shared(key string, build func() any) any {
	if s.shared == nil {
		s.shared = map[string]any{}
	}
	v, ok := s.shared[key]
	if !ok {
		v = build()
		s.shared[key] = v
	}
	return v
}
