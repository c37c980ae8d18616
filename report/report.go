package report

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/attnlab/attnlab/internal/atomicfile"
	"github.com/attnlab/attnlab/sweep"
)

// The files Write writes into a sweep folder.
const (
	ReportFile = "report.md"
	PlotsDir   = "plots"
)

// Keys that pick a task table rather than a row of one.
var taskKeys = []string{"task.kind", "task.seq_len"}

// Task is one table of the report: the runs of one task at one sequence
// length.
type Task struct {
	Kind   string
	SeqLen int
	Points []*Point // in the order of their first run
}

// Title names the task, e.g. "assoc_recall, T = 64".
func (t *Task) Title() string { return fmt.Sprintf("%s, T = %d", t.Kind, t.SeqLen) }

// Point is one grid point of a task (its seeds together) with the
// figures the report shows, over its finished runs.
type Point struct {
	Params []sweep.Param // grid values that tell the task's points apart
	Label  string        // Params as one short string, for legends
	Rows   []sweep.Row   // the point's runs, finished and failed

	OK                         int     // finished runs
	AccMean, AccStd            float64 // eval_accuracy over seeds (sample std; 0 for one seed)
	AccMin, AccMax             float64
	StepMs, TokensPerSec, RSS  float64 // medians over seeds; RSS in MiB
	NumParams                  int
	KVBytes                    *int
	StateBytes                 *int // one layer's recurrent state per sequence (summary's state_bytes_per_sequence)
	DModel, SeqLen             int
	Attention                  string
	accs, steps, tps, rss      []float64
	hasStep, hasTPS, hasMemory bool
}

// Group splits rows into task tables (by task kind and sequence length, in
// order of kind then length) and each table into grid points (rows equal in
// every grid key but the task's, i.e. the seeds of one configuration).
func Group(rows []sweep.Row) []*Task {
	var tasks []*Task
	byTask := map[string]*Task{}
	byPoint := map[string]*Point{}
	for _, r := range rows {
		tk := r.TaskKind + "\x00" + strconv.Itoa(r.SeqLen)
		t := byTask[tk]
		if t == nil {
			t = &Task{Kind: r.TaskKind, SeqLen: r.SeqLen}
			byTask[tk] = t
			tasks = append(tasks, t)
		}
		var params []sweep.Param
		for _, p := range r.Params {
			if !slices.Contains(taskKeys, p.Key) {
				params = append(params, p)
			}
		}
		pk := tk + "\x00" + paramsKey(params)
		pt := byPoint[pk]
		if pt == nil {
			pt = &Point{Params: params, Label: label(params, r.Attention), DModel: r.DModel, SeqLen: r.SeqLen, Attention: r.Attention}
			byPoint[pk] = pt
			t.Points = append(t.Points, pt)
		}
		pt.Rows = append(pt.Rows, r)
	}
	sort.SliceStable(tasks, func(i, j int) bool {
		if tasks[i].Kind != tasks[j].Kind {
			return tasks[i].Kind < tasks[j].Kind
		}
		return tasks[i].SeqLen < tasks[j].SeqLen
	})
	for _, t := range tasks {
		for _, p := range t.Points {
			p.aggregate()
		}
	}
	return tasks
}

func paramsKey(ps []sweep.Param) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(p.Key + "=" + p.Value + "\x00")
	}
	return b.String()
}

// label writes grid values shortly: the value alone for one key, else
// "short-key=value" pairs (the key's last part); with no grid key, the
// attention kind.
func label(ps []sweep.Param, attention string) string {
	switch len(ps) {
	case 0:
		return attention
	case 1:
		return ps[0].Value
	}
	parts := make([]string, len(ps))
	for i, p := range ps {
		k := p.Key
		if j := strings.LastIndexByte(k, '.'); j >= 0 {
			k = k[j+1:]
		}
		parts[i] = k + "=" + p.Value
	}
	return strings.Join(parts, ", ")
}

// labelWithout is the label of p's grid values other than the keys in drop.
func (p *Point) labelWithout(drop ...string) string {
	var ps []sweep.Param
	for _, q := range p.Params {
		if !slices.Contains(drop, q.Key) {
			ps = append(ps, q)
		}
	}
	return label(ps, p.Attention)
}

