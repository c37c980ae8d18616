package main

import (
	"errors"
	"fmt"
	"image"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/data"
	"github.com/attnlab/attnlab/internal/atomicfile"
	"github.com/attnlab/attnlab/layers"
	"github.com/attnlab/attnlab/train"
	"github.com/attnlab/attnlab/viz"
)

// attnmapIndex is the file that lists the images of trainer attnmap.
const attnmapIndex = "index.md"

// gridSide is the side a tile of a layer's grid is drawn at (up to twice
// that for long sequences), half the side of the single images.
const gridSide = 256

func newAttnmapCmd() *cobra.Command {
	var dir, out, stream, scale string
	var layer, head, example int
	cmd := &cobra.Command{
		Use:   "attnmap",
		Short: "Draw a run's attention maps (weights per layer and head) as PNG heatmaps",
		Long: `attnmap loads a run's config and checkpoint, runs one example through the
model with every attention layer's weights recorded, and draws them as PNG
heatmaps: row i, column j is the weight query i puts on key j (for agent and
latent attention, the rows or columns are agents or latents, and each stage
is drawn: "agents<-keys", "queries<-agents", ...). Each image is scaled to
its own largest weight; grey rows and columns are padding. Each carries a
title (variant, layer, head, map; the range and the scale), query (row) and
key (column) axes with their indices, and a colour bar with the values its
colours stand for (blue-white-red, centred on 0, for a map with negative
weights, such as gpa's combined map). It writes one
image per layer, map and head (layerL_MAP_headH.png), a grid of all of a
layer's maps and heads (layerL.png: a row per map, a column per head) when
there is more than one, and index.md, which lists them with their ranges.
The maps are computed only here: training never materializes them.`,
		Example: `  trainer attnmap --run runs/quickstart-20261123-101500
  trainer attnmap --run runs/majority-20261123-111500 --layer 1 --head 0 --example 3 --scale log`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case dir == "":
				return usageError{errors.New("attnmap: --run DIR is required")}
			case example < 0:
				return usageError{fmt.Errorf("attnmap: --example must be at least 0, got %d", example)}
			case layer < -1:
				return usageError{fmt.Errorf("attnmap: --layer must be a layer index (default: all), got %d", layer)}
			case head < -1:
				return usageError{fmt.Errorf("attnmap: --head must be a head index (default: all), got %d", head)}
			}
			var st data.Stream
			switch stream {
			case "eval":
				st = data.Eval
			case "train":
				st = data.Train
			default:
				return usageError{fmt.Errorf("attnmap: --stream must be eval or train, got %q", stream)}
			}
			sc, err := viz.ParseScale(scale)
			if err != nil {
				return usageError{fmt.Errorf("attnmap: --scale: %w", err)}
			}
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				return &train.BadInputError{Err: fmt.Errorf("attnmap: --run %s: no such folder", dir)}
			}
			cfgPath := filepath.Join(dir, train.ConfigFile)
			if isNotExist(cfgPath) {
				return &train.BadInputError{Err: fmt.Errorf("attnmap: --run %s: no %s there, not a run folder", dir, train.ConfigFile)}
			}
			exp, err := config.Load(cfgPath)
			if err != nil {
				return &train.BadInputError{Err: fmt.Errorf("attnmap: --run %s: %w", dir, err)}
			}
			if n := exp.Model.NLayers; layer >= n {
				return usageError{fmt.Errorf("attnmap: --layer %d: out of range; the run's model has layers 0 to %d", layer, n-1)}
			}
			if n := exp.Model.NHeads; head >= n {
				return usageError{fmt.Errorf("attnmap: --head %d: out of range; the run's model has heads 0 to %d", head, n-1)}
			}
			ckpt := filepath.Join(dir, train.CheckpointFile)
			if isNotExist(ckpt) {
				return &train.BadInputError{Err: fmt.Errorf("attnmap: --run %s: no %s there (has the run saved a checkpoint yet?)", dir, train.CheckpointFile)}
			}
			res, err := train.LoadAttentionMaps(exp, ckpt, st, uint64(example))
			if err != nil {
				if train.IsBadInput(err) {
					return &train.BadInputError{Err: fmt.Errorf("attnmap: --run %s: %w", dir, err)}
				}
				return fmt.Errorf("attnmap: %w", err)
			}
			if out == "" {
				out = filepath.Join(dir, "attnmap")
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return &train.BadInputError{Err: fmt.Errorf("attnmap: --out: %w", err)}
			}
			sel := mapSelection{layer: layer, head: head, scale: sc}
			files, err := drawAttentionMaps(out, dir, exp, res, sel)
			if err != nil {
				return fmt.Errorf("attnmap: %w", err)
			}
			noun := "images"
			if files == 1 {
				noun = "image"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "attnmap: %s at step %d, %s example %d: %d %s in %s (listed in %s)\n",
				dir, res.Step, res.Stream, res.Example, files, noun, out, attnmapIndex)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "run", "", "run folder (config.yaml and checkpoint.safetensors)")
	f.IntVar(&layer, "layer", -1, "draw only this layer, from 0; -1: all")
	f.IntVar(&head, "head", -1, "draw only this head, from 0 (a map shared by all heads is drawn for any); -1: all")
	f.IntVar(&example, "example", 0, "index of the example in the stream")
	f.StringVar(&stream, "stream", "eval", "eval (held-out) or train")
	f.StringVar(&scale, "scale", "sqrt", "colour scale of weight/max: linear, sqrt, or log (4 decades)")
	f.StringVar(&out, "out", "", "output folder (default: RUN/attnmap)")
	return cmd
}

