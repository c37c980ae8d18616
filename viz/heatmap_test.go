package viz

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// A causal 3x3 map: the cells above the diagonal (0) get the bottom of the
// ramp, the largest the top; a padded row is grey; small sizes are scaled
// up to whole squares.
func TestDrawHeatmap(t *testing.T) {
	h := Heatmap{Rows: 3, Cols: 3, Values: []float64{
		1, 0, 0,
		0.5, 0.5, 0,
		0.2, 0.3, 0.5,
	}, RowMask: []float64{1, 1, 0}}
	img, st, err := Draw(h, Options{Scale: Linear, Side: 30, MinCell: 4})
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds().Dx() != 30 || img.Bounds().Dy() != 30 {
		t.Fatalf("image of %v, want 30x30 (10 px per cell)", img.Bounds())
	}
	if st.Min != 0 || st.Max != 1 || st.Signed {
		t.Errorf("stats %+v, want 0..1 unsigned (the padded row left out)", st)
	}
	at := func(i, j int) color.RGBA { return img.RGBAAt(j*10+5, i*10+5) }
	if at(0, 0) != viridis[len(viridis)-1] || at(0, 1) != viridis[0] || at(2, 0) != Padding {
		t.Errorf("colours %v %v %v: want top of the ramp, bottom, grey", at(0, 0), at(0, 1), at(2, 0))
	}
	if at(1, 0) != at(1, 1) || at(1, 0) == at(0, 0) {
		t.Errorf("equal weights drawn differently, or 0.5 like 1")
	}
	lin, sq := at(1, 0), func() color.RGBA {
		img, _, _ := Draw(h, Options{Scale: Sqrt, Side: 30})
		return img.RGBAAt(5, 15)
	}()
	if lin == sq {
		t.Error("sqrt draws 0.5 like linear")
	}
}

// Long matrices are reduced to MaxSide pixels, each showing the largest
// of its cells; negative values switch to the diverging ramp.
func TestDrawCapsAndSigns(t *testing.T) {
	n := 100
	h := Heatmap{Rows: n, Cols: n, Values: make([]float64, n*n)}
	h.Values[99*n+99] = 1 // one hot cell in the corner survives the reduction
	img, _, err := Draw(h, Options{MaxSide: 40})
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 34 || b.Dy() != 34 {
		t.Fatalf("image of %v, want 34x34 (3 cells per pixel)", b)
	}
	if img.RGBAAt(33, 33) != viridis[len(viridis)-1] {
		t.Error("the hot cell vanished in the reduction")
	}
	s := Heatmap{Rows: 1, Cols: 3, Values: []float64{-0.5, 0, 1}}
	img, st, err := Draw(s, Options{Side: 3, MinCell: 1})
	if err != nil || !st.Signed {
		t.Fatalf("%v %+v", err, st)
	}
	if img.RGBAAt(1, 0) != whiteRed[0] || img.RGBAAt(2, 0) != whiteRed[len(whiteRed)-1] || img.RGBAAt(0, 0).B <= img.RGBAAt(0, 0).R {
		t.Errorf("diverging colours %v %v %v", img.RGBAAt(0, 0), img.RGBAAt(1, 0), img.RGBAAt(2, 0))
	}
	if _, _, err := Draw(Heatmap{Rows: 2, Cols: 2, Values: []float64{1}}, Options{}); err == nil {
		t.Error("wrong number of values accepted")
	}
	if _, err := ParseScale("cubic"); err == nil {
		t.Error("unknown scale accepted")
	}
}

func TestGridAndWritePNG(t *testing.T) {
	a := image.NewRGBA(image.Rect(0, 0, 4, 2))
	b := image.NewRGBA(image.Rect(0, 0, 2, 6))
	g := Grid([][]image.Image{{a, b}, {b}}, 1)
	if w, h := g.Bounds().Dx(), g.Bounds().Dy(); w != 1+4+1+2+1 || h != 1+6+1+6+1 {
		t.Fatalf("grid of %dx%d", w, h)
	}
	if g.RGBAAt(0, 0) != Background || g.RGBAAt(1, 1) != (color.RGBA{}) {
		t.Errorf("gap %v, tile %v", g.RGBAAt(0, 0), g.RGBAAt(1, 1))
	}
	p := filepath.Join(t.TempDir(), "g.png")
	if err := WritePNG(p, g); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	back, err := png.Decode(bytes.NewReader(raw))
	if err != nil || back.Bounds() != g.Bounds() {
		t.Fatalf("decoding: %v, %v", err, back.Bounds())
	}
}

