// Package viz draws matrices, such as attention maps, as PNG heatmaps: one
// coloured square per cell, padding in grey, drawn pixel for pixel with the
// standard library's image packages, and (Figure) the words that make a
// picture readable on its own: a title with the map's range and colour
// scale, row and column axes with tick labels, and a colour bar labelled
// with the values its colours stand for.
//
// It exists apart from package report, whose charts (gonum/plot) compare
// sweep results: a heatmap needs exact pixels, so that a causal triangle,
// a sliding window or a global token shows as sharp edges even for long
// sequences, and it draws in milliseconds. Its text uses the Liberation
// Sans fonts that gonum/plot already depends on, through
// golang.org/x/image's font packages. Colours follow viridis (perceptually
// uniform, readable in greyscale and by most colour-blind readers);
// matrices with negative entries (gpa's combined map) get a diverging
// blue-white-red ramp centred on 0.
package viz

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"

	"github.com/attnlab/attnlab/internal/atomicfile"
)

// Scale maps a cell's value, relative to the largest in its matrix, to a
// colour.
type Scale string

// The scales: Linear is v/max; Sqrt is sqrt(v/max), which lifts small
// weights while keeping 0 at the bottom of the ramp; Log spans LogDecades
// decades below max (smaller values, and 0, get the bottom colour).
const (
	Linear Scale = "linear"
	Sqrt   Scale = "sqrt"
	Log    Scale = "log"
)

// LogDecades is the range of the Log scale.
const LogDecades = 4

// ParseScale checks a scale's name.
func ParseScale(s string) (Scale, error) {
	switch Scale(s) {
	case Linear, Sqrt, Log:
		return Scale(s), nil
	}
	return "", fmt.Errorf("unknown scale %q (want linear, sqrt or log)", s)
}

// Heatmap is a Rows x Cols matrix to draw, row-major; row 0 is drawn at the
// top and column 0 at the left.
type Heatmap struct {
	Rows, Cols int
	Values     []float64
	// RowMask [Rows] and ColMask [Cols] mark padding with 0: its cells are
	// drawn grey and left out of the colour range. nil: no padding.
	RowMask, ColMask []float64
}

// Stats are the range of a matrix's visible (unpadded) cells.
type Stats struct {
	Min, Max float64
	Signed   bool // some value is negative: drawn with the diverging ramp
}

// Options say how large to draw.
type Options struct {
	Scale Scale
	// Cells are drawn as squares of an integer number of pixels, at least
	// MinCell (default 4) and enough for the longer side to reach Side
	// (default 512), as long as it stays within MaxSide (default 2048); a
	// matrix longer than MaxSide cells has several cells per pixel, each
	// pixel showing the largest magnitude among its cells.
	MinCell, Side, MaxSide int
	// Long, if larger than the matrix's longer side, sizes the cells as if
	// that side had Long cells, so that matrices drawn side by side (a
	// Grid) get the same cell size.
	Long int
	// TextSize is the height in pixels of Figure's labels (default 13;
	// the title is 3 larger).
	TextSize int
}

func (o Options) withDefaults() Options {
	if o.Scale == "" {
		o.Scale = Linear
	}
	if o.MinCell <= 0 {
		o.MinCell = 4
	}
	if o.Side <= 0 {
		o.Side = 512
	}
	if o.MaxSide <= 0 {
		o.MaxSide = 2048
	}
	if o.TextSize <= 0 {
		o.TextSize = 13
	}
	return o
}

// Padding is the colour of padded rows and columns.
var Padding = color.RGBA{0x80, 0x80, 0x80, 0xff}

// Background is the colour between the tiles of a Grid.
var Background = color.RGBA{0xff, 0xff, 0xff, 0xff}

// Draw renders h and returns the image and the range of its visible cells.
func Draw(h Heatmap, o Options) (*image.RGBA, Stats, error) {
	o = o.withDefaults()
	if _, err := ParseScale(string(o.Scale)); err != nil {
		return nil, Stats{}, err
	}
	switch {
	case h.Rows < 1 || h.Cols < 1:
		return nil, Stats{}, fmt.Errorf("heatmap of %d x %d cells", h.Rows, h.Cols)
	case len(h.Values) != h.Rows*h.Cols:
		return nil, Stats{}, fmt.Errorf("heatmap of %d x %d cells with %d values", h.Rows, h.Cols, len(h.Values))
	case h.RowMask != nil && len(h.RowMask) != h.Rows, h.ColMask != nil && len(h.ColMask) != h.Cols:
		return nil, Stats{}, errors.New("heatmap mask of the wrong length")
	}
	visible := func(i, j int) bool {
		return (h.RowMask == nil || h.RowMask[i] != 0) && (h.ColMask == nil || h.ColMask[j] != 0)
	}
	st := Stats{Min: math.Inf(1), Max: math.Inf(-1)}
	var maxAbs float64
	for i := 0; i < h.Rows; i++ {
		for j := 0; j < h.Cols; j++ {
			if !visible(i, j) {
				continue
			}
			v := h.Values[i*h.Cols+j]
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, Stats{}, fmt.Errorf("heatmap cell (%d, %d) is %v: the weights are not finite (a diverged checkpoint?)", i, j, v)
			}
			st.Min, st.Max = math.Min(st.Min, v), math.Max(st.Max, v)
			maxAbs = math.Max(maxAbs, math.Abs(v))
		}
	}
	if math.IsInf(st.Min, 1) { // everything is padding
		st.Min, st.Max = 0, 0
	}
	st.Signed = st.Min < 0

	cell, per := cellSize(h, o)
	rows, cols := (h.Rows+per-1)/per, (h.Cols+per-1)/per // blocks of per x per cells, each cell x cell pixels
	img := image.NewRGBA(image.Rect(0, 0, cols*cell, rows*cell))
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			// The cell of largest magnitude among those the pixel covers.
			v, seen := 0.0, false
			for i := r * per; i < min((r+1)*per, h.Rows); i++ {
				for j := c * per; j < min((c+1)*per, h.Cols); j++ {
					if x := h.Values[i*h.Cols+j]; visible(i, j) && (!seen || math.Abs(x) > math.Abs(v)) {
						v, seen = x, true
					}
				}
			}
			col := Padding
			if seen {
				col = colour(v, maxAbs, st.Signed, o.Scale)
			}
			for y := r * cell; y < (r+1)*cell; y++ {
				for x := c * cell; x < (c+1)*cell; x++ {
					img.SetRGBA(x, y, col)
				}
			}
		}
	}
	return img, st, nil
}

