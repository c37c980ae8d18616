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
//
// Encode records a CRC-32C of the data section in the metadata (ChecksumKey)
// and Decode verifies it, so that a flipped bit is an error rather than a
// weight silently turned into 2e37; files without it (Python's) still load.
// Decode also bounds what a header may claim (MaxHeaderSize, MaxTensors,
// MaxDims, MaxMetadataEntries) and checks each tensor's shape against its
// byte range before allocating anything for it, so a crafted header costs
// time and memory in proportion to the few bytes read before the bound it
// breaks, never to the sizes it claims.
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
	"math/bits"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/attnlab/attnlab/internal/atomicfile"
)

// The bounds Decode enforces before it allocates anything proportional to
// what a header claims, so that a crafted or corrupt file is refused at
// once, in bounded time and memory. Real files stay far inside them: a
// checkpoint of this tool holds three tensors per parameter of at most 4
// dimensions, and a large Hugging Face shard holds a few thousand tensors.
const (
	// MaxHeaderSize is the largest header, in bytes: room for MaxTensors
	// entries of 256 bytes. A larger declared length means the file is
	// corrupt or not a safetensors file. (Python's safetensors allows
	// 100 MB, but a header that size within the other bounds could only be
	// padding or ignored fields, and would cost seconds to refuse.)
	MaxHeaderSize = 16 << 20
	// MaxTensors is the most tensors a file may hold.
	MaxTensors = 1 << 16
	// MaxDims is the most dimensions a tensor may have.
	MaxDims = 8
	// MaxMetadataEntries is the most "__metadata__" keys a file may have.
	MaxMetadataEntries = 1 << 10
)

// metadataKey is the reserved header key holding the string metadata.
const metadataKey = "__metadata__"

// ChecksumKey is the metadata key under which Encode records the CRC-32C
// (Castagnoli) of the data section, as 8 lower-case hex digits, and which
// Decode verifies when present. CRC-32C rather than a cryptographic hash:
// the threat is corruption (a flipped bit on disk or in transit, a partial
// copy), not forgery (whoever can edit the data can edit the checksum
// too); CRC-32C catches every single-bit error and every burst of up to 32
// bits, misses random damage with probability 2^-32, and runs at several
// GB/s with the CPU's CRC instructions, so checking a checkpoint costs
// next to nothing next to reading it.
const ChecksumKey = "data_crc32c"

// MetadataChecksumKey is the metadata key under which Encode records the
// CRC-32C of the other metadata entries (sorted by key, each key and value
// preceded by its length as a uvarint; both checksum keys left out), which
// Decode verifies when present: a checkpoint's step or optimizer step lives
// there, and one flipped bit in it must not load silently either.
const MetadataChecksumKey = "metadata_crc32c"

// metadataChecksum is the CRC-32C of metadata's entries as
// MetadataChecksumKey describes.
func metadataChecksum(metadata map[string]string) uint32 {
	keys := make([]string, 0, len(metadata))
	for k := range metadata {
		if k != ChecksumKey && k != MetadataChecksumKey {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b []byte
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(metadata[k])))
		b = append(b, metadata[k]...)
	}
	return crc32.Checksum(b, castagnoli)
}

