package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

// sameTensor reports whether a and b are equal, comparing floats bit for bit
// (so NaN equals NaN) and treating a nil and an empty Shape as the same.
func sameTensor(a, b Tensor) error {
	if a.Name != b.Name {
		return fmt.Errorf("name %q != %q", a.Name, b.Name)
	}
	if len(a.Shape) != len(b.Shape) {
		return fmt.Errorf("tensor %q: shape %v != %v", a.Name, a.Shape, b.Shape)
	}
	for i := range a.Shape {
		if a.Shape[i] != b.Shape[i] {
			return fmt.Errorf("tensor %q: shape %v != %v", a.Name, a.Shape, b.Shape)
		}
	}
	switch x := a.Data.(type) {
	case []float32:
		y, ok := b.Data.([]float32)
		if !ok || len(x) != len(y) {
			return fmt.Errorf("tensor %q: data %T(len %d) != %T", a.Name, a.Data, len(x), b.Data)
		}
		for i := range x {
			if math.Float32bits(x[i]) != math.Float32bits(y[i]) {
				return fmt.Errorf("tensor %q: element %d: %v != %v", a.Name, i, x[i], y[i])
			}
		}
	case []float64:
		y, ok := b.Data.([]float64)
		if !ok || len(x) != len(y) {
			return fmt.Errorf("tensor %q: data %T(len %d) != %T", a.Name, a.Data, len(x), b.Data)
		}
		for i := range x {
			if math.Float64bits(x[i]) != math.Float64bits(y[i]) {
				return fmt.Errorf("tensor %q: element %d: %v != %v", a.Name, i, x[i], y[i])
			}
		}
	case []int64:
		y, ok := b.Data.([]int64)
		if !ok || len(x) != len(y) {
			return fmt.Errorf("tensor %q: data %T(len %d) != %T", a.Name, a.Data, len(x), b.Data)
		}
		for i := range x {
			if x[i] != y[i] {
				return fmt.Errorf("tensor %q: element %d: %v != %v", a.Name, i, x[i], y[i])
			}
		}
	default:
		return fmt.Errorf("tensor %q: unexpected data type %T", a.Name, a.Data)
	}
	return nil
}

func sameTensors(a, b []Tensor) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d tensors != %d", len(a), len(b))
	}
	for i := range a {
		if err := sameTensor(a[i], b[i]); err != nil {
			return fmt.Errorf("tensor %d: %v", i, err)
		}
	}
	return nil
}

