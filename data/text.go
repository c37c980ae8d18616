package data

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/attnlab/attnlab/config"
)

// text: a byte- or character-level language model on a text file or a folder
// of them; by default on the Go standard library's own source.
//
// # Corpus
//
// task.path names a file or a folder. A file must be text (no NUL byte in
// its first 8000 bytes). A folder contributes its regular files
// (symbolic links are not followed), skipping names that start with "." (so
// .git and editor files are left out), files with a NUL byte in their first
// 8000 bytes (binary), empty files, and, when task.ext lists extensions
// (".go,.md"), every file whose name ends in none of them. An empty path
// means the .go files of the Go standard library under GOROOT/src (GOROOT
// from runtime.GOROOT, else from `go env GOROOT`), without testdata folders
// and _test.go files, and without files marked generated ("// Code
// generated ... DO NOT EDIT."): code people wrote, not fixtures, test
// vectors or tables. That corpus changes with the Go installation, so runs
// on it are reproducible for one Go version.
//
// Files are read in the order of the FNV-1a hash of their slash-separated
// path relative to the folder (ties by path), until task.max_bytes have been
// read; the last file is cut at a character boundary. A single file is read
// from its start. With the hash order a cap takes a deterministic sample of
// the whole tree rather than its alphabetically first packages, and
// changing the cap adds or removes files without moving any file between
// train and held-out.
//
// # Tokens
//
// task.tokenizer byte: the ids are the bytes, vocab 256. char: the ids index
// the distinct characters (Unicode code points) of the corpus read, sorted by
// code point; one more id, the last, stands for anything else (a character
// absent from the corpus, or a byte that is not valid UTF-8), and decodes to
// U+FFFD. The character vocabulary depends on the corpus, which can change
// between training and sampling; train saves the tokenizer (Tokenizer.Spec)
// in every checkpoint's metadata, sampling rebuilds it from there without
// reading the corpus, and resuming or evaluating refuses a checkpoint whose
// tokenizer differs from the task's.
//
// # Streams and examples
//
// The train and held-out streams never share text because they read
// different parts of the corpus; the hash split of the other tasks (see the
// package doc) is not used. A folder is split by file: a file is held out
// when the SplitMix64 scramble of the FNV-1a hash of its relative path is 0
// modulo 10 (about 1 file in 10, independent of the seed, so every seed of
// an experiment is evaluated on the same files). If no file is held out,
// the file with the smallest scrambled hash is; if every file is, the one
// with the largest is trained on. A single file, or a folder whose file split
// leaves a part shorter than seq_len+1 tokens, is split by position instead:
// the last tenth of the tokens (of all files concatenated in reading order)
// is held out. Each part is the concatenation of its files' tokens in
// reading order, so a window may run from one file into the next of the
// same part, never into the other part.
//
// Example i of stream s is the window of seq_len+1 tokens starting at an
// offset drawn uniformly from the part's valid starts by a PCG generator
// seeded with (seed, mix(s, i, 0)); the inputs are its first seq_len tokens,
// the targets the next token at every position, and every position is
// scored. The corpus is read once, by New; Fill only reads it, so it may run
// concurrently.

const (
	tokByte = "byte"
	tokChar = "char"

	// tokenizerFormat marks a Tokenizer.Spec.
	tokenizerFormat = "attnlab-tokenizer-1"

	textHeldOutBuckets = 10      // 1 file in 10, or the last tenth, is held out
	textSplitSalt      = 0x7e57  // mixed into the path hash that splits files, so it is not the hash that orders them
	binarySniff        = 8000    // leading bytes checked for a NUL
	defaultMaxBytes    = 8 << 20 // 8 MiB
	unknownRune        = '\uFFFD'
)

