package sweep

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/data"
	"github.com/attnlab/attnlab/internal/atomicfile"
	"github.com/attnlab/attnlab/train"
)

// The result files a sweep folder gets.
const (
	ResultsJSONL = "results.jsonl"
	ResultsCSV   = "results.csv"
)

// Statuses of a result row.
const (
	StatusOK     = "ok"
	StatusFailed = "failed"
)

// Row is one run's result: its grid values and seed, a few keys of its
// resolved config, and every field of its summary.json.
type Row struct {
	Run     string  // the run's folder name
	Sweep   string  // the sweep's name
	Index   int     // the run's index in the sweep's expansion
	Params  []Param // grid values, in key order
	Seed    uint64
	Threads int    // GOMAXPROCS the sweep gave the run
	Status  string // StatusOK or StatusFailed
	Error   string // why it failed

	// From the run's config.yaml.
	TaskKind  string
	SeqLen    int // the task's sequence length: run.json's, else the task's (0 if it cannot be built)
	DModel    int
	Attention string

	Summary *train.Summary // nil unless Status is StatusOK
	Fields  []Field        // summary.json's fields, in file order
	Dir     string         // the run folder
}

// Param returns the value of grid key k and whether the row has it.
func (r Row) Param(k string) (string, bool) {
	for _, p := range r.Params {
		if p.Key == k {
			return p.Value, true
		}
	}
	return "", false
}

// Field is one key of a JSON object with its raw value.
type Field struct {
	Key   string
	Value json.RawMessage
}

// Collection is the result rows of one or more sweep folders.
type Collection struct {
	Rows []Row // finished and failed runs, de-duplicated by name, in index order
	// Info is the first sweep.json found (nil if none): the whole grid.
	Info *Info
	// Unfinished names run folders with neither a summary nor a failure
	// (running, interrupted, or not yet started).
	Unfinished []string
	// Missing names the runs of Info with no folder in any of the dirs.
	Missing []string
	// Skipped lists the folders under DIR/runs/ that are not sweep runs
	// (no run.json): a run trained by hand into the sweep folder, say.
	// They are left out of the rows; callers say so.
	Skipped []string
}

// Collect reads the run folders (DIR/runs/*/ with a run.json) of each
// sweep folder in dirs. A run found in several folders (shards writing to
// one shared folder, or a run retried elsewhere) is kept once: a finished
// copy before a failed one before an unfinished one, and among equals the
// one in the earlier dir. So the shards of a sweep, collected together, give
// the rows the unsharded sweep gives.
func Collect(dirs ...string) (*Collection, error) {
	type found struct {
		row  Row
		rank int // 2 finished, 1 failed, 0 unfinished
	}
	best := map[string]found{}
	c := &Collection{}
	for _, dir := range dirs {
		st, err := os.Stat(dir)
		if err != nil {
			return nil, &train.BadInputError{Err: fmt.Errorf("%s: %s", dir, errText(err))}
		}
		if !st.IsDir() {
			return nil, &train.BadInputError{Err: fmt.Errorf("%s: not a folder", dir)}
		}
		if b, err := os.ReadFile(filepath.Join(dir, SweepFile)); err == nil {
			var in Info
			if err := json.Unmarshal(b, &in); err != nil {
				return nil, &train.BadInputError{Err: fmt.Errorf("%s: %v", filepath.Join(dir, SweepFile), err)}
			}
			if c.Info == nil {
				c.Info = &in
			}
		}
		entries, err := os.ReadDir(filepath.Join(dir, RunsDir))
		if errors.Is(err, fs.ErrNotExist) && fileExists(filepath.Join(dir, SweepFile)) {
			continue // a shard that has no runs
		}
		if err != nil {
			return nil, &train.BadInputError{Err: fmt.Errorf("%s: not a sweep folder (no %s/ or %s): %s", dir, RunsDir, SweepFile, errText(err))}
		}
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			rd := filepath.Join(dir, RunsDir, e.Name())
			row, rank, ok, err := readRun(rd)
			if err != nil {
				return nil, err
			}
			if !ok {
				c.Skipped = append(c.Skipped, rd)
				continue
			}
			if prev, seen := best[row.Run]; !seen || rank > prev.rank {
				best[row.Run] = found{row, rank}
			}
		}
	}
	names := make(map[string]bool)
	for name, f := range best {
		names[name] = true
		if f.rank == 0 {
			c.Unfinished = append(c.Unfinished, name)
			continue
		}
		c.Rows = append(c.Rows, f.row)
	}
	sort.Slice(c.Rows, func(i, j int) bool {
		if c.Rows[i].Index != c.Rows[j].Index {
			return c.Rows[i].Index < c.Rows[j].Index
		}
		return c.Rows[i].Run < c.Rows[j].Run
	})
	sort.Strings(c.Unfinished)
	if c.Info != nil {
		for _, n := range c.Info.Runs {
			if !names[n] {
				c.Missing = append(c.Missing, n)
			}
		}
	}
	return c, nil
}

