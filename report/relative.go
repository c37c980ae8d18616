package report

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/attnlab/attnlab/sweep"
)

// Options are what a report may draw on beyond its own runs.
type Options struct {
	// Accuracy, if not nil, holds another sweep's runs of one task: the
	// speed figure plots their accuracy against this sweep's speed
	// relative to standard, variant by variant, as Long Range Arena's
	// figure puts its tasks' scores against speed and memory measured at
	// 4K on byte-level text.
	Accuracy *sweep.Collection
	// AccuracyFrom names where Accuracy came from, for the figure's note.
	AccuracyFrom string
}

// baseline is the attention kind the relative tables divide by.
const baseline = "standard"

// relative is one task kind's speed and memory against the baseline at
// each sequence length the baseline ran at.
type relative struct {
	kind    string
	seqLens []int
	rows    []*relRow // in the order of first appearance
}

// relRow is one variant (a label, the same at every T) of a relative
// table.
type relRow struct {
	label  string
	points map[int]*Point // by T
	speed  map[int]float64
	rss    map[int]float64 // peak RSS over the baseline's
}

// otherKey is a point's grid values other than its attention's: the point
// of the baseline it is compared with has the same.
func otherKey(p *Point) string {
	var b strings.Builder
	for _, q := range p.Params {
		if q.Key != "model.attention" && !strings.HasPrefix(q.Key, "model.attention.") {
			b.WriteString(q.Key + "=" + q.Value + "\x00")
		}
	}
	return b.String()
}

// relativeTables builds, for each task kind whose baseline (standard) ran
// at two or more sequence lengths, every finished point's training speed
// relative to the baseline's (steps per second: the baseline's median step
// time over the point's) and its peak RSS relative to the baseline's, at
// the same T and the same other grid values.
func relativeTables(tasks []*Task) []*relative {
	var out []*relative
	for _, kt := range byKind(tasks) {
		r := &relative{kind: kt[0].Kind}
		byLabel := map[string]*relRow{}
		for _, t := range kt {
			base := map[string]*Point{}
			for _, p := range t.Points {
				if p.Attention == baseline && p.OK > 0 && p.hasStep {
					base[otherKey(p)] = p
				}
			}
			if len(base) == 0 {
				continue
			}
			r.seqLens = append(r.seqLens, t.SeqLen)
			for _, p := range t.Points {
				b := base[otherKey(p)]
				if b == nil || p.OK == 0 || !p.hasStep {
					continue
				}
				row := byLabel[p.Label]
				if row == nil {
					row = &relRow{label: p.Label, points: map[int]*Point{}, speed: map[int]float64{}, rss: map[int]float64{}}
					byLabel[p.Label] = row
					r.rows = append(r.rows, row)
				}
				row.points[t.SeqLen] = p
				row.speed[t.SeqLen] = b.StepMs / p.StepMs
				if p.hasMemory && b.hasMemory {
					row.rss[t.SeqLen] = p.RSS / b.RSS
				}
			}
		}
		if len(r.seqLens) >= 2 {
			out = append(out, r)
		}
	}
	return out
}

// writeRelative writes the relative tables: LRA's speed and memory table,
// on this machine.
func writeRelative(b *strings.Builder, rels []*relative) {
	for _, r := range rels {
		fmt.Fprintf(b, "## Speed and memory relative to %s, %s\n\n", baseline, r.kind)
		fmt.Fprintf(b, "Training steps per second relative to `%s` at the same T and the same other grid values (its median step time over the variant's; above 1 is faster), "+
			"then peak RSS in MiB with its ratio to `%s`'s. This is the form of Long Range Arena's speed and memory table (Tay et al. 2020). "+
			"Peak RSS includes the process's fixed cost (runtime, code, data), so the memory ratios understate the activations' ratios.\n\n", baseline, baseline)
		head := []string{"variant"}
		for _, T := range r.seqLens {
			head = append(head, "T = "+strconv.Itoa(T))
		}
		table := func(cell func(row *relRow, T int) string) {
			b.WriteString("| " + strings.Join(head, " | ") + " |\n|" + strings.Repeat("---|", len(head)) + "\n")
			for _, row := range r.rows {
				cells := []string{row.label}
				for _, T := range r.seqLens {
					cells = append(cells, cell(row, T))
				}
				b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
			}
			b.WriteString("\n")
		}
		b.WriteString("Steps per second, relative:\n\n")
		table(func(row *relRow, T int) string {
			if s, ok := row.speed[T]; ok {
				return fmt.Sprintf("%.2f×", s)
			}
			return "-"
		})
		b.WriteString("Peak RSS, MiB (relative):\n\n")
		table(func(row *relRow, T int) string {
			p := row.points[T]
			if p == nil || !p.hasMemory {
				return "-"
			}
			if m, ok := row.rss[T]; ok {
				return fmt.Sprintf("%.0f (%.2f×)", p.RSS, m)
			}
			return fmt.Sprintf("%.0f", p.RSS)
		})
	}
}

