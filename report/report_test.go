package report

import (
	"bytes"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/attnlab/attnlab/sweep"
	"github.com/attnlab/attnlab/train"
)

// row makes a finished run of a grid over attention kind, d_model and T.
func row(kind string, dModel, seqLen int, seed uint64, acc float64) sweep.Row {
	kv := 2 * dModel * 4
	return sweep.Row{
		Run:   sweep.RunName([]sweep.Param{{Key: "model.attention.kind", Value: kind}}, seed),
		Sweep: "t", Seed: seed, Status: sweep.StatusOK,
		Params: []sweep.Param{
			{Key: "model.attention.kind", Value: kind},
			{Key: "model.d_model", Value: itoa(dModel)},
			{Key: "task.seq_len", Value: itoa(seqLen)},
		},
		TaskKind: "assoc_recall", SeqLen: seqLen, DModel: dModel, Attention: kind,
		Summary: &train.Summary{EvalAccuracy: acc, StepMsMedian: float64(seqLen*seqLen) / 100 * float64(dModel) / 32,
			TrainTokensPerSec: 1e6 / float64(seqLen), PeakRSSBytes: int64(20+seqLen/8) << 20, Params: 1000 * dModel,
			KVCacheBytesPerToken: &kv, Threads: 1, BLAS: "gonum"},
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func grid() []sweep.Row {
	var rows []sweep.Row
	for _, kind := range []string{"standard", "flash"} {
		for _, d := range []int{16, 32} {
			for _, T := range []int{64, 128} {
				for seed := uint64(1); seed <= 2; seed++ {
					rows = append(rows, row(kind, d, T, seed, 0.5+0.1*float64(seed)+float64(d)/320))
				}
			}
		}
	}
	return rows
}

func TestGroupAggregates(t *testing.T) {
	rows := grid()
	rows = append(rows, sweep.Row{Run: "bad", Status: sweep.StatusFailed, Error: "NaN", TaskKind: "assoc_recall", SeqLen: 64,
		Params: []sweep.Param{{Key: "model.attention.kind", Value: "gqa"}, {Key: "model.d_model", Value: "16"}, {Key: "task.seq_len", Value: "64"}}})
	tasks := Group(rows)
	if len(tasks) != 2 || tasks[0].SeqLen != 64 || tasks[1].SeqLen != 128 {
		t.Fatalf("tasks %+v", tasks)
	}
	if n := len(tasks[0].Points); n != 5 {
		t.Fatalf("%d points at T=64, want 4 + the failed one", n)
	}
	p := tasks[0].Points[0]
	if p.Label != "kind=standard, d_model=16" || p.OK != 2 {
		t.Errorf("point %q with %d runs", p.Label, p.OK)
	}
	wantMean := 0.5 + 0.15 + 16.0/320
	if math.Abs(p.AccMean-wantMean) > 1e-12 || math.Abs(p.AccStd-0.1/math.Sqrt2) > 1e-12 || p.AccMin >= p.AccMax {
		t.Errorf("accuracy %v ± %v (%v-%v), want %v ± %v", p.AccMean, p.AccStd, p.AccMin, p.AccMax, wantMean, 0.1/math.Sqrt2)
	}
	if last := tasks[0].Points[4]; last.OK != 0 || len(last.Rows) != 1 {
		t.Errorf("failed point: %+v", last)
	}
}

func TestFitLogLog(t *testing.T) {
	cases := []struct {
		xs, ys []float64
		want   float64
		ok     bool
	}{
		{[]float64{64, 128, 256}, []float64{1, 4, 16}, 2, true},
		{[]float64{64, 128}, []float64{3, 3}, 0, true},
		{[]float64{10, 100, 1000}, []float64{5, 50, 500}, 1, true},
		{[]float64{64}, []float64{1}, 0, false},
		{[]float64{64, 64}, []float64{1, 2}, 0, false},
		{[]float64{64, 128}, []float64{0, 2}, 0, false},
	}
	for _, c := range cases {
		got, ok := FitLogLog(c.xs, c.ys)
		if ok != c.ok || (ok && math.Abs(got-c.want) > 1e-9) {
			t.Errorf("FitLogLog(%v, %v) = %v, %v; want %v, %v", c.xs, c.ys, got, ok, c.want, c.ok)
		}
	}
}

func checkImages(t *testing.T, dir string, files []string) {
	t.Helper()
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		switch filepath.Ext(f) {
		case ".png":
			img, err := png.Decode(bytes.NewReader(b))
			if err != nil {
				t.Errorf("%s: not a PNG: %v", f, err)
			} else if img.Bounds().Dx() < 200 {
				t.Errorf("%s: %v", f, img.Bounds())
			}
		case ".svg":
			if !bytes.HasPrefix(b, []byte("<?xml")) && !bytes.HasPrefix(b, []byte("<svg")) {
				t.Errorf("%s: does not start like SVG: %.40q", f, b)
			}
			if !bytes.Contains(b, []byte("</svg>")) {
				t.Errorf("%s: unterminated SVG", f)
			}
		}
	}
}

func TestWriteAllFigures(t *testing.T) {
	dir := t.TempDir()
	// A stale plot of an earlier report goes away.
	os.MkdirAll(filepath.Join(dir, PlotsDir), 0o755)
	os.WriteFile(filepath.Join(dir, PlotsDir, "old.png"), []byte("x"), 0o644)
	c := &sweep.Collection{Rows: grid(), Info: &sweep.Info{Name: "t", Source: "t.yaml", Base: "inline", Seeds: []uint64{1, 2},
		Grid: []sweep.AxisInfo{{Key: "model.attention.kind", Values: []string{"standard", "flash"}}}, Runs: make([]string, 16)}}
	w, err := Write(dir, c)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"report.md",
		"plots/acc-vs-throughput_assoc_recall_T64.png", "plots/acc-vs-throughput_assoc_recall_T128.svg",
		"plots/acc-vs-d_model_assoc_recall_T64.png", "plots/acc-vs-d_model_assoc_recall_T128.svg",
		"plots/step-time-vs-T_assoc_recall.png", "plots/peak-rss-vs-T_assoc_recall.svg",
	}
	for _, f := range want {
		found := false
		for _, g := range w.Files {
			found = found || g == f
		}
		if !found {
			t.Errorf("%s not written (wrote %v)", f, w.Files)
		}
	}
	if len(w.Skipped) != 0 {
		t.Errorf("skipped %v", w.Skipped)
	}
	checkImages(t, dir, w.Files[1:])
	if _, err := os.Stat(filepath.Join(dir, PlotsDir, "old.png")); err == nil {
		t.Error("stale plot kept")
	}
	md, _ := os.ReadFile(filepath.Join(dir, ReportFile))
	for _, s := range []string{"## assoc_recall, T = 64", "## assoc_recall, T = 128",
		"| model.attention.kind | model.d_model | runs ok | accuracy |", "| standard | 16 | 2/2 | 0.7000 ± 0.0707 |",
		"| params | KV B/token | state B/seq |", "| 16000 | 128 | - |",
		"## Scaling with T, assoc_recall", "| kind=standard, d_model=16 | 64, 128 | 2.00 |", "plots/step-time-vs-T_assoc_recall.png"} {
		if !strings.Contains(string(md), s) {
			t.Errorf("report.md lacks %q:\n%s", s, md)
		}
	}
}