// Non-finite weights (a diverged checkpoint) are an error, not a panic.
func TestDrawRejectsNonFinite(t *testing.T) {
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		h := Heatmap{Rows: 2, Cols: 2, Values: []float64{1, 0, v, 0}}
		if _, _, err := Draw(h, Options{Scale: Sqrt}); err == nil {
			t.Errorf("weight %v drawn without an error", v)
		}
	}
}

// inked reports whether r holds a pixel that is not the background: text
// or lines were drawn there.
func inked(img *image.RGBA, r image.Rectangle) bool {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if img.RGBAAt(x, y) != Background {
				return true
			}
		}
	}
	return false
}

// A Figure is the heatmap, pixel for pixel, inside a larger image with a
// title, the axes with their titles and tick labels, and a colour bar:
// the map reads without index.md.
func TestFigureLayout(t *testing.T) {
	n := 20
	h := Heatmap{Rows: n, Cols: n, Values: make([]float64, n*n), ColMask: make([]float64, n)}
	for i := 0; i < n; i++ {
		h.ColMask[i] = 1
		for j := 0; j <= i; j++ {
			h.Values[i*n+j] = 1 / float64(i+1) // causal, rows sum to 1
		}
	}
	h.ColMask[n-1] = 0
	o := Options{Scale: Linear, Side: 200}
	cells, _, err := Draw(h, o)
	if err != nil {
		t.Fatal(err)
	}
	img, l, st, err := Figure(h, o, Labels{Title: "layer 0, head 1: attention map", Rows: "query position", Cols: "key position"})
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	if l.Size != b.Size() || b.Dx() <= cells.Bounds().Dx() || b.Dy() <= cells.Bounds().Dy() {
		t.Fatalf("figure of %v (layout %v), not larger than its %v cells", b, l.Size, cells.Bounds())
	}
	if l.Map.Size() != cells.Bounds().Size() {
		t.Fatalf("map drawn %v, want the cells' %v", l.Map, cells.Bounds())
	}
	for y := 0; y < cells.Bounds().Dy(); y++ {
		for x := 0; x < cells.Bounds().Dx(); x++ {
			if img.RGBAAt(l.Map.Min.X+x, l.Map.Min.Y+y) != cells.RGBAAt(x, y) {
				t.Fatalf("map pixel (%d, %d) is not the cell's colour", x, y)
			}
		}
	}
	if l.Cell(0, 0) != (image.Point{l.Map.Min.X + 5, l.Map.Min.Y + 5}) {
		t.Errorf("cell (0, 0) at %v, want the centre of the map's first 10 x 10 square", l.Cell(0, 0))
	}
	parts := map[string]image.Rectangle{"title": l.Title, "colour bar": l.ColorBar, "row axis title": l.RowAxis, "column axis title": l.ColAxis}
	for name, r := range parts {
		if r.Empty() || !r.In(b) || r.Overlaps(l.Map) {
			t.Errorf("%s at %v: empty, outside the image %v or over the map %v", name, r, b, l.Map)
		} else if !inked(img, r) {
			t.Errorf("%s at %v: nothing drawn", name, r)
		}
	}
	// Tick labels: left of and under the map, increasing, the first at 0.
	for name, ticks := range map[string][]Tick{"row": l.RowTicks, "column": l.ColTicks} {
		if len(ticks) < 3 || ticks[0].Index != 0 || ticks[0].Label != "0" {
			t.Errorf("%s ticks %+v: want 0 and at least two more", name, ticks)
			continue
		}
		for i, tk := range ticks {
			if tk.Label != strconv.Itoa(tk.Index) || (i > 0 && (tk.Index <= ticks[i-1].Index || tk.Pos <= ticks[i-1].Pos)) {
				t.Errorf("%s ticks %+v: not increasing index labels", name, ticks)
			}
		}
	}
	for _, tk := range l.RowTicks {
		if tk.Pos != l.Cell(tk.Index, 0).Y || !inked(img, image.Rect(l.RowAxis.Max.X, tk.Pos-3, l.Map.Min.X-5, tk.Pos+3)) {
			t.Errorf("row tick %+v not at its cell or without a label", tk)
		}
	}
	for _, tk := range l.ColTicks {
		if tk.Pos != l.Cell(0, tk.Index).X || !inked(img, image.Rect(tk.Pos-3, l.Map.Max.Y+6, tk.Pos+4, l.ColAxis.Min.Y)) {
			t.Errorf("column tick %+v not at its cell or without a label", tk)
		}
	}
	// The colour bar runs from the bottom of the ramp (0) to the top (max),
	// labelled with those values.
	bar := l.ColorBar
	if img.RGBAAt(bar.Min.X+3, bar.Min.Y) != viridis[len(viridis)-1] || img.RGBAAt(bar.Min.X+3, bar.Max.Y-1) != viridis[0] {
		t.Errorf("colour bar from %v to %v, want viridis from top to bottom", img.RGBAAt(bar.Min.X+3, bar.Max.Y-1), img.RGBAAt(bar.Min.X+3, bar.Min.Y))
	}
	if n := len(l.BarTicks); n < 2 || l.BarTicks[0].Label != "1" || l.BarTicks[n-1].Label != "0" || l.BarTicks[0].Pos != bar.Min.Y || l.BarTicks[n-1].Pos != bar.Max.Y-1 {
		t.Errorf("colour bar ticks %+v, want 1 at the top and 0 at the bottom", l.BarTicks)
	}
	if st.Max != 1 || st.Signed {
		t.Errorf("stats %+v", st)
	}
	if d := describe(h, st, Linear); !strings.Contains(d, "min 0, max 1") || !strings.Contains(d, "grey: padding") {
		t.Errorf("subtitle %q: want the range and the padding", d)
	}
}

