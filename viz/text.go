package viz

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"sync"

	"github.com/go-fonts/liberation/liberationsansbold"
	"github.com/go-fonts/liberation/liberationsansregular"
	"golang.org/x/image/font"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/fixed"
)

// The fonts are Liberation Sans, the family gonum/plot draws the sweep
// report's charts with (the module is already one of its dependencies), so
// that the two kinds of picture read alike.
var (
	fontsOnce     sync.Once
	regular, bold *opentype.Font
	fontsErr      error
)

func loadFonts() error {
	fontsOnce.Do(func() {
		if regular, fontsErr = opentype.Parse(liberationsansregular.TTF); fontsErr != nil {
			return
		}
		bold, fontsErr = opentype.Parse(liberationsansbold.TTF)
	})
	if fontsErr != nil {
		return fmt.Errorf("loading the label font: %w", fontsErr)
	}
	return nil
}

// textFace is a font at a size in pixels, with the measures a layout
// needs.
type textFace struct {
	font.Face
	ascent, height int // pixels above the baseline; line height
}

func newFace(f *opentype.Font, px float64) (textFace, error) {
	face, err := opentype.NewFace(f, &opentype.FaceOptions{Size: px, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		return textFace{}, fmt.Errorf("label font at %g px: %w", px, err)
	}
	m := face.Metrics()
	return textFace{Face: face, ascent: m.Ascent.Ceil(), height: m.Ascent.Ceil() + m.Descent.Ceil()}, nil
}

// width is the advance of s in pixels.
func (f textFace) width(s string) int { return font.MeasureString(f, s).Ceil() }

// TextColor is the colour of titles, labels and tick marks.
var TextColor = color.RGBA{0x20, 0x20, 0x20, 0xff}

// drawText writes s with its top-left corner at (x, y).
func drawText(dst draw.Image, f textFace, x, y int, s string, c color.Color) {
	d := font.Drawer{Dst: dst, Src: image.NewUniform(c), Face: f, Dot: fixed.P(x, y+f.ascent)}
	d.DrawString(s)
}

// drawTextUp writes s rotated a quarter turn anticlockwise (reading bottom
// to top, as a vertical axis label), its bounding box's top-left corner at
// (x, y).
func drawTextUp(dst *image.RGBA, f textFace, x, y int, s string, c color.Color) {
	w, h := f.width(s), f.height
	flat := image.NewRGBA(image.Rect(0, 0, w, h))
	drawText(flat, f, 0, 0, s, c)
	up := image.NewRGBA(image.Rect(0, 0, h, w))
	for sy := 0; sy < h; sy++ {
		for sx := 0; sx < w; sx++ {
			up.SetRGBA(sy, w-1-sx, flat.RGBAAt(sx, sy))
		}
	}
	draw.Draw(dst, image.Rect(x, y, x+h, y+w), up, image.Point{}, draw.Over)
}