// Figures that do not apply are skipped and the report says why.
func TestWriteSkipsFigures(t *testing.T) {
	var rows []sweep.Row
	for _, r := range grid() {
		if r.DModel == 16 && r.SeqLen == 64 {
			r.Params = r.Params[:1]
			rows = append(rows, r)
		}
	}
	dir := t.TempDir()
	w, err := Write(dir, &sweep.Collection{Rows: rows})
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Files) != 3 || len(w.Skipped) != 2 {
		t.Fatalf("files %v, skipped %v", w.Files, w.Skipped)
	}
	checkImages(t, dir, w.Files[1:])
	md, _ := os.ReadFile(filepath.Join(dir, ReportFile))
	if !strings.Contains(string(md), "model.d_model does not take two or more values") || !strings.Contains(string(md), "task.seq_len does not take") {
		t.Errorf("report.md does not say why plots are missing:\n%s", md)
	}
	// No rows at all: a report that says so, no plots.
	w, err = Write(t.TempDir(), &sweep.Collection{})
	if err != nil || len(w.Files) != 1 {
		t.Errorf("empty: %v %v", err, w)
	}
}

func TestLogTicks(t *testing.T) {
	for _, c := range []struct {
		min, max    float64
		minLabelled int
	}{
		{1, 1000, 10}, // 1 2 5 10 20 50 100 200 500 1000
		{30, 45, 2},   // one decade step: every mark labelled
		{17.6, 29.1, 2},
		{0.013, 0.02, 2},
		{0, 10, 0}, // not a log range: no ticks (gonum's own would panic)
	} {
		labelled := 0
		for _, tk := range (logTicks{}).Ticks(c.min, c.max) {
			if tk.Value < c.min || tk.Value > c.max {
				t.Errorf("[%v, %v]: tick %v outside", c.min, c.max, tk.Value)
			}
			if tk.Label != "" {
				labelled++
			}
		}
		if labelled < c.minLabelled || (c.minLabelled == 0 && labelled != 0) {
			t.Errorf("[%v, %v]: %d labelled ticks, want at least %d", c.min, c.max, labelled, c.minLabelled)
		}
	}
}

