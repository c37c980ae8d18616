package viz

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"math"
	"strconv"
)

// Labels are the words Figure draws around a heatmap.
type Labels struct {
	// Title is the first line above the map, e.g. "layer 0, head 1:
	// attention map (standard attention)". Figure adds a second line with
	// the map's range and colour scale.
	Title string
	// Rows and Cols name the axes: rows down the left ("query position"),
	// columns along the bottom ("key position").
	Rows, Cols string
}

// Tick is one labelled mark on an axis of a Figure: the cell index it
// marks (unused on the colour bar), its position in pixels along the axis
// (x for columns, y for rows and the colour bar) and its label.
type Tick struct {
	Index int
	Pos   int
	Label string
}

// Layout is where Figure put each part of its image, in pixels.
type Layout struct {
	Size     image.Point     // the whole image
	Title    image.Rectangle // the title and the line under it
	Map      image.Rectangle // the cells, pixel for pixel as Draw draws them
	ColorBar image.Rectangle // the colour ramp: top the largest value, bottom the smallest
	// RowTicks are left of Map (Pos is y), ColTicks under it (Pos is x),
	// BarTicks right of the colour bar (Pos is y), each in increasing Pos.
	RowTicks, ColTicks, BarTicks []Tick
	RowAxis, ColAxis             image.Rectangle // the axis titles
	pxPerCell                    float64
}

// Cell is the pixel at the centre of cell (i, j) of the map.
func (l Layout) Cell(i, j int) image.Point {
	return image.Point{
		X: l.Map.Min.X + int((float64(j)+0.5)*l.pxPerCell),
		Y: l.Map.Min.Y + int((float64(i)+0.5)*l.pxPerCell),
	}
}

// Sizes of the parts of a Figure, in pixels.
const (
	margin    = 10
	tickLen   = 4
	barWidth  = 16
	barGap    = 16 // between the map and the colour bar
	minBarLen = 120
)