// readRun reads one run folder; ok is false for a folder that is not a
// sweep run (no run.json).
func readRun(rd string) (row Row, rank int, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(rd, RunInfoFile))
	if errors.Is(err, fs.ErrNotExist) {
		return row, 0, false, nil
	}
	if err != nil {
		return row, 0, false, fmt.Errorf("%s: %v", rd, err)
	}
	var info RunInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return row, 0, false, &train.BadInputError{Err: fmt.Errorf("%s: %v", filepath.Join(rd, RunInfoFile), err)}
	}
	row = Row{Run: info.Name, Sweep: info.Sweep, Index: info.Index, Params: info.Params, Seed: info.Seed, Threads: info.Threads, SeqLen: info.SeqLen, Dir: rd}
	if row.Run == "" {
		row.Run = filepath.Base(rd)
	}
	if exp, err := config.Load(filepath.Join(rd, train.ConfigFile)); err == nil {
		row.TaskKind, row.DModel, row.Attention = exp.Task.Kind, exp.Model.DModel, exp.Model.Attention.Kind
		if row.SeqLen == 0 {
			// A run.json without seq_len (written before it was recorded, or
			// by a sweep run without building its runs): build the task to
			// ask it. Slow for text tasks, and 0 if the task cannot be built
			// here (a corpus path that does not resolve).
			if t, err := data.New(exp.Task, exp.Seed); err == nil {
				row.SeqLen = t.SeqLen()
			}
		}
	}
	sb, serr := os.ReadFile(filepath.Join(rd, train.SummaryFile))
	if serr == nil {
		var sum train.Summary
		fields, err := objectFields(sb)
		if err == nil {
			err = json.Unmarshal(sb, &sum)
		}
		if err != nil {
			row.Status, row.Error = StatusFailed, fmt.Sprintf("%s: %v", train.SummaryFile, err)
			return row, 1, true, nil
		}
		row.Status, row.Summary, row.Fields = StatusOK, &sum, fields
		return row, 2, true, nil
	}
	fb, ferr := os.ReadFile(filepath.Join(rd, FailureFile))
	if ferr == nil {
		var f Failure
		if err := json.Unmarshal(fb, &f); err != nil {
			f.Error = fmt.Sprintf("%s: %v", FailureFile, err)
		}
		row.Status, row.Error = StatusFailed, f.Error
		return row, 1, true, nil
	}
	return row, 0, true, nil
}

// objectFields returns the fields of a JSON object in the order written.
func objectFields(b []byte) ([]Field, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	var out []Field
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		out = append(out, Field{k, v})
	}
	return out, nil
}

// summaryKeys are summary.json's fields in train.Summary's order: the
// column order of results.csv, before any field a newer trainer adds.
func summaryKeys() []string {
	var ks []string
	t := reflect.TypeOf(train.Summary{})
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			ks = append(ks, name)
		}
	}
	return ks
}

// configColumns are columns every row has, from the run's config, unless
// the grid already has them.
var configColumns = []string{"task.kind", "task.seq_len", "model.d_model", "model.attention.kind"}

