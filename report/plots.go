package report

import (
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/attnlab/attnlab/internal/atomicfile"
	"github.com/attnlab/attnlab/sweep"
)

// Figure sizes, and the PNG resolution.
const (
	figWidth  = 7 * vg.Inch
	figHeight = 4.5 * vg.Inch
	pngDPI    = 120
)

// figure is one plot to draw, as PNG and SVG files named file + ext.
type figure struct {
	file, title, note string
	draw              func() (*chart, error)
}

type figureResult struct {
	file, title, note string
	err               error
}

// planFigures lists the figures that apply to the tasks, and why the others
// do not.
func planFigures(c *sweep.Collection, tasks []*Task) (figs []figure, skipped []string) {
	for _, t := range tasks {
		t := t
		var pts []*Point
		for _, p := range t.Points {
			if p.OK > 0 && p.hasTPS {
				pts = append(pts, p)
			}
		}
		if len(pts) == 0 {
			skipped = append(skipped, fmt.Sprintf("accuracy against throughput for %s: no finished run", t.Title()))
			continue
		}
		figs = append(figs, figure{
			file:  fmt.Sprintf("acc-vs-throughput_%s_T%d", fileSafe(t.Kind), t.SeqLen),
			title: fmt.Sprintf("Accuracy against throughput, %s", t.Title()),
			note:  "One point per grid point, labelled with its variant (mean over seeds, bars ± 1 std); bubble area proportional to peak RSS.",
			draw:  func() (*chart, error) { return accThroughput(t, pts) },
		})
	}

	if vals := distinct(c.Rows, "model.d_model"); len(vals) < 2 {
		skipped = append(skipped, "accuracy against model.d_model: model.d_model does not take two or more values in the grid's finished runs")
	} else {
		for _, t := range tasks {
			t := t
			figs = append(figs, figure{
				file:  fmt.Sprintf("acc-vs-d_model_%s_T%d", fileSafe(t.Kind), t.SeqLen),
				title: fmt.Sprintf("Accuracy against model.d_model, %s", t.Title()),
				note:  "One line per variant, labelled at its end (mean over seeds, bars ± 1 std).",
				draw:  func() (*chart, error) { return accDModel(t) },
			})
		}
	}

	if vals := distinct(c.Rows, "task.seq_len"); len(vals) < 2 {
		skipped = append(skipped, "step time and peak memory against T: task.seq_len does not take two or more values in the grid's finished runs")
	} else {
		for _, kt := range byKind(tasks) {
			k := kt[0].Kind
			figs = append(figs,
				figure{
					file:  "step-time-vs-T_" + fileSafe(k),
					title: "Step time against sequence length, " + k,
					note:  "Log-log; the label at each line's end gives the variant's least-squares slope, the power of T its step time grows with (dashed: the fit).",
					draw: func() (*chart, error) {
						return scaling(k, kt, "training step time (ms, median)", func(p *Point) (float64, bool) { return p.StepMs, p.hasStep })
					},
				},
				figure{
					file:  "peak-rss-vs-T_" + fileSafe(k),
					title: "Peak memory against sequence length, " + k,
					note:  "Log-log, as above; peak RSS includes the process's fixed cost (runtime, code), so slopes understate how activations grow.",
					draw: func() (*chart, error) {
						return scaling(k, kt, "peak RSS (MiB)", func(p *Point) (float64, bool) { return p.RSS, p.hasMemory })
					},
				})
		}
	}
	return figs, skipped
}

// distinct returns the distinct values of a grid key among finished rows.
func distinct(rows []sweep.Row, key string) []string {
	var vals []string
	for _, r := range rows {
		if r.Status != sweep.StatusOK {
			continue
		}
		if v, ok := r.Param(key); ok && !slices.Contains(vals, v) {
			vals = append(vals, v)
		}
	}
	return vals
}

func fileSafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '_'
		}
	}
	return string(b)
}

// render draws the figure and writes its PNG and SVG files atomically. A
// panic inside the plotting library becomes an error.
func (f figure) render(pdir string) (res figureResult) {
	res = figureResult{file: f.file, title: f.title, note: f.note}
	defer func() {
		if r := recover(); r != nil {
			res.err = fmt.Errorf("internal error in plotting: %v", r)
		}
	}()
	ch, err := f.draw()
	if err != nil {
		res.err = err
		return res
	}
	res.err = writeFigure(filepath.Join(pdir, f.file), ch)
	return res
}

// chart is a figure's plot with what laying it out needs: its legend (nil:
// none, the marks are labelled where they are) and every plotter that
// draws data, whose extents and glyphs the axis ranges must hold.
type chart struct {
	*plot.Plot
	legend   *plot.Legend
	plotters []plot.Plotter
	// The axis titles, drawn by the chart rather than by gonum/plot,
	// which reserves room for them at the arithmetic middle of the range
	// even on a log axis: near its top or right end, so that a long title
	// shrank the data area by a third.
	xLabel, yLabel string
}