// wideGrid is a sweep like a real one: five variants, three widths and
// three lengths, three seeds, throughputs from 15.6k to 312.5k tokens/s,
// accuracies up to 1 and error bars that reach it.
func wideGrid() []sweep.Row {
	var rows []sweep.Row
	for ki, kind := range []string{"standard", "flash", "linear", "gqa", "mla"} {
		for _, d := range []int{32, 64, 128} {
			for _, T := range []int{256, 1024, 4096} {
				for seed := uint64(1); seed <= 3; seed++ {
					r := row(kind, d, T, seed, 0)
					r.Summary.EvalAccuracy = math.Min(1, 0.55+0.1*float64(ki)+float64(d)/800+0.03*float64(seed))
					r.Summary.StepMsMedian = float64(T*T)/2000*float64(d)/32*(1+0.3*float64(ki)) + 5
					r.Summary.TrainTokensPerSec = 62500 * 1024 / float64(T) * (1 + float64(ki))
					r.Summary.PeakRSSBytes = int64(40+T*(1+ki)/8) << 20
					rows = append(rows, r)
				}
			}
		}
	}
	return rows
}

// laidOut draws ch as writeFigure does and returns its data area.
func laidOut(ch *chart) draw.Canvas {
	c := draw.New(vgimg.NewWith(vgimg.UseWH(figWidth, figHeight), vgimg.UseDPI(pngDPI)))
	ch.draw(c)
	pc, _, _ := ch.layout(c)
	return ch.DataCanvas(pc)
}

// Every figure's ranges hold its data and its glyphs (bubbles, markers,
// error bars, labels) with room to spare: nothing touches or crosses the
// frame of the data area, on linear and on log axes.
func TestFiguresKeepOffTheFrame(t *testing.T) {
	tasks := Group(wideGrid())
	figs, _ := planFigures(&sweep.Collection{Rows: wideGrid()}, tasks)
	if len(figs) != 3+3+2 {
		t.Fatalf("%d figures, want 8", len(figs))
	}
	for _, f := range figs {
		ch, err := f.draw()
		if err != nil {
			t.Fatalf("%s: %v", f.file, err)
		}
		da := laidOut(ch)
		x, y := ch.X, ch.Y
		for _, d := range ch.plotters {
			if dr, ok := d.(plot.DataRanger); ok {
				x0, x1, y0, y1 := dr.DataRange()
				if !(x.Min < x0 && x1 < x.Max && y.Min < y0 && y1 < y.Max) {
					t.Errorf("%s: %T spans x %v to %v, y %v to %v: not strictly inside the axes' [%v, %v] x [%v, %v]",
						f.file, d, x0, x1, y0, y1, x.Min, x.Max, y.Min, y.Max)
				}
			}
			gb, ok := d.(plot.GlyphBoxer)
			if !ok {
				continue
			}
			for _, b := range gb.GlyphBoxes(ch.Plot) {
				r := b.Rectangle.Add(vg.Point{X: da.X(b.X), Y: da.Y(b.Y)})
				if !(r.Min.X > da.Min.X && r.Max.X < da.Max.X && r.Min.Y > da.Min.Y && r.Max.Y < da.Max.Y) {
					t.Errorf("%s: a glyph of %T at %v touches or crosses the frame %v", f.file, d, r, da.Rectangle)
				}
			}
		}
	}
}