// speedFigures plans, when opts carries an accuracy sweep, LRA's figure for
// each relative table: the accuracy sweep's accuracy against the speed
// relative to the baseline at the table's largest T, bubble area its peak
// RSS there. A variant is matched by its label, else by its attention kind
// when that names one point on each side.
func speedFigures(rels []*relative, opts Options) (figs []figure, skipped []string) {
	if opts.Accuracy == nil {
		return nil, nil
	}
	accTasks := Group(opts.Accuracy.Rows)
	if len(accTasks) != 1 {
		return nil, []string{fmt.Sprintf("accuracy against relative speed: the accuracy runs (%s) hold %d task tables, want 1", opts.AccuracyFrom, len(accTasks))}
	}
	at := accTasks[0]
	match := func(row *relRow, p *Point, rel *relative, T int) *Point {
		ofKind := func(pts []*Point, kind string) []*Point {
			var m []*Point
			for _, q := range pts {
				if q.Attention == kind && q.OK > 0 {
					m = append(m, q)
				}
			}
			return m
		}
		for _, q := range at.Points {
			if q.Label == row.label && q.OK > 0 {
				return q
			}
		}
		var here []*Point
		for _, other := range rel.rows {
			if q := other.points[T]; q != nil && q.Attention == p.Attention {
				here = append(here, q)
			}
		}
		if there := ofKind(at.Points, p.Attention); len(there) == 1 && len(here) == 1 {
			return there[0]
		}
		return nil
	}
	for _, rel := range rels {
		T := slices.Max(rel.seqLens)
		var pts []*Point
		speed := map[*Point]float64{}
		var unmatched []string
		for _, row := range rel.rows {
			p := row.points[T]
			if p == nil {
				continue
			}
			q := match(row, p, rel, T)
			if q == nil {
				unmatched = append(unmatched, row.label)
				continue
			}
			joined := *p
			joined.AccMean, joined.AccStd, joined.OK = q.AccMean, q.AccStd, q.OK
			speed[&joined] = row.speed[T]
			pts = append(pts, &joined)
		}
		if len(pts) == 0 {
			skipped = append(skipped, fmt.Sprintf("accuracy against relative speed, %s: no variant of T = %d matches a run of %s", rel.kind, T, at.Title()))
			continue
		}
		note := fmt.Sprintf("Accuracy of %s from %s against steps per second relative to %s at T = %d, bubble area proportional to peak RSS there (Long Range Arena's figure).",
			at.Title(), opts.AccuracyFrom, baseline, T)
		if len(unmatched) > 0 {
			note += " Without an accuracy run: " + strings.Join(unmatched, ", ") + "."
		}
		title := fmt.Sprintf("Accuracy (%s) against speed relative to %s (%s, T = %d)", at.Title(), baseline, rel.kind, T)
		figs = append(figs, figure{
			file:  fmt.Sprintf("acc-vs-relative-speed_%s_T%d", fileSafe(rel.kind), T),
			title: title,
			note:  note,
			draw: func() (*chart, error) {
				return accBubbles(title, fmt.Sprintf("training steps/s relative to %s at T = %d", baseline, T), pts,
					func(p *Point) float64 { return speed[p] })
			},
		})
	}
	return figs, skipped
}