// add adds plotters to the plot and to the ones the ranges are fitted to.
func (ch *chart) add(ps ...plot.Plotter) {
	ch.Plot.Add(ps...)
	ch.plotters = append(ch.plotters, ps...)
}

// writeFigure writes ch as base.png and base.svg.
func writeFigure(base string, ch *chart) error {
	png := vgimg.NewWith(vgimg.UseWH(figWidth, figHeight), vgimg.UseDPI(pngDPI), vgimg.UseBackgroundColor(color.White))
	ch.draw(draw.New(png))
	if err := atomicfile.WriteFile(base+".png", 0o644, func(w io.Writer) error {
		_, err := vgimg.PngCanvas{Canvas: png}.WriteTo(w)
		return err
	}); err != nil {
		return err
	}
	svg := vgsvg.New(figWidth, figHeight)
	ch.draw(draw.New(svg))
	return atomicfile.WriteFile(base+".svg", 0o644, func(w io.Writer) error {
		_, err := svg.WriteTo(w)
		return err
	})
}

// draw fits the axis ranges to the canvas and draws the plot on c, with
// the legend, if any, in a column on its right so that it never hides
// data.
func (ch *chart) draw(c draw.Canvas) {
	pc, lc, hasLegend := ch.layout(c)
	fitRanges(ch.Plot, ch.plotters, pc)
	ch.Plot.Draw(pc)
	da := ch.DataCanvas(pc)
	if ch.xLabel != "" {
		sty := ch.X.Label.TextStyle
		c.FillText(sty, vg.Point{X: da.Center().X, Y: c.Min.Y + sty.FontExtents().Descent}, ch.xLabel)
	}
	if ch.yLabel != "" {
		sty := ch.Y.Label.TextStyle
		sty.Rotation += math.Pi / 2
		x := c.Min.X + sty.Height(ch.yLabel) - sty.FontExtents().Descent
		c.FillText(sty, vg.Point{X: x, Y: da.Center().Y}, ch.yLabel)
	}
	if hasLegend {
		ch.legend.Draw(lc)
	}
}

// layout splits c into the plot's canvas (less the strips of the axis
// titles, left and bottom) and the legend's.
func (ch *chart) layout(c draw.Canvas) (plotC, legendC draw.Canvas, hasLegend bool) {
	var left, bottom vg.Length
	if ch.yLabel != "" {
		left = ch.Y.Label.TextStyle.Height(ch.yLabel) + ch.Y.Label.Padding
	}
	if ch.xLabel != "" {
		bottom = ch.X.Label.TextStyle.Height(ch.xLabel) + ch.X.Label.Padding
	}
	if ch.legend == nil {
		return draw.Crop(c, left, 0, bottom, 0), draw.Canvas{}, false
	}
	l := ch.legend
	l.Top, l.Left = true, true
	r := l.Rectangle(c)
	lw := r.Max.X - r.Min.X + vg.Points(12)
	if max := c.Max.X - c.Min.X; lw > max/2 {
		lw = max / 2
	}
	return draw.Crop(c, left, -lw, bottom, 0), draw.Crop(c, c.Max.X-c.Min.X-lw+vg.Points(6), 0, 0, -vg.Points(30)), true
}

// frameGap is the least room between anything drawn for the data (a
// bubble's edge, an error bar's end, a label) and the frame of the data
// area.
const frameGap = 6 // points

// fitRanges sets p's axis ranges so that, drawn on c, every plotter's data
// lies inside them and every glyph (bubble, marker, error bar cap, label)
// at least frameGap points inside the data area. It starts from the data's
// range with a small margin and widens each side by as much as its
// glyphs overflow, until none does: a glyph's size is in points, so how
// much range it needs depends on the data area's size, which depends on
// the tick labels of the range.
func fitRanges(p *plot.Plot, plotters []plot.Plotter, c draw.Canvas) {
	xmin, xmax, ymin, ymax := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, d := range plotters {
		if dr, ok := d.(plot.DataRanger); ok {
			x0, x1, y0, y1 := dr.DataRange()
			xmin, xmax = math.Min(xmin, x0), math.Max(xmax, x1)
			ymin, ymax = math.Min(ymin, y0), math.Max(ymax, y1)
		}
	}
	if math.IsInf(xmin, 0) || math.IsInf(ymin, 0) {
		return
	}
	p.X.Min, p.X.Max = margined(p.X, xmin, xmax)
	p.Y.Min, p.Y.Max = margined(p.Y, ymin, ymax)
	gap := vg.Points(frameGap)
	for iter := 0; iter < 12; iter++ {
		da := p.DataCanvas(c)
		var left, right, bottom, top vg.Length
		for _, d := range plotters {
			gb, ok := d.(plot.GlyphBoxer)
			if !ok {
				continue
			}
			for _, b := range gb.GlyphBoxes(p) {
				x, y := da.X(b.X), da.Y(b.Y)
				left = max(left, da.Min.X+gap-(x+b.Min.X))
				right = max(right, x+b.Max.X-(da.Max.X-gap))
				bottom = max(bottom, da.Min.Y+gap-(y+b.Min.Y))
				top = max(top, y+b.Max.Y-(da.Max.Y-gap))
			}
		}
		if left <= 0 && right <= 0 && bottom <= 0 && top <= 0 {
			return
		}
		widen(&p.X, left, right, da.Max.X-da.Min.X)
		widen(&p.Y, bottom, top, da.Max.Y-da.Min.Y)
	}
}