func (p *Point) aggregate() {
	for _, r := range p.Rows {
		if r.Status != sweep.StatusOK || r.Summary == nil {
			continue
		}
		s := r.Summary
		p.OK++
		p.accs = append(p.accs, s.EvalAccuracy)
		if s.StepMsMedian > 0 {
			p.steps = append(p.steps, s.StepMsMedian)
		}
		if s.TrainTokensPerSec > 0 {
			p.tps = append(p.tps, s.TrainTokensPerSec)
		}
		if s.PeakRSSBytes > 0 {
			p.rss = append(p.rss, float64(s.PeakRSSBytes)/(1<<20))
		}
		p.NumParams = s.Params
		p.KVBytes = s.KVCacheBytesPerToken
		p.StateBytes = s.StateBytesPerSequence
	}
	if p.OK == 0 {
		return
	}
	p.AccMean, p.AccStd = meanStd(p.accs)
	p.AccMin, p.AccMax = slices.Min(p.accs), slices.Max(p.accs)
	p.StepMs, p.hasStep = median(p.steps), len(p.steps) > 0
	p.TokensPerSec, p.hasTPS = median(p.tps), len(p.tps) > 0
	p.RSS, p.hasMemory = median(p.rss), len(p.rss) > 0
}

func meanStd(xs []float64) (mean, std float64) {
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	if len(xs) < 2 {
		return mean, 0
	}
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(ss / float64(len(xs)-1))
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Written lists what Write wrote, relative to the folder.
type Written struct {
	Files   []string // report.md and the plot files
	Skipped []string // plots that do not apply, with the reason
}

// Write writes report.md and plots/ (PNG and SVG of each figure) for the
// collection c into dir, every file atomically. Plot files of an earlier
// report that this one does not draw are removed, so plots/ never shows a
// figure of other data.
func Write(dir string, c *sweep.Collection) (*Written, error) {
	return WriteWith(dir, c, Options{})
}

// WriteWith is Write with the additions opts asks for (the accuracy runs of
// the relative-speed figure).
func WriteWith(dir string, c *sweep.Collection, opts Options) (*Written, error) {
	tasks := Group(c.Rows)
	rels := relativeTables(tasks)
	w := &Written{}
	pdir := filepath.Join(dir, PlotsDir)
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		return nil, err
	}
	figs, skipped := planFigures(c, tasks)
	sf, ss := speedFigures(rels, opts)
	figs, skipped = append(figs, sf...), append(skipped, ss...)
	w.Skipped = skipped
	var drawn []figureResult
	for _, f := range figs {
		res := f.render(pdir)
		drawn = append(drawn, res)
		if res.err == nil {
			w.Files = append(w.Files, filepath.Join(PlotsDir, f.file+".png"), filepath.Join(PlotsDir, f.file+".svg"))
		}
	}
	if err := removeStalePlots(pdir, w.Files); err != nil {
		return nil, err
	}
	err := atomicfile.WriteFile(filepath.Join(dir, ReportFile), 0o644, func(out io.Writer) error {
		return writeMarkdown(out, c, tasks, rels, drawn, skipped)
	})
	if err != nil {
		return nil, err
	}
	w.Files = append([]string{ReportFile}, w.Files...)
	return w, nil
}

