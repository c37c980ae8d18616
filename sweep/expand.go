package sweep

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/attnlab/attnlab/config"
)

// Param is one grid key's value in a run.
type Param struct {
	Key   string `json:"key"`
	Value string `json:"value"` // the value's label
}

// Run is one training run of a sweep: a grid point and a seed, with the
// fully resolved experiment.
type Run struct {
	Index  int     // position in the expansion: grid points in order, seeds innermost
	Name   string  // the run's folder name, from its grid values and seed
	Params []Param // one per grid key, in key order
	Seed   uint64
	Exp    config.Experiment
	// SeqLen is the task's sequence length as the check Expand was given
	// reported it (0 without one); run.json records it, so that results
	// need not rebuild the task to read it.
	SeqLen int
}

// Check checks a run's resolved experiment beyond config.Validate (the
// trainer builds its task and model) and returns the task's sequence length
// (data.Task.SeqLen).
type Check func(config.Experiment) (seqLen int, err error)

// Expand lists the sweep's runs: the cartesian product of the grid values
// (keys sorted; the first key varies slowest, each key's values in the order
// written), each with every seed (innermost). Each run's experiment is the
// base with the sweep's name, the set: overrides, the run's grid values and
// its seed, in that order; it is validated (config.Validate), then given to
// check if check is not nil (the trainer passes its model build, so that a
// variant's or task's options are checked too, and the run learns its
// sequence length). The first failure is returned as a one-line error naming
// the file and the run, and the key (with its line) where one is to blame.
// A sweep of more than MaxRuns runs is refused before anything is expanded.
func (s *Sweep) Expand(check Check) ([]Run, error) {
	if err := s.checkSize(); err != nil {
		return nil, err
	}
	points := [][]int{{}}
	for _, ax := range s.Grid {
		var next [][]int
		for _, p := range points {
			for i := range ax.Values {
				next = append(next, append(append([]int(nil), p...), i))
			}
		}
		points = next
	}
	var runs []Run
	names := map[string]int{}
	for _, p := range points {
		params := make([]Param, len(s.Grid))
		for k, i := range p {
			params[k] = Param{Key: s.Grid[k].Key, Value: s.Grid[k].Values[i].Label}
		}
		for _, seed := range s.Seeds {
			r := Run{Index: len(runs), Params: params, Seed: seed, Name: RunName(params, seed)}
			if prev, dup := names[r.Name]; dup {
				return nil, fmt.Errorf("%s: runs %d and %d would share the folder %s; make the grid values differ in letters or digits", s.Source, prev, r.Index, r.Name)
			}
			names[r.Name] = r.Index
			exp, err := s.resolve(p, seed)
			if err != nil {
				return nil, fmt.Errorf("%s: run %s: %w", s.Source, r.Name, err)
			}
			if err := exp.Validate(); err != nil {
				return nil, fmt.Errorf("%s: run %s: %w", s.Source, r.Name, err)
			}
			if check != nil {
				n, err := check(exp)
				if err != nil {
					return nil, fmt.Errorf("%s: run %s: %w", s.Source, r.Name, err)
				}
				r.SeqLen = n
			}
			r.Exp = exp
			runs = append(runs, r)
		}
	}
	return runs, nil
}

// MaxRuns bounds the runs of one sweep (grid points x seeds). Expand lists
// every run, with its resolved experiment and its model checked, before
// training any; a grid of 10^8 runs took 35 s and crashed there. 100000
// runs of even a second each is more than a day of training: split such a
// study into several sweeps.
const MaxRuns = 100000

// checkSize refuses a sweep of more than MaxRuns runs, counting the grid's
// product without overflow and before anything is expanded; the one-line
// error names each grid key with its number of values.
func (s *Sweep) checkSize() error {
	// The product in float64 cannot overflow (it is exact below 2^53, and
	// only printed beyond MaxRuns).
	total := float64(len(s.Seeds))
	factors := make([]string, 0, len(s.Grid)+1)
	for _, ax := range s.Grid {
		factors = append(factors, fmt.Sprintf("%s: %d values", ax.Key, len(ax.Values)))
		total *= float64(len(ax.Values))
	}
	if total <= MaxRuns {
		return nil
	}
	seeds := fmt.Sprintf("%d seeds", len(s.Seeds))
	if len(s.Seeds) == 1 {
		seeds = "1 seed"
	}
	factors = append(factors, seeds)
	count := fmt.Sprintf("%.0f", total)
	if total >= 1e15 {
		count = fmt.Sprintf("%.3g", total)
	}
	return fmt.Errorf("%s: the grid makes %s runs (%s), more than the %d a sweep may have; split it into several sweeps or give fewer values",
		s.Source, count, strings.Join(factors, " x "), MaxRuns)
}