// isLog reports whether a is drawn on a log scale.
func isLog(a plot.Axis) bool {
	_, ok := a.Scale.(plot.LogScale)
	return ok
}

// margined is [lo, hi] widened by 3% of its span on each side (in log
// space on a log axis), or, when the span is 0 (one value), a quarter of
// the value on each side (a factor of 1.5 on a log axis).
func margined(a plot.Axis, lo, hi float64) (float64, float64) {
	if hi <= lo {
		switch {
		case isLog(a):
			return lo / 1.5, lo * 1.5
		case lo == 0:
			return -0.5, 0.5
		}
		return lo - math.Abs(lo)/4, lo + math.Abs(lo)/4
	}
	to, from := axisSpace(a)
	l, h := to(lo), to(hi)
	m := 0.03 * (h - l)
	return from(l - m), from(h + m)
}

// widen moves a's lower end down by lo points and its upper end up by hi
// points of an axis length points long (a little more, since widening
// shrinks the scale).
func widen(a *plot.Axis, lo, hi, length vg.Length) {
	if length <= 0 {
		return
	}
	to, from := axisSpace(*a)
	l, h := to(a.Min), to(a.Max)
	span := h - l
	if lo > 0 {
		l -= 1.1 * float64(lo/length) * span
	}
	if hi > 0 {
		h += 1.1 * float64(hi/length) * span
	}
	a.Min, a.Max = from(l), from(h)
}

// axisSpace maps values to the space an axis is linear in, and back.
func axisSpace(a plot.Axis) (to, from func(float64) float64) {
	if isLog(a) {
		return math.Log10, func(x float64) float64 { return math.Pow(10, x) }
	}
	id := func(x float64) float64 { return x }
	return id, id
}

func newPlot(title, x, y string) *chart {
	p := plot.New()
	p.Title.Text = title
	p.Title.Padding = vg.Points(8)
	p.X.Tick.Marker = readableTicks{}
	p.Y.Tick.Marker = readableTicks{}
	p.Add(plotter.NewGrid())
	return &chart{Plot: p, xLabel: x, yLabel: y}
}

// xyErr is points with vertical error bars.
type xyErr struct {
	plotter.XYs
	plotter.YErrors
}

// Bubble radii of the accuracy-against-throughput figure, in points.
const bubbleMin, bubbleMax, bubbleDefault = 3.0, 16.0, 6.0

// bubbleRadius is the radius of p's bubble: its area is proportional to
// the point's peak RSS, the largest maxRSS.
func bubbleRadius(p *Point, maxRSS float64) vg.Length {
	if p.hasMemory && maxRSS > 0 {
		return vg.Points(math.Max(bubbleMin, bubbleMax*math.Sqrt(p.RSS/maxRSS)))
	}
	return vg.Points(bubbleDefault)
}

// accThroughput is LRA's figure: accuracy against training tokens/s, bubble
// area proportional to peak RSS, each bubble labelled with its variant.
func accThroughput(t *Task, pts []*Point) (*chart, error) {
	return accBubbles(t.Title()+": accuracy vs throughput", "training throughput (tokens/s)", pts,
		func(p *Point) float64 { return p.TokensPerSec })
}