func init() {
	Register("text", "next-token prediction on a text file or folder, by byte or by character (language model; default corpus: the Go standard library's source)",
		[]config.OptionSpec{
			{Name: "path", Kind: config.String, Default: "", Help: "a text file or a folder of them; empty: the .go files of the Go standard library (GOROOT/src, no tests)"},
			{Name: "tokenizer", Kind: config.String, Default: tokByte, Help: "byte (vocab 256) or char (the corpus's distinct characters, sorted, plus one unknown id)"},
			{Name: "seq_len", Kind: config.Int, Default: 128, Help: "tokens per example; an example is a random window of seq_len+1 tokens"},
			{Name: "max_bytes", Kind: config.Int, Default: defaultMaxBytes, Help: "read at most this many bytes of the corpus, files in a fixed hashed order (0: all)"},
			{Name: "ext", Kind: config.String, Default: "", Help: "for a folder: comma-separated file extensions to read, e.g. .go,.md (empty: every text file; .go for the default corpus)"},
		}, newText)
}

// Tokenizer converts between text and the token ids of a task that reads
// text. The text task implements it; TokenizerOf finds it on a task.
type Tokenizer interface {
	Encode(text string) []int // never fails: what the vocabulary lacks becomes the unknown id
	Decode(ids []int) string  // the byte tokenizer returns the bytes as they are, valid UTF-8 or not
	Vocab() int
	// Spec is a self-contained text form of the tokenizer (JSON), from
	// which ParseTokenizer rebuilds it without the corpus.
	Spec() string
}

// TokenizerOf returns t's tokenizer, or nil if t's tokens are not text.
func TokenizerOf(t Task) Tokenizer {
	if tk, ok := t.(Tokenizer); ok {
		return tk
	}
	return nil
}

// ParseTokenizer rebuilds a tokenizer from its Spec.
func ParseTokenizer(spec string) (Tokenizer, error) {
	var s tokenizerSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		return nil, fmt.Errorf("tokenizer spec: %v", err)
	}
	if s.Format != tokenizerFormat {
		return nil, fmt.Errorf("tokenizer spec: unknown format %q", s.Format)
	}
	switch s.Kind {
	case tokByte:
		return &textTokenizer{kind: tokByte}, nil
	case tokChar:
		runes := []rune(s.Chars)
		if !slices.IsSorted(runes) || len(slices.Compact(slices.Clone(runes))) != len(runes) {
			return nil, fmt.Errorf("tokenizer spec: the characters are not sorted and distinct")
		}
		return newCharTokenizer(runes), nil
	}
	return nil, fmt.Errorf("tokenizer spec: unknown kind %q", s.Kind)
}

// Options resolves c's options against the specs of its kind, with defaults
// filled in, without building the task (which, for text, reads the corpus).
func Options(c config.Component) (config.Values, error) {
	_, opts, err := registry.Resolve("task", c)
	return opts, err
}

type tokenizerSpec struct {
	Format string `json:"format"`
	Kind   string `json:"kind"`
	Chars  string `json:"chars,omitempty"`
}

// textTokenizer is the byte or the char tokenizer. It is read-only once
// made, so safe for concurrent use.
type textTokenizer struct {
	kind  string
	chars []rune         // char: id -> character; id len(chars) is unknown
	index map[rune]int32 // char: character -> id
	ascii [utf8.RuneSelf]int32
}

func newCharTokenizer(chars []rune) *textTokenizer {
	t := &textTokenizer{kind: tokChar, chars: chars, index: make(map[rune]int32, len(chars))}
	unk := int32(len(chars))
	for i := range t.ascii {
		t.ascii[i] = unk
	}
	for i, r := range chars {
		t.index[r] = int32(i)
		if r < utf8.RuneSelf {
			t.ascii[r] = int32(i)
		}
	}
	return t
}

func (t *textTokenizer) Vocab() int {
	if t.kind == tokByte {
		return 256
	}
	return len(t.chars) + 1
}

func (t *textTokenizer) unknown() int32 { return int32(len(t.chars)) }

// id returns the char id of the character at the start of b and its width.
func (t *textTokenizer) id(b []byte) (int32, int) {
	if c := b[0]; c < utf8.RuneSelf {
		return t.ascii[c], 1
	}
	r, w := utf8.DecodeRune(b)
	if r == utf8.RuneError && w == 1 {
		return t.unknown(), 1
	}
	if id, ok := t.index[r]; ok {
		return id, w
	}
	return t.unknown(), w
}