// Columns lists the columns of the result rows: run, index, status, error,
// the grid keys, seed, threads, task.kind, task.seq_len, model.d_model,
// model.attention.kind (unless grid keys), then every summary.json field
// (those named like an earlier column left out).
func Columns(rows []Row) []string {
	cols := []string{"run", "index", "status", "error"}
	have := map[string]bool{}
	for _, c := range cols {
		have[c] = true
	}
	add := func(k string) {
		if !have[k] {
			have[k] = true
			cols = append(cols, k)
		}
	}
	for _, r := range rows {
		for _, p := range r.Params {
			add(p.Key)
		}
	}
	add("seed")
	add("threads")
	for _, k := range configColumns {
		add(k)
	}
	for _, k := range summaryKeys() {
		add(k)
	}
	var extra []string
	for _, r := range rows {
		for _, f := range r.Fields {
			if !have[f.Key] {
				have[f.Key] = true
				extra = append(extra, f.Key)
			}
		}
	}
	sort.Strings(extra)
	return append(cols, extra...)
}

// values returns the row's value for each column (nil where it has none).
func (r Row) values() map[string]json.RawMessage {
	m := map[string]json.RawMessage{}
	str := func(s string) json.RawMessage { b, _ := json.Marshal(s); return b }
	num := func(x any) json.RawMessage { b, _ := json.Marshal(x); return b }
	for _, f := range r.Fields {
		m[f.Key] = f.Value
	}
	m["run"] = str(r.Run)
	m["index"] = num(r.Index)
	m["status"] = str(r.Status)
	if r.Error != "" {
		m["error"] = str(r.Error)
	} else {
		delete(m, "error")
	}
	m["seed"] = num(r.Seed)
	m["threads"] = num(r.Threads)
	if r.TaskKind != "" {
		m["task.kind"] = str(r.TaskKind)
		m["model.d_model"] = num(r.DModel)
		m["model.attention.kind"] = str(r.Attention)
	}
	if r.SeqLen > 0 {
		m["task.seq_len"] = num(r.SeqLen)
	}
	for _, p := range r.Params {
		m[p.Key] = labelJSON(p.Value)
	}
	return m
}

// labelJSON writes a grid value as a JSON number when it reads as one, so
// that tools comparing numbers (jq, pandas) see numbers.
func labelJSON(s string) json.RawMessage {
	if s != "" && (s[0] == '-' || s[0] >= '0' && s[0] <= '9') && json.Valid([]byte(s)) {
		return json.RawMessage(s)
	}
	b, _ := json.Marshal(s)
	return b
}

// WriteJSONL writes one JSON object per row, with the keys of Columns in
// order (absent values left out).
func WriteJSONL(w io.Writer, rows []Row) error {
	cols := Columns(rows)
	for _, r := range rows {
		vals := r.values()
		var b bytes.Buffer
		b.WriteByte('{')
		first := true
		for _, c := range cols {
			v, ok := vals[c]
			if !ok {
				continue
			}
			if !first {
				b.WriteByte(',')
			}
			first = false
			k, _ := json.Marshal(c)
			b.Write(k)
			b.WriteByte(':')
			var cv bytes.Buffer
			if err := json.Compact(&cv, v); err != nil {
				return fmt.Errorf("run %s: %s: %v", r.Run, c, err)
			}
			b.Write(cv.Bytes())
		}
		b.WriteString("}\n")
		if _, err := w.Write(b.Bytes()); err != nil {
			return err
		}
	}
	return nil
}

// WriteCSV writes a header of Columns and one line per row: strings
// unquoted, numbers as in summary.json, absent values empty.
func WriteCSV(w io.Writer, rows []Row) error {
	cols := Columns(rows)
	cw := csv.NewWriter(w)
	if err := cw.Write(cols); err != nil {
		return err
	}
	rec := make([]string, len(cols))
	for _, r := range rows {
		vals := r.values()
		for i, c := range cols {
			rec[i] = csvText(vals[c])
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

func csvText(v json.RawMessage) string {
	if len(v) == 0 || string(v) == "null" {
		return ""
	}
	var s string
	if v[0] == '"' && json.Unmarshal(v, &s) == nil {
		return s
	}
	return string(v)
}

// WriteResults writes results.jsonl and results.csv into dir, each
// atomically.
func WriteResults(dir string, rows []Row) error {
	if err := atomicfile.WriteFile(filepath.Join(dir, ResultsJSONL), 0o644, func(w io.Writer) error { return WriteJSONL(w, rows) }); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, ResultsCSV), 0o644, func(w io.Writer) error { return WriteCSV(w, rows) })
}

func errText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
