// Package safetensors reads and writes the safetensors tensor file format of
// Hugging Face, so that checkpoints saved by this tool open directly in Python
// with safetensors.torch.load_file (or safetensors.numpy.load_file), and
// tensors saved from Python can be loaded back here.
//
// A safetensors file is:
//
//	8 bytes   N, the header length, a little-endian uint64
//	N bytes   a JSON object (the header), padded with trailing spaces
//	rest      the data section: raw little-endian, row-major tensor data
//
// The header maps each tensor name to
//
//	{"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
//
// where the offsets are relative to the start of the data section, plus an
// optional "__metadata__" object of string keys to string values. Tensors are
// stored back to back without gaps, and the data section ends with the last
// one.
//
// Only the dtypes F32 ([]float32), F64 ([]float64) and I64 ([]int64) are
// supported. Encode writes tensors in the order given and pads the header so
// that the data section starts on an 8-byte boundary. Every tensor then starts
// 8-byte aligned unless a float32 tensor with an odd number of elements comes
// before a float64 or int64 one; readers accept such files, but putting the
// 8-byte dtypes first (as the Python writer does) keeps all data aligned. Decode validates the
// whole file and never panics, whatever its input; a file cut short gives an
// error containing "truncated".
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/bits"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/attnlab/attnlab/internal/atomicfile"
)

// MaxHeaderSize is the largest header Decode accepts. A larger declared
// length means the file is corrupt or not a safetensors file.
const MaxHeaderSize = 100 << 20

// metadataKey is the reserved header key holding the string metadata.
const metadataKey = "__metadata__"

// Tensor is one named array. Data is []float32, []float64 or []int64; its
// length must equal the product of Shape (a scalar has Shape nil/empty and 1
// element).
type Tensor struct {
	Name  string
	Shape []int
	Data  any
}

// File is a decoded safetensors file: tensors in file order, and metadata.
//
// File order is the order of the tensors in the data section. Metadata is nil
// when the file has none.
type File struct {
	Tensors  []Tensor
	Metadata map[string]string
}

// Get returns the tensor called name.
func (f *File) Get(name string) (Tensor, bool) {
	for _, t := range f.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return Tensor{}, false
}

// dtype describes one supported element type.
type dtype struct {
	name string
	size uint64 // bytes per element
}

var (
	dtypeF32 = dtype{"F32", 4}
	dtypeF64 = dtype{"F64", 8}
	dtypeI64 = dtype{"I64", 8}
)

func dtypeByName(name string) (dtype, bool) {
	switch name {
	case "F32":
		return dtypeF32, true
	case "F64":
		return dtypeF64, true
	case "I64":
		return dtypeI64, true
	}
	return dtype{}, false
}

// dataInfo returns the dtype of t.Data and its element count.
func dataInfo(data any) (dtype, int, error) {
	switch d := data.(type) {
	case []float32:
		return dtypeF32, len(d), nil
	case []float64:
		return dtypeF64, len(d), nil
	case []int64:
		return dtypeI64, len(d), nil
	case nil:
		return dtype{}, 0, errors.New("missing Data (want []float32, []float64 or []int64)")
	}
	return dtype{}, 0, fmt.Errorf("unsupported Data type %T (want []float32, []float64 or []int64)", data)
}

// Encode writes tensors, in the given order, and metadata (which may be nil)
// to w in safetensors format. It checks every tensor before writing anything:
// names must be unique, valid UTF-8 and not "__metadata__", and each Data
// must have exactly as many elements as its Shape describes.
func Encode(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	header, err := encodeHeader(tensors, metadata)
	if err != nil {
		return err
	}
	var prefix [8]byte
	binary.LittleEndian.PutUint64(prefix[:], uint64(len(header)))
	if _, err := w.Write(prefix[:]); err != nil {
		return err
	}
	if _, err := w.Write(header); err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	for _, t := range tensors {
		if err := writeData(w, buf, t.Data); err != nil {
			return err
		}
	}
	return nil
}