func (t *textTokenizer) Encode(text string) []int {
	b := []byte(text)
	if t.kind == tokByte {
		ids := make([]int, len(b))
		for i, c := range b {
			ids[i] = int(c)
		}
		return ids
	}
	ids := make([]int, 0, len(b))
	for len(b) > 0 {
		id, w := t.id(b)
		ids = append(ids, int(id))
		b = b[w:]
	}
	return ids
}

func (t *textTokenizer) Decode(ids []int) string {
	var sb strings.Builder
	for _, id := range ids {
		switch {
		case t.kind == tokByte && id >= 0 && id < 256:
			sb.WriteByte(byte(id))
		case t.kind == tokChar && id >= 0 && id < len(t.chars):
			sb.WriteRune(t.chars[id])
		default:
			sb.WriteRune(unknownRune)
		}
	}
	return sb.String()
}

func (t *textTokenizer) Spec() string {
	s := tokenizerSpec{Format: tokenizerFormat, Kind: t.kind}
	if t.kind == tokChar {
		s.Chars = string(t.chars)
	}
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // a struct of strings always marshals
	}
	return string(b)
}

// tokenize returns text's ids: bytes for the byte tokenizer, else int32s.
func (t *textTokenizer) tokenize(text []byte) textStream {
	if t.kind == tokByte {
		return textStream{b: text}
	}
	ids := make([]int32, 0, len(text))
	for len(text) > 0 {
		id, w := t.id(text)
		ids = append(ids, id)
		text = text[w:]
	}
	return textStream{r: ids}
}

// textStream is a sequence of token ids: b for the byte tokenizer (the text
// itself), r for the char tokenizer.
type textStream struct {
	b []byte
	r []int32
}

func (s textStream) len() int { return max(len(s.b), len(s.r)) }

// copyTo writes the ids at off, off+1, ... into dst.
func (s textStream) copyTo(dst []int, off int) {
	if s.b != nil {
		for j, c := range s.b[off : off+len(dst)] {
			dst[j] = int(c)
		}
		return
	}
	for j, id := range s.r[off : off+len(dst)] {
		dst[j] = int(id)
	}
}

func (s textStream) slice(lo, hi int) textStream {
	if s.b != nil {
		return textStream{b: s.b[lo:hi]}
	}
	return textStream{r: s.r[lo:hi]}
}

func concatStreams(ss []textStream) textStream {
	var out textStream
	for _, s := range ss {
		out.b = append(out.b, s.b...)
		out.r = append(out.r, s.r...)
	}
	return out
}

// corpusFile is one file read: its slash-separated path relative to the
// folder (the file name for a single file) and its text.
type corpusFile struct {
	rel  string
	text []byte
}

type corpus struct {
	source string // what was read, for Describe
	single bool   // a single file was named
	files  []corpusFile
	bytes  int
}

type textTask struct {
	*textTokenizer
	seqLen     int
	seed       uint64
	parts      [2]textStream // by Stream
	files      [2][]string   // relative paths of each part's files; nil when split by position
	byPosition bool
	source     string
	entropy    float64 // of the train part's unigram distribution, nats
}

func newText(o config.Values, seed uint64) (Task, error) {
	T, kind, maxBytes := o.Int("seq_len"), o.String("tokenizer"), o.Int("max_bytes")
	if T < 1 {
		return nil, optErr("seq_len", "must be at least 1, got %d", T)
	}
	if kind != tokByte && kind != tokChar {
		return nil, optErr("tokenizer", "unknown tokenizer %q (known: byte, char)", kind)
	}
	if maxBytes < 0 {
		return nil, optErr("max_bytes", "must be at least 0 (0: no cap), got %d", maxBytes)
	}
	exts, err := parseExts(o.String("ext"))
	if err != nil {
		return nil, err
	}
	c, err := readCorpus(o.String("path"), exts, maxBytes)
	if err != nil {
		return nil, err
	}
	var tok *textTokenizer
	if kind == tokByte {
		tok = &textTokenizer{kind: tokByte}
	} else {
		tok = newCharTokenizer(corpusChars(c.files))
	}
	t := &textTask{textTokenizer: tok, seqLen: T, seed: seed, source: c.source}
	streams := make([]textStream, len(c.files))
	for i, f := range c.files {
		streams[i] = tok.tokenize(f.text)
	}
	if c.single || !t.splitByFile(c.files, streams) {
		all := concatStreams(streams)
		n := all.len()
		cut := n - n/textHeldOutBuckets
		if n/textHeldOutBuckets < T+1 {
			return nil, optErr("seq_len", "the corpus (%s) has %d tokens, too few for held-out windows of seq_len+1 = %d tokens in its last tenth; lower seq_len or give more text (at least %d tokens)",
				c.source, n, T+1, textHeldOutBuckets*(T+1))
		}
		t.parts[Train], t.parts[Eval] = all.slice(0, cut), all.slice(cut, n)
		t.files = [2][]string{}
		t.byPosition = true
	}
	t.entropy = unigramEntropy(t.parts[Train], tok.Vocab())
	return t, nil
}

