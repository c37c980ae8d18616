package train

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/data"
	"github.com/attnlab/attnlab/gpu"
	"github.com/attnlab/attnlab/graph"
	"github.com/attnlab/attnlab/models"
)

// graphUpdate is the training step of device cuda: the gradient norm, the
// clipping and the AdamW update are nodes of the training graph
// (graph.GradSquaredNorm, graph.AdamWStep), so that the parameters,
// gradients and moments stay on the GPU (gpu.KeepOnDevice) and a step
// moves only the batch and the step's hyper-parameters to the device and
// the loss, the squared gradient norm and the batch's correct count back.
// The moments are float32 there; the host's AdamW keeps its float64 ones
// for checkpoints, synced by toHost and fromHost. The same graph runs on
// the CPU (nothing kept on a device), which is how it is tested.
type graphUpdate struct {
	opt          *AdamW
	clip         float64
	hyper        *tensor.Dense   // [graph.AdamWHyperLen], bound to the hyper input
	m, v         []*tensor.Dense // the moments' float32 host values, by parameter
	mNodes       []*G.Node       // m's and v's input nodes, then the parameters'
	loss, sq, nc G.Value         // read back each step: loss, squared norm, [correct, scored]
}

// newGraphUpdate adds the update to m's graph, whose backward (grads, by
// parameter) G.Grad built. Call before the machine is made.
func newGraphUpdate(m *models.Model, grads G.Nodes, opt *AdamW, clip float64, onDevice bool) (*graphUpdate, error) {
	u := &graphUpdate{opt: opt, clip: clip, hyper: tensor.New(tensor.WithShape(graph.AdamWHyperLen), tensor.Of(tensor.Float32))}
	g := m.Graph
	dt := m.Loss.Dtype()
	if dt != tensor.Float32 {
		return nil, fmt.Errorf("the update in the graph is float32 only, not %v", dt)
	}
	hyper := G.NewTensor(g, dt, 1, G.WithShape(graph.AdamWHyperLen), G.WithName("adamw.hyper"), G.WithValue(u.hyper))
	sq, err := graph.GradSquaredNorm(m.Loss, grads, paramReaders(m.Params, grads))
	if err != nil {
		return nil, err
	}
	var moments []*G.Node
	for i, p := range m.Params {
		shape := p.Shape()
		mv := tensor.New(tensor.WithShape(shape...), tensor.Of(dt))
		vv := tensor.New(tensor.WithShape(shape...), tensor.Of(dt))
		mn := G.NewTensor(g, dt, shape.Dims(), G.WithShape(shape...), G.WithName("adamw.m."+p.Name()), G.WithValue(mv))
		vn := G.NewTensor(g, dt, shape.Dims(), G.WithShape(shape...), G.WithName("adamw.v."+p.Name()), G.WithValue(vv))
		wd := 0.0
		if shape.Dims() >= 2 { // as AdamW.Update
			wd = opt.WeightDecay
		}
		if _, err := graph.AdamWStep(p, grads[i], mn, vn, sq, hyper, wd); err != nil {
			return nil, err
		}
		u.m, u.v = append(u.m, mv), append(u.v, vv)
		moments = append(moments, mn, vn)
	}
	count, err := graph.CorrectCount(m.Logits, m.Targets, m.Weights)
	if err != nil {
		return nil, err
	}
	G.Read(m.Loss, &u.loss)
	G.Read(sq, &u.sq)
	G.Read(count, &u.nc)
	u.mNodes = append(moments, m.Params...)
	if onDevice {
		if err := gpu.KeepOnDevice(u.mNodes...); err != nil {
			return nil, err
		}
	}
	u.fromHost()
	return u, nil
}

// paramReaders are the nodes that read a parameter and are not among the
// ancestors of the gradients: the update in place must wait for them too
// (GradSquaredNorm's after).
func paramReaders(params, grads G.Nodes) G.Nodes {
	before := map[*G.Node]bool{}
	var walk func(n *G.Node)
	walk = func(n *G.Node) {
		if before[n] {
			return
		}
		before[n] = true
		for _, c := range childNodes(n) {
			walk(c)
		}
	}
	for _, g := range grads {
		walk(g)
	}
	isParam := map[*G.Node]bool{}
	for _, p := range params {
		isParam[p] = true
	}
	var out G.Nodes
	for _, n := range params[0].Graph().AllNodes() {
		if before[n] {
			continue
		}
		for _, c := range childNodes(n) {
			if isParam[c] {
				out = append(out, n)
				break
			}
		}
	}
	return out
}

// childNodes are n's inputs.
func childNodes(n *G.Node) []*G.Node {
	var out []*G.Node
	for it := n.Graph().From(n.ID()); it.Next(); {
		out = append(out, it.Node().(*G.Node))
	}
	return out
}

// fromHost copies the host AdamW's moments into the graph's (after a
// checkpoint was loaded into it).
func (u *graphUpdate) fromHost() {
	for i := range u.m {
		for k, d := range [][]float32{u.m[i].Data().([]float32), u.v[i].Data().([]float32)} {
			src := u.opt.m[i]
			if k == 1 {
				src = u.opt.v[i]
			}
			for j, x := range src {
				d[j] = float32(x)
			}
		}
	}
}

// toHost copies the graph's moments into the host AdamW's.
func (u *graphUpdate) toHost() {
	for i := range u.m {
		for j, x := range u.m[i].Data().([]float32) {
			u.opt.m[i][j] = float64(x)
		}
		for j, x := range u.v[i].Data().([]float32) {
			u.opt.v[i][j] = float64(x)
		}
	}
}

// step runs one training step with vm: forward, backward and the update
// (skipped in the graph when the loss or the gradient norm is not finite,
// which step then reports as Trainer.Step does).
func (u *graphUpdate) step(vm G.VM, lr float64, accBatch *data.Batch) (StepResult, error) {
	var r StepResult
	a := u.opt
	t := a.Step + 1
	for i, x := range graph.AdamWHyper(lr, a.Beta1, a.Beta2, a.Eps, u.clip, t) {
		u.hyper.Data().([]float32)[i] = float32(x)
	}
	defer vm.Reset()
	if err := vm.RunAll(); err != nil {
		return r, err
	}
	loss, err := readScalar(u.loss)
	if err != nil {
		return r, err
	}
	r.Loss = loss
	if math.IsNaN(r.Loss) || math.IsInf(r.Loss, 0) {
		return r, &NonFiniteError{What: "loss", Value: r.Loss}
	}
	sq, err := readScalar(u.sq)
	if err != nil {
		return r, err
	}
	r.GradNorm = math.Sqrt(sq)
	if math.IsNaN(r.GradNorm) || math.IsInf(r.GradNorm, 0) {
		return r, &NonFiniteError{What: "gradient norm", Value: r.GradNorm}
	}
	a.Step = t
	if accBatch != nil {
		if nc := graph.Float64s(u.nc); len(nc) == 2 && nc[1] > 0 {
			r.Accuracy = nc[0] / nc[1]
		}
	}
	return r, nil
}

// readScalar is a value read back from the graph (a scalar or one
// element) as float64.
func readScalar(v G.Value) (float64, error) {
	if v == nil {
		return 0, fmt.Errorf("internal: a step's result was not read back")
	}
	switch d := v.Data().(type) {
	case float32:
		return float64(d), nil
	case float64:
		return d, nil
	}
	xs := graph.Float64s(v)
	if len(xs) != 1 {
		return 0, fmt.Errorf("internal: read %d values, want 1", len(xs))
	}
	return xs[0], nil
}