// The same, counted in data units from the points themselves: each
// bubble of accuracy against throughput is its radius (in points, as the
// axis scales them) inside the x range, and each error bar's ends inside
// the y range.
func TestBubblesAndErrorBarsInsideRanges(t *testing.T) {
	for _, task := range Group(wideGrid()) {
		ch, err := accThroughput(task, task.Points)
		if err != nil {
			t.Fatal(err)
		}
		da := laidOut(ch)
		perX := (ch.X.Max - ch.X.Min) / float64(da.Max.X-da.Min.X) // data units per point
		perY := (ch.Y.Max - ch.Y.Min) / float64(da.Max.Y-da.Min.Y)
		maxRSS := 0.0
		for _, p := range task.Points {
			maxRSS = math.Max(maxRSS, p.RSS)
		}
		for _, p := range task.Points {
			r := float64(bubbleRadius(p, maxRSS))
			bar := accBar(p.AccMean, p.AccStd)
			lo, hi := math.Min(p.AccMean-bar.Low, p.AccMean-r*perY), math.Max(p.AccMean+bar.High, p.AccMean+r*perY)
			if x0, x1 := p.TokensPerSec-r*perX, p.TokensPerSec+r*perX; !(ch.X.Min < x0 && x1 < ch.X.Max) {
				t.Errorf("%s, %s: bubble spans %v to %v tokens/s, x axis %v to %v", task.Title(), p.Label, x0, x1, ch.X.Min, ch.X.Max)
			}
			if !(ch.Y.Min < lo && hi < ch.Y.Max) {
				t.Errorf("%s, %s: bubble and error bar span accuracy %v to %v, y axis %v to %v", task.Title(), p.Label, lo, hi, ch.Y.Min, ch.Y.Max)
			}
		}
	}
}

func TestTickLabel(t *testing.T) {
	for _, c := range []struct {
		v    float64
		want string
	}{
		{62500, "62.5k"}, {1000000, "1M"}, {1.2e6, "1.2M"}, {0.25, "0.25"}, {1000, "1k"}, {10000, "10k"},
		{50000, "50k"}, {187500, "187.5k"}, {3e9, "3G"}, {-2500, "-2.5k"}, {0, "0"}, {12.5, "12.5"},
		{999.99999, "1k"}, {0.7000000000000001, "0.7"}, {500, "500"},
	} {
		if got := tickLabel(c.v); got != c.want {
			t.Errorf("tickLabel(%v) = %q, want %q", c.v, got, c.want)
		}
	}
	for v, want := range map[float64]string{1024: "1024", 16384: "16384", 128: "128", 262144: "262.1k"} {
		if got := exactLabel(v); got != want {
			t.Errorf("exactLabel(%v) = %q, want %q", v, got, want)
		}
	}
}

func labelsOf(ts []plot.Tick) []string {
	var ls []string
	for _, tk := range ts {
		if tk.Label != "" {
			ls = append(ls, tk.Label)
		}
	}
	return ls
}