// accBubbles draws accuracy against x(p), bubble area proportional to
// peak RSS, each bubble labelled with its variant.
func accBubbles(title, xlabel string, pts []*Point, x func(*Point) float64) (*chart, error) {
	maxRSS := 0.0
	minRSS := math.Inf(1)
	minX, maxX := math.Inf(1), math.Inf(-1)
	for _, p := range pts {
		if p.hasMemory {
			maxRSS = math.Max(maxRSS, p.RSS)
			minRSS = math.Min(minRSS, p.RSS)
		}
		minX, maxX = math.Min(minX, x(p)), math.Max(maxX, x(p))
	}
	mem := "peak RSS not measured"
	if maxRSS > 0 {
		mem = fmt.Sprintf("bubble area proportional to peak RSS, %s to %s MiB", tickLabel(math.Round(minRSS)), tickLabel(math.Round(maxRSS)))
	}
	ch := newPlot(fmt.Sprintf("%s\n(%s)", title, mem), xlabel, "eval accuracy (fraction correct)")
	ch.Y.Tick.Marker = fractionTicks{}
	labels := &pointLabels{}
	for i, p := range pts {
		radius := bubbleRadius(p, maxRSS)
		xy := plotter.XYs{{X: x(p), Y: p.AccMean}}
		s, err := plotter.NewScatter(xy)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.Label, err)
		}
		col := plotutil.Color(i)
		s.GlyphStyle = draw.GlyphStyle{Color: fade(col), Radius: radius, Shape: draw.CircleGlyph{}}
		ring, _ := plotter.NewScatter(xy)
		ring.GlyphStyle = draw.GlyphStyle{Color: col, Radius: radius, Shape: draw.RingGlyph{}}
		ch.add(s, ring)
		if p.OK > 1 && p.AccStd > 0 {
			eb, err := plotter.NewYErrorBars(xyErr{xy, plotter.YErrors{accBar(p.AccMean, p.AccStd)}})
			if err == nil {
				eb.LineStyle.Color = col
				ch.add(eb)
			}
		}
		// Labels go on the side with more room: left of the bubbles in
		// the right half.
		labels.add(xy[0], radius, p.Label, col, x(p) > (minX+maxX)/2)
	}
	ch.add(labels)
	return ch, nil
}

// accBar is an error bar of ± std around an accuracy, cut to [0, 1].
func accBar(mean, std float64) struct{ Low, High float64 } {
	return struct{ Low, High float64 }{Low: math.Min(std, mean), High: math.Min(std, 1-mean)}
}

// fade returns c at half opacity, so overlapping bubbles stay visible.
func fade(c color.Color) color.Color {
	r, g, b, _ := c.RGBA()
	return color.NRGBA{R: uint8(r >> 8), G: uint8(g >> 8), B: uint8(b >> 8), A: 110}
}

// darken returns c at 70% brightness: text in a series' colour that reads
// on white.
func darken(c color.Color) color.Color {
	r, g, b, _ := c.RGBA()
	f := func(v uint32) uint8 { return uint8(float64(v>>8) * 0.7) }
	return color.NRGBA{R: f(r), G: f(g), B: f(b), A: 0xff}
}

// series is one variant's points across a swept x.
type series struct {
	label string
	xs    []float64
	ys    []float64
	errs  []float64
}

func (s *series) sort() {
	idx := make([]int, len(s.xs))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return s.xs[idx[a]] < s.xs[idx[b]] })
	xs, ys, es := make([]float64, len(idx)), make([]float64, len(idx)), make([]float64, len(idx))
	for i, j := range idx {
		xs[i], ys[i], es[i] = s.xs[j], s.ys[j], s.errs[j]
	}
	s.xs, s.ys, s.errs = xs, ys, es
}

// accDModel is Zoology's figure: accuracy against model width, one line per
// variant, labelled at its end, for one task and sequence length.
func accDModel(t *Task) (*chart, error) {
	var ss []*series
	by := map[string]*series{}
	var ticks []float64
	for _, p := range t.Points {
		if p.OK == 0 {
			continue
		}
		lab := p.labelWithout("model.d_model")
		s := by[lab]
		if s == nil {
			s = &series{label: lab}
			by[lab] = s
			ss = append(ss, s)
		}
		s.xs = append(s.xs, float64(p.DModel))
		s.ys = append(s.ys, p.AccMean)
		s.errs = append(s.errs, p.AccStd)
		if !slices.Contains(ticks, float64(p.DModel)) {
			ticks = append(ticks, float64(p.DModel))
		}
	}
	if len(ss) == 0 {
		return nil, errors.New("no finished run")
	}
	ch := newPlot(fmt.Sprintf("%s: accuracy vs model width", t.Title()), "model.d_model (width of the residual stream)", "eval accuracy (fraction correct)")
	ch.X.Tick.Marker = constTicks(ticks)
	ch.Y.Tick.Marker = fractionTicks{}
	ends := &lineLabels{}
	for i, s := range ss {
		s.sort()
		xy := make(plotter.XYs, len(s.xs))
		ye := make(plotter.YErrors, len(s.xs))
		for j := range s.xs {
			xy[j] = plotter.XY{X: s.xs[j], Y: s.ys[j]}
			ye[j] = accBar(s.ys[j], s.errs[j])
		}
		line, pts, err := plotter.NewLinePoints(xy)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.label, err)
		}
		line.Color = plotutil.Color(i)
		pts.Color = plotutil.Color(i)
		pts.Shape = plotutil.Shape(i)
		ch.add(line, pts)
		if eb, err := plotter.NewYErrorBars(xyErr{xy, ye}); err == nil && slices.Max(s.errs) > 0 {
			eb.LineStyle.Color = plotutil.Color(i)
			ch.add(eb)
		}
		ends.add(xy[len(xy)-1], pts.Radius, s.label, plotutil.Color(i))
	}
	ch.add(ends)
	return ch, nil
}