func sameMetadata(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func encode(t testing.TB, tensors []Tensor, metadata map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Encode(&buf, tensors, metadata); err != nil {
		t.Fatalf("Encode: %v", err)
	}
	return buf.Bytes()
}

// sampleTensors is a small file with every dtype, a scalar and metadata.
func sampleTensors() ([]Tensor, map[string]string) {
	return []Tensor{
			{Name: "w", Shape: []int{2, 3}, Data: []float32{1, -2.5, 3.25, 0, float32(math.Inf(1)), 1e-30}},
			{Name: "b", Shape: []int{3}, Data: []float64{math.Pi, -0.0, math.MaxFloat64}},
			{Name: "step", Shape: nil, Data: []int64{42}},
			{Name: "idx", Shape: []int{2, 2}, Data: []int64{math.MinInt64, -1, 0, math.MaxInt64}},
		}, map[string]string{
			"format": "pt",
			"note":   `quotes " and <html> & unicode é`,
		}
}

func TestRoundTrip(t *testing.T) {
	big := make([]float32, 300_001) // more than the internal write buffer
	for i := range big {
		big[i] = float32(i) * 0.5
	}
	sample, sampleMeta := sampleTensors()
	tests := []struct {
		name     string
		tensors  []Tensor
		metadata map[string]string
	}{
		{"all dtypes, scalar and metadata", sample, sampleMeta},
		{"no tensors", nil, nil},
		{"metadata only", nil, map[string]string{"k": "v"}},
		{"scalars of every dtype", []Tensor{
			{Name: "f32", Shape: []int{}, Data: []float32{1.5}},
			{Name: "f64", Data: []float64{-2.25}},
			{Name: "i64", Data: []int64{-7}},
		}, nil},
		{"empty tensors", []Tensor{
			{Name: "e1", Shape: []int{0}, Data: []float32{}},
			{Name: "x", Shape: []int{1}, Data: []float64{3}},
			{Name: "e2", Shape: []int{4, 0, 2}, Data: []int64(nil)},
			{Name: "y", Shape: []int{1}, Data: []int64{9}},
		}, nil},
		{"special floats", []Tensor{
			{Name: "f32", Shape: []int{5}, Data: []float32{float32(math.NaN()), float32(math.Inf(-1)), float32(math.Copysign(0, -1)), math.SmallestNonzeroFloat32, math.MaxFloat32}},
			{Name: "f64", Shape: []int{5}, Data: []float64{math.NaN(), math.Inf(1), math.Copysign(0, -1), math.SmallestNonzeroFloat64, -math.MaxFloat64}},
		}, nil},
		{"odd names", []Tensor{
			{Name: "layer.0/attn \"q\" <k> & é\t\\", Shape: []int{1}, Data: []float32{1}},
			{Name: "", Shape: []int{1}, Data: []float32{2}},
		}, nil},
		{"large", []Tensor{{Name: "big", Shape: []int{300_001}, Data: big}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := encode(t, tc.tensors, tc.metadata)
			f, err := Decode(data)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if err := sameTensors(tc.tensors, f.Tensors); err != nil {
				t.Fatal(err)
			}
			if !sameMetadata(tc.metadata, f.Metadata) {
				t.Fatalf("metadata = %v, want %v", f.Metadata, tc.metadata)
			}
			for _, want := range tc.tensors {
				got, ok := f.Get(want.Name)
				if !ok {
					t.Fatalf("Get(%q) not found", want.Name)
				}
				if err := sameTensor(want, got); err != nil {
					t.Fatal(err)
				}
			}
			if _, ok := f.Get("no such tensor"); ok {
				t.Fatal("Get of a missing name succeeded")
			}
			// Encoding is deterministic.
			if again := encode(t, f.Tensors, f.Metadata); !bytes.Equal(again, data) {
				t.Fatal("re-encoding the decoded file gives different bytes")
			}
		})
	}
}

func TestHeaderIsValidAlignedJSON(t *testing.T) {
	sample, meta := sampleTensors()
	for k := range 8 {
		// Vary the name length so that every amount of padding occurs.
		tensors := append([]Tensor{{Name: strings.Repeat("n", k), Shape: []int{1}, Data: []float32{1}}}, sample...)
		data := encode(t, tensors, meta)
		n := binary.LittleEndian.Uint64(data)
		if (8+n)%8 != 0 {
			t.Errorf("8+N = %d is not a multiple of 8", 8+n)
		}
		header := data[8 : 8+n]
		trimmed := bytes.TrimRight(header, " ")
		if len(header)-len(trimmed) > 7 {
			t.Errorf("%d bytes of padding", len(header)-len(trimmed))
		}
		if !json.Valid(header) {
			t.Fatalf("header is not valid JSON: %s", header)
		}
		var h map[string]json.RawMessage
		if err := json.Unmarshal(header, &h); err != nil {
			t.Fatal(err)
		}
		// The metadata, plus the checksums of the data section and of the
		// metadata (its entries sorted, each key and value after its length).
		wantMeta := map[string]string{ChecksumKey: fmt.Sprintf("%08x", crc32.Checksum(data[8+n:], crc32.MakeTable(crc32.Castagnoli)))}
		keys := []string{}
		for k, v := range meta {
			wantMeta[k] = v
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var canon []byte
		for _, k := range keys {
			canon = append(canon, byte(len(k)))
			canon = append(canon, k...)
			canon = append(canon, byte(len(meta[k])))
			canon = append(canon, meta[k]...)
		}
		wantMeta[MetadataChecksumKey] = fmt.Sprintf("%08x", crc32.Checksum(canon, crc32.MakeTable(crc32.Castagnoli)))
		var gotMeta map[string]string
		if err := json.Unmarshal(h["__metadata__"], &gotMeta); err != nil || !sameMetadata(gotMeta, wantMeta) {
			t.Errorf("__metadata__ = %s (%v), want %v", h["__metadata__"], err, wantMeta)
		}
		type info struct {
			Dtype       string   `json:"dtype"`
			Shape       []int    `json:"shape"`
			DataOffsets []uint64 `json:"data_offsets"`
		}
		var offset uint64
		for _, tn := range tensors {
			var e info
			if err := json.Unmarshal(h[tn.Name], &e); err != nil {
				t.Fatalf("entry %q: %v", tn.Name, err)
			}
			if e.Shape == nil {
				t.Errorf("entry %q: shape is null, want a list", tn.Name)
			}
			dt, count, _ := dataInfo(tn.Data)
			if e.Dtype != dt.name {
				t.Errorf("entry %q: dtype %q, want %q", tn.Name, e.Dtype, dt.name)
			}
			want := []uint64{offset, offset + uint64(count)*dt.size}
			if len(e.DataOffsets) != 2 || e.DataOffsets[0] != want[0] || e.DataOffsets[1] != want[1] {
				t.Errorf("entry %q: data_offsets %v, want %v", tn.Name, e.DataOffsets, want)
			}
			offset = want[1]
		}
		if got := uint64(len(data)) - 8 - n; got != offset {
			t.Errorf("data section is %d bytes, want %d", got, offset)
		}
	}
}

// build assembles a safetensors file from a header and a data section.
func build(header string, data []byte) []byte {
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	out = append(out, header...)
	return append(out, data...)
}

func TestDecodeHandBuilt(t *testing.T) {
	// Data section: a F32[2] = {1.5, -2}, then b I64[] = -3, then c F64[1,2] = {0.25, 1024}.
	var data []byte
	data = binary.LittleEndian.AppendUint32(data, 0x3FC00000)         // 1.5
	data = binary.LittleEndian.AppendUint32(data, 0xC0000000)         // -2
	data = binary.LittleEndian.AppendUint64(data, 0xFFFFFFFFFFFFFFFD) // -3
	data = binary.LittleEndian.AppendUint64(data, 0x3FD0000000000000) // 0.25
	data = binary.LittleEndian.AppendUint64(data, 0x4090000000000000) // 1024
	want := []Tensor{
		{Name: "a", Shape: []int{2}, Data: []float32{1.5, -2}},
		{Name: "b", Shape: nil, Data: []int64{-3}},
		{Name: "c", Shape: []int{1, 2}, Data: []float64{0.25, 1024}},
	}
	tests := []struct {
		name     string
		header   string
		metadata map[string]string
	}{
		{
			name:   "entries in data order",
			header: `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I64","shape":[],"data_offsets":[8,16]},"c":{"dtype":"F64","shape":[1,2],"data_offsets":[16,32]}}`,
		},
		{
			// Python's writer puts __metadata__ first and may list entries in any order.
			name:     "metadata, shuffled entries, whitespace, padding",
			header:   "{\n \"__metadata__\": {\"format\": \"pt\"},\n \"c\": {\"shape\": [1, 2], \"dtype\": \"F64\", \"data_offsets\": [16, 32]},\n \"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},\n \"b\": {\"data_offsets\": [8, 16], \"dtype\": \"I64\", \"shape\": []}\n}" + "       ",
			metadata: map[string]string{"format": "pt"},
		},
		{
			name:   "unknown fields are ignored, metadata null",
			header: `{"__metadata__":null,"b":{"dtype":"I64","shape":[],"data_offsets":[8,16],"extra":[1]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"c":{"dtype":"F64","shape":[1,2],"data_offsets":[16,32]}}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Decode(build(tc.header, data))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if err := sameTensors(want, f.Tensors); err != nil {
				t.Fatal(err)
			}
			if !sameMetadata(tc.metadata, f.Metadata) {
				t.Fatalf("metadata = %v, want %v", f.Metadata, tc.metadata)
			}
		})
	}

	// And Encode produces exactly the canonical form of the first header,
	// with the CRC-32C of the data in the metadata.
	sum := crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))
	header := `{"__metadata__":{"data_crc32c":"` + fmt.Sprintf("%08x", sum) + `","metadata_crc32c":"00000000"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I64","shape":[],"data_offsets":[8,16]},"c":{"dtype":"F64","shape":[1,2],"data_offsets":[16,32]}}`
	for (8+len(header))%8 != 0 {
		header += " "
	}
	if got := encode(t, want, nil); !bytes.Equal(got, build(header, data)) {
		t.Errorf("Encode =\n%q\nwant\n%q", got, build(header, data))
	}
}

func TestDecodeRejectsCorruption(t *testing.T) {
	f32x2 := make([]byte, 8)
	entry := func(name, dtype, shape, offsets string) string {
		return fmt.Sprintf(`%q:{"dtype":%q,"shape":%s,"data_offsets":%s}`, name, dtype, shape, offsets)
	}
	obj := func(entries ...string) string { return "{" + strings.Join(entries, ",") + "}" }
	valid := entry("a", "F32", "[2]", "[0,8]")

	absurd := binary.LittleEndian.AppendUint64(nil, 1<<40)
	absurd = append(absurd, "{}"...)
	justOver := binary.LittleEndian.AppendUint64(nil, MaxHeaderSize+1)
	justOver = append(justOver, make([]byte, MaxHeaderSize+1)...)

	tests := []struct {
		name string
		file []byte
		want string // substring of the error
	}{
		{"empty file", nil, "truncated"},
		{"shorter than 8 bytes", []byte{2, 0, 0, 0, 0, 0, 0}, "truncated"},
		{"header length larger than file", build(obj(valid), f32x2)[:20], "truncated: header declares"},
		{"absurd header length", absurd, "over the 16777216-byte limit"},
		{"header length just over the limit", justOver, "over the 16777216-byte limit"},
		{"invalid JSON", build(`{"a":{"dtype":"F32",`, nil), "invalid header JSON"},
		{"not JSON at all", build("hello world", nil), "invalid header JSON"},
		{"header is an array", build(`[1,2]`, nil), "want a JSON object"},
		{"empty header", build(``, nil), "header length is 0"},
		{"garbage after the object", build(obj(valid)+`{}`, f32x2), "after the JSON object"},
		{"NUL padding", build(obj(valid)+"\x00\x00", f32x2), "invalid header JSON after the object"},
		{"invalid UTF-8", build("{\"a\xff\":{}}", nil), "not valid UTF-8"},
		{"duplicate tensor name", build(obj(valid, valid), f32x2), `duplicate key "a"`},
		{"entry is not an object", build(`{"a":5}`, nil), `tensor "a": header entry must be an object, found number`},
		{"shape not a list", build(`{"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}}`, f32x2), "shape has the wrong type (found number)"},
		{"missing dtype", build(`{"a":{"shape":[2],"data_offsets":[0,8]}}`, f32x2), "missing dtype"},
		{"missing shape", build(`{"a":{"dtype":"F32","data_offsets":[0,8]}}`, f32x2), "missing shape"},
		{"missing data_offsets", build(`{"a":{"dtype":"F32","shape":[2]}}`, f32x2), "missing data_offsets"},
		{"unknown dtype", build(obj(entry("a", "F16", "[4]", "[0,8]")), f32x2), `unsupported dtype "F16"`},
		{"lower-case dtype", build(obj(entry("a", "f32", "[2]", "[0,8]")), f32x2), `unsupported dtype "f32"`},
		{"dtype not a string", build(`{"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}}`, f32x2), `tensor "a": dtype has the wrong type (found number)`},
		{"negative dimension", build(obj(entry("a", "F32", "[-2]", "[0,8]")), f32x2), "negative dimension"},
		{"fractional dimension", build(obj(entry("a", "F32", "[2.0]", "[0,8]")), f32x2), "not a non-negative integer"},
		{"dimension as a string", build(obj(entry("a", "F32", `["2"]`, "[0,8]")), f32x2), "not a non-negative integer"},
		{"huge dimension", build(obj(entry("a", "F32", "[99999999999999999999999]", "[0,8]")), f32x2), "not a non-negative integer"},
		{"shape product overflows", build(obj(entry("a", "F32", "[4294967296,4294967296]", "[0,8]")), f32x2), "overflows"},
		{"byte count overflows", build(obj(entry("a", "F64", "[4611686018427387904]", "[0,8]")), f32x2), "too large"},
		{"byte count mismatch", build(obj(entry("a", "F32", "[3]", "[0,8]")), f32x2), "span 8 bytes, but F32 with shape [3] needs 12"},
		{"byte count mismatch for dtype size", build(obj(entry("a", "F64", "[2]", "[0,8]")), f32x2), "needs 16"},
		{"offsets end before begin", build(obj(entry("a", "F32", "[0]", "[8,0]")), nil), "end before they begin"},
		{"one offset", build(obj(entry("a", "F32", "[2]", "[8]")), f32x2), "must be [begin, end]"},
		{"three offsets", build(obj(entry("a", "F32", "[2]", "[0,8,8]")), f32x2), "must be [begin, end]"},
		{"negative offset", build(obj(entry("a", "F32", "[2]", "[-8,0]")), f32x2), "not a non-negative integer"},
		{"offsets not starting at 0", build(obj(entry("a", "F32", "[2]", "[8,16]")), make([]byte, 16)), "must start at offset 0"},
		{"gap between tensors", build(obj(valid, entry("b", "F32", "[1]", "[12,16]")), make([]byte, 16)), "gap of 4 bytes"},
		{"overlapping tensors", build(obj(valid, entry("b", "F32", "[2]", "[4,12]")), make([]byte, 12)), "overlap"},
		{"same offsets twice", build(obj(valid, entry("b", "F32", "[2]", "[0,8]")), f32x2), "overlap"},
		{"offsets past the end", build(obj(valid, entry("b", "F32", "[2]", "[8,16]")), f32x2), "truncated: header declares 16 data bytes, file has 8"},
		{"offsets absurdly past the end", build(obj(entry("a", "I64", "[1152921504606846975]", "[0,9223372036854775800]")), f32x2), "truncated: header declares 9223372036854775800 data bytes, file has 8"},
		{"truncated data", build(obj(valid), f32x2[:5]), "truncated: header declares 8 data bytes, file has 5"},
		{"trailing data", build(obj(valid), make([]byte, 12)), "4 bytes of trailing data"},
		{"data but no tensors", build(`{}`, []byte{1}), "1 bytes of trailing data"},
		{"metadata not an object", build(`{"__metadata__":[1]}`, nil), `"__metadata__" must be an object of string to string`},
		{"metadata value not a string", build(`{"__metadata__":{"a":1}}`, nil), `"__metadata__" must be an object of string to string`},
		{"metadata twice", build(`{"__metadata__":{},"__metadata__":{}}`, nil), `duplicate key "__metadata__"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Decode(tc.file)
			if err == nil {
				t.Fatalf("Decode succeeded: %+v", f)
			}
			msg := err.Error()
			t.Logf("error: %s", msg)
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not contain %q", msg, tc.want)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
		})
	}
}

func TestDecodeEveryTruncation(t *testing.T) {
	sample, meta := sampleTensors()
	data := encode(t, sample, meta)
	if _, err := Decode(data); err != nil {
		t.Fatalf("full file: %v", err)
	}
	for n := range len(data) {
		f, err := Decode(data[:n])
		if err == nil {
			t.Fatalf("prefix of %d/%d bytes decoded: %+v", n, len(data), f)
		}
		if !strings.Contains(err.Error(), "truncated") {
			t.Errorf("prefix of %d/%d bytes: error %q does not say truncated", n, len(data), err)
		}
	}
}

func TestDecodeDoesNotAliasInput(t *testing.T) {
	data := encode(t, []Tensor{{Name: "x", Shape: []int{2}, Data: []int64{1, 2}}}, nil)
	f, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	for i := range data {
		data[i] = 0xFF
	}
	if got := f.Tensors[0].Data.([]int64); got[0] != 1 || got[1] != 2 {
		t.Fatalf("decoded data changed with the input: %v", got)
	}
}

func TestEncodeRejects(t *testing.T) {
	ok := Tensor{Name: "ok", Shape: []int{1}, Data: []float32{1}}
	tests := []struct {
		name     string
		tensors  []Tensor
		metadata map[string]string
		want     string
	}{
		{"duplicate name", []Tensor{ok, ok}, nil, `duplicate tensor name "ok"`},
		{"reserved name", []Tensor{{Name: "__metadata__", Shape: []int{1}, Data: []float32{1}}}, nil, "reserved"},
		{"invalid UTF-8 name", []Tensor{{Name: "a\xff", Shape: []int{1}, Data: []float32{1}}}, nil, "UTF-8"},
		{"invalid UTF-8 metadata", []Tensor{ok}, map[string]string{"k": "\xfe"}, "UTF-8"},
		{"too few elements", []Tensor{{Name: "a", Shape: []int{2, 3}, Data: []float64{1, 2}}}, nil, "shape [2 3] needs 6 elements, Data has 2"},
		{"scalar with two elements", []Tensor{{Name: "a", Data: []int64{1, 2}}}, nil, "needs 1 elements, Data has 2"},
		{"negative dimension", []Tensor{{Name: "a", Shape: []int{-1}, Data: []float32{}}}, nil, "negative dimension"},
		{"overflowing shape", []Tensor{{Name: "a", Shape: []int{1 << 40, 1 << 40}, Data: []float32{}}}, nil, "overflows"},
		{"unsupported data type", []Tensor{{Name: "a", Shape: []int{1}, Data: []int32{1}}}, nil, "unsupported Data type []int32"},
		{"nil data", []Tensor{{Name: "a", Shape: []int{1}}}, nil, "missing Data"},
		{"too many dimensions", []Tensor{{Name: "a", Shape: []int{1, 1, 1, 1, 1, 1, 1, 1, 1}, Data: []float32{1}}}, nil, "more than 8 dimensions"},
		{"too many tensors", make([]Tensor, MaxTensors+1), nil, "more than the 65536 a file may hold"},
		{"reserved metadata key", []Tensor{ok}, map[string]string{ChecksumKey: "0"}, "reserved"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := Encode(&buf, tc.tensors, tc.metadata)
			if err == nil {
				t.Fatal("Encode succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if buf.Len() != 0 {
				t.Errorf("Encode wrote %d bytes before failing", buf.Len())
			}
		})
	}
}

func TestWriteFileReadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")
	sample, meta := sampleTensors()
	if err := WriteFile(path, sample, meta); err != nil {
		t.Fatal(err)
	}
	f, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := sameTensors(sample, f.Tensors); err != nil {
		t.Fatal(err)
	}
	if !sameMetadata(meta, f.Metadata) {
		t.Fatalf("metadata = %v, want %v", f.Metadata, meta)
	}

	// A failed write leaves the previous file intact and no temporary file.
	bad := []Tensor{{Name: "x", Shape: []int{3}, Data: []float32{1}}}
	if err := WriteFile(path, bad, nil); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("WriteFile of an invalid tensor: err = %v, want an error naming %s", err, path)
	}
	if _, err := ReadFile(path); err != nil {
		t.Fatalf("old file damaged: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want 1", len(entries))
	}

	// Errors start with the path.
	missing := filepath.Join(dir, "missing.safetensors")
	if _, err := ReadFile(missing); err == nil || !strings.HasPrefix(err.Error(), missing+": ") || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile(missing) = %v", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short.safetensors")
	if err := os.WriteFile(short, data[:len(data)-3], 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = ReadFile(short)
	if err == nil || !strings.HasPrefix(err.Error(), short+": truncated: ") {
		t.Errorf("ReadFile(truncated) = %v", err)
	}
}

// FuzzDecode checks that Decode never panics, and that whatever it accepts
// survives an Encode/Decode round trip unchanged.
func FuzzDecode(f *testing.F) {
	sample, meta := sampleTensors()
	var buf bytes.Buffer
	if err := Encode(&buf, sample, meta); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(build(`{}`, nil))
	f.Add(build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 4)))
	f.Add(build(`{"a":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"b":{"dtype":"F64","shape":[0],"data_offsets":[8,8]}}`, make([]byte, 8)))
	f.Add(build(`{"__metadata__":{"k":"v"},"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}`, make([]byte, 2)))
	f.Add(build(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(build(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Decode(data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error: %q", err)
			}
			return
		}
		var out bytes.Buffer
		if err := Encode(&out, file.Tensors, file.Metadata); err != nil {
			t.Fatalf("Encode of a decoded file: %v", err)
		}
		again, err := Decode(out.Bytes())
		if err != nil {
			t.Fatalf("Decode of re-encoded file: %v", err)
		}
		if err := sameTensors(file.Tensors, again.Tensors); err != nil {
			t.Fatal(err)
		}
		if !sameMetadata(file.Metadata, again.Metadata) {
			t.Fatalf("metadata %v != %v", file.Metadata, again.Metadata)
		}
	})
}

func benchmarkFile(b *testing.B) ([]byte, int64) {
	// 4M float32 + 1M float64 + 1M int64: 32 MiB of data.
	f32 := make([]float32, 4<<20)
	f64 := make([]float64, 1<<20)
	i64 := make([]int64, 1<<20)
	for i := range f32 {
		f32[i] = float32(i)
	}
	tensors := []Tensor{
		{Name: "f32", Shape: []int{4096, 1024}, Data: f32},
		{Name: "f64", Shape: []int{1 << 20}, Data: f64},
		{Name: "i64", Shape: []int{1024, 1024}, Data: i64},
	}
	data := encode(b, tensors, nil)
	return data, int64(len(data))
}

func BenchmarkEncode(b *testing.B) {
	data, size := benchmarkFile(b)
	f, err := Decode(data)
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	buf.Grow(len(data))
	b.SetBytes(size)
	for b.Loop() {
		buf.Reset()
		if err := Encode(&buf, f.Tensors, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	data, size := benchmarkFile(b)
	b.SetBytes(size)
	for b.Loop() {
		if _, err := Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}

func TestChecksum(t *testing.T) {
	sample, meta := sampleTensors()
	data := encode(t, sample, meta)
	n := binary.LittleEndian.Uint64(data)
	dataStart := int(8 + n)

	f, err := Decode(data)
	if err != nil {
		t.Fatalf("unmodified file: %v", err)
	}
	if _, ok := f.Metadata[ChecksumKey]; ok {
		t.Errorf("decoded metadata holds %s: %v", ChecksumKey, f.Metadata)
	}

	// Every single flipped bit of the data section is caught, whatever the
	// tensor or the bit (a low mantissa bit or an exponent bit alike).
	for i := dataStart; i < len(data); i++ {
		for bit := range 8 {
			bad := bytes.Clone(data)
			bad[i] ^= 1 << bit
			_, err := Decode(bad)
			if err == nil || !strings.Contains(err.Error(), "data checksum mismatch (file corrupt)") {
				t.Fatalf("bit %d of data byte %d flipped: err = %v, want a checksum mismatch", bit, i-dataStart, err)
			}
		}
	}

	// What a writer without checksums (Python's) produces still loads.
	noSum := build(`{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, []byte{0, 0, 0x80, 0x3f})
	if f, err := Decode(noSum); err != nil || f.Tensors[0].Data.([]float32)[0] != 1 {
		t.Errorf("file without a checksum: %v", err)
	}

	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"checksum not hex", build(`{"__metadata__":{"data_crc32c":"xyz"}}`, nil), `metadata data_crc32c is "xyz", want 8 hex digits`},
		{"checksum too short", build(`{"__metadata__":{"data_crc32c":"0"}}`, nil), "want 8 hex digits"},
		{"checksum of other data", build(`{"__metadata__":{"data_crc32c":"00000000"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, []byte{1, 2, 3, 4}), "data checksum mismatch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.file)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}

	if err := Encode(io.Discard, sample, map[string]string{ChecksumKey: "00000000"}); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Errorf("Encode with metadata %s: err = %v, want reserved", ChecksumKey, err)
	}

	// ReadFile names the file.
	path := filepath.Join(t.TempDir(), "checkpoint.safetensors")
	bad := bytes.Clone(data)
	bad[len(bad)-1] ^= 0x40
	if err := os.WriteFile(path, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(path); err == nil || !strings.HasPrefix(err.Error(), path+": data checksum mismatch (file corrupt)") {
		t.Errorf("ReadFile of a corrupt file: %v", err)
	}
}

// TestDecodeBoundsCraftedHeaders checks that headers claiming too much are
// refused at the bound, and the huge one in bounded time and memory: the
// old decoder read a header with millions of dimensions into memory in full
// (6 GB and 23 s for one of 52 million) before refusing it.
func TestDecodeBoundsCraftedHeaders(t *testing.T) {
	manyDims := func(n int) []byte {
		var b strings.Builder
		b.WriteString(`{"a":{"dtype":"F32","shape":[`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteByte('1')
		}
		b.WriteString(`],"data_offsets":[0,4]}}`)
		return build(b.String(), make([]byte, 4))
	}
	manyTensors := func(n int) []byte {
		var b strings.Builder
		b.WriteByte('{')
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}`, i)
		}
		b.WriteByte('}')
		return build(b.String(), nil)
	}
	manyMeta := func(n int) []byte {
		var b strings.Builder
		b.WriteString(`{"__metadata__":{`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"k%d":""`, i)
		}
		b.WriteString(`}}`)
		return build(b.String(), nil)
	}
	manyFields := func(n int) []byte {
		var b strings.Builder
		b.WriteString(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]`)
		for i := range n {
			fmt.Fprintf(&b, `,"x%d":0`, i)
		}
		b.WriteString(`}}`)
		return build(b.String(), make([]byte, 4))
	}

	// The limits themselves are accepted (MaxTensors is not tried: it
	// takes half a second).
	for name, file := range map[string][]byte{
		"MaxDims dimensions":          manyDims(MaxDims),
		"MaxMetadataEntries metadata": manyMeta(MaxMetadataEntries),
	} {
		if _, err := Decode(file); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	huge := manyDims(4 << 20) // an 8 MiB header
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"one dimension too many", manyDims(MaxDims + 1), `tensor "a": shape has more than 8 dimensions`},
		{"four million dimensions", huge, `tensor "a": shape has more than 8 dimensions`},
		{"one tensor too many", manyTensors(MaxTensors + 1), "more than 65536 tensors"},
		{"one metadata entry too many", manyMeta(MaxMetadataEntries + 1), `"__metadata__" has more than 1024 entries`},
		{"too many fields in an entry", manyFields(100), "header entry has more than 16 fields"},
		{"data_offsets too long", build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,4,4,4]}}`, make([]byte, 4)), "data_offsets must be [begin, end], found more than 2 values"},
		{"nested shape", build(`{"a":{"dtype":"F32","shape":[[1]],"data_offsets":[0,4]}}`, make([]byte, 4)), "shape holds an array"},
		{"duplicate field", build(`{"a":{"dtype":"F32","dtype":"F64","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), "duplicate field dtype"},
		{"duplicate metadata key", build(`{"__metadata__":{"k":"a","k":"b"}}`, nil), `duplicate key "k" in "__metadata__"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.file)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}

	// The huge header costs what reading a few dozen bytes of it costs.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	_, err := Decode(huge)
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Error("huge header decoded")
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Errorf("refusing a %d-byte header allocated %d bytes, want under 1 MiB", len(huge), alloc)
	}
	if elapsed > time.Second { // generous: it takes well under a millisecond
		t.Errorf("refusing a %d-byte header took %v", len(huge), elapsed)
	}
}

// TestReadFileChecksHeaderLengthFirst checks that ReadFile refuses a file
// whose header length is over the limit from its first 8 bytes, without
// reading the rest into memory (here 256 MiB, sparse on disk).
func TestReadFileChecksHeaderLengthFirst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "checkpoint.safetensors")
	prefix := binary.LittleEndian.AppendUint64(nil, 100_000_000)
	if err := os.WriteFile(path, prefix, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 256<<20); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := ReadFile(path)
	runtime.ReadMemStats(&after)
	if want := path + ": header length 100000000 is over the 16777216-byte limit"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("err = %v, want %s...", err, want)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Errorf("ReadFile allocated %d bytes to refuse the file", alloc)
	}
}

// One flipped bit anywhere in a metadata value (a checkpoint's step, say)
// is refused like one in the data; a file written by Encode reports that it
// was checksummed, one without the checksums (another writer's) loads and
// says it was not.
func TestMetadataChecksum(t *testing.T) {
	var buf bytes.Buffer
	meta := map[string]string{"step": "20", "optim_step": "20"}
	if err := Encode(&buf, []Tensor{{Name: "w", Shape: []int{2}, Data: []float32{1, 2}}}, meta); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	f, err := Decode(good)
	if err != nil || !f.Checksummed || !sameMetadata(f.Metadata, meta) {
		t.Fatalf("Decode of Encode's file: %v, checksummed %v, metadata %v", err, f != nil && f.Checksummed, f)
	}
	i := bytes.Index(good, []byte(`"optim_step":"20"`)) + len(`"optim_step":"`)
	bad := bytes.Clone(good)
	bad[i] ^= 1 // "20" -> "30"
	if _, err := Decode(bad); err == nil || !strings.Contains(err.Error(), "metadata checksum mismatch") {
		t.Errorf("a flipped bit in a metadata value: err = %v", err)
	}
	plain := build(`{"__metadata__":{"step":"1"},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, []byte{0, 0, 128, 63})
	if f, err := Decode(plain); err != nil || f.Checksummed {
		t.Errorf("a file without checksums: err %v, checksummed %v", err, f != nil && f.Checksummed)
	}
}
