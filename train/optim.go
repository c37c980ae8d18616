package train

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"

	"github.com/attnlab/attnlab/graph"
)

// AdamW is Adam with decoupled weight decay (Loshchilov and Hutter 2019):
//
//	m = b1 m + (1-b1) g,  v = b2 v + (1-b2) g^2
//	w = w - lr (wd w + m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps))
//
// The decay multiplies the weight directly instead of being added to the
// gradient (which is what Gorgonia's Adam with L2 does), and applies only to
// parameters of two or more dimensions (weight matrices and embeddings), not
// to biases and norm gains, as nanoGPT does. Moments are kept in float64.
type AdamW struct {
	Beta1, Beta2, Eps, WeightDecay float64
	Step                           int // number of updates done
	params                         []*graph.Param
	m, v                           [][]float64
}

// NewAdamW returns an optimizer with zero moments for the store's parameters.
func NewAdamW(store *graph.Store, beta1, beta2, eps, weightDecay float64) *AdamW {
	a := &AdamW{Beta1: beta1, Beta2: beta2, Eps: eps, WeightDecay: weightDecay, params: store.Params()}
	for _, p := range a.params {
		n := p.Value.Shape().TotalSize()
		a.m = append(a.m, make([]float64, n))
		a.v = append(a.v, make([]float64, n))
	}
	return a
}

// Gradients reads the gradient of each parameter node (bound by name to the
// optimizer's parameters, in the same order) after a run.
func Gradients(nodes []*G.Node) ([]G.Value, error) {
	out := make([]G.Value, len(nodes))
	for i, n := range nodes {
		g, err := n.Grad()
		if err != nil {
			return nil, fmt.Errorf("gradient of %s: %w", n.Name(), err)
		}
		out[i] = g
	}
	return out, nil
}

// ZeroGradients clears the gradients after an update: Gorgonia adds each
// run's gradient into the bound dual values, so they must start at zero.
func ZeroGradients(grads []G.Value) {
	for _, g := range grads {
		switch d := g.Data().(type) {
		case []float32:
			clear(d)
		case []float64:
			clear(d)
		}
	}
}

// GlobalNorm is the L2 norm of all gradients together.
func GlobalNorm(grads []G.Value) float64 {
	var ss float64
	for _, g := range grads {
		switch d := g.Data().(type) {
		case []float32:
			for _, x := range d {
				ss += float64(x) * float64(x)
			}
		case []float64:
			for _, x := range d {
				ss += x * x
			}
		}
	}
	return math.Sqrt(ss)
}

// Update applies one step with learning rate lr, the gradients multiplied by
// gradScale first (the clipping factor; 1 for none).
func (a *AdamW) Update(grads []G.Value, lr, gradScale float64) error {
	if len(grads) != len(a.params) {
		return fmt.Errorf("optimizer: %d gradients for %d parameters", len(grads), len(a.params))
	}
	a.Step++
	c1 := 1 - math.Pow(a.Beta1, float64(a.Step))
	c2 := 1 - math.Pow(a.Beta2, float64(a.Step))
	for i, p := range a.params {
		wd := 0.0
		if p.Value.Shape().Dims() >= 2 {
			wd = a.WeightDecay
		}
		switch w := p.Value.Data().(type) {
		case []float32:
			g, ok := grads[i].Data().([]float32)
			if !ok || len(g) != len(w) {
				return fmt.Errorf("optimizer: gradient of %s does not match the parameter", p.Name)
			}
			d := graph.AdamWPrefix32(w, g, a.m[i], a.v[i], lr, wd, gradScale, a.Beta1, a.Beta2, a.Eps, c1, c2)
			adamw(w[d:], g[d:], a.m[i][d:], a.v[i][d:], lr, wd, gradScale, a.Beta1, a.Beta2, a.Eps, c1, c2)
		case []float64:
			g, ok := grads[i].Data().([]float64)
			if !ok || len(g) != len(w) {
				return fmt.Errorf("optimizer: gradient of %s does not match the parameter", p.Name)
			}
			adamw(w, g, a.m[i], a.v[i], lr, wd, gradScale, a.Beta1, a.Beta2, a.Eps, c1, c2)
		}
	}
	return nil
}

func adamw[T graph.Float](w, g []T, m, v []float64, lr, wd, scale, b1, b2, eps, c1, c2 float64) {
	for j := range w {
		gj := float64(g[j]) * scale
		m[j] = b1*m[j] + (1-b1)*gj
		v[j] = b2*v[j] + (1-b2)*gj*gj
		x := float64(w[j])
		x -= lr * (wd*x + (m[j]/c1)/(math.Sqrt(v[j]/c2)+eps))
		w[j] = T(x)
	}
}
