package data

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/attnlab/attnlab/config"
)

// writeCorpus writes files (path relative to a new temp folder -> text) and
// returns the folder.
func writeCorpus(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for rel, text := range files {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// letterCorpus has n files, file k made only of letter k (from 'A'), so a
// token tells which file it came from.
func letterCorpus(t *testing.T, n, size int) string {
	files := map[string]string{}
	for k := range n {
		files[fmt.Sprintf("d%d/f%02d.txt", k%3, k)] = strings.Repeat(string(rune('A'+k)), size)
	}
	return writeCorpus(t, files)
}

func newTextTask(t *testing.T, o opts) *textTask {
	t.Helper()
	return mustNew(t, "text", o, 1).(*textTask)
}

func TestTextWindows(t *testing.T) {
	fileA := strings.Repeat("the quick brown fox jumps over the lazy dog\n", 50)
	fileB := strings.Repeat("pack my box with five dozen liquor jugs\n", 50)
	dir := writeCorpus(t, map[string]string{"a.txt": fileA, "b.txt": fileB})
	for _, tk := range []string{"byte", "char"} {
		task := newTextTask(t, opts{"path": dir, "seq_len": 16, "tokenizer": tk})
		if task.Classes() != 0 || task.SeqLen() != 16 {
			t.Fatalf("%s: classes %d seq_len %d", tk, task.Classes(), task.SeqLen())
		}
		for _, s := range []Stream{Train, Eval} {
			b := filled(task, s, 0, 20)
			if b.KeyMask != nil {
				t.Errorf("%s: the text task does not pad", tk)
			}
			for k := range b.Size {
				e := rowAt(b, k)
				for j := range 15 {
					if e.tgt[j] != e.in[j+1] {
						t.Fatalf("%s %s example %d: targets are not the next inputs: %v %v", tk, s, k, e.in, e.tgt)
					}
				}
				for j, m := range e.loss {
					if m != 1 {
						t.Fatalf("%s %s example %d: loss mask %v at %d", tk, s, k, m, j)
					}
				}
				for _, id := range slices.Concat(e.in, e.tgt) {
					if id < 0 || id >= task.Vocab() {
						t.Fatalf("%s: id %d outside [0, %d)", tk, id, task.Vocab())
					}
				}
				// The window is text of one file: two files make one part each.
				text := task.Decode(slices.Concat(e.in, e.tgt[15:]))
				if !strings.Contains(fileA, text) && !strings.Contains(fileB, text) {
					t.Errorf("%s %s: window %q is not corpus text", tk, s, text)
				}
			}
		}
	}
}

func TestTextDeterministic(t *testing.T) {
	dir := letterCorpus(t, 30, 200)
	a := newTextTask(t, opts{"path": dir, "seq_len": 8})
	b := newTextTask(t, opts{"path": dir, "seq_len": 8})
	for _, s := range []Stream{Train, Eval} {
		x, y := filled(a, s, 0, 64), filled(b, s, 0, 64)
		if !reflect.DeepEqual(x, y) {
			t.Fatalf("%s: two tasks with the same options and seed differ", s)
		}
		// Example i depends on i alone, not on the batch it is in.
		z := filled(a, s, 10, 5)
		for k := range 5 {
			if !reflect.DeepEqual(rowAt(z, k), rowAt(x, 10+k)) {
				t.Fatalf("%s: example %d differs when filled from index 10", s, 10+k)
			}
		}
		// Fill concurrently.
		var wg sync.WaitGroup
		got := make([]*Batch, 8)
		for g := range got {
			wg.Go(func() { got[g] = filled(a, s, uint64(8*g), 8) })
		}
		wg.Wait()
		for g, bt := range got {
			for k := range 8 {
				if !reflect.DeepEqual(rowAt(bt, k), rowAt(x, 8*g+k)) {
					t.Fatalf("%s: concurrent Fill gave another example %d", s, 8*g+k)
				}
			}
		}
	}
	// Another seed draws other windows.
	c := mustNew(t, "text", opts{"path": dir, "seq_len": 8}, 2)
	if reflect.DeepEqual(filled(a, Train, 0, 64), filled(c, Train, 0, 64)) {
		t.Error("seeds 1 and 2 drew the same windows")
	}
}

// The held-out stream reads files the train stream never reads.
func TestTextStreamsReadDisjointFiles(t *testing.T) {
	for _, tk := range []string{"byte", "char"} {
		dir := letterCorpus(t, 40, 100)
		task := newTextTask(t, opts{"path": dir, "seq_len": 8, "tokenizer": tk})
		if task.byPosition {
			t.Fatalf("%s: split by position, want by file", tk)
		}
		train, eval := task.files[Train], task.files[Eval]
		if len(train) == 0 || len(eval) == 0 || len(train)+len(eval) != 40 {
			t.Fatalf("%s: %d train and %d held-out files of 40", tk, len(train), len(eval))
		}
		for _, f := range eval {
			for _, g := range train {
				if f == g {
					t.Fatalf("%s: file %s in both parts", tk, f)
				}
			}
		}
		letters := [2]map[string]bool{{}, {}}
		for _, s := range []Stream{Train, Eval} {
			b := filled(task, s, 0, 500)
			for _, ch := range task.Decode(slices.Concat(b.Inputs, b.Targets)) {
				letters[s][string(ch)] = true
			}
		}
		for l := range letters[Eval] {
			if letters[Train][l] {
				t.Errorf("%s: letter %s (one file's) is in both streams", tk, l)
			}
		}
		// Every held-out letter is a held-out file's.
		for l := range letters[Eval] {
			k := int(l[0] - 'A')
			if !strings.Contains(strings.Join(eval, " "), fmt.Sprintf("f%02d.txt", k)) {
				t.Errorf("%s: held-out window has letter %s of train file f%02d", tk, l, k)
			}
		}
		if len(letters[Train]) < 2*len(train)/3 || len(letters[Eval]) == 0 {
			t.Errorf("%s: windows cover %d of %d train files and %d held-out", tk, len(letters[Train]), len(train), len(letters[Eval]))
		}
	}
}

// A folder of two files still gets a held-out file; one file is split by
// position, the last tenth held out.
func TestTextSmallCorpusSplits(t *testing.T) {
	two := writeCorpus(t, map[string]string{"x.txt": strings.Repeat("x", 300), "y.txt": strings.Repeat("y", 300)})
	task := newTextTask(t, opts{"path": two, "seq_len": 8})
	if task.byPosition || len(task.files[Train]) != 1 || len(task.files[Eval]) != 1 {
		t.Errorf("two files: by position %v, files %v", task.byPosition, task.files)
	}

	var sb strings.Builder
	for i := range 500 {
		fmt.Fprintf(&sb, "%04d\n", i)
	}
	text := sb.String()
	file := filepath.Join(writeCorpus(t, map[string]string{"lines.txt": text}), "lines.txt")
	task = newTextTask(t, opts{"path": file, "seq_len": 12})
	if !task.byPosition {
		t.Fatal("one file: want a split by position")
	}
	cut := len(text) - len(text)/10
	for _, c := range []struct {
		s    Stream
		part string
	}{{Train, text[:cut]}, {Eval, text[cut:]}} {
		b := filled(task, c.s, 0, 200)
		for k := range b.Size {
			e := rowAt(b, k)
			w := task.Decode(slices.Concat(e.in, e.tgt[len(e.tgt)-1:]))
			if !strings.Contains(c.part, w) {
				t.Fatalf("%s window %q is not in its part", c.s, w)
			}
		}
	}
	if d := task.Describe(); !strings.Contains(d, "split by position") || !strings.HasPrefix(d, "text: ") {
		t.Errorf("Describe: %s", d)
	}
}

func TestTextTokenizerRoundTrip(t *testing.T) {
	dir := writeCorpus(t, map[string]string{"a.txt": strings.Repeat("héllo, wörld! ∑ x² 日本\n", 20), "b.txt": strings.Repeat("plain ascii text\n", 20)})
	for _, tk := range []string{"byte", "char"} {
		task := newTextTask(t, opts{"path": dir, "seq_len": 8, "tokenizer": tk})
		var tok Tokenizer = task
		if TokenizerOf(task) == nil {
			t.Fatalf("%s: TokenizerOf is nil", tk)
		}
		for _, s := range []string{"", "héllo ∑ 日本", "plain\n", "wörld, ascii"} {
			if got := tok.Decode(tok.Encode(s)); got != s {
				t.Errorf("%s: %q round-trips to %q", tk, s, got)
			}
		}
		parsed, err := ParseTokenizer(tok.Spec())
		if err != nil {
			t.Fatalf("%s: ParseTokenizer(%s): %v", tk, tok.Spec(), err)
		}
		if parsed.Spec() != tok.Spec() || parsed.Vocab() != tok.Vocab() {
			t.Errorf("%s: parsed spec %s vocab %d, want %s %d", tk, parsed.Spec(), parsed.Vocab(), tok.Spec(), tok.Vocab())
		}
		s := "日本 hello ∑"
		if !reflect.DeepEqual(parsed.Encode(s), tok.Encode(s)) {
			t.Errorf("%s: the parsed tokenizer encodes differently", tk)
		}
	}
	byteTok := newTextTask(t, opts{"path": dir, "seq_len": 8})
	if byteTok.Vocab() != 256 {
		t.Errorf("byte vocab %d", byteTok.Vocab())
	}
	odd := "\xff\xfebytes \x00 kept"
	if got := byteTok.Decode(byteTok.Encode(odd)); got != odd {
		t.Errorf("byte: %q round-trips to %q", odd, got)
	}
	// char: the vocabulary is the corpus's characters, sorted, plus unknown.
	char := newTextTask(t, opts{"path": dir, "seq_len": 8, "tokenizer": "char"})
	want := []rune("\n !,acdehilnoprstwx²éö∑日本")
	if !reflect.DeepEqual(char.chars, want) || char.Vocab() != len(want)+1 {
		t.Errorf("char vocabulary %q (vocab %d), want %q plus one", string(char.chars), char.Vocab(), string(want))
	}
	ids := char.Encode("z\xffé")
	if unk := char.Vocab() - 1; ids[0] != unk || ids[1] != unk || ids[2] == unk {
		t.Errorf("z, an invalid byte and é encode to %v (unknown id %d)", ids, unk)
	}
	if got := char.Decode(ids); got != "\uFFFD\uFFFDé" {
		t.Errorf("decoded %q", got)
	}
	for _, bad := range []string{"", "{}", `{"format":"attnlab-tokenizer-1","kind":"word"}`, `{"format":"attnlab-tokenizer-1","kind":"char","chars":"ba"}`} {
		if _, err := ParseTokenizer(bad); err == nil {
			t.Errorf("ParseTokenizer(%q) accepted", bad)
		}
	}
	if TokenizerOf(mustNew(t, "copy", nil, 1)) != nil {
		t.Error("copy has a tokenizer")
	}
}

// The corpus reader skips hidden and binary files, filters by extension,
// and caps the bytes read without cutting a character in two.
func TestTextCorpusFiles(t *testing.T) {
	body := strings.Repeat("é", 200) // 400 bytes
	dir := writeCorpus(t, map[string]string{
		"a.md": body, "b.go": body, "sub/c.go": body, ".hidden/d.go": body, ".e.go": body,
		"bin.go": "x\x00y" + body, "empty.go": "",
	})
	c, err := readCorpus(dir, []string{".go"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range c.files {
		names = append(names, f.rel)
	}
	if strings.Join(slices.Sorted(slices.Values(names)), " ") != "b.go sub/c.go" {
		t.Errorf("read %v, want b.go and sub/c.go", names)
	}
	c, err = readCorpus(dir, nil, 0)
	if err != nil || len(c.files) != 3 {
		t.Errorf("no extension filter: %v files, %v", len(c.files), err)
	}
	c, err = readCorpus(dir, nil, 501) // one file and 101 bytes: 50 characters and half of one
	if err != nil {
		t.Fatal(err)
	}
	if c.bytes != 500 || len(c.files) != 2 || !utf8.Valid(c.files[1].text) {
		t.Errorf("max_bytes 501: %d bytes in %d files", c.bytes, len(c.files))
	}
	file := filepath.Join(dir, "a.md")
	c, err = readCorpus(file, nil, 11)
	if err != nil || c.bytes != 10 || !c.single {
		t.Errorf("single file, max_bytes 11: %d bytes, single %v, %v", c.bytes, c.single, err)
	}
}

func TestTextDefaultCorpus(t *testing.T) {
	src, err := goSource()
	if err != nil {
		t.Skipf("no Go standard library source: %v", err)
	}
	task := newTextTask(t, opts{"max_bytes": 1 << 20, "seq_len": 64})
	if d := task.Describe(); !strings.Contains(d, "Go standard library") || !strings.Contains(d, src) {
		t.Errorf("Describe: %s", d)
	}
	if task.Vocab() != 256 || len(task.files[Eval]) == 0 {
		t.Errorf("vocab %d, %d held-out files", task.Vocab(), len(task.files[Eval]))
	}
	n := task.parts[Train].len() + task.parts[Eval].len()
	if n > 1<<20 || n < 1<<19 {
		t.Errorf("%d bytes read, want at most (and close to) 1 MiB", n)
	}
	for _, f := range append(task.files[Train], task.files[Eval]...) {
		if !strings.HasSuffix(f, ".go") || strings.HasSuffix(f, "_test.go") || strings.Contains("/"+f, "/testdata/") {
			t.Errorf("read %s", f)
		}
	}
	if h := task.UnigramEntropy(); h < 2 || h > 5 {
		t.Errorf("unigram entropy %.3f nats", h)
	}
}

func TestTextOptionErrors(t *testing.T) {
	dir := letterCorpus(t, 10, 100)
	empty := t.TempDir()
	missing := filepath.Join(dir, "nope")
	small := writeCorpus(t, map[string]string{"s.txt": "short text", "b.bin": "\x7fELF\x02\x01\x00\x00" + strings.Repeat("text ", 400)})
	for _, c := range []struct {
		o    opts
		want string
	}{
		{opts{"path": missing}, "task.path: " + missing + ": no such file or directory"},
		{opts{"path": empty}, "task.path: " + empty + " holds no text files"},
		{opts{"path": filepath.Join(small, "b.bin")}, "task.path: " + filepath.Join(small, "b.bin") + " is a binary file"},
		{opts{"path": dir, "ext": ".go"}, "task.path: " + dir + " holds no text files ending in .go"},
		{opts{"path": dir, "tokenizer": "word"}, `task.tokenizer: unknown tokenizer "word" (known: byte, char)`},
		{opts{"path": dir, "seq_len": 0}, "task.seq_len: must be at least 1, got 0"},
		{opts{"path": dir, "max_bytes": -1}, "task.max_bytes: must be at least 0"},
		{opts{"path": dir, "ext": "a/b"}, "task.ext: "},
		{opts{"path": filepath.Join(small, "s.txt"), "seq_len": 4}, "task.seq_len: the corpus"},
		{opts{"path": dir, "seq_len": 2000}, "task.seq_len: the corpus"},
		{opts{"path": dir, "seq_len": "long"}, "task.seq_len: want an integer"},
		{opts{"path": dir, "window": 3}, "task.window: unknown option"},
	} {
		_, err := New(config.Component{Kind: "text", Options: c.o}, 1)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v, want one line starting %q", c.o, err, c.want)
		}
	}
}