// encodeHeader validates tensors and metadata and returns the padded JSON
// header.
func encodeHeader(tensors []Tensor, metadata map[string]string) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	first := true
	if len(metadata) > 0 {
		keys := make([]string, 0, len(metadata))
		for k, v := range metadata {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return nil, fmt.Errorf("metadata %q: key and value must be valid UTF-8", k)
			}
			keys = append(keys, k)
		}
		slices.Sort(keys)
		appendString(&b, metadataKey)
		b.WriteString(":{")
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			appendString(&b, k)
			b.WriteByte(':')
			appendString(&b, metadata[k])
		}
		b.WriteByte('}')
		first = false
	}

	seen := make(map[string]bool, len(tensors))
	var offset uint64
	for _, t := range tensors {
		if t.Name == metadataKey {
			return nil, fmt.Errorf("tensor name %q is reserved", metadataKey)
		}
		if !utf8.ValidString(t.Name) {
			return nil, fmt.Errorf("tensor name %q is not valid UTF-8", t.Name)
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("duplicate tensor name %q", t.Name)
		}
		seen[t.Name] = true
		dt, n, err := dataInfo(t.Data)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %v", t.Name, err)
		}
		want := uint64(1)
		for _, d := range t.Shape {
			if d < 0 {
				return nil, fmt.Errorf("tensor %q: negative dimension in shape %v", t.Name, t.Shape)
			}
			hi, lo := bits.Mul64(want, uint64(d))
			if hi != 0 {
				return nil, fmt.Errorf("tensor %q: shape %v overflows", t.Name, t.Shape)
			}
			want = lo
		}
		if want != uint64(n) {
			return nil, fmt.Errorf("tensor %q: shape %v needs %d elements, Data has %d", t.Name, t.Shape, want, n)
		}
		size := uint64(n) * dt.size

		if !first {
			b.WriteByte(',')
		}
		first = false
		appendString(&b, t.Name)
		b.WriteString(`:{"dtype":"`)
		b.WriteString(dt.name)
		b.WriteString(`","shape":[`)
		for i, d := range t.Shape {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Itoa(d))
		}
		b.WriteString(`],"data_offsets":[`)
		b.WriteString(strconv.FormatUint(offset, 10))
		b.WriteByte(',')
		b.WriteString(strconv.FormatUint(offset+size, 10))
		b.WriteString("]}")
		offset += size
	}
	b.WriteByte('}')
	// Pad so that the data section starts 8-byte aligned.
	for (8+b.Len())%8 != 0 {
		b.WriteByte(' ')
	}
	if b.Len() > MaxHeaderSize {
		return nil, fmt.Errorf("header is %d bytes, more than the %d byte limit", b.Len(), MaxHeaderSize)
	}
	return b.Bytes(), nil
}

// appendString appends s as a JSON string, without HTML escaping.
func appendString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	enc.Encode(s) // cannot fail for a string
	// Drop the newline Encode adds.
	b.Truncate(b.Len() - 1)
}

// writeData writes the raw little-endian bytes of data, using buf as scratch.
func writeData(w io.Writer, buf []byte, data any) error {
	switch d := data.(type) {
	case []float32:
		for len(d) > 0 {
			n := min(len(d), len(buf)/4)
			for i, v := range d[:n] {
				binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
			}
			if _, err := w.Write(buf[:4*n]); err != nil {
				return err
			}
			d = d[n:]
		}
	case []float64:
		for len(d) > 0 {
			n := min(len(d), len(buf)/8)
			for i, v := range d[:n] {
				binary.LittleEndian.PutUint64(buf[8*i:], math.Float64bits(v))
			}
			if _, err := w.Write(buf[:8*n]); err != nil {
				return err
			}
			d = d[n:]
		}
	case []int64:
		for len(d) > 0 {
			n := min(len(d), len(buf)/8)
			for i, v := range d[:n] {
				binary.LittleEndian.PutUint64(buf[8*i:], uint64(v))
			}
			if _, err := w.Write(buf[:8*n]); err != nil {
				return err
			}
			d = d[n:]
		}
	}
	return nil
}

// entry is one tensor's header entry after validation.
type entry struct {
	name       string
	dt         dtype
	shape      []int
	count      int
	begin, end uint64
}