// Linear axes read 100k, not 100000.00; fractions share their decimals
// and stop at 1; log axes read 1k, 10k.
func TestReadableTicks(t *testing.T) {
	for _, c := range []struct {
		name   string
		ticker plot.Ticker
		lo, hi float64
		want   []string
	}{
		{"throughput", readableTicks{}, 40000, 330000, []string{"100k", "200k", "300k"}},
		{"accuracy", fractionTicks{}, 0.58, 1.07, []string{"0.6", "0.8", "1.0"}},
		{"small", readableTicks{}, 0.005, 0.021, []string{"0.005", "0.010", "0.015", "0.020"}},
		{"log", logTicks{}, 300, 30000, []string{"500", "1k", "2k", "5k", "10k", "20k"}},
	} {
		if got := labelsOf(c.ticker.Ticks(c.lo, c.hi)); !slices.Equal(got, c.want) {
			t.Errorf("%s [%v, %v]: labels %q, want %q", c.name, c.lo, c.hi, got, c.want)
		}
	}
}

// A log axis over less than a decade still gets three or more labels.
func TestLogTicksShortRange(t *testing.T) {
	for _, c := range [][2]float64{{13, 37}, {27.8, 36.4}, {0.013, 0.02}, {300, 2000}} {
		got := labelsOf((logTicks{}).Ticks(c[0], c[1]))
		if len(got) < 3 {
			t.Errorf("[%v, %v]: labels %q, want three or more", c[0], c[1], got)
		}
	}
}

// The relative tables divide by standard's figures at the same T and
// d_model, and --accuracy joins another sweep's accuracies by variant.
func TestRelativeSpeed(t *testing.T) {
	var rows []sweep.Row
	for _, r := range grid() {
		if r.Attention == "flash" {
			s := *r.Summary
			s.StepMsMedian /= 4 // four times standard's steps per second
			s.PeakRSSBytes /= 2
			r.Summary = &s
		}
		rows = append(rows, r)
	}
	rels := relativeTables(Group(rows))
	if len(rels) != 1 || !slices.Equal(rels[0].seqLens, []int{64, 128}) || len(rels[0].rows) != 4 {
		t.Fatalf("relative tables %+v", rels)
	}
	for _, row := range rels[0].rows {
		want := 1.0
		if strings.Contains(row.label, "flash") {
			want = 4
		}
		if row.speed[64] != want || row.speed[128] != want {
			t.Errorf("%s: speed %v", row.label, row.speed)
		}
		if wantRSS := map[bool]float64{true: 0.5, false: 1}[want == 4]; row.rss[64] != wantRSS {
			t.Errorf("%s: rss ratio %v, want %v", row.label, row.rss[64], wantRSS)
		}
	}
	// Without standard at two lengths there is no table.
	var one []sweep.Row
	for _, r := range rows {
		if r.SeqLen == 64 {
			one = append(one, r)
		}
	}
	if rels := relativeTables(Group(one)); len(rels) != 0 {
		t.Errorf("a table from one sequence length: %+v", rels)
	}

	// The figure: speeds of d_model 16 (grid: kind and T), accuracies of
	// another sweep (grid: kind), joined by attention kind.
	var speed []sweep.Row
	for _, r := range rows {
		if r.DModel == 16 {
			r.Params = []sweep.Param{r.Params[0], r.Params[2]}
			speed = append(speed, r)
		}
	}
	dir := t.TempDir()
	var acc []sweep.Row
	for _, r := range rows {
		if r.SeqLen == 64 && r.DModel == 16 && r.Seed == 1 {
			r.TaskKind, r.Params = "listops", r.Params[:1]
			acc = append(acc, r)
		}
	}
	w, err := WriteWith(dir, &sweep.Collection{Rows: speed}, Options{Accuracy: &sweep.Collection{Rows: acc}, AccuracyFrom: "runs/acc"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(w.Files, "plots/acc-vs-relative-speed_assoc_recall_T128.png") {
		t.Errorf("no relative-speed figure: %v (skipped %v)", w.Files, w.Skipped)
	}
	md, _ := os.ReadFile(filepath.Join(dir, ReportFile))
	for _, s := range []string{"## Speed and memory relative to standard, assoc_recall", "| flash | 4.00× | 4.00× |",
		"| standard | 1.00× | 1.00× |", "(0.50×)", "Accuracy of listops, T = 64 from runs/acc"} {
		if !strings.Contains(string(md), s) {
			t.Errorf("report.md lacks %q:\n%s", s, md)
		}
	}
}
