package main

import (
	"bytes"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/data"
	"github.com/attnlab/attnlab/layers"
	"github.com/attnlab/attnlab/train"
	"github.com/attnlab/attnlab/viz"
)

// pngsIn decodes every PNG in dir and returns them by file name.
func pngsIn(t *testing.T, dir string) map[string]image.Image {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.png"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]image.Image{}
	for _, p := range names {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if img.Bounds().Dx() < 16 || img.Bounds().Dy() < 16 {
			t.Errorf("%s: %v, too small to see", p, img.Bounds())
		}
		out[filepath.Base(p)] = img
	}
	return out
}

// mapLayout is the layout of the image attnmap draws for head h of layer
// l's map label on example ex of stream st of run: where its cells are.
func mapLayout(t *testing.T, run string, st data.Stream, ex uint64, l int, label string, h int, small bool) viz.Layout {
	t.Helper()
	exp, err := config.Load(filepath.Join(run, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := train.LoadAttentionMaps(exp, filepath.Join(run, "checkpoint.safetensors"), st, ex)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range res.Maps {
		if m.Layer == l && m.Label == label {
			_, lay, _, err := viz.Figure(mapFigure(exp, m, h, viz.Sqrt, longestSide(res.Maps, l), small))
			if err != nil {
				t.Fatal(err)
			}
			return lay
		}
	}
	t.Fatalf("no %s map in layer %d", label, l)
	return viz.Layout{}
}

func sortedKeys(m map[string]image.Image) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// A tiny decoder, trained a few steps, drawn: one image per head, a grid,
// and an index; the causal triangle is there (the top right cell is the
// bottom of the colour ramp, the top left the top: query 0 sees only key 0).
func TestAttnmapDecoder(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "tiny.yaml", tinyConfig)
	run := filepath.Join(dir, "run")
	if code, _, e := runCLI("train", "--config", cfg, "--out", run, "--set", "train.steps=10"); code != 0 {
		t.Fatalf("train: %s", e)
	}
	code, out, e := runCLI("attnmap", "--run", run)
	if code != 0 || e != "" || !strings.Contains(out, "3 images") {
		t.Fatalf("attnmap: exit %d\n%s%s", code, out, e)
	}
	maps := filepath.Join(run, "attnmap")
	imgs := pngsIn(t, maps)
	want := []string{"layer0.png", "layer0_attention_head0.png", "layer0_attention_head1.png"}
	if got := sortedKeys(imgs); !slices.Equal(got, want) {
		t.Fatalf("images %v, want %v", got, want)
	}
	h0 := imgs["layer0_attention_head0.png"]
	lay := mapLayout(t, run, data.Eval, 0, 0, "attention", 0, false)
	if b, m := h0.Bounds(), lay.Map; m.Dx() != 16*32 || m.Dy() != 16*32 || !m.In(b) || b.Dx() <= m.Dx() || b.Dy() <= m.Dy() {
		t.Errorf("16 x 16 map drawn %v in an image of %v, want 512 x 512 (32 px per cell) inside a larger image (title, axes, colour bar)", m, b)
	}
	top, corner := h0.At(lay.Cell(0, 0).X, lay.Cell(0, 0).Y), h0.At(lay.Cell(0, 15).X, lay.Cell(0, 15).Y)
	if r, g, bl, _ := top.RGBA(); r>>8 != 0xfd || g>>8 != 0xe7 || bl>>8 != 0x25 {
		t.Errorf("cell (0, 0) is %v, want the top of the ramp (weight 1)", top)
	}
	if r, g, bl, _ := corner.RGBA(); r>>8 != 0x44 || g>>8 != 0x01 || bl>>8 != 0x54 {
		t.Errorf("cell (0, 15) is %v, want the bottom of the ramp (masked by causality)", corner)
	}
	index, err := os.ReadFile(filepath.Join(maps, "index.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range want {
		if !strings.Contains(string(index), "("+name+")") {
			t.Errorf("index.md does not list %s:\n%s", name, index)
		}
	}
	if !strings.Contains(string(index), "| 16 positions x 16 positions | 0 | 1 |") {
		t.Errorf("index.md lacks the range of a causal map (0 to 1):\n%s", index)
	}

	// One layer and head, elsewhere, on a training example: one image, no grid.
	one := filepath.Join(dir, "one")
	if code, _, e := runCLI("attnmap", "--run", run, "--layer", "0", "--head", "1", "--stream", "train", "--example", "7", "--scale", "log", "--out", one); code != 0 {
		t.Fatalf("attnmap --head 1: %s", e)
	}
	if got := sortedKeys(pngsIn(t, one)); !slices.Equal(got, []string{"layer0_attention_head1.png"}) {
		t.Errorf("--layer 0 --head 1: images %v", got)
	}

	// Bad input: exit 2, one line naming the problem.
	noCkpt := filepath.Join(dir, "nockpt")
	os.MkdirAll(noCkpt, 0o755)
	writeFile(t, noCkpt, "config.yaml", tinyConfig)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no run flag", []string{"attnmap"}, "--run DIR is required"},
		{"missing folder", []string{"attnmap", "--run", filepath.Join(dir, "nope")}, "nope: no such folder"},
		{"not a run", []string{"attnmap", "--run", dir}, "no config.yaml there"},
		{"no checkpoint", []string{"attnmap", "--run", noCkpt}, "no checkpoint.safetensors there"},
		{"layer out of range", []string{"attnmap", "--run", run, "--layer", "1"}, "--layer 1: out of range; the run's model has layers 0 to 0"},
		{"head out of range", []string{"attnmap", "--run", run, "--head", "2"}, "--head 2: out of range; the run's model has heads 0 to 1"},
		{"negative example", []string{"attnmap", "--run", run, "--example", "-1"}, "--example"},
		{"bad stream", []string{"attnmap", "--run", run, "--stream", "test"}, "--stream must be eval or train"},
		{"bad scale", []string{"attnmap", "--run", run, "--scale", "cubic"}, "--scale"},
		{"bad number", []string{"attnmap", "--run", run, "--layer", "first"}, "layer"},
		{"unwritable out", []string{"attnmap", "--run", run, "--out", filepath.Join(cfg, "maps")}, "--out"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, stderr := runCLI(c.args...)
			if code != 2 || out != "" {
				t.Errorf("exit %d, stdout %q; want 2 and nothing", code, out)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "error: ") || !strings.Contains(lines[0], c.want) {
				t.Errorf("stderr %q: want one error line containing %q", stderr, c.want)
			}
		})
	}
}