// resolve builds the experiment of grid point p (value indices per key)
// with seed.
func (s *Sweep) resolve(p []int, seed uint64) (config.Experiment, error) {
	e := cloneExp(s.Base)
	e.Name = s.Name
	for _, a := range s.Set {
		if err := a.Value.apply(&e, a.Key); err != nil {
			if a.line == 0 { // from --set
				return e, fmt.Errorf("--set %s=%s: %w", a.Key, a.Value.scalar, err)
			}
			return e, fmt.Errorf("line %d: set.%s: %w", a.line, a.Key, err)
		}
	}
	for k, i := range p {
		v := s.Grid[k].Values[i]
		if err := v.apply(&e, s.Grid[k].Key); err != nil {
			return e, fmt.Errorf("line %d: grid.%s: %w", v.line, s.Grid[k].Key, err)
		}
	}
	e.Seed = seed
	return e, nil
}

// maxRunName bounds a run folder's name, well within the 255 bytes file
// systems allow.
const maxRunName = 200

// RunName names a run's folder after its grid values and seed:
//
//	model.attention.kind=flash,task.seq_len=64,seed=1
//
// Characters other than letters, digits and ._=,+- become '_', and then a
// hash of the exact text is appended ("~" and 8 hex digits) so that values
// differing only in such characters still get different folders; a name
// longer than 200 bytes is cut and gets the hash too. The name depends only
// on the keys, the values and the seed, so it is the same in every restart
// and shard of a sweep, and a grid extended with new values keeps the
// names (and finished runs) of the old ones.
func RunName(params []Param, seed uint64) string {
	parts := make([]string, 0, len(params)+1)
	for _, p := range params {
		parts = append(parts, p.Key+"="+p.Value)
	}
	parts = append(parts, "seed="+strconv.FormatUint(seed, 10))
	raw := strings.Join(parts, ",")
	b := []byte(raw)
	changed := false
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._=,+-", c) >= 0) {
			b[i] = '_'
			changed = true
		}
	}
	name := string(b)
	if changed || len(name) > maxRunName {
		h := fnv.New32a()
		h.Write([]byte(raw))
		if len(name) > maxRunName-9 {
			name = name[:maxRunName-9]
		}
		name += fmt.Sprintf("~%08x", h.Sum32())
	}
	return name
}

// Shard selects the runs one of Count machines (or processes) runs: those
// whose index modulo Count is Index. The zero Shard selects every run.
// Interleaving by index spreads the grid's expensive corners (long
// sequences, wide models) over the shards.
type Shard struct {
	Index, Count int
}

// ParseShard reads "I/N" (0 <= I < N); "" is the zero Shard.
func ParseShard(s string) (Shard, error) {
	if s == "" {
		return Shard{}, nil
	}
	is, ns, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(strings.TrimSpace(is))
	n, err2 := strconv.Atoi(strings.TrimSpace(ns))
	switch {
	case !ok || err1 != nil || err2 != nil:
		return Shard{}, fmt.Errorf("--shard %q: want I/N, e.g. 0/4", s)
	case n < 1:
		return Shard{}, fmt.Errorf("--shard %q: N must be at least 1", s)
	case i < 0 || i >= n:
		return Shard{}, fmt.Errorf("--shard %q: I must be in [0, %d)", s, n)
	}
	return Shard{Index: i, Count: n}, nil
}

// Has reports whether the run with index i belongs to the shard.
func (s Shard) Has(i int) bool { return s.Count <= 1 || i%s.Count == s.Index }

// Select returns the runs of the shard, in order.
func (s Shard) Select(runs []Run) []Run {
	var out []Run
	for _, r := range runs {
		if s.Has(r.Index) {
			out = append(out, r)
		}
	}
	return out
}

func (s Shard) String() string {
	if s.Count <= 1 {
		return "all"
	}
	return fmt.Sprintf("%d/%d", s.Index, s.Count)
}
