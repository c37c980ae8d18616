package graph

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// GradCheck compares the gradients Gorgonia computes through the ops' backward
// graphs with central finite differences, in float64. The output of the graph
// under test is reduced to the scalar L = sum(out * R) with R a fixed random
// tensor, so every output element contributes with its own weight; the
// analytic dL/dx is then compared, element by element, with
// (L(x + eps) - L(x - eps)) / 2 eps.
//
// The relative error of one element is |a - n| / max(|a|, |n|, Floor): Floor
// keeps elements whose true gradient is near zero from dividing round-off by
// nothing. An element over Tol is measured again with steps eps/10 and
// eps/100 and keeps its smallest error: a step that straddles a kink (a
// ReLU's pre-activation within eps of 0) gives a wrong difference there that
// a smaller step does not, while a wrong analytic gradient disagrees at every
// step. The check passes when the largest relative error is at most Tol.
type GradCheck struct {
	Eps         float64 // finite-difference step (default 1e-5)
	Tol         float64 // largest relative error that passes (default 1e-5)
	Floor       float64 // denominator floor (default 1e-3)
	MaxPerInput int     // elements checked per input, chosen at random (default 48; 0 checks all when fewer)
	Seed        uint64  // seeds R and the sampling; 0 picks a fresh seed, reported in the result
}

// InputGradResult is the outcome for one input.
type InputGradResult struct {
	Name      string
	Checked   int     // elements compared
	MaxRelErr float64 // largest relative error among them
	Worst     int     // flat index of that element
	Analytic  float64 // the analytic and numeric gradients there
	Numeric   float64
}

// GradResult is the outcome of a gradient check.
type GradResult struct {
	Seed      uint64
	Inputs    []InputGradResult
	MaxRelErr float64
	Pass      bool
}

func (r GradResult) String() string {
	s := fmt.Sprintf("max relative error %.3g (seed %d)", r.MaxRelErr, r.Seed)
	for _, in := range r.Inputs {
		s += fmt.Sprintf("; %s: %.3g over %d at %d (analytic %.6g, numeric %.6g)", in.Name, in.MaxRelErr, in.Checked, in.Worst, in.Analytic, in.Numeric)
	}
	return s
}