// A signed map (gpa's combination) gets the diverging bar, symmetric
// around 0, labelled with negative values.
func TestFigureSignedColorBar(t *testing.T) {
	h := Heatmap{Rows: 2, Cols: 2, Values: []float64{1, -0.5, 0.25, 0}}
	img, l, st, err := Figure(h, Options{Scale: Linear}, Labels{Title: "combined"})
	if err != nil || !st.Signed {
		t.Fatalf("%v %+v", err, st)
	}
	bar := l.ColorBar
	top, bottom, mid := img.RGBAAt(bar.Min.X+3, bar.Min.Y), img.RGBAAt(bar.Min.X+3, bar.Max.Y-1), img.RGBAAt(bar.Min.X+3, (bar.Min.Y+bar.Max.Y-1)/2)
	if top != whiteRed[len(whiteRed)-1] || bottom != blueWhite[0] || mid.R < 0xe0 || mid.G < 0xe0 || mid.B < 0xe0 {
		t.Errorf("bar top %v, middle %v, bottom %v: want red, white, blue", top, mid, bottom)
	}
	var labels []string
	for _, tk := range l.BarTicks {
		labels = append(labels, tk.Label)
	}
	if want := []string{"1", "0.5", "0", "-0.5", "-1"}; !slices.Equal(labels, want) {
		t.Errorf("bar labels %v, want %v", labels, want)
	}
	if d := describe(h, st, Sqrt); !strings.Contains(d, "min -0.5, max 1") || !strings.Contains(d, "sqrt(|w| / max)") {
		t.Errorf("subtitle %q", d)
	}
	if got := barTicks(Stats{Max: 2}, Log); got[0].label != "≤0.0002" || got[1].label != "0.02" || got[2].label != "2" {
		t.Errorf("log bar ticks %+v", got)
	}
}

func TestAxisTicks(t *testing.T) {
	for _, c := range []struct {
		n          int
		px, minGap float64
		want       []int
	}{
		{16, 32, 24, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}},
		{32, 16, 33, []int{0, 5, 10, 15, 20, 25, 30}},
		{12, 16, 24, []int{0, 2, 4, 6, 8, 10}},
		{1000, 0.5, 40, []int{0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 999}},
		{1, 8, 20, []int{0}},
	} {
		if got := axisTicks(c.n, c.px, c.minGap); !slices.Equal(got, c.want) {
			t.Errorf("axisTicks(%d, %v, %v) = %v, want %v", c.n, c.px, c.minGap, got, c.want)
		}
	}
}

// Titled puts a title above a grid.
func TestTitled(t *testing.T) {
	g := image.NewRGBA(image.Rect(0, 0, 40, 30))
	img, err := Titled(g, "gpa attention, layer 0", Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	if b.Dy() <= 30 || b.Dx() <= 40 || !inked(img, image.Rect(0, 0, b.Dx(), b.Dy()-30)) {
		t.Errorf("titled image %v with no title drawn", b)
	}
	if img.RGBAAt(5, b.Dy()-1) != (color.RGBA{}) {
		t.Error("the grid is not under the title")
	}
}
