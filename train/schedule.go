package train

import "math"

// Schedule gives the learning rate of each step (1-based): a linear warm-up
// from 0 over Warmup steps, then, over the remaining steps, a cosine or linear
// decay to Peak * MinRatio, or a constant rate.
type Schedule struct {
	Kind     string // cosine | linear | constant
	Peak     float64
	MinRatio float64
	Warmup   int
	Total    int
}

// At returns the learning rate for step (1-based).
func (s Schedule) At(step int) float64 {
	if step <= s.Warmup && s.Warmup > 0 {
		return s.Peak * float64(step) / float64(s.Warmup)
	}
	if s.Kind == "constant" || s.Total <= s.Warmup {
		return s.Peak
	}
	p := float64(step-s.Warmup) / float64(s.Total-s.Warmup)
	p = math.Min(math.Max(p, 0), 1)
	low := s.Peak * s.MinRatio
	if s.Kind == "linear" {
		return s.Peak - (s.Peak-low)*p
	}
	return low + (s.Peak-low)*0.5*(1+math.Cos(math.Pi*p))
}