// mapSelection is what attnmap draws.
type mapSelection struct {
	layer, head int // -1: all
	scale       viz.Scale
}

// heads are the heads of m that sel draws: all of them, or the one asked
// for; a map with a single head (one shared by every head, as reuse's) is
// drawn whatever head is asked for.
func (sel mapSelection) heads(m layers.MapValues) []int {
	switch {
	case sel.head < 0:
		hs := make([]int, m.Heads)
		for h := range hs {
			hs[h] = h
		}
		return hs
	case m.Heads == 1:
		return []int{0}
	case sel.head < m.Heads:
		return []int{sel.head}
	}
	return nil
}

// mapSlug makes a map's label usable in a file name: "agents<-keys" is
// "agents-from-keys".
func mapSlug(label string) string {
	label = strings.ReplaceAll(label, "<-", "-from-")
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, label)
}

// drawAttentionMaps writes the images and index.md into out and returns
// the number of images.
func drawAttentionMaps(out, run string, exp config.Experiment, res *train.AttentionMaps, sel mapSelection) (int, error) {
	var idx strings.Builder
	fmt.Fprintf(&idx, "# Attention maps of %s\n\n", run)
	fmt.Fprintf(&idx, "Checkpoint of step %d; %s attention, %s, n_layers %d, n_heads %d, positional %s; %s example %d.\n\n",
		res.Step, exp.Model.Attention.Kind, exp.Model.Kind, exp.Model.NLayers, exp.Model.NHeads, exp.Model.Positional, res.Stream, res.Example)
	fmt.Fprintf(&idx, "Row i, column j of an image is the weight that query (row) i puts on key (column) j. Each image is scaled to its own largest |weight| with the %s scale", sel.scale)
	switch sel.scale {
	case viz.Sqrt:
		idx.WriteString(" (colour = sqrt(w / max))")
	case viz.Log:
		fmt.Fprintf(&idx, " (colour = log10(w / max), from -%d up)", viz.LogDecades)
	default:
		idx.WriteString(" (colour = w / max)")
	}
	idx.WriteString(": viridis from dark purple (0) to yellow (max); maps with negative weights use blue (negative), white (0), red (positive). Grey rows and columns are padding.\n\n")
	fmt.Fprintf(&idx, "Tokens: %s\n", tokenLine(res))
	if res.Tokenizer != nil {
		fmt.Fprintf(&idx, "\nText: %q\n", res.Tokenizer.Decode(res.Inputs))
	}
	idx.WriteString("\n| file | layer | map | head | rows x cols | min | max |\n|---|---|---|---|---|---|---|\n")

	var grids []string
	images := 0
	notes := map[string]string{}
	var noteOrder []string
	for l := 0; l < exp.Model.NLayers; l++ {
		if sel.layer >= 0 && l != sel.layer {
			continue
		}
		var rows [][]image.Image
		tiles, long := 0, longestSide(res.Maps, l)
		for _, m := range res.Maps {
			if m.Layer != l {
				continue
			}
			var row []image.Image
			for _, h := range sel.heads(m) {
				headDesc := headText(exp, m, h)
				img, _, st, err := viz.Figure(mapFigure(exp, m, h, sel.scale, long, false))
				if err != nil {
					return images, fmt.Errorf("layer %d, %s map, head %d: %w", l, m.Label, h, err)
				}
				// Grid tiles are smaller, so that a layer of many heads of
				// long sequences stays a reasonable image.
				small, _, _, err := viz.Figure(mapFigure(exp, m, h, sel.scale, long, true))
				if err != nil {
					return images, fmt.Errorf("layer %d, %s map, head %d: %w", l, m.Label, h, err)
				}
				name := fmt.Sprintf("layer%d_%s_head%d.png", l, mapSlug(m.Label), h)
				if err := viz.WritePNG(filepath.Join(out, name), img); err != nil {
					return images, err
				}
				images++
				row = append(row, small)
				fmt.Fprintf(&idx, "| [%s](%s) | %d | %s | %s | %d %s x %d %s | %.4g | %.4g |\n",
					name, name, l, m.Label, headDesc, m.QLen, plural(m.Rows), m.KLen, plural(m.Cols), st.Min, st.Max)
			}
			if len(row) > 0 {
				rows = append(rows, row)
				tiles += len(row)
				if key := fmt.Sprintf("layer %d, %s", l, m.Label); m.Note != "" {
					notes[key] = m.Note
					noteOrder = append(noteOrder, key)
				}
			}
		}
		if tiles > 1 {
			var labels []string
			for _, m := range res.Maps {
				if m.Layer == l && len(sel.heads(m)) > 0 {
					labels = append(labels, m.Label)
				}
			}
			name := fmt.Sprintf("layer%d.png", l)
			title := fmt.Sprintf("%s, layer %d: a row per map (%s), a column per head; step %d, %s example %d",
				variantText(exp), l, strings.Join(labels, ", "), res.Step, res.Stream, res.Example)
			grid, err := viz.Titled(viz.Grid(rows, 4), title, viz.Options{})
			if err != nil {
				return images, fmt.Errorf("layer %d: %w", l, err)
			}
			if err := viz.WritePNG(filepath.Join(out, name), grid); err != nil {
				return images, err
			}
			images++
			grids = append(grids, fmt.Sprintf("- [%s](%s): layer %d, a row per map (%s), a column per head", name, name, l, strings.Join(labels, ", ")))
		}
	}
	if len(noteOrder) > 0 {
		idx.WriteString("\nNotes:\n\n")
		for _, k := range noteOrder {
			fmt.Fprintf(&idx, "- %s: %s\n", k, notes[k])
		}
	}
	if len(grids) > 0 {
		idx.WriteString("\nGrids:\n\n" + strings.Join(grids, "\n") + "\n")
	}
	if images == 0 {
		return 0, errors.New("no map matches the selection")
	}
	err := atomicfile.WriteFile(filepath.Join(out, attnmapIndex), 0o644, func(w io.Writer) error {
		_, err := io.WriteString(w, idx.String())
		return err
	})
	return images, err
}