// removeStalePlots deletes the .png and .svg files of pdir not in keep
// (paths relative to the sweep folder).
func removeStalePlots(pdir string, keep []string) error {
	entries, err := os.ReadDir(pdir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !(strings.HasSuffix(n, ".png") || strings.HasSuffix(n, ".svg")) {
			continue
		}
		if slices.Contains(keep, filepath.Join(PlotsDir, n)) {
			continue
		}
		if err := os.Remove(filepath.Join(pdir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// writeMarkdown writes report.md.
func writeMarkdown(w io.Writer, c *sweep.Collection, tasks []*Task, rels []*relative, figs []figureResult, skipped []string) error {
	var b strings.Builder
	name := "sweep"
	if c.Info != nil {
		name = c.Info.Name
	} else if len(c.Rows) > 0 {
		name = c.Rows[0].Sweep
	}
	fmt.Fprintf(&b, "# Sweep %s\n\n", name)
	ok, failed := 0, 0
	for _, r := range c.Rows {
		if r.Status == sweep.StatusOK {
			ok++
		} else {
			failed++
		}
	}
	if in := c.Info; in != nil {
		fmt.Fprintf(&b, "Sweep file `%s`, base `%s`.\n\n", in.Source, in.Base)
		if len(in.Grid) > 0 {
			b.WriteString("| grid key | values |\n|---|---|\n")
			for _, a := range in.Grid {
				fmt.Fprintf(&b, "| `%s` | %s |\n", a.Key, strings.Join(a.Values, ", "))
			}
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "Seeds: %s. %d runs in the grid: %d finished, %d failed, %d unfinished, %d not started.\n\n",
			joinUints(in.Seeds), len(in.Runs), ok, failed, len(c.Unfinished), len(c.Missing))
	} else {
		fmt.Fprintf(&b, "%d runs finished, %d failed, %d unfinished (no sweep.json found: the whole grid is unknown).\n\n", ok, failed, len(c.Unfinished))
	}
	if th := threadsNote(c.Rows); th != "" {
		b.WriteString(th + "\n\n")
	}
	b.WriteString("Accuracy is the held-out `eval_accuracy` of the final weights: mean ± sample standard deviation over the seeds, and min–max. " +
		"Step time (training step, median over the run's steps), tokens/s (training tokens per second at the median step time) and peak RSS (the run's own process) " +
		"are medians over the seeds. KV B/token is one layer's KV cache per token in bytes (- for variants without one); `state B/seq` is instead one layer's recurrent state per sequence, whatever its length, for variants that decode with one.\n\n")

	for _, t := range tasks {
		fmt.Fprintf(&b, "## %s\n\n", t.Title())
		keys := labelKeys(t)
		head := append([]string{}, keys...)
		if len(head) == 0 {
			head = []string{"attention"}
		}
		head = append(head, "runs ok", "accuracy", "min–max", "step ms", "tokens/s", "peak RSS MiB", "params", "KV B/token", "state B/seq")
		b.WriteString("| " + strings.Join(head, " | ") + " |\n|")
		b.WriteString(strings.Repeat("---|", len(head)) + "\n")
		for _, p := range t.Points {
			var cells []string
			if len(keys) == 0 {
				cells = append(cells, p.Attention)
			}
			for _, k := range keys {
				v := "-"
				for _, q := range p.Params {
					if q.Key == k {
						v = q.Value
					}
				}
				cells = append(cells, v)
			}
			cells = append(cells, fmt.Sprintf("%d/%d", p.OK, len(p.Rows)))
			if p.OK == 0 {
				cells = append(cells, "-", "-", "-", "-", "-", "-", "-", "-")
			} else {
				acc := fmt.Sprintf("%.4f", p.AccMean)
				if p.OK > 1 {
					acc += fmt.Sprintf(" ± %.4f", p.AccStd)
				}
				kv := "-"
				if p.KVBytes != nil {
					kv = strconv.Itoa(*p.KVBytes)
				}
				state := "-"
				if p.StateBytes != nil {
					state = strconv.Itoa(*p.StateBytes)
				}
				cells = append(cells, acc, fmt.Sprintf("%.4f–%.4f", p.AccMin, p.AccMax),
					orDash(p.hasStep, "%.1f", p.StepMs), orDash(p.hasTPS, "%.0f", p.TokensPerSec), orDash(p.hasMemory, "%.0f", p.RSS),
					strconv.Itoa(p.NumParams), kv, state)
			}
			b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
		}
		b.WriteString("\n")
	}
	if len(tasks) == 0 {
		b.WriteString("No finished or failed runs yet.\n\n")
	}

	writeScaling(&b, tasks)
	writeRelative(&b, rels)

	var fails []sweep.Row
	for _, r := range c.Rows {
		if r.Status != sweep.StatusOK {
			fails = append(fails, r)
		}
	}
	if len(fails) > 0 {
		b.WriteString("## Failed runs\n\n")
		for _, r := range fails {
			fmt.Fprintf(&b, "- `%s`: %s\n", r.Run, r.Error)
		}
		b.WriteString("\n")
	}
	if len(c.Unfinished) > 0 || len(c.Missing) > 0 {
		b.WriteString("## Runs without results\n\n")
		for _, n := range c.Unfinished {
			fmt.Fprintf(&b, "- `%s`: unfinished (running, interrupted or failed to start; `trainer compare` resumes it)\n", n)
		}
		for _, n := range c.Missing {
			fmt.Fprintf(&b, "- `%s`: not started (no folder)\n", n)
		}
		b.WriteString("\n")
	}

	b.WriteString("## Plots\n\n")
	for _, f := range figs {
		if f.err != nil {
			fmt.Fprintf(&b, "- %s: not drawn: %v\n", f.title, f.err)
			continue
		}
		fmt.Fprintf(&b, "### %s\n\n![%s](%s/%s.png)\n\n[SVG](%s/%s.svg)", f.title, f.title, PlotsDir, f.file, PlotsDir, f.file)
		if f.note != "" {
			b.WriteString(" " + f.note)
		}
		b.WriteString("\n\n")
	}
	if len(skipped) > 0 {
		b.WriteString("Not drawn:\n\n")
		for _, s := range skipped {
			fmt.Fprintf(&b, "- %s\n", s)
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// byKind groups tasks by task kind, kinds in order of first appearance.
func byKind(tasks []*Task) [][]*Task {
	var kinds []string
	groups := map[string][]*Task{}
	for _, t := range tasks {
		if _, ok := groups[t.Kind]; !ok {
			kinds = append(kinds, t.Kind)
		}
		groups[t.Kind] = append(groups[t.Kind], t)
	}
	out := make([][]*Task, len(kinds))
	for i, k := range kinds {
		out[i] = groups[k]
	}
	return out
}

// writeScaling writes, for each task kind run at two or more sequence
// lengths, each variant's fitted power of T for step time and peak memory.
func writeScaling(b *strings.Builder, tasks []*Task) {
	for _, kt := range byKind(tasks) {
		k := kt[0].Kind
		if len(kt) < 2 {
			continue
		}
		step := scalingSeries(kt, func(p *Point) (float64, bool) { return p.StepMs, p.hasStep })
		mem := scalingSeries(kt, func(p *Point) (float64, bool) { return p.RSS, p.hasMemory })
		slope := func(ss []*series, label string) string {
			for _, s := range ss {
				if s.label == label {
					if v, ok := FitLogLog(s.xs, s.ys); ok {
						return fmt.Sprintf("%.2f", v)
					}
				}
			}
			return "-"
		}
		fmt.Fprintf(b, "## Scaling with T, %s\n\n", k)
		b.WriteString("Least-squares slope of log(cost) against log(T) over the sequence lengths run: 1 is linear, 2 quadratic.\n\n")
		b.WriteString("| variant | T values | step time slope | peak RSS slope |\n|---|---|---|---|\n")
		for _, s := range step {
			ts := make([]string, len(s.xs))
			for i, x := range s.xs {
				ts[i] = strconv.FormatFloat(x, 'g', -1, 64)
			}
			fmt.Fprintf(b, "| %s | %s | %s | %s |\n", s.label, strings.Join(ts, ", "), slope(step, s.label), slope(mem, s.label))
		}
		b.WriteString("\n")
	}
}

// labelKeys are the grid keys that tell a task's points apart, in order.
func labelKeys(t *Task) []string {
	var keys []string
	for _, p := range t.Points {
		for _, q := range p.Params {
			if !slices.Contains(keys, q.Key) {
				keys = append(keys, q.Key)
			}
		}
	}
	return keys
}

func threadsNote(rows []sweep.Row) string {
	var ths []int
	blas := map[string]bool{}
	for _, r := range rows {
		if r.Summary != nil {
			if !slices.Contains(ths, r.Summary.Threads) {
				ths = append(ths, r.Summary.Threads)
			}
			blas[r.Summary.BLAS] = true
		}
	}
	if len(ths) == 0 {
		return ""
	}
	slices.Sort(ths)
	parts := make([]string, len(ths))
	for i, t := range ths {
		parts[i] = strconv.Itoa(t)
	}
	bl := make([]string, 0, len(blas))
	for k := range blas {
		bl = append(bl, k)
	}
	sort.Strings(bl)
	return fmt.Sprintf("Each run trained in its own process with GOMAXPROCS %s, BLAS %s.", strings.Join(parts, ", "), strings.Join(bl, ", "))
}

func orDash(ok bool, format string, x float64) string {
	if !ok {
		return "-"
	}
	return fmt.Sprintf(format, x)
}

func joinUints(xs []uint64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatUint(x, 10)
	}
	return strings.Join(parts, ", ")
}
