package train

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/attnlab/attnlab/internal/atomicfile"
	"github.com/attnlab/attnlab/internal/finitejson"
)

// MetricsFile is the name of the metrics log in a run folder.
const MetricsFile = "metrics.jsonl"

// Row is one line of metrics.jsonl: a logged training step, and for
// evaluation steps the held-out figures too.
type Row struct {
	Step         int      `json:"step"`
	Loss         float64  `json:"loss"`
	Accuracy     float64  `json:"accuracy"` // on this step's training batch, over scored positions
	LR           float64  `json:"lr"`
	GradNorm     float64  `json:"grad_norm"`
	TokensPerSec float64  `json:"tokens_per_sec"`
	ElapsedSec   float64  `json:"elapsed_s"`
	EvalLoss     *float64 `json:"eval_loss,omitempty"`
	EvalAccuracy *float64 `json:"eval_accuracy,omitempty"`
}

// metricsLog appends rows to metrics.jsonl, one JSON object a line, flushed
// as written. notes are what opening it on resume had to say (lines kept or
// dropped) for the run to print.
type metricsLog struct {
	f     *os.File
	notes []string
}

// openMetrics opens path for appending. On resume it first drops the rows
// past the checkpoint's step (written before a kill), rewriting the file
// atomically, so the log reads as one uninterrupted run. Nothing else is
// lost: a line that is not a metrics row (edited by hand, say) is kept as
// it is, with a note, whatever its length; only an unterminated last line
// (a write torn by a kill) is dropped, with a note.
func openMetrics(path string, keepThrough int, resume bool) (*metricsLog, error) {
	var notes []string
	if resume {
		old, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		var kept []byte
		kept, notes = keepMetrics(old, keepThrough)
		if !bytes.Equal(kept, old) {
			if err := atomicfile.WriteBytes(path, kept, 0o644); err != nil {
				return nil, err
			}
		}
		for i := range notes {
			notes[i] = path + ": " + notes[i]
		}
	}
	flag := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if !resume {
		flag |= os.O_TRUNC
	}
	f, err := os.OpenFile(path, flag, 0o644)
	if err != nil {
		return nil, err
	}
	return &metricsLog{f: f, notes: notes}, nil
}

// keepMetrics is the metrics log old with the rows after step keepThrough
// removed, and notes on what else it did.
func keepMetrics(old []byte, keepThrough int) (kept []byte, notes []string) {
	var unparsed []int
	dropped := 0
	lines := bytes.SplitAfter(old, []byte("\n"))
	for i, line := range lines {
		if len(line) == 0 {
			continue
		}
		if line[len(line)-1] != '\n' { // the last line, unterminated
			notes = append(notes, fmt.Sprintf("dropped an unterminated last line (%d bytes, a write cut short)", len(line)))
			break
		}
		var r struct {
			Step *int `json:"step"`
		}
		if json.Unmarshal(line, &r) != nil || r.Step == nil {
			if len(bytes.TrimSpace(line)) > 0 {
				unparsed = append(unparsed, i+1)
			}
			kept = append(kept, line...)
			continue
		}
		if *r.Step > keepThrough {
			dropped++
			continue
		}
		kept = append(kept, line...)
	}
	if len(unparsed) > 0 {
		notes = append(notes, fmt.Sprintf("kept %d line(s) that are not metrics rows as they are (line %s)", len(unparsed), joinInts(unparsed, 5)))
	}
	if dropped > 0 {
		notes = append(notes, fmt.Sprintf("dropped %d row(s) after the checkpoint's step %d (they are trained again)", dropped, keepThrough))
	}
	return kept, notes
}

// joinInts lists up to n of xs, then "...".
func joinInts(xs []int, n int) string {
	var b strings.Builder
	for i, x := range xs {
		if i == n {
			b.WriteString(", ...")
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprint(&b, x)
	}
	return b.String()
}

func (m *metricsLog) write(r Row) error {
	b, err := finitejson.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := m.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("%s: %w", m.f.Name(), err)
	}
	return nil
}

func (m *metricsLog) close() error { return m.f.Close() }

// Summary is summary.json: what a run achieved and what it cost.
type Summary struct {
	Name      string `json:"name"`
	Attention string `json:"attention"`
	Task      string `json:"task"`
	Seed      uint64 `json:"seed"`
	DType     string `json:"dtype"`
	Device    string `json:"device"` // cpu or cuda
	BLAS      string `json:"blas"`
	Threads   int    `json:"threads"`
	Steps     int    `json:"steps"`
	Params    int    `json:"params"`
	// KVCacheBytesPerToken is what one layer's KV cache holds per token
	// (elements x dtype size); absent for variants without a KV cache.
	KVCacheBytesPerToken *int    `json:"kv_cache_bytes_per_token,omitempty"`
	EvalAccuracy         float64 `json:"eval_accuracy"`
	EvalLoss             float64 `json:"eval_loss"`
	EvalExamples         int     `json:"eval_examples"`
	// Evaluation and training figures are null in the JSON when they are
	// not finite. TrainLoss and StepMsMedian cover the run's last steps
	// across resumes (see runStats).
	TrainLoss         float64 `json:"train_loss"`           // mean over the last (up to) 20 steps
	StepMsMedian      float64 `json:"step_ms_median"`       // median over the last (up to) 1024 steps
	TrainTokensPerSec float64 `json:"train_tokens_per_sec"` // batch x seq_len / median step time
	PeakRSSBytes      int64   `json:"peak_rss_bytes"`
	WallSeconds       float64 `json:"wall_seconds"` // training time across resumes
	Resumed           bool    `json:"resumed"`
	// Version and Commit name the build that wrote the summary (see
	// package internal/version); Commit is empty for builds without VCS
	// information.
	Version string `json:"version"`
	Commit  string `json:"commit,omitempty"`
	// StateBytesPerSequence is what one layer's recurrent state holds per
	// sequence, whatever its length (variants decoding with a fixed-size
	// state instead of a KV cache: linear); absent otherwise. Last, so
	// that the results tables keep their columns.
	StateBytesPerSequence *int `json:"state_bytes_per_sequence,omitempty"`
}