func plural(axis string) string { return axis + "s" }

// longestSide is the longest side of layer l's maps: all of them are drawn
// with cells of the size it gets, so that a layer's maps line up.
func longestSide(maps []layers.MapValues, l int) int {
	long := 0
	for _, m := range maps {
		if m.Layer == l {
			long = max(long, m.QLen, m.KLen)
		}
	}
	return long
}

// headText names head h of m for titles and index.md: a map shared by all
// heads says so, and a grouped-query head names its key/value head.
func headText(exp config.Experiment, m layers.MapValues, h int) string {
	switch {
	case m.Heads == 1 && exp.Model.NHeads > 1:
		return "all (one shared map)"
	case m.KVHeads < m.Heads:
		return fmt.Sprintf("%d (kv head %d)", h, h/(m.Heads/m.KVHeads))
	}
	return fmt.Sprint(h)
}

// mapFigure is what attnmap draws for head h of map m, one of a layer
// whose longest map side is long: the cells, their size (small: a tile of
// the layer's grid, whose own title names the variant and layer, so that
// the tile's names only the map and head), and the words around them.
func mapFigure(exp config.Experiment, m layers.MapValues, h int, scale viz.Scale, long int, small bool) (viz.Heatmap, viz.Options, viz.Labels) {
	hm := viz.Heatmap{Rows: m.QLen, Cols: m.KLen, Values: m.Head(h), RowMask: m.RowMask, ColMask: m.ColMask}
	o := viz.Options{Scale: scale, Long: long}
	headDesc := headText(exp, m, h)
	lab := viz.Labels{
		Title: fmt.Sprintf("%s, layer %d, head %s: %s map", variantText(exp), m.Layer, headDesc, m.Label),
		Rows:  "query " + m.Rows + " (row)",
		Cols:  "key " + m.Cols + " (column)",
	}
	if small {
		o.Side, o.MaxSide, o.TextSize = gridSide, 2*gridSide, 11
		lab.Title = fmt.Sprintf("%s map, head %s", m.Label, headDesc)
	}
	return hm, o, lab
}

// variantText names the run's attention variant with its options, e.g.
// "gpa attention (lambda=0.5)".
func variantText(exp config.Experiment) string {
	a := exp.Model.Attention
	s := a.Kind + " attention"
	if len(a.Options) == 0 {
		return s
	}
	keys := make([]string, 0, len(a.Options))
	for k := range a.Options {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%v", k, a.Options[k])
	}
	return s + " (" + strings.Join(parts, ", ") + ")"
}

// tokenLine lists the example's token ids, padding as "_".
func tokenLine(res *train.AttentionMaps) string {
	parts := make([]string, len(res.Inputs))
	for i, id := range res.Inputs {
		if res.KeyMask != nil && res.KeyMask[i] == 0 {
			parts[i] = "_"
		} else {
			parts[i] = fmt.Sprint(id)
		}
	}
	return strings.Join(parts, " ")
}