// An encoder with agent attention on a padded task: both stages of each
// layer are drawn, and padded positions are grey.
func TestAttnmapPaddedAgent(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "maj.yaml", `name: maj
seed: 1
task: {kind: majority, seq_len: 16, min_len: 4}
model: {kind: encoder, d_model: 16, n_layers: 1, n_heads: 2, d_ff: 32, attention: {kind: agent, agents: 4}}
train: {steps: 3, batch_size: 4, lr: 3.0e-3, warmup_steps: 1, eval_every: 3, eval_examples: 8, log_every: 1}
`)
	run := filepath.Join(dir, "run")
	if code, _, e := runCLI("train", "--config", cfg, "--out", run); code != 0 {
		t.Fatalf("train: %s", e)
	}
	// The first held-out example with padding.
	for ex := 0; ex < 20; ex++ {
		out := filepath.Join(dir, "maps")
		if code, _, e := runCLI("attnmap", "--run", run, "--example", strconv.Itoa(ex), "--out", out); code != 0 {
			t.Fatalf("attnmap: %s", e)
		}
		index, _ := os.ReadFile(filepath.Join(out, "index.md"))
		if !strings.Contains(string(index), " _") {
			os.RemoveAll(out)
			continue
		}
		imgs := pngsIn(t, out)
		want := []string{"layer0.png", "layer0_agents-from-keys_head0.png", "layer0_agents-from-keys_head1.png",
			"layer0_queries-from-agents_head0.png", "layer0_queries-from-agents_head1.png"}
		if got := sortedKeys(imgs); !slices.Equal(got, want) {
			t.Fatalf("images %v, want %v", got, want)
		}
		// The last position is padding: its column in agents<-keys and its
		// row in queries<-agents are grey.
		for name, at := range map[string]image.Point{
			"layer0_agents-from-keys_head0.png":    mapLayout(t, run, data.Eval, uint64(ex), 0, "agents<-keys", 0, false).Cell(0, 15),
			"layer0_queries-from-agents_head1.png": mapLayout(t, run, data.Eval, uint64(ex), 0, "queries<-agents", 1, false).Cell(15, 0),
		} {
			x, y := at.X, at.Y
			if r, g, b, _ := imgs[name].At(x, y).RGBA(); r>>8 != uint32(viz.Padding.R) || g>>8 != uint32(viz.Padding.G) || b>>8 != uint32(viz.Padding.B) {
				t.Errorf("%s: the padded position is drawn %v, not grey", name, imgs[name].At(x, y))
			}
		}
		return
	}
	t.Fatal("no padded example among the first 20 held-out examples")
}

// Each picture names what it shows: the variant with its options, the
// layer, the head and the map in the title, queries and keys on the axes;
// a grid tile names only its map and head (the grid's title names the
// rest).
func TestMapFigureLabels(t *testing.T) {
	exp := config.Experiment{}
	exp.Model.NHeads = 4
	exp.Model.Attention = config.Component{Kind: "gpa", Options: map[string]any{"lambda": 0.5, "bias": false}}
	m := layers.MapValues{Layer: 1, Label: "combined", Rows: layers.AxisPosition, Cols: layers.AxisPosition,
		Heads: 4, KVHeads: 4, QLen: 3, KLen: 3, Weights: make([]float64, 4*9)}
	agents := layers.MapValues{Layer: 0, Label: "agents<-keys", Rows: layers.AxisAgent, Cols: layers.AxisPosition,
		Heads: 1, KVHeads: 1, QLen: 2, KLen: 3, Weights: make([]float64, 6)}
	for _, c := range []struct {
		m          layers.MapValues
		small      bool
		title      string
		rows, cols string
	}{
		{m, false, "gpa attention (bias=false, lambda=0.5), layer 1, head 2: combined map", "query position (row)", "key position (column)"},
		{m, true, "combined map, head 2", "query position (row)", "key position (column)"},
		{agents, false, "gpa attention (bias=false, lambda=0.5), layer 0, head all (one shared map): agents<-keys map", "query agent (row)", "key position (column)"},
	} {
		h := 2
		if c.m.Heads == 1 {
			h = 0
		}
		hm, o, lab := mapFigure(exp, c.m, h, viz.Linear, 3, c.small)
		if lab.Title != c.title || lab.Rows != c.rows || lab.Cols != c.cols {
			t.Errorf("labels %+v, want %q, %q, %q", lab, c.title, c.rows, c.cols)
		}
		if hm.Rows != c.m.QLen || hm.Cols != c.m.KLen || (o.TextSize != 0) != c.small {
			t.Errorf("heatmap %dx%d, options %+v", hm.Rows, hm.Cols, o)
		}
	}
}
