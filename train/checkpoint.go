package train

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"

	"github.com/attnlab/attnlab/data"
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
// time, and for a task that reads text its tokenizer (data.Tokenizer.Spec:
// sampling needs no corpus, and a run whose corpus has changed is caught).
// One file, so a kill at any moment leaves either the old checkpoint
// or the new one, never a mixture. The safetensors writer also records
// CRC-32Cs of the data section and of the other metadata, which every load
// here (resume, eval, sample, attnmap: all read through readCheckpoint)
// verifies, so a corrupt file is a bad-input error naming it rather than
// weights (or a step) that train on silently. Format 2 must carry both
// checksums (a flipped bit in a checksum's key must not turn the check off);
// format 1, written before checksums, loads unchecked.
const (
	checkpointFormat   = "attnlab-checkpoint-2"
	checkpointFormatV1 = "attnlab-checkpoint-1" // before checksums
)

type checkpointState struct {
	Step        int
	Examples    uint64
	WallSeconds float64
	Tokenizer   string // the task's data.Tokenizer.Spec; empty if it has none
	Stats       runStats
}

func saveCheckpoint(path string, store *graph.Store, opt *AdamW, st checkpointState) error {
	var ts []safetensors.Tensor
	for _, p := range store.Params() {
		ts = append(ts, safetensors.Tensor{Name: p.Name, Shape: slices.Clone([]int(p.Value.Shape())), Data: p.Value.Data()})
	}
	for _, b := range store.Buffers() {
		ts = append(ts, safetensors.Tensor{Name: bufferPrefix + b.Name, Shape: slices.Clone([]int(b.Value.Shape())), Data: b.Value.Data()})
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
	if st.Tokenizer != "" {
		meta["tokenizer"] = st.Tokenizer
	}
	st.Stats.encode(meta)
	return safetensors.WriteFile(path, ts, meta)
}

// bufferPrefix names a store buffer's tensor in a checkpoint.
const bufferPrefix = "buffer."

// errNoCheckpoint says a folder holds no checkpoint.
var errNoCheckpoint = errors.New("no checkpoint")

// loadCheckpoint restores parameters and optimizer state in place. Every
// parameter of the model must be there with its shape and dtype, and a
// tokenizer saved with it must equal tokenizer, the Spec of the task's
// (see checkTokenizer).
func loadCheckpoint(path string, store *graph.Store, opt *AdamW, tokenizer string) (checkpointState, error) {
	f, err := readCheckpoint(path)
	if err != nil {
		return checkpointState{}, err
	}
	return restoreCheckpoint(f, path, store, opt, tokenizer)
}

// readCheckpoint reads the checkpoint file at path; a missing file is
// errNoCheckpoint.
func readCheckpoint(path string) (*safetensors.File, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", path, errNoCheckpoint)
	}
	return safetensors.ReadFile(path)
}

// restoreCheckpoint is loadCheckpoint on the file f read from path.
func restoreCheckpoint(f *safetensors.File, path string, store *graph.Store, opt *AdamW, tokenizer string) (checkpointState, error) {
	var st checkpointState
	var err error
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...))
	}
	switch f.Metadata["format"] {
	case checkpointFormat:
		if !f.Checksummed {
			return st, bad("the checksums are missing from the metadata (file corrupt)")
		}
	case checkpointFormatV1:
	default:
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
	st.Tokenizer = f.Metadata["tokenizer"]
	if err := st.Stats.decode(f.Metadata); err != nil {
		return st, bad("%v", err)
	}
	if err := checkTokenizer(tokenizer, st.Tokenizer); err != nil {
		return st, fmt.Errorf("%s: %w", path, err)
	}
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
	// Buffers were drawn when the model was built, and the graph uses
	// those values: a checkpoint that holds others (written by a build
	// that drew differently) cannot be continued with this graph. State
	// buffers (graph.Store.StateBuffer) are what training made of them,
	// and are restored in place, where the graph reads them.
	for _, b := range store.Buffers() {
		shape := []int(b.Value.Shape())
		t, err := get(bufferPrefix+b.Name, shape)
		if err != nil {
			return st, err
		}
		src, ok := t.Data.([]float64)
		if ok && b.Mutable { // state training moved (routing centroids): restored in place
			copy(b.Value.Data().([]float64), src)
			continue
		}
		if !ok || !slices.Equal(src, b.Value.Data().([]float64)) {
			return st, bad("tensor %s differs from the one this build drew from the seed (the pattern the model was trained with); use the build that wrote it", bufferPrefix+b.Name)
		}
	}
	return st, nil
}

// tokenizerSpec is the Spec of task's tokenizer, or "" if it has none.
func tokenizerSpec(task data.Task) string {
	if tk := data.TokenizerOf(task); tk != nil {
		return tk.Spec()
	}
	return ""
}

// checkTokenizer compares the tokenizer a checkpoint was saved with (saved)
// to the task's (current), both as Specs: if they differ, the config now
// reads a different corpus and the token ids would mean other text. A
// checkpoint without a tokenizer passes.
func checkTokenizer(current, saved string) error {
	if saved == "" || saved == current {
		return nil
	}
	vocab := func(spec string) string {
		if tk, err := data.ParseTokenizer(spec); err == nil {
			return strconv.Itoa(tk.Vocab())
		}
		return "?"
	}
	return fmt.Errorf("the task's tokenizer (vocab %s) is not the one the checkpoint was trained with (vocab %s): has the corpus (task.path) changed since training?",
		vocab(current), vocab(saved))
}