// castagnoli is the CRC-32C table.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

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
// when the file has none. It never holds ChecksumKey: Decode verifies and
// removes it, and Encode writes it afresh.
type File struct {
	Tensors  []Tensor
	Metadata map[string]string
	// Checksummed reports that the file carried both checksums (data and
	// metadata) and they matched; a file without them (an older writer,
	// Python's) loads with Checksummed false.
	Checksummed bool
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
// to w in safetensors format, adding to the metadata the checksum of the
// data section under ChecksumKey. It checks every tensor before writing
// anything: names must be unique, valid UTF-8 and not "__metadata__", each
// Data must have exactly as many elements as its Shape describes, and
// metadata must not hold ChecksumKey itself.
func Encode(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	for _, k := range []string{ChecksumKey, MetadataChecksumKey} {
		if _, ok := metadata[k]; ok {
			return fmt.Errorf("metadata key %q is reserved: Encode writes the checksum itself", k)
		}
	}
	// The header, written first, holds the checksum of the data after it:
	// one pass over the data to checksum it, another to write it.
	buf := make([]byte, 64<<10)
	sum := crc32.New(castagnoli)
	for _, t := range tensors {
		writeData(sum, buf, t.Data) // a hash.Hash never fails to write
	}
	meta := make(map[string]string, len(metadata)+1)
	for k, v := range metadata {
		meta[k] = v
	}
	meta[ChecksumKey] = fmt.Sprintf("%08x", sum.Sum32())
	meta[MetadataChecksumKey] = fmt.Sprintf("%08x", metadataChecksum(metadata))
	header, err := encodeHeader(tensors, meta)
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

	// Refuse what Decode would refuse, rather than write a file that
	// cannot be read back.
	if len(tensors) > MaxTensors {
		return nil, fmt.Errorf("%d tensors, more than the %d a file may hold", len(tensors), MaxTensors)
	}
	if len(metadata) > MaxMetadataEntries {
		return nil, fmt.Errorf("%d metadata entries (with the checksum), more than the %d a file may hold", len(metadata), MaxMetadataEntries)
	}
	seen := make(map[string]bool, len(tensors))
	var offset uint64
	for _, t := range tensors {
		if len(t.Shape) > MaxDims {
			return nil, fmt.Errorf("tensor %q: shape %v has more than %d dimensions", t.Name, t.Shape, MaxDims)
		}
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
	if err := checkHeaderLength(n); err != nil {
		return nil, err
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

	if err := verifyChecksum(metadata, body); err != nil {
		return nil, err
	}
	_, hasData := metadata[ChecksumKey]
	_, hasMeta := metadata[MetadataChecksumKey]
	delete(metadata, ChecksumKey)
	delete(metadata, MetadataChecksumKey)
	if len(metadata) == 0 {
		metadata = nil
	}

	f := &File{Tensors: make([]Tensor, len(entries)), Metadata: metadata, Checksummed: hasData && hasMeta}
	for i, e := range entries {
		f.Tensors[i] = Tensor{Name: e.name, Shape: e.shape, Data: decodeData(e.dt, e.count, body[e.begin:e.end])}
	}
	return f, nil
}

// verifyChecksum checks body, the data section, against the checksum the
// metadata records under ChecksumKey. A file without one (written before
// checksums, or by another writer such as Python's) passes.
func verifyChecksum(metadata map[string]string, body []byte) error {
	if err := verifyMetadataChecksum(metadata); err != nil {
		return err
	}
	want, ok := metadata[ChecksumKey]
	if !ok {
		return nil
	}
	w, err := strconv.ParseUint(want, 16, 32)
	if err != nil || len(want) != 8 {
		return fmt.Errorf("invalid header: metadata %s is %q, want 8 hex digits", ChecksumKey, want)
	}
	if got := crc32.Checksum(body, castagnoli); got != uint32(w) {
		return fmt.Errorf("data checksum mismatch (file corrupt); the header records CRC-32C %08x, the %d data bytes give %08x", w, len(body), got)
	}
	return nil
}

// verifyMetadataChecksum checks the metadata entries against the checksum
// recorded under MetadataChecksumKey, when there is one.
func verifyMetadataChecksum(metadata map[string]string) error {
	want, ok := metadata[MetadataChecksumKey]
	if !ok {
		return nil
	}
	w, err := strconv.ParseUint(want, 16, 32)
	if err != nil || len(want) != 8 {
		return fmt.Errorf("invalid header: metadata %s is %q, want 8 hex digits", MetadataChecksumKey, want)
	}
	if got := metadataChecksum(metadata); got != uint32(w) {
		return fmt.Errorf("metadata checksum mismatch (file corrupt); the header records CRC-32C %08x, the metadata gives %08x", w, got)
	}
	return nil
}

// checkHeaderLength refuses a header length over MaxHeaderSize.
func checkHeaderLength(n uint64) error {
	if n > MaxHeaderSize {
		return fmt.Errorf("header length %d is over the %d-byte limit: corrupt, or not a safetensors file", n, MaxHeaderSize)
	}
	return nil
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

// The header is parsed as a stream of JSON tokens, checking each bound as it
// goes, so that a crafted header (a shape of millions of dimensions, millions
// of tensors or metadata keys) is refused after reading a few bytes past the
// bound, instead of after decoding all of it into memory.

// jsonKind names the JSON type of a token, as errors show it.
func jsonKind(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		if v == '[' {
			return "array"
		}
		return "object"
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "bool"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", tok)
}

// headerDecoder reads the header's tokens; every error it returns says
// "invalid header JSON".
type headerDecoder struct{ dec *json.Decoder }

func (d headerDecoder) token() (json.Token, error) {
	tok, err := d.dec.Token()
	if err != nil {
		return nil, fmt.Errorf("invalid header JSON: %v", err)
	}
	return tok, nil
}

// key reads the next object key (the decoder yields only string keys there).
func (d headerDecoder) key() (string, error) {
	tok, err := d.token()
	if err != nil {
		return "", err
	}
	k, ok := tok.(string)
	if !ok { // cannot happen: the decoder only yields string keys
		return "", errors.New("invalid header JSON: object key is not a string")
	}
	return k, nil
}

// skip reads and discards one value.
func (d headerDecoder) skip() error {
	var raw json.RawMessage
	if err := d.dec.Decode(&raw); err != nil {
		return fmt.Errorf("invalid header JSON: %v", err)
	}
	return nil
}

// parseHeader parses the JSON header and validates each entry on its own.
func parseHeader(header []byte) ([]entry, map[string]string, error) {
	if !utf8.Valid(header) {
		return nil, nil, errors.New("invalid header: not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(header))
	dec.UseNumber() // numbers as written, for exact integer checks
	d := headerDecoder{dec}
	tok, err := d.token()
	if err != nil {
		return nil, nil, err
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
		name, err := d.key()
		if err != nil {
			return nil, nil, err
		}
		if seen[name] {
			return nil, nil, fmt.Errorf("invalid header: duplicate key %q", name)
		}
		seen[name] = true
		if name == metadataKey {
			if metadata, err = parseMetadata(d); err != nil {
				return nil, nil, err
			}
			continue
		}
		if len(entries) == MaxTensors {
			return nil, nil, fmt.Errorf("invalid header: more than %d tensors", MaxTensors)
		}
		e, err := parseEntry(d, name)
		if err != nil {
			return nil, nil, err
		}
		entries = append(entries, e)
	}
	if _, err := d.token(); err != nil { // the closing '}'
		return nil, nil, err
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

// parseMetadata reads the value of "__metadata__": null or an object of at
// most MaxMetadataEntries string keys to string values.
func parseMetadata(d headerDecoder) (map[string]string, error) {
	bad := fmt.Errorf("invalid header: %q must be an object of string to string", metadataKey)
	tok, err := d.token()
	if err != nil {
		return nil, err
	}
	if tok == nil {
		return nil, nil
	}
	if tok != json.Delim('{') {
		return nil, bad
	}
	m := make(map[string]string)
	for d.dec.More() {
		k, err := d.key()
		if err != nil {
			return nil, err
		}
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("invalid header: duplicate key %q in %q", k, metadataKey)
		}
		if len(m) == MaxMetadataEntries {
			return nil, fmt.Errorf("invalid header: %q has more than %d entries", metadataKey, MaxMetadataEntries)
		}
		tok, err := d.token()
		if err != nil {
			return nil, err
		}
		v, ok := tok.(string)
		if !ok {
			return nil, bad
		}
		m[k] = v
	}
	if _, err := d.token(); err != nil { // the closing '}'
		return nil, err
	}
	return m, nil
}

// maxEntryFields bounds the fields of one tensor's header entry: dtype,
// shape and data_offsets, plus a few unknown ones (which are ignored).
const maxEntryFields = 16

// parseEntry reads one tensor's header entry and validates it: dtype,
// shape, offsets and that the byte count matches.
func parseEntry(d headerDecoder, name string) (entry, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("tensor %q: %s", name, fmt.Sprintf(format, args...))
	}
	tok, err := d.token()
	if err != nil {
		return entry{}, err
	}
	if tok != json.Delim('{') {
		return entry{}, bad("header entry must be an object, found %s", jsonKind(tok))
	}
	var (
		e                                 = entry{name: name}
		dtypeName                         string
		shape, offsets                    []json.Number
		haveDtype, haveShape, haveOffsets bool
		fields                            int
	)
	for d.dec.More() {
		field, err := d.key()
		if err != nil {
			return entry{}, err
		}
		if fields++; fields > maxEntryFields {
			return entry{}, bad("header entry has more than %d fields", maxEntryFields)
		}
		switch field {
		case "dtype":
			if haveDtype {
				return entry{}, bad("duplicate field dtype")
			}
			haveDtype = true
			tok, err := d.token()
			if err != nil {
				return entry{}, err
			}
			s, ok := tok.(string)
			if !ok {
				return entry{}, bad("dtype has the wrong type (found %s)", jsonKind(tok))
			}
			dtypeName = s
		case "shape":
			if haveShape {
				return entry{}, bad("duplicate field shape")
			}
			haveShape = true
			shape, err = numberList(d, name, "shape", MaxDims)
			if errors.Is(err, errTooLong) {
				return entry{}, bad("shape has more than %d dimensions (the limit)", MaxDims)
			}
			if err != nil {
				return entry{}, err
			}
		case "data_offsets":
			if haveOffsets {
				return entry{}, bad("duplicate field data_offsets")
			}
			haveOffsets = true
			offsets, err = numberList(d, name, "data_offsets", 2)
			if errors.Is(err, errTooLong) {
				return entry{}, bad("data_offsets must be [begin, end], found more than 2 values")
			}
			if err != nil {
				return entry{}, err
			}
		default:
			if err := d.skip(); err != nil {
				return entry{}, err
			}
		}
	}
	if _, err := d.token(); err != nil { // the closing '}'
		return entry{}, err
	}
	switch {
	case !haveDtype:
		return entry{}, bad("missing dtype")
	case !haveShape:
		return entry{}, bad("missing shape")
	case !haveOffsets:
		return entry{}, bad("missing data_offsets")
	}
	dt, ok := dtypeByName(dtypeName)
	if !ok {
		return entry{}, bad("unsupported dtype %q (supported: F32, F64, I64)", dtypeName)
	}
	e.dt = dt

	count := uint64(1)
	for _, n := range shape {
		s := n.String()
		if strings.HasPrefix(s, "-") {
			return entry{}, bad("negative dimension %s in shape", s)
		}
		d, err := strconv.ParseUint(s, 10, 64)
		if err != nil || d > math.MaxInt {
			return entry{}, bad("shape dimension %s is not a non-negative integer that fits an int", s)
		}
		hi, lo := bits.Mul64(count, d)
		if hi != 0 || lo > math.MaxInt {
			return entry{}, bad("shape %s overflows", numbersString(shape))
		}
		count = lo
		e.shape = append(e.shape, int(d))
	}
	e.count = int(count)

	if len(offsets) != 2 {
		return entry{}, bad("data_offsets must be [begin, end], found %d values", len(offsets))
	}
	var offs [2]uint64
	for i, n := range offsets {
		v, err := strconv.ParseUint(n.String(), 10, 64)
		if err != nil {
			return entry{}, bad("data_offsets value %s is not a non-negative integer", n)
		}
		offs[i] = v
	}
	e.begin, e.end = offs[0], offs[1]
	if e.begin > e.end {
		return entry{}, bad("data_offsets [%d, %d] end before they begin", e.begin, e.end)
	}

	hi, want := bits.Mul64(count, dt.size)
	if hi != 0 {
		return entry{}, bad("shape %v of %s is too large", e.shape, dt.name)
	}
	if got := e.end - e.begin; got != want {
		return entry{}, bad("data_offsets [%d, %d] span %d bytes, but %s with shape %v needs %d (%d elements x %d bytes)",
			e.begin, e.end, got, dt.name, e.shape, want, count, dt.size)
	}
	return e, nil
}

// errTooLong is numberList's error for a list longer than its limit.
var errTooLong = errors.New("list too long")

// numberList reads the array of numbers field of tensor name, stopping
// with errTooLong as soon as it holds more than limit elements. A scalar
// element that is not a number is kept as its JSON text, for the caller's
// integer checks to reject with the value in the message.
func numberList(d headerDecoder, name, field string, limit int) ([]json.Number, error) {
	tok, err := d.token()
	if err != nil {
		return nil, err
	}
	if tok != json.Delim('[') {
		return nil, fmt.Errorf("tensor %q: %s has the wrong type (found %s)", name, field, jsonKind(tok))
	}
	var out []json.Number
	for d.dec.More() {
		if len(out) == limit {
			return nil, errTooLong
		}
		tok, err := d.token()
		if err != nil {
			return nil, err
		}
		switch v := tok.(type) {
		case json.Number:
			out = append(out, v)
		case string:
			out = append(out, json.Number(strconv.Quote(v)))
		case json.Delim:
			return nil, fmt.Errorf("tensor %q: %s holds an %s, want integers", name, field, jsonKind(v))
		default:
			out = append(out, json.Number(jsonKind(v)))
		}
	}
	if _, err := d.token(); err != nil { // the closing ']'
		return nil, err
	}
	return out, nil
}

func numbersString(ns []json.Number) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = n.String()
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
// with the path. A header length over MaxHeaderSize is refused before the
// rest of the file is read.
func ReadFile(path string) (*File, error) {
	pathErr := func(err error) error {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return fmt.Errorf("%s: %s: %w", path, pe.Op, pe.Err)
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	fh, err := os.Open(path)
	if err != nil {
		return nil, pathErr(err)
	}
	var prefix [8]byte
	_, err = io.ReadFull(fh, prefix[:])
	fh.Close()
	if err == nil {
		if err := checkHeaderLength(binary.LittleEndian.Uint64(prefix[:])); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, pathErr(err)
	}
	f, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}