// Figure draws h as Draw does and puts around it what a reader needs
// without an index: the title and, under it, the range of the values and
// the colour scale; the row and column axes with their titles and tick
// labels at round cell indices; and a colour bar labelled with the values
// its colours stand for (for a signed map, the diverging ramp from -max|w|
// through 0 to +max|w|).
func Figure(h Heatmap, o Options, lab Labels) (*image.RGBA, Layout, Stats, error) {
	o = o.withDefaults()
	cells, st, err := Draw(h, o)
	if err != nil {
		return nil, Layout{}, Stats{}, err
	}
	if err := loadFonts(); err != nil {
		return nil, Layout{}, Stats{}, err
	}
	text, err := newFace(regular, float64(o.TextSize))
	if err != nil {
		return nil, Layout{}, Stats{}, err
	}
	titleFace, err := newFace(bold, float64(o.TextSize+3))
	if err != nil {
		return nil, Layout{}, Stats{}, err
	}
	cell, per := cellSize(h, o)
	l := Layout{pxPerCell: float64(cell) / float64(per)}
	mapW, mapH := cells.Bounds().Dx(), cells.Bounds().Dy()
	subtitle := describe(h, st, o.Scale)

	rowIdx := axisTicks(h.Rows, l.pxPerCell, float64(text.height)*1.6)
	colIdx := axisTicks(h.Cols, l.pxPerCell, float64(text.width(strconv.Itoa(h.Cols-1))+14))
	rowLabelW := 0
	for _, i := range rowIdx {
		rowLabelW = max(rowLabelW, text.width(strconv.Itoa(i)))
	}
	bar := barTicks(st, o.Scale)
	barLabelW := 0
	for _, b := range bar {
		barLabelW = max(barLabelW, text.width(b.label))
	}

	// Top to bottom: title, subtitle, map, column ticks, column axis title.
	l.Title = image.Rect(margin, margin, margin+max(titleFace.width(lab.Title), text.width(subtitle)),
		margin+titleFace.height+4+text.height)
	mapX := margin + text.height + 6 + rowLabelW + 3 + tickLen + 1
	mapY := l.Title.Max.Y + 12
	l.Map = image.Rect(mapX, mapY, mapX+mapW, mapY+mapH)
	barLen := max(mapH, minBarLen)
	barX := l.Map.Max.X + 1 + barGap
	l.ColorBar = image.Rect(barX, mapY, barX+barWidth, mapY+barLen)
	colLabelY := l.Map.Max.Y + 1 + tickLen + 2
	axisY := colLabelY + text.height + 4
	cw := text.width(lab.Cols)
	cx := max(margin, (l.Map.Min.X+l.Map.Max.X-cw)/2)
	l.ColAxis = image.Rect(cx, axisY, cx+cw, axisY+text.height)
	rw := text.width(lab.Rows)
	ry := max(mapY, (l.Map.Min.Y+l.Map.Max.Y-rw)/2)
	l.RowAxis = image.Rect(margin, ry, margin+text.height, ry+rw)
	right := l.ColorBar.Max.X + tickLen + 3 + barLabelW + margin
	l.Size = image.Point{
		X: max(right, l.Title.Max.X+margin, l.ColAxis.Max.X+margin),
		Y: max(l.ColAxis.Max.Y, l.ColorBar.Max.Y+text.height/2, l.RowAxis.Max.Y) + margin,
	}

	img := image.NewRGBA(image.Rectangle{Max: l.Size})
	draw.Draw(img, img.Bounds(), image.NewUniform(Background), image.Point{}, draw.Src)
	drawText(img, titleFace, l.Title.Min.X, l.Title.Min.Y, lab.Title, TextColor)
	drawText(img, text, l.Title.Min.X, l.Title.Min.Y+titleFace.height+4, subtitle, TextColor)
	draw.Draw(img, l.Map, cells, image.Point{}, draw.Src)
	frame(img, l.Map)

	for _, i := range rowIdx {
		y := l.Cell(i, 0).Y
		hline(img, l.Map.Min.X-1-tickLen, l.Map.Min.X-1, y)
		s := strconv.Itoa(i)
		drawText(img, text, l.Map.Min.X-1-tickLen-3-text.width(s), y-text.height/2, s, TextColor)
		l.RowTicks = append(l.RowTicks, Tick{Index: i, Pos: y, Label: s})
	}
	for _, j := range colIdx {
		x := l.Cell(0, j).X
		vline(img, x, l.Map.Max.Y, l.Map.Max.Y+tickLen)
		s := strconv.Itoa(j)
		drawText(img, text, x-text.width(s)/2, colLabelY, s, TextColor)
		l.ColTicks = append(l.ColTicks, Tick{Index: j, Pos: x, Label: s})
	}
	drawText(img, text, l.ColAxis.Min.X, l.ColAxis.Min.Y, lab.Cols, TextColor)
	if lab.Rows != "" {
		drawTextUp(img, text, l.RowAxis.Min.X, l.RowAxis.Min.Y, lab.Rows, TextColor)
	}

	// The bar: its top row is the top of the ramp.
	for y := l.ColorBar.Min.Y; y < l.ColorBar.Max.Y; y++ {
		u := 1 - float64(y-l.ColorBar.Min.Y)/float64(barLen-1)
		c := rampAt(u, st.Signed)
		for x := l.ColorBar.Min.X; x < l.ColorBar.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
	frame(img, l.ColorBar)
	for k := len(bar) - 1; k >= 0; k-- { // top (largest) first: increasing y
		b := bar[k]
		y := l.ColorBar.Min.Y + int(math.Round((1-b.at)*float64(barLen-1)))
		hline(img, l.ColorBar.Max.X, l.ColorBar.Max.X+tickLen, y)
		drawText(img, text, l.ColorBar.Max.X+tickLen+3, y-text.height/2, b.label, TextColor)
		l.BarTicks = append(l.BarTicks, Tick{Pos: y, Label: b.label})
	}
	return img, l, st, nil
}

// describe is the line under a Figure's title: the range of the visible
// values and how colours stand for them.
func describe(h Heatmap, st Stats, s Scale) string {
	line := fmt.Sprintf("min %s, max %s; colour: %s", num(st.Min), num(st.Max), scaleText(s, st.Signed))
	if hasPadding(h.RowMask) || hasPadding(h.ColMask) {
		line += "; grey: padding"
	}
	return line
}

func scaleText(s Scale, signed bool) string {
	w := "w"
	if signed {
		w = "|w|"
	}
	switch s {
	case Sqrt:
		return fmt.Sprintf("sqrt(%s / max)", w)
	case Log:
		return fmt.Sprintf("log10(%s / max), %d decades", w, LogDecades)
	}
	return fmt.Sprintf("%s / max", w)
}

func hasPadding(mask []float64) bool {
	for _, m := range mask {
		if m == 0 {
			return true
		}
	}
	return false
}

// num formats a value for a label: three significant digits, no exponent
// for ordinary weights.
func num(v float64) string {
	if v == 0 {
		return "0"
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

// axisTicks picks the cell indices to label on an axis of n cells drawn
// px pixels apart: 0 and every multiple of the smallest step of 1, 2 or 5
// times a power of ten that leaves at least minGap pixels between labels,
// and the last index when it has room.
func axisTicks(n int, px, minGap float64) []int {
	step := 1
	for mult := 1; float64(step)*px < minGap; {
		switch step / mult {
		case 1:
			step = 2 * mult
		case 2:
			step = 5 * mult
		default:
			mult *= 10
			step = mult
		}
	}
	var idx []int
	for i := 0; i < n; i += step {
		idx = append(idx, i)
	}
	if last := idx[len(idx)-1]; last != n-1 && float64(n-1-last)*px >= minGap {
		idx = append(idx, n-1)
	}
	return idx
}

// barTick is a label of the colour bar at position at along it: 0 the
// bottom, 1 the top.
type barTick struct {
	at    float64
	label string
}

// barTicks labels the colour bar's ends and middle with the values their
// colours stand for: 0 to max for an unsigned map, -max|w| to +max|w| for a
// signed one, the middle marks following the scale (a quarter of max for
// sqrt, a hundredth for log).
func barTicks(st Stats, s Scale) []barTick {
	maxAbs := math.Max(math.Abs(st.Min), math.Abs(st.Max))
	value := func(t float64) float64 { // inverse of scaled
		switch s {
		case Sqrt:
			return maxAbs * t * t
		case Log:
			return maxAbs * math.Pow(10, (t-1)*LogDecades)
		}
		return maxAbs * t
	}
	bottom := "0"
	if s == Log {
		bottom = "≤" + num(value(0))
	}
	if !st.Signed {
		return []barTick{{0, bottom}, {0.5, num(value(0.5))}, {1, num(maxAbs)}}
	}
	zero := "0"
	if s == Log {
		zero = "|w|" + bottom
	}
	return []barTick{
		{0, num(-maxAbs)}, {0.25, num(-value(0.5))}, {0.5, zero}, {0.75, num(value(0.5))}, {1, num(maxAbs)},
	}
}

// rampAt is the colour at position u of the colour bar (0 the bottom, 1
// the top), as colour maps the values to it.
func rampAt(u float64, signed bool) color.RGBA {
	if !signed {
		return ramp(viridis, u)
	}
	if u < 0.5 {
		return ramp(blueWhite, 2*u)
	}
	return ramp(whiteRed, 2*u-1)
}

// frame draws a one-pixel line just outside r.
func frame(img *image.RGBA, r image.Rectangle) {
	hline(img, r.Min.X-1, r.Max.X, r.Min.Y-1)
	hline(img, r.Min.X-1, r.Max.X, r.Max.Y)
	vline(img, r.Min.X-1, r.Min.Y-1, r.Max.Y)
	vline(img, r.Max.X, r.Min.Y-1, r.Max.Y)
}

func hline(img *image.RGBA, x0, x1, y int) {
	for x := x0; x <= x1; x++ {
		img.SetRGBA(x, y, TextColor)
	}
}

func vline(img *image.RGBA, x, y0, y1 int) {
	for y := y0; y <= y1; y++ {
		img.SetRGBA(x, y, TextColor)
	}
}

// Titled puts title, in the bold face of Figure's titles at o.TextSize,
// above img (a Grid of Figures, say).
func Titled(img image.Image, title string, o Options) (*image.RGBA, error) {
	o = o.withDefaults()
	if err := loadFonts(); err != nil {
		return nil, err
	}
	f, err := newFace(bold, float64(o.TextSize+3))
	if err != nil {
		return nil, err
	}
	b := img.Bounds()
	top := margin + f.height + 4
	out := image.NewRGBA(image.Rect(0, 0, max(b.Dx(), f.width(title)+2*margin), top+b.Dy()))
	draw.Draw(out, out.Bounds(), image.NewUniform(Background), image.Point{}, draw.Src)
	drawText(out, f, margin, margin, title, TextColor)
	draw.Draw(out, image.Rect(0, top, b.Dx(), top+b.Dy()), img, b.Min, draw.Src)
	return out, nil
}