// splitByFile splits the files into the two parts by the hash of their
// paths; it reports false, leaving t unchanged, when a part would be shorter
// than one window.
func (t *textTask) splitByFile(files []corpusFile, streams []textStream) bool {
	if len(files) < 2 {
		return false
	}
	held := make([]bool, len(files))
	hashes := make([]uint64, len(files))
	nHeld := 0
	for i, f := range files {
		hashes[i] = splitmix(fnv64a(f.rel) ^ textSplitSalt)
		if hashes[i]%textHeldOutBuckets == 0 {
			held[i] = true
			nHeld++
		}
	}
	// extreme returns the index of the file with the smallest (or largest)
	// scrambled hash, ties by path.
	extreme := func(largest bool) int {
		best := 0
		for i := 1; i < len(files); i++ {
			a, b := hashes[i], hashes[best]
			if largest {
				a, b = b, a
			}
			if a < b || (hashes[i] == hashes[best] && files[i].rel < files[best].rel) {
				best = i
			}
		}
		return best
	}
	switch nHeld {
	case 0:
		held[extreme(false)] = true
	case len(files):
		held[extreme(true)] = false
	}
	var ps [2][]textStream
	var names [2][]string
	for i, f := range files {
		s := Train
		if held[i] {
			s = Eval
		}
		ps[s] = append(ps[s], streams[i])
		names[s] = append(names[s], f.rel)
	}
	parts := [2]textStream{concatStreams(ps[Train]), concatStreams(ps[Eval])}
	if parts[Train].len() < t.seqLen+1 || parts[Eval].len() < t.seqLen+1 {
		return false
	}
	t.parts, t.files = parts, names
	return true
}

func (t *textTask) Vocab() int   { return t.textTokenizer.Vocab() }
func (t *textTask) SeqLen() int  { return t.seqLen }
func (t *textTask) Classes() int { return 0 }

// Describe summarises the corpus, the tokenizer and the split.
func (t *textTask) Describe() string {
	split := fmt.Sprintf("train %d tokens (%d files), held-out %d tokens (%d files)",
		t.parts[Train].len(), len(t.files[Train]), t.parts[Eval].len(), len(t.files[Eval]))
	if t.byPosition {
		split = fmt.Sprintf("train %d tokens, held-out the last %d (split by position)", t.parts[Train].len(), t.parts[Eval].len())
	}
	return fmt.Sprintf("text: %s, %s tokenizer (vocab %d), seq_len=%d; %s; train unigram entropy %.3f nats/token",
		t.source, t.kind, t.Vocab(), t.seqLen, split, t.entropy)
}

// UnigramEntropy is the entropy in nats of the training part's token
// frequencies: the loss of a model that ignores context, a baseline for the
// evaluation loss.
func (t *textTask) UnigramEntropy() float64 { return t.entropy }