// scaling plots a cost against sequence length on log-log axes, one
// series per variant with its least-squares slope.
func scaling(kind string, tasks []*Task, ylabel string, cost func(*Point) (float64, bool)) (*chart, error) {
	title := fmt.Sprintf("%s: %s vs T (log-log)", kind, strings.SplitN(ylabel, " (", 2)[0])
	return logLog(scalingSeries(tasks, cost), title, "sequence length T (tokens, log scale)", ylabel+", log scale")
}

// Series is one labelled line of a log-log scaling plot: Y at each X.
type Series struct {
	Label string
	X, Y  []float64
}

// WriteScalingPlot draws series on log-log axes, one line per series
// labelled at its end with its least-squares slope (FitLogLog), the fit
// dashed, the xs as ticks, and writes base.png and base.svg. Points with a
// non-positive x or y are left out. A panic inside the plotting library
// becomes an error.
func WriteScalingPlot(base, title, xlabel, ylabel string, in []Series) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error in plotting: %v", r)
		}
	}()
	var ss []*series
	for _, s := range in {
		sr := &series{label: s.Label}
		for i := range s.X {
			if i < len(s.Y) && s.X[i] > 0 && s.Y[i] > 0 {
				sr.xs, sr.ys, sr.errs = append(sr.xs, s.X[i]), append(sr.ys, s.Y[i]), append(sr.errs, 0)
			}
		}
		if len(sr.xs) > 0 {
			sr.sort()
			ss = append(ss, sr)
		}
	}
	ch, err := logLog(ss, title, xlabel, ylabel)
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(base), err)
	}
	return writeFigure(base, ch)
}

// logLog plots series (each sorted by x) on log-log axes, each labelled at
// its end with its least-squares slope.
func logLog(ss []*series, title, xlabel, ylabel string) (*chart, error) {
	var ticks []float64
	for _, s := range ss {
		for _, x := range s.xs {
			if !slices.Contains(ticks, x) {
				ticks = append(ticks, x)
			}
		}
	}
	if len(ss) == 0 || len(ticks) < 2 {
		return nil, errors.New("fewer than two sequence lengths with finished runs")
	}
	slices.Sort(ticks)
	ch := newPlot(title, xlabel, ylabel)
	ch.X.Scale, ch.Y.Scale = plot.LogScale{}, plot.LogScale{}
	ch.X.Tick.Marker = constTicks(ticks)
	ch.Y.Tick.Marker = logTicks{}
	ends := &lineLabels{}
	for i, s := range ss {
		xy := make(plotter.XYs, len(s.xs))
		for j := range s.xs {
			xy[j] = plotter.XY{X: s.xs[j], Y: s.ys[j]}
		}
		line, pts, err := plotter.NewLinePoints(xy)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.label, err)
		}
		col := plotutil.Color(i)
		line.Color, pts.Color, pts.Shape = col, col, plotutil.Shape(i)
		ch.add(line, pts)
		name := s.label
		if slope, icpt, ok := fitLogLog(s.xs, s.ys); ok {
			name = fmt.Sprintf("%s (slope %.2f)", s.label, slope)
			x0, x1 := s.xs[0], s.xs[len(s.xs)-1]
			fit, err := plotter.NewLine(plotter.XYs{
				{X: x0, Y: math.Exp(icpt + slope*math.Log(x0))},
				{X: x1, Y: math.Exp(icpt + slope*math.Log(x1))},
			})
			if err == nil {
				fit.Color = col
				fit.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
				ch.add(fit)
			}
		} else {
			name += " (slope n/a: one T)"
		}
		ends.add(xy[len(xy)-1], pts.Radius, name, col)
	}
	ch.add(ends)
	return ch, nil
}

// scalingSeries gathers, per variant (a point's grid values other than the
// task's), a positive cost at each sequence length, sorted by length.
func scalingSeries(tasks []*Task, cost func(*Point) (float64, bool)) []*series {
	var ss []*series
	by := map[string]*series{}
	for _, t := range tasks {
		for _, p := range t.Points {
			y, ok := cost(p)
			if p.OK == 0 || !ok || y <= 0 || p.SeqLen <= 0 {
				continue
			}
			s := by[p.Label]
			if s == nil {
				s = &series{label: p.Label}
				by[p.Label] = s
				ss = append(ss, s)
			}
			s.xs = append(s.xs, float64(p.SeqLen))
			s.ys = append(s.ys, y)
			s.errs = append(s.errs, 0)
		}
	}
	for _, s := range ss {
		s.sort()
	}
	return ss
}

// FitLogLog returns the least-squares line through (log x, log y): the
// slope is the power p of y ~ x^p. ok is false with fewer than two distinct
// positive xs.
func FitLogLog(xs, ys []float64) (slope float64, ok bool) {
	s, _, ok := fitLogLog(xs, ys)
	return s, ok
}

