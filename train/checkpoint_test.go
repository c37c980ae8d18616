package train

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/graph"
)

// checkpointStore returns a store of two float32 parameters with the
// values 0.5, 1.5, ... and an AdamW over it with non-zero moments.
func checkpointStore(t *testing.T) (*graph.Store, *AdamW) {
	t.Helper()
	store, err := graph.NewStore(tensor.Float32, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		name  string
		shape []int
	}{{"w", []int{2, 3}}, {"b", []int{3}}} {
		if _, err := store.Param(p.name, p.shape, graph.Constant(0)); err != nil {
			t.Fatal(err)
		}
	}
	x := float32(0.5)
	for _, p := range store.Params() {
		d := p.Value.Data().([]float32)
		for i := range d {
			d[i] = x
			x++
		}
	}
	opt := NewAdamW(store, 0.9, 0.999, 1e-8, 0.01)
	for i := range opt.m {
		for j := range opt.m[i] {
			opt.m[i][j], opt.v[i][j] = float64(j)+0.25, float64(j)+0.75
		}
	}
	opt.Step = 7
	return store, opt
}

func TestCheckpointChecksum(t *testing.T) {
	store, opt := checkpointStore(t)
	path := filepath.Join(t.TempDir(), CheckpointFile)
	want := checkpointState{Step: 7, Examples: 224, WallSeconds: 1.5}
	if err := saveCheckpoint(path, store, opt, want); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dataStart := 8 + int(binary.LittleEndian.Uint64(file))

	// The first weight, 0.5, as stored: w comes first in the data section.
	if got := math.Float32frombits(binary.LittleEndian.Uint32(file[dataStart:])); got != 0.5 {
		t.Fatalf("first float of the data section is %v, want w[0] = 0.5", got)
	}
	flipped := slices.Clone(file)
	flipped[dataStart+3] ^= 0x40 // the top exponent bit: 0.5 becomes 1.7e38
	if got := math.Float32frombits(binary.LittleEndian.Uint32(flipped[dataStart:])); got < 1e37 {
		t.Fatalf("flipped weight is %v, want a huge one", got)
	}

	tests := []struct {
		name    string
		file    []byte
		wantErr string // "" for success
	}{
		{"unmodified", file, ""},
		{"one bit flipped in a weight", flipped, CheckpointFile + ": data checksum mismatch (file corrupt); "},
		{"one bit flipped in the optimizer step", flipBit(t, file, `"optim_step":"7"`, len(`"optim_step":"`), 0x01), CheckpointFile + ": metadata checksum mismatch (file corrupt)"},
		// A flip in the data checksum's key makes it ordinary metadata, which
		// the metadata checksum covers; a flip in the metadata checksum's key
		// turns that check off in the safetensors reader, and the checkpoint
		// format, which requires both, refuses the file.
		{"data checksum key flipped", flipBit(t, flipped, `"data_crc32c"`, len(`"data_crc32`), 0x01), CheckpointFile + ": metadata checksum mismatch"},
		{"metadata checksum key and the optimizer step flipped",
			flipBit(t, flipBit(t, file, `"optim_step":"7"`, len(`"optim_step":"`), 0x01), `"metadata_crc32c"`, len(`"metadata_crc32`), 0x01),
			CheckpointFile + ": the checksums are missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), CheckpointFile)
			if err := os.WriteFile(p, tc.file, 0o644); err != nil {
				t.Fatal(err)
			}
			fresh, freshOpt := checkpointStore(t)
			for _, q := range fresh.Params() {
				clear(q.Value.Data().([]float32))
			}
			st, err := loadCheckpoint(p, fresh, freshOpt, "")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), p) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("load: err = %v, want one line starting with %s containing %q", err, p, tc.wantErr)
				}
				for _, q := range fresh.Params() {
					if slices.ContainsFunc(q.Value.Data().([]float32), func(x float32) bool { return x != 0 }) {
						t.Fatalf("a failed load changed parameter %s: %v", q.Name, q.Value.Data())
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if st.Step != want.Step || st.Examples != want.Examples || st.WallSeconds != want.WallSeconds || freshOpt.Step != opt.Step {
				t.Errorf("state = %+v (optimizer step %d), want %+v (%d)", st, freshOpt.Step, want, opt.Step)
			}
			for i, q := range fresh.Params() {
				if w := store.Params()[i].Value.Data().([]float32); !slices.Equal(q.Value.Data().([]float32), w) {
					t.Errorf("%s = %v, want %v", q.Name, q.Value.Data(), w)
				}
				if !slices.Equal(freshOpt.m[i], opt.m[i]) || !slices.Equal(freshOpt.v[i], opt.v[i]) {
					t.Errorf("moments of %s differ", q.Name)
				}
			}
		})
	}
}

// flipBit returns a copy of file with bit mask flipped in the byte at offset
// off of the first occurrence of what.
func flipBit(t *testing.T, file []byte, what string, off int, mask byte) []byte {
	t.Helper()
	i := strings.Index(string(file), what)
	if i < 0 {
		t.Fatalf("no %s in the file", what)
	}
	out := slices.Clone(file)
	out[i+off] ^= mask
	return out
}

// A store buffer (BigBird's random blocks) is saved with the model, and a
// checkpoint whose buffer differs from the one the build drew is refused,
// naming it, instead of training on with a pattern it was not trained with.
func TestCheckpointBuffers(t *testing.T) {
	withBuffer := func(v float64) (*graph.Store, *AdamW) {
		store, opt := checkpointStore(t)
		if _, err := store.Buffer("attn.random_blocks", []int{2, 2}, graph.Constant(v)); err != nil {
			t.Fatal(err)
		}
		return store, opt
	}
	store, opt := withBuffer(3)
	path := filepath.Join(t.TempDir(), CheckpointFile)
	if err := saveCheckpoint(path, store, opt, checkpointState{Step: 7}); err != nil {
		t.Fatal(err)
	}
	same, sameOpt := withBuffer(3)
	if _, err := loadCheckpoint(path, same, sameOpt, ""); err != nil {
		t.Fatalf("the same buffer: %v", err)
	}
	other, otherOpt := withBuffer(4)
	_, err := loadCheckpoint(path, other, otherOpt, "")
	if err == nil || !strings.Contains(err.Error(), "buffer.attn.random_blocks differs") {
		t.Fatalf("another buffer: got %v", err)
	}
	if n := store.NumElements(); n != 9 {
		t.Errorf("the parameter count includes buffers: %d", n)
	}
}