func (c GradCheck) withDefaults() GradCheck {
	if c.Eps == 0 {
		c.Eps = 1e-5
	}
	if c.Tol == 0 {
		c.Tol = 1e-5
	}
	if c.Floor == 0 {
		c.Floor = 1e-3
	}
	if c.MaxPerInput == 0 {
		c.MaxPerInput = 48
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	return c
}

// Run checks the gradient of out with respect to each node of wrt. g must be
// a float64 graph that nothing has run yet; every node of wrt must have a
// float64 tensor bound (a parameter or an input of a Binder), which the check
// perturbs in place and restores. Run adds the reduction and the gradient
// nodes to g.
func (c GradCheck) Run(g *G.ExprGraph, out *G.Node, wrt []*G.Node) (GradResult, error) {
	c = c.withDefaults()
	res := GradResult{Seed: c.Seed}
	rng := rand.New(rand.NewPCG(c.Seed, 0x9e3779b97f4a7c15))
	if out.Dtype() != tensor.Float64 {
		return res, fmt.Errorf("gradient check: output is %v, want float64", out.Dtype())
	}
	loss := out
	if !out.IsScalar() {
		r := tensor.New(tensor.WithShape(out.Shape().Clone()...), tensor.Of(tensor.Float64))
		for i, d := 0, r.Data().([]float64); i < len(d); i++ {
			d[i] = 2*rng.Float64() - 1
		}
		rn := G.NewTensor(g, tensor.Float64, out.Shape().Dims(), G.WithShape(out.Shape().Clone()...), G.WithName("gradcheck.R"), G.WithValue(r))
		prod, err := G.HadamardProd(out, rn)
		if err != nil {
			return res, fmt.Errorf("gradient check: %w", err)
		}
		if loss, err = G.Sum(prod); err != nil {
			return res, fmt.Errorf("gradient check: %w", err)
		}
	}
	if _, err := G.Grad(loss, wrt...); err != nil {
		return res, fmt.Errorf("gradient check: %w", err)
	}
	m := G.NewTapeMachine(g, G.BindDualValues(wrt...))
	defer m.Close()
	run := func() (float64, error) {
		m.Reset()
		if err := m.RunAll(); err != nil {
			return 0, err
		}
		return scalar(loss.Value())
	}
	if _, err := run(); err != nil {
		return res, fmt.Errorf("gradient check: %w", err)
	}
	analytic := make([][]float64, len(wrt))
	for i, n := range wrt {
		gv, err := n.Grad()
		if err != nil {
			return res, fmt.Errorf("gradient check: gradient of %s: %w", n.Name(), err)
		}
		analytic[i] = Float64s(gv)
	}
	res.Pass = true
	for i, n := range wrt {
		x, ok := n.Value().Data().([]float64)
		if !ok {
			return res, fmt.Errorf("gradient check: %s is not a float64 tensor", n.Name())
		}
		idx := rng.Perm(len(x))
		if c.MaxPerInput > 0 && len(idx) > c.MaxPerInput {
			idx = idx[:c.MaxPerInput]
		}
		ir := InputGradResult{Name: n.Name(), Checked: len(idx)}
		for _, j := range idx {
			a := analytic[i][j]
			// compare returns the central difference with step eps and its
			// relative error against a.
			compare := func(eps float64) (num, rel float64, err error) {
				orig := x[j]
				x[j] = orig + eps
				lp, err := run()
				if err != nil {
					return 0, 0, err
				}
				x[j] = orig - eps
				lm, err := run()
				x[j] = orig
				if err != nil {
					return 0, 0, err
				}
				num = (lp - lm) / (2 * eps)
				rel = math.Abs(a-num) / math.Max(math.Max(math.Abs(a), math.Abs(num)), c.Floor)
				if math.IsNaN(rel) {
					rel = math.Inf(1)
				}
				return num, rel, nil
			}
			num, rel, err := compare(c.Eps)
			// A step that straddles a kink (a ReLU at 0, a max changing
			// hands) gives a wrong difference that smaller steps do not;
			// a wrong analytic gradient stays wrong at every step.
			for eps := c.Eps / 10; err == nil && rel > c.Tol && eps >= c.Eps/100; eps /= 10 {
				var n2, r2 float64
				if n2, r2, err = compare(eps); err == nil && r2 < rel {
					num, rel = n2, r2
				}
			}
			if err != nil {
				return res, fmt.Errorf("gradient check: %w", err)
			}
			if rel >= ir.MaxRelErr {
				ir.MaxRelErr, ir.Worst, ir.Analytic, ir.Numeric = rel, j, a, num
			}
		}
		res.Inputs = append(res.Inputs, ir)
		res.MaxRelErr = math.Max(res.MaxRelErr, ir.MaxRelErr)
	}
	res.Pass = res.MaxRelErr <= c.Tol
	return res, nil
}

// RandomTensor returns a float64 tensor of the given shape with elements
// uniform in [-scale, scale).
func RandomTensor(rng *rand.Rand, scale float64, shape ...int) *tensor.Dense {
	t := tensor.New(tensor.WithShape(shape...), tensor.Of(tensor.Float64))
	for i, d := 0, t.Data().([]float64); i < len(d); i++ {
		d[i] = scale * (2*rng.Float64() - 1)
	}
	return t
}

// Variable makes a named float64 node of g bound to t, for gradient checks.
func Variable(g *G.ExprGraph, name string, t *tensor.Dense) *G.Node {
	return G.NewTensor(g, t.Dtype(), t.Shape().Dims(), G.WithShape(t.Shape().Clone()...), G.WithName(name), G.WithValue(t))
}
