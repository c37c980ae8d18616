package train

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"

	"github.com/attnlab/attnlab/graph"
	"github.com/attnlab/attnlab/safetensors"
)

// CheckpointFile is the name of the checkpoint in a run folder.
const CheckpointFile = "checkpoint.safetensors"

// The checkpoint is one safetensors file, written atomically: the parameters
// under their own names (so the weights open in Python with
// safetensors.torch.load_file), the optimizer's moments under
// "optimizer.m.NAME" and "optimizer.v.NAME" (float64), and in the metadata
// the step, the number of training examples consumed (the data stream's
// position: batches are generated from their index, so this is the whole
// state of the data RNG), the optimizer's step, and the accumulated wall
// time. One file, so a kill at any moment leaves either the old checkpoint
// or the new one, never a mixture.
const checkpointFormat = "attnlab-checkpoint-1"

type checkpointState struct {
	Step        int
	Examples    uint64
	WallSeconds float64
}

func saveCheckpoint(path string, store *graph.Store, opt *AdamW, st checkpointState) error {
	var ts []safetensors.Tensor
	for _, p := range store.Params() {
		ts = append(ts, safetensors.Tensor{Name: p.Name, Shape: slices.Clone([]int(p.Value.Shape())), Data: p.Value.Data()})
	}
	for i, p := range opt.params {
		shape := slices.Clone([]int(p.Value.Shape()))
		ts = append(ts,
			safetensors.Tensor{Name: "optimizer.m." + p.Name, Shape: shape, Data: opt.m[i]},
			safetensors.Tensor{Name: "optimizer.v." + p.Name, Shape: shape, Data: opt.v[i]})
	}
	meta := map[string]string{
		"format":       checkpointFormat,
		"step":         strconv.Itoa(st.Step),
		"examples":     strconv.FormatUint(st.Examples, 10),
		"optim_step":   strconv.Itoa(opt.Step),
		"wall_seconds": strconv.FormatFloat(st.WallSeconds, 'g', -1, 64),
		"dtype":        store.Dtype().String(),
	}
	return safetensors.WriteFile(path, ts, meta)
}

// errNoCheckpoint says a folder holds no checkpoint.
var errNoCheckpoint = errors.New("no checkpoint")

// loadCheckpoint restores parameters and optimizer state in place. Every
// parameter of the model must be there with its shape and dtype.
func loadCheckpoint(path string, store *graph.Store, opt *AdamW) (checkpointState, error) {
	var st checkpointState
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return st, fmt.Errorf("%s: %w", path, errNoCheckpoint)
	}
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return st, err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...))
	}
	if f.Metadata["format"] != checkpointFormat {
		return st, bad("not an attnlab checkpoint (metadata format %q)", f.Metadata["format"])
	}
	if st.Step, err = strconv.Atoi(f.Metadata["step"]); err != nil || st.Step < 0 {
		return st, bad("bad step %q in metadata", f.Metadata["step"])
	}
	if st.Examples, err = strconv.ParseUint(f.Metadata["examples"], 10, 64); err != nil {
		return st, bad("bad examples %q in metadata", f.Metadata["examples"])
	}
	if opt.Step, err = strconv.Atoi(f.Metadata["optim_step"]); err != nil {
		return st, bad("bad optim_step %q in metadata", f.Metadata["optim_step"])
	}
	st.WallSeconds, _ = strconv.ParseFloat(f.Metadata["wall_seconds"], 64)
	get := func(name string, shape []int) (safetensors.Tensor, error) {
		t, ok := f.Get(name)
		if !ok {
			return t, bad("missing tensor %s (was it written by another model config?)", name)
		}
		if !slices.Equal(t.Shape, shape) {
			return t, bad("tensor %s has shape %v, the model wants %v", name, t.Shape, shape)
		}
		return t, nil
	}
	for i, p := range store.Params() {
		shape := []int(p.Value.Shape())
		t, err := get(p.Name, shape)
		if err != nil {
			return st, err
		}
		switch dst := p.Value.Data().(type) {
		case []float32:
			src, ok := t.Data.([]float32)
			if !ok {
				return st, bad("tensor %s is not float32 like the model", p.Name)
			}
			copy(dst, src)
		case []float64:
			src, ok := t.Data.([]float64)
			if !ok {
				return st, bad("tensor %s is not float64 like the model", p.Name)
			}
			copy(dst, src)
		}
		for _, mv := range []struct {
			prefix string
			dst    []float64
		}{{"optimizer.m.", opt.m[i]}, {"optimizer.v.", opt.v[i]}} {
			t, err := get(mv.prefix+p.Name, shape)
			if err != nil {
				return st, err
			}
			src, ok := t.Data.([]float64)
			if !ok {
				return st, bad("tensor %s is not float64", mv.prefix+p.Name)
			}
			copy(mv.dst, src)
		}
	}
	return st, nil
}