// Decode parses and validates a complete safetensors file held in data. The
// returned tensors do not share memory with data; a scalar comes back with a
// nil Shape. Errors are one line and say what is wrong.
func Decode(data []byte) (*File, error) {
	if len(data) < 8 {
		return nil, fmt.Errorf("truncated: file is %d bytes, too short for the 8-byte header length", len(data))
	}
	n := binary.LittleEndian.Uint64(data)
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("header length %d is absurd (limit %d): not a safetensors file, or corrupt", n, MaxHeaderSize)
	}
	if n > uint64(len(data)-8) {
		return nil, fmt.Errorf("truncated: header declares %d header bytes, file has %d after the length prefix", n, len(data)-8)
	}
	if n == 0 {
		return nil, errors.New("invalid header: header length is 0")
	}
	header := data[8 : 8+n]
	body := data[8+n:]

	entries, metadata, err := parseHeader(header)
	if err != nil {
		return nil, err
	}

	// File order is data order. Sorting by (begin, end) also places
	// zero-sized tensors before a tensor starting at the same offset.
	slices.SortStableFunc(entries, func(a, b entry) int {
		if a.begin != b.begin {
			if a.begin < b.begin {
				return -1
			}
			return 1
		}
		if a.end != b.end {
			if a.end < b.end {
				return -1
			}
			return 1
		}
		return 0
	})
	var next uint64
	for i, e := range entries {
		switch {
		case e.begin < next:
			return nil, fmt.Errorf("tensor %q: data_offsets [%d, %d] overlap tensor %q, which ends at %d", e.name, e.begin, e.end, entries[i-1].name, next)
		case e.begin > next && i == 0:
			return nil, fmt.Errorf("tensor %q: data_offsets [%d, %d]: data must start at offset 0", e.name, e.begin, e.end)
		case e.begin > next:
			return nil, fmt.Errorf("tensor %q: data_offsets [%d, %d] leave a gap of %d bytes after tensor %q", e.name, e.begin, e.end, e.begin-next, entries[i-1].name)
		}
		next = e.end
	}
	if next > uint64(len(body)) {
		return nil, fmt.Errorf("truncated: header declares %d data bytes, file has %d", next, len(body))
	}
	if next < uint64(len(body)) {
		return nil, fmt.Errorf("%d bytes of trailing data after the last tensor (header declares %d data bytes, file has %d)", uint64(len(body))-next, next, len(body))
	}

	f := &File{Tensors: make([]Tensor, len(entries)), Metadata: metadata}
	for i, e := range entries {
		f.Tensors[i] = Tensor{Name: e.name, Shape: e.shape, Data: decodeData(e.dt, e.count, body[e.begin:e.end])}
	}
	return f, nil
}

// decodeData converts raw little-endian bytes (exactly count elements) to a
// Go slice.
func decodeData(dt dtype, count int, b []byte) any {
	switch dt {
	case dtypeF32:
		out := make([]float32, count)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		return out
	case dtypeF64:
		out := make([]float64, count)
		for i := range out {
			out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
		}
		return out
	default:
		out := make([]int64, count)
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
		}
		return out
	}
}

// rawEntry is a tensor's header entry as it appears in the JSON. Numbers are
// kept raw so that they can be checked with precise error messages.
type rawEntry struct {
	Dtype       *string            `json:"dtype"`
	Shape       *[]json.RawMessage `json:"shape"`
	DataOffsets *[]json.RawMessage `json:"data_offsets"`
}

// parseHeader parses the JSON header and validates each entry on its own.
func parseHeader(header []byte) ([]entry, map[string]string, error) {
	if !utf8.Valid(header) {
		return nil, nil, errors.New("invalid header: not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(header))
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, fmt.Errorf("invalid header JSON: %v", err)
	}
	if tok != json.Delim('{') {
		return nil, nil, fmt.Errorf("invalid header: want a JSON object, found %s", describeToken(tok))
	}
	var (
		entries  []entry
		metadata map[string]string
		seen     = make(map[string]bool)
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("invalid header JSON: %v", err)
		}
		name, ok := tok.(string)
		if !ok { // cannot happen: the decoder only yields string keys
			return nil, nil, errors.New("invalid header JSON: object key is not a string")
		}
		if seen[name] {
			return nil, nil, fmt.Errorf("invalid header: duplicate key %q", name)
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, fmt.Errorf("invalid header JSON: %v", err)
		}
		if name == metadataKey {
			if err := json.Unmarshal(raw, &metadata); err != nil {
				return nil, nil, fmt.Errorf("invalid header: %q must be an object of string to string", metadataKey)
			}
			continue
		}
		e, err := parseEntry(name, raw)
		if err != nil {
			return nil, nil, err
		}
		entries = append(entries, e)
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, nil, fmt.Errorf("invalid header JSON: %v", err)
	}
	if tok, err := dec.Token(); err != io.EOF {
		if err != nil {
			return nil, nil, fmt.Errorf("invalid header JSON after the object: %v", err)
		}
		return nil, nil, fmt.Errorf("invalid header: unexpected %s after the JSON object", describeToken(tok))
	}
	return entries, metadata, nil
}