// cellSize is how Draw sizes h's cells: each block of per x per cells
// (per >= 1) is drawn as a square of cell x cell pixels.
func cellSize(h Heatmap, o Options) (cell, per int) {
	long := max(h.Rows, h.Cols, o.Long)
	cell, per = max(o.MinCell, o.Side/long), 1
	if long*cell > o.MaxSide {
		cell = max(1, o.MaxSide/long)
	}
	if long > o.MaxSide {
		cell, per = 1, (long+o.MaxSide-1)/o.MaxSide
	}
	return cell, per
}

// colour maps v, with maxAbs the largest magnitude of the matrix, to its
// colour.
func colour(v, maxAbs float64, signed bool, s Scale) color.RGBA {
	t := 0.0
	if maxAbs > 0 {
		t = scaled(math.Abs(v)/maxAbs, s)
	}
	if !signed {
		return ramp(viridis, t)
	}
	if v < 0 {
		return ramp(blueWhite, 1-t)
	}
	return ramp(whiteRed, t)
}

// scaled applies the scale to x in [0, 1].
func scaled(x float64, s Scale) float64 {
	switch s {
	case Sqrt:
		return math.Sqrt(x)
	case Log:
		if x <= 0 {
			return 0
		}
		return math.Max(0, 1+math.Log10(x)/LogDecades)
	}
	return x
}

// ramp interpolates linearly between equally spaced stops, t in [0, 1].
func ramp(stops []color.RGBA, t float64) color.RGBA {
	if math.IsNaN(t) {
		t = 0
	}
	t = math.Min(1, math.Max(0, t))
	f := t * float64(len(stops)-1)
	i := min(int(f), len(stops)-2)
	u := f - float64(i)
	a, b := stops[i], stops[i+1]
	mix := func(x, y uint8) uint8 { return uint8(math.Round(float64(x) + u*(float64(y)-float64(x)))) }
	return color.RGBA{mix(a.R, b.R), mix(a.G, b.G), mix(a.B, b.B), 0xff}
}

// viridis at 0, 0.1, ..., 1 (the matplotlib colour map's published values).
var viridis = []color.RGBA{
	{0x44, 0x01, 0x54, 0xff}, {0x48, 0x24, 0x75, 0xff}, {0x41, 0x44, 0x87, 0xff}, {0x35, 0x5f, 0x8d, 0xff},
	{0x2a, 0x78, 0x8e, 0xff}, {0x21, 0x91, 0x8c, 0xff}, {0x22, 0xa8, 0x84, 0xff}, {0x44, 0xbf, 0x70, 0xff},
	{0x7a, 0xd1, 0x51, 0xff}, {0xbd, 0xdf, 0x26, 0xff}, {0xfd, 0xe7, 0x25, 0xff},
}

// The two halves of the diverging ramp: strong blue (most negative) to
// near-white (0), and near-white (0) to strong red (most positive).
var (
	blueWhite = []color.RGBA{{0x3b, 0x4c, 0xc0, 0xff}, {0x8d, 0xb0, 0xfe, 0xff}, {0xf2, 0xf0, 0xef, 0xff}}
	whiteRed  = []color.RGBA{{0xf2, 0xf0, 0xef, 0xff}, {0xf4, 0x9a, 0x7b, 0xff}, {0xb4, 0x04, 0x26, 0xff}}
)

// Grid lays tiles out in rows, gap pixels apart and around, on Background;
// a row may have fewer tiles than another, and tiles of one column are
// left-aligned in a column as wide as its widest tile.
func Grid(tiles [][]image.Image, gap int) *image.RGBA {
	var widths []int
	heights := make([]int, len(tiles))
	for r, row := range tiles {
		for c, t := range row {
			if c == len(widths) {
				widths = append(widths, 0)
			}
			widths[c] = max(widths[c], t.Bounds().Dx())
			heights[r] = max(heights[r], t.Bounds().Dy())
		}
	}
	w, h := gap, gap
	for _, x := range widths {
		w += x + gap
	}
	for _, y := range heights {
		h += y + gap
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.NewUniform(Background), image.Point{}, draw.Src)
	y := gap
	for r, row := range tiles {
		x := gap
		for c, t := range row {
			b := t.Bounds()
			draw.Draw(img, image.Rect(x, y, x+b.Dx(), y+b.Dy()), t, b.Min, draw.Src)
			x += widths[c] + gap
		}
		y += heights[r] + gap
	}
	return img
}

// WritePNG writes img to path as a PNG, atomically (a temporary file
// renamed over path).
func WritePNG(path string, img image.Image) error {
	return atomicfile.WriteFile(path, 0o644, func(w io.Writer) error { return png.Encode(w, img) })
}