// Fill writes examples first, first+1, ... of stream s into b. It panics if b
// was not made by NewBatch for this task or s is not a stream.
func (t *textTask) Fill(b *Batch, s Stream, first uint64) {
	T := t.seqLen
	n := b.Size * T
	if b.Size < 1 || b.SeqLen != T || len(b.Inputs) != n || len(b.Targets) != n || len(b.LossMask) != n {
		panic(fmt.Sprintf("data: Fill with a batch of size %d, seq_len %d (%d inputs, %d targets, %d loss mask) not made by NewBatch for this task (seq_len %d)",
			b.Size, b.SeqLen, len(b.Inputs), len(b.Targets), len(b.LossMask), T))
	}
	if s != Train && s != Eval {
		panic(fmt.Sprintf("data: Fill with unknown %v", s))
	}
	part := t.parts[s]
	starts := part.len() - T // valid window starts: 0 .. starts-1
	src := rand.NewPCG(0, 0)
	r := rand.New(src)
	for k := range b.Size {
		src.Seed(t.seed, mix(s, first+uint64(k), 0))
		off := r.IntN(starts)
		part.copyTo(b.Inputs[k*T:(k+1)*T], off)
		part.copyTo(b.Targets[k*T:(k+1)*T], off+1)
		for j := k * T; j < (k+1)*T; j++ {
			b.LossMask[j] = 1
		}
	}
}

func unigramEntropy(s textStream, vocab int) float64 {
	counts := make([]float64, vocab)
	n := s.len()
	if s.b != nil {
		for _, c := range s.b {
			counts[c]++
		}
	} else {
		for _, id := range s.r {
			counts[id]++
		}
	}
	var h float64
	for _, c := range counts {
		if c > 0 {
			p := c / float64(n)
			h -= p * math.Log(p)
		}
	}
	return h
}