func describeToken(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		return strconv.Quote(v.String())
	case string:
		return "string " + strconv.Quote(v)
	case nil:
		return "null"
	}
	return fmt.Sprintf("%v", tok)
}

// parseEntry validates one tensor's header entry: dtype, shape, offsets and
// that the byte count matches.
func parseEntry(name string, raw json.RawMessage) (entry, error) {
	var r rawEntry
	if err := json.Unmarshal(raw, &r); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			if ute.Field == "" {
				return entry{}, fmt.Errorf("tensor %q: header entry must be an object, found %s", name, ute.Value)
			}
			return entry{}, fmt.Errorf("tensor %q: %s has the wrong type (found %s)", name, ute.Field, ute.Value)
		}
		return entry{}, fmt.Errorf("tensor %q: invalid header entry: %v", name, err)
	}
	switch {
	case r.Dtype == nil:
		return entry{}, fmt.Errorf("tensor %q: missing dtype", name)
	case r.Shape == nil:
		return entry{}, fmt.Errorf("tensor %q: missing shape", name)
	case r.DataOffsets == nil:
		return entry{}, fmt.Errorf("tensor %q: missing data_offsets", name)
	}
	dt, ok := dtypeByName(*r.Dtype)
	if !ok {
		return entry{}, fmt.Errorf("tensor %q: unsupported dtype %q (supported: F32, F64, I64)", name, *r.Dtype)
	}

	e := entry{name: name, dt: dt}
	count := uint64(1)
	for _, rd := range *r.Shape {
		s := strings.TrimSpace(string(rd))
		if strings.HasPrefix(s, "-") {
			return entry{}, fmt.Errorf("tensor %q: negative dimension %s in shape", name, s)
		}
		d, err := strconv.ParseUint(s, 10, 64)
		if err != nil || d > math.MaxInt {
			return entry{}, fmt.Errorf("tensor %q: shape dimension %s is not a non-negative integer that fits an int", name, s)
		}
		hi, lo := bits.Mul64(count, d)
		if hi != 0 || lo > math.MaxInt {
			return entry{}, fmt.Errorf("tensor %q: shape %s overflows", name, shapeString(*r.Shape))
		}
		count = lo
		e.shape = append(e.shape, int(d))
	}
	e.count = int(count)

	if len(*r.DataOffsets) != 2 {
		return entry{}, fmt.Errorf("tensor %q: data_offsets must be [begin, end], found %d values", name, len(*r.DataOffsets))
	}
	var offs [2]uint64
	for i, ro := range *r.DataOffsets {
		s := strings.TrimSpace(string(ro))
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return entry{}, fmt.Errorf("tensor %q: data_offsets value %s is not a non-negative integer", name, s)
		}
		offs[i] = v
	}
	e.begin, e.end = offs[0], offs[1]
	if e.begin > e.end {
		return entry{}, fmt.Errorf("tensor %q: data_offsets [%d, %d] end before they begin", name, e.begin, e.end)
	}

	hi, want := bits.Mul64(count, dt.size)
	if hi != 0 {
		return entry{}, fmt.Errorf("tensor %q: shape %v of %s is too large", name, e.shape, dt.name)
	}
	if got := e.end - e.begin; got != want {
		return entry{}, fmt.Errorf("tensor %q: data_offsets [%d, %d] span %d bytes, but %s with shape %v needs %d (%d elements x %d bytes)",
			name, e.begin, e.end, got, dt.name, e.shape, want, count, dt.size)
	}
	return e, nil
}

func shapeString(dims []json.RawMessage) string {
	parts := make([]string, len(dims))
	for i, d := range dims {
		parts[i] = strings.TrimSpace(string(d))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// WriteFile writes tensors and metadata to path in safetensors format,
// atomically: a reader or a crash sees the old file or the whole new one.
func WriteFile(path string, tensors []Tensor, metadata map[string]string) error {
	return atomicfile.WriteFile(path, 0o644, func(w io.Writer) error {
		return Encode(w, tensors, metadata)
	})
}

// ReadFile reads and decodes the safetensors file at path. Its errors start
// with the path.
func ReadFile(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s: %s: %w", path, pe.Op, pe.Err)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}