func fitLogLog(xs, ys []float64) (slope, intercept float64, ok bool) {
	var lx, ly []float64
	for i := range xs {
		if xs[i] > 0 && ys[i] > 0 {
			lx = append(lx, math.Log(xs[i]))
			ly = append(ly, math.Log(ys[i]))
		}
	}
	n := float64(len(lx))
	if n < 2 {
		return 0, 0, false
	}
	var mx, my float64
	for i := range lx {
		mx += lx[i]
		my += ly[i]
	}
	mx, my = mx/n, my/n
	var sxx, sxy float64
	for i := range lx {
		sxx += (lx[i] - mx) * (lx[i] - mx)
		sxy += (lx[i] - mx) * (ly[i] - my)
	}
	if sxx == 0 {
		return 0, 0, false
	}
	slope = sxy / sxx
	return slope, my - slope*mx, true
}

// Tick labels. gonum/plot's own print every label of an axis with the
// same number of decimals (62500.00) and large values in e notation
// (5e+04); these print what a reader writes: 62.5k, 1.2M, 0.25, 10k.

// tickLabel writes v for a tick: thousands, millions, billions and
// trillions as k, M, G and T (62500 is 62.5k, 1000000 is 1M), in at most
// four significant digits without trailing zeros (0.25, 12.5).
func tickLabel(v float64) string {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	a := math.Abs(v)
	for _, u := range []struct {
		size   float64
		suffix string
	}{{1e12, "T"}, {1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if a >= u.size*(1-5e-5) { // 999.99 rounds to 1k, not 1000
			return strconv.FormatFloat(v/u.size, 'g', 4, 64) + u.suffix
		}
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// exactLabel writes a value the axis marks exactly (a sequence length, a
// width): in full while an integer below 100000 (1024, 16384), else as
// tickLabel.
func exactLabel(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e5 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return tickLabel(v)
}

// readableTicks are gonum/plot's default tick positions on a linear axis,
// labelled by tickLabel; when every label is below 1000 they share one
// number of decimals (0.6, 0.8, 1.0).
type readableTicks struct{}

func (readableTicks) Ticks(lo, hi float64) []plot.Tick {
	if !(hi > lo) || math.IsInf(lo, 0) || math.IsInf(hi, 0) {
		return nil // gonum's own panic on an empty range
	}
	ts := plot.DefaultTicks{}.Ticks(lo, hi)
	large, decimals := false, 0
	for i := range ts {
		if math.Abs(ts[i].Value) < 1e-9*(hi-lo) { // 0 with rounding noise
			ts[i].Value = 0
		}
		if ts[i].Label == "" {
			continue
		}
		v := ts[i].Value
		if math.Abs(v) >= 1000*(1-5e-5) {
			large = true
		}
		s := strconv.FormatFloat(v, 'g', 6, 64) // rounding noise dropped
		if d := strings.IndexByte(s, '.'); d >= 0 && !strings.ContainsAny(s, "e") {
			decimals = max(decimals, len(s)-d-1)
		}
	}
	for i := range ts {
		if ts[i].Label == "" {
			continue
		}
		if large {
			ts[i].Label = tickLabel(ts[i].Value)
		} else {
			ts[i].Label = strconv.FormatFloat(ts[i].Value, 'f', decimals, 64)
		}
	}
	return ts
}

// fractionTicks are readableTicks for an axis of fractions (accuracy):
// the range is padded beyond [0, 1] so that bubbles and error bars keep
// off the frame, but no tick claims a fraction outside it.
type fractionTicks struct{}

func (fractionTicks) Ticks(min, max float64) []plot.Tick {
	var ts []plot.Tick
	for _, t := range (readableTicks{}).Ticks(min, max) {
		if t.Value >= -1e-9 && t.Value <= 1+1e-9 {
			ts = append(ts, t)
		}
	}
	return ts
}

// constTicks labels exactly the given values.
func constTicks(vals []float64) plot.ConstantTicks {
	var ts plot.ConstantTicks
	for _, v := range vals {
		ts = append(ts, plot.Tick{Value: v, Label: exactLabel(v)})
	}
	return ts
}

// logTicks marks 1..9 x 10^k, labelling 1, 2 and 5 x 10^k (every mark when
// the range holds fewer than two of those, and the range's ends when it
// holds fewer than two marks), with tickLabel: 50, 100, 1k, 10k. A range
// of less than a decade, on which those are too few, gets readableTicks'
// round values instead (15, 20, 25, 30): over so short a range a log axis
// is nearly linear.
type logTicks struct{}

func (logTicks) Ticks(min, max float64) []plot.Tick {
	if !(min > 0) || !(max > min) || math.IsInf(max, 0) {
		return nil
	}
	if max < 10*min {
		if ts := (readableTicks{}).Ticks(min, max); len(labelled(ts)) >= 3 {
			return ts
		}
	}
	var ts []plot.Tick
	labelled := 0
	for e := math.Floor(math.Log10(min)); math.Pow(10, e) <= max; e++ {
		for m := 1.0; m <= 9; m++ {
			v := m * math.Pow(10, e)
			if v < min || v > max {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = tickLabel(v)
				labelled++
			}
			ts = append(ts, t)
		}
	}
	if labelled < 2 {
		for i := range ts {
			ts[i].Label = tickLabel(ts[i].Value)
		}
	}
	if len(ts) < 2 { // a range within one step of 1..9 x 10^k: label its ends too
		ts = append(ts,
			plot.Tick{Value: min, Label: strconv.FormatFloat(min, 'g', 3, 64)},
			plot.Tick{Value: max, Label: strconv.FormatFloat(max, 'g', 3, 64)})
	}
	return ts
}

// labelled returns the ticks with a label.
func labelled(ts []plot.Tick) []plot.Tick {
	var out []plot.Tick
	for _, t := range ts {
		if t.Label != "" {
			out = append(out, t)
		}
	}
	return out
}

// Labels of the data, drawn next to it instead of in a legend.

// labelSize is the size of the text of point and line labels.
const labelSize = 8.5 // points

func labelStyle(col color.Color, xa text.XAlignment) text.Style {
	return text.Style{Color: darken(col), Font: font.From(plot.DefaultFont, vg.Points(labelSize)),
		Handler: plot.DefaultTextHandler, XAlign: xa, YAlign: draw.YCenter}
}

// pointLabels names each bubble of a scatter beside it: on its preferred
// side (left or right), or, where that would cover another label or
// bubble or leave the data area, above or below it, on the other side, or
// moved up or down.
// Its glyph boxes are the preferred places, so that fitting the ranges
// leaves room for them.
type pointLabels struct {
	xys    plotter.XYs
	radii  []vg.Length
	texts  []string
	colors []color.Color
	left   []bool
}

func (l *pointLabels) add(at plotter.XY, radius vg.Length, label string, col color.Color, left bool) {
	l.xys = append(l.xys, at)
	l.radii = append(l.radii, radius)
	l.texts = append(l.texts, label)
	l.colors = append(l.colors, col)
	l.left = append(l.left, left)
}

// labelPad is the room between a mark and its label.
const labelPad = 3 // points

// box is label i's rectangle relative to its point: beside it on its
// preferred side (other: the other side), dy points higher, or, with
// above or below, centred over or under it.
func (l *pointLabels) box(i int, other bool, dy vg.Length, above, below bool) vg.Rectangle {
	sty := labelStyle(l.colors[i], draw.XLeft)
	w, h := sty.Width(l.texts[i]), sty.Height(l.texts[i])
	off := l.radii[i] + vg.Points(labelPad)
	switch {
	case above:
		return vg.Rectangle{Min: vg.Point{X: -w / 2, Y: off}, Max: vg.Point{X: w / 2, Y: off + h}}
	case below:
		return vg.Rectangle{Min: vg.Point{X: -w / 2, Y: -off - h}, Max: vg.Point{X: w / 2, Y: -off}}
	}
	r := vg.Rectangle{Min: vg.Point{X: off, Y: dy - h/2}, Max: vg.Point{X: off + w, Y: dy + h/2}}
	if l.left[i] != other {
		r.Min.X, r.Max.X = -off-w, -off
	}
	return r
}

// places are the rectangles, relative to its point, where label i may go,
// best first: beside it on its preferred side, above, below, on the other
// side, then beside it but moved up or down by whole lines (for points
// that crowd together or coincide).
func (l *pointLabels) places(i int) []vg.Rectangle {
	h := labelStyle(l.colors[i], draw.XLeft).Height(l.texts[i])
	ps := []vg.Rectangle{l.box(i, false, 0, false, false), l.box(i, false, 0, true, false),
		l.box(i, false, 0, false, true), l.box(i, true, 0, false, false)}
	for k := 1; k <= 6; k++ {
		for _, other := range []bool{false, true} {
			ps = append(ps, l.box(i, other, vg.Length(k)*h, false, false), l.box(i, other, -vg.Length(k)*h, false, false))
		}
	}
	return ps
}

func (l *pointLabels) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	at := make([]vg.Point, len(l.xys))
	var taken []vg.Rectangle
	for i, xy := range l.xys {
		at[i] = vg.Point{X: trX(xy.X), Y: trY(xy.Y)}
		r := vg.Point{X: l.radii[i], Y: l.radii[i]}
		taken = append(taken, vg.Rectangle{Min: at[i].Sub(r), Max: at[i].Add(r)})
	}
	for i := range l.xys {
		// The first place inside the data area that covers nothing, or
		// else the one that covers least.
		var place vg.Rectangle
		best := vg.Length(math.Inf(1))
		for k, r := range l.places(i) {
			r = r.Add(at[i])
			cover := overlap(r, taken, i)
			if !inside(r, c.Rectangle) {
				if k > 0 {
					continue
				}
				cover = vg.Length(math.MaxFloat32) // the preferred place, which the ranges leave room for, is the last resort
			}
			if cover < best {
				place, best = r, cover
			}
			if cover == 0 {
				break
			}
		}
		taken = append(taken, place)
		sty := labelStyle(l.colors[i], draw.XLeft)
		c.FillText(sty, vg.Point{X: place.Min.X, Y: (place.Min.Y + place.Max.Y) / 2}, l.texts[i])
	}
}

func (l *pointLabels) DataRange() (xmin, xmax, ymin, ymax float64) { return plotter.XYRange(l.xys) }

func (l *pointLabels) GlyphBoxes(p *plot.Plot) []plot.GlyphBox {
	bs := make([]plot.GlyphBox, len(l.xys))
	for i, xy := range l.xys {
		bs[i] = plot.GlyphBox{X: p.X.Norm(xy.X), Y: p.Y.Norm(xy.Y), Rectangle: l.box(i, false, 0, false, false)}
	}
	return bs
}

// inside reports whether r lies within c.
func inside(r, c vg.Rectangle) bool {
	return r.Min.X >= c.Min.X && r.Min.Y >= c.Min.Y && r.Max.X <= c.Max.X && r.Max.Y <= c.Max.Y
}

// overlap is the area r shares with the rectangles of rs other than the
// one at index self (the label's own bubble).
func overlap(r vg.Rectangle, rs []vg.Rectangle, self int) vg.Length {
	var area vg.Length
	for k, o := range rs {
		w := min(r.Max.X, o.Max.X) - max(r.Min.X, o.Min.X)
		h := min(r.Max.Y, o.Max.Y) - max(r.Min.Y, o.Min.Y)
		if k != self && w > 0 && h > 0 {
			area += w * h
		}
	}
	return area
}

// lineLabels names each line of a plot right of its last point, moved up
// or down as little as keeps any two from overlapping, within the data
// area. Its glyph boxes are the labels at their lines' ends, so that
// fitting the ranges leaves room on the right.
type lineLabels struct {
	ends   plotter.XYs
	radii  []vg.Length
	texts  []string
	colors []color.Color
}

func (l *lineLabels) add(end plotter.XY, radius vg.Length, label string, col color.Color) {
	l.ends = append(l.ends, end)
	l.radii = append(l.radii, radius)
	l.texts = append(l.texts, label)
	l.colors = append(l.colors, col)
}

func (l *lineLabels) box(i int) vg.Rectangle {
	sty := labelStyle(l.colors[i], draw.XLeft)
	w, h := sty.Width(l.texts[i]), sty.Height(l.texts[i])
	off := l.radii[i] + vg.Points(labelPad)
	return vg.Rectangle{Min: vg.Point{X: off, Y: -h / 2}, Max: vg.Point{X: off + w, Y: h / 2}}
}

func (l *lineLabels) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	ys := make([]vg.Length, len(l.ends))
	hs := make([]vg.Length, len(l.ends))
	for i, e := range l.ends {
		ys[i] = trY(e.Y)
		b := l.box(i)
		hs[i] = b.Max.Y - b.Min.Y
	}
	spread(ys, hs, c.Min.Y, c.Max.Y)
	for i, e := range l.ends {
		x := trX(e.X) + l.box(i).Min.X
		c.FillText(labelStyle(l.colors[i], draw.XLeft), vg.Point{X: x, Y: ys[i]}, l.texts[i])
	}
}

// spread moves the centres ys of labels hs high apart until none overlap,
// keeping them within [lo, hi] where there is room: bottom up, pushing each
// above the one below it, then top down, pushing each below the one above.
func spread(ys, hs []vg.Length, lo, hi vg.Length) {
	idx := make([]int, len(ys))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return ys[idx[a]] < ys[idx[b]] })
	for k, i := range idx {
		floor := lo + hs[i]/2
		if k > 0 {
			j := idx[k-1]
			floor = max(floor, ys[j]+(hs[i]+hs[j])/2)
		}
		ys[i] = max(ys[i], floor)
	}
	for k := len(idx) - 1; k >= 0; k-- {
		i := idx[k]
		ceil := hi - hs[i]/2
		if k < len(idx)-1 {
			j := idx[k+1]
			ceil = min(ceil, ys[j]-(hs[i]+hs[j])/2)
		}
		ys[i] = min(ys[i], ceil)
	}
}

func (l *lineLabels) DataRange() (xmin, xmax, ymin, ymax float64) { return plotter.XYRange(l.ends) }

func (l *lineLabels) GlyphBoxes(p *plot.Plot) []plot.GlyphBox {
	bs := make([]plot.GlyphBox, len(l.ends))
	for i, e := range l.ends {
		bs[i] = plot.GlyphBox{X: p.X.Norm(e.X), Y: p.Y.Norm(e.Y), Rectangle: l.box(i)}
	}
	return bs
}