// corpusChars returns the distinct valid characters of the files, sorted.
func corpusChars(files []corpusFile) []rune {
	var ascii [utf8.RuneSelf]bool
	other := map[rune]bool{}
	for _, f := range files {
		b := f.text
		for len(b) > 0 {
			if c := b[0]; c < utf8.RuneSelf {
				ascii[c] = true
				b = b[1:]
				continue
			}
			r, w := utf8.DecodeRune(b)
			if !(r == utf8.RuneError && w == 1) {
				other[r] = true
			}
			b = b[w:]
		}
	}
	var out []rune
	for c, ok := range ascii {
		if ok {
			out = append(out, rune(c))
		}
	}
	for r := range other {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

func parseExts(s string) ([]string, error) {
	var out []string
	for _, e := range strings.Split(s, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if !strings.HasPrefix(e, ".") {
			e = "." + e
		}
		if strings.ContainsAny(e, `/\`) {
			return nil, optErr("ext", "%q is not a file extension", e)
		}
		out = append(out, e)
	}
	return out, nil
}

// goSource returns GOROOT/src.
func goSource() (string, error) {
	var tried []string
	if root := runtime.GOROOT(); root != "" {
		src := filepath.Join(root, "src")
		if fi, err := os.Stat(src); err == nil && fi.IsDir() {
			return src, nil
		}
		tried = append(tried, fmt.Sprintf("runtime.GOROOT() %s has no src folder", root))
	} else {
		tried = append(tried, "runtime.GOROOT() is empty")
	}
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if root := strings.TrimSpace(string(out)); err == nil && root != "" {
		src := filepath.Join(root, "src")
		if fi, err := os.Stat(src); err == nil && fi.IsDir() {
			return src, nil
		}
		tried = append(tried, fmt.Sprintf("`%s GOROOT` %s has no src folder", "go env", root))
	} else if err != nil {
		tried = append(tried, fmt.Sprintf("`%s GOROOT`: %v", "go env", err))
	}
	return "", optErr("path", "empty, meaning the Go standard library's source, but it was not found (%s); set task.path to a text file or folder", strings.Join(tried, "; "))
}

// pathErr words a file system error as "task.path: PATH: reason".
func pathErr(p string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return optErr("path", "%s: %v", p, pe.Err)
	}
	return optErr("path", "%s: %v", p, err)
}

// readCorpus reads the file or folder path (GOROOT/src when empty).
func readCorpus(path string, exts []string, maxBytes int) (*corpus, error) {
	isDefault := path == ""
	if isDefault {
		src, err := goSource()
		if err != nil {
			return nil, err
		}
		path = src
		if len(exts) == 0 {
			exts = []string{".go"}
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, pathErr(path, err)
	}
	limit := maxBytes
	if limit == 0 {
		limit = math.MaxInt
	}
	if !fi.IsDir() {
		text, err := readPrefix(path, limit, true)
		if err != nil {
			return nil, pathErr(path, err)
		}
		if len(text) == 0 && fi.Size() > 0 {
			return nil, optErr("path", "%s is a binary file (a NUL byte in its first %d bytes), not text", path, binarySniff)
		}
		if len(text) == 0 {
			return nil, optErr("path", "%s is empty", path)
		}
		src := path
		if len(text) < int(fi.Size()) {
			src = fmt.Sprintf("%s (first %d bytes)", path, len(text))
		}
		return &corpus{source: src, single: true, files: []corpusFile{{rel: filepath.Base(path), text: text}}, bytes: len(text)}, nil
	}

	type candidate struct {
		rel, abs string
		hash     uint64
	}
	var cands []candidate
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if p != path && strings.HasPrefix(name, ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if isDefault && name == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if isDefault && strings.HasSuffix(name, "_test.go") {
			return nil
		}
		if len(exts) > 0 && !slices.ContainsFunc(exts, func(e string) bool { return strings.HasSuffix(name, e) }) {
			return nil
		}
		rel, err := filepath.Rel(path, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		cands = append(cands, candidate{rel: rel, abs: p, hash: fnv64a(rel)})
		return nil
	})
	if err != nil {
		return nil, pathErr(path, err)
	}
	slices.SortFunc(cands, func(a, b candidate) int {
		if a.hash != b.hash {
			if a.hash < b.hash {
				return -1
			}
			return 1
		}
		return strings.Compare(a.rel, b.rel)
	})
	c := &corpus{}
	for _, f := range cands {
		if c.bytes >= limit {
			break
		}
		text, err := readPrefix(f.abs, limit-c.bytes, true)
		if err != nil {
			return nil, pathErr(f.abs, err)
		}
		if len(text) == 0 || isDefault && isGenerated(text) { // empty, binary or generated
			continue
		}
		c.files = append(c.files, corpusFile{rel: f.rel, text: text})
		c.bytes += len(text)
	}
	what := "text files"
	if len(exts) > 0 {
		what = "text files ending in " + strings.Join(exts, ", ")
	}
	if len(c.files) == 0 {
		return nil, optErr("path", "%s holds no %s", path, what)
	}
	c.source = fmt.Sprintf("%s (%d bytes of %s, %d files)", path, c.bytes, what, len(c.files))
	if isDefault {
		c.source = fmt.Sprintf("the Go standard library %s (%d bytes in %d .go files, no tests or generated files)", path, c.bytes, len(c.files))
	}
	return c, nil
}

// isGenerated reports whether Go source text is marked as generated: a line
// "// Code generated ... DO NOT EDIT." (Go's convention) in its first
// binarySniff bytes.
func isGenerated(text []byte) bool {
	head := text[:min(len(text), binarySniff)]
	for line := range bytes.Lines(head) {
		line = bytes.TrimRight(line, "\r\n")
		if bytes.HasPrefix(line, []byte("// Code generated ")) && bytes.HasSuffix(line, []byte(" DO NOT EDIT.")) {
			return true
		}
	}
	return false
}

// readPrefix reads at most limit bytes of the file at p, cut back to a
// character boundary when the file is longer.
func readPrefix(p string, limit int, skipBinary bool) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := io.Reader(f)
	if limit < math.MaxInt {
		r = io.LimitReader(f, int64(limit)+1) // one more byte tells whether it was cut
	}
	if skipBinary {
		// Sniff the head first, so a large binary file is not read whole.
		head := make([]byte, binarySniff)
		n, err := io.ReadFull(r, head)
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			return nil, err
		}
		if bytes.IndexByte(head[:n], 0) >= 0 {
			return nil, nil
		}
		r = io.MultiReader(bytes.NewReader(head[:n]), r)
	}
	text, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	if len(text) > limit {
		text = cutPartialRune(text[:limit])
	}
	return text, nil
}

// cutPartialRune drops a character cut in two at the end of b: a UTF-8
// sequence that starts within the last 3 bytes and is incomplete. Bytes that
// are not UTF-8 at all are left alone.
func cutPartialRune(b []byte) []byte {
	for i := len(b) - 1; i >= 0 && i > len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return b[:i]
			}
			break
		}
	}
	return b
}

// fnv64a is FNV-1a (64 bits) of s.
func fnv64a(s string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime
	}
	return h
}
