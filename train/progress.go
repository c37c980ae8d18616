package train

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// progress reports training as it goes: on a terminal, one line redrawn in
// place (a bar, loss, accuracy, tokens/s, ETA); otherwise a plain log line
// every log_every steps, which reads well in files and CI logs.
type progress struct {
	w        io.Writer
	tty      bool
	total    int
	last     time.Time
	drawn    bool
	logEvery int
}

// IsTerminal reports whether f is a character device (a terminal).
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func newProgress(w io.Writer, tty bool, total, logEvery int) *progress {
	return &progress{w: w, tty: tty, total: total, logEvery: logEvery}
}

type progressState struct {
	step         int
	loss, acc    float64
	tokensPerSec float64
	eta          time.Duration
	lr           float64
}

func (p *progress) update(s progressState, logged bool) {
	if p.w == nil {
		return
	}
	if !p.tty {
		if logged {
			fmt.Fprintf(p.w, "step %d/%d loss %.4f acc %.3f lr %.2e %s tok/s eta %s\n",
				s.step, p.total, s.loss, s.acc, s.lr, humanRate(s.tokensPerSec), humanDuration(s.eta))
		}
		return
	}
	if time.Since(p.last) < 100*time.Millisecond && s.step != p.total {
		return
	}
	p.last = time.Now()
	const width = 24
	done := width * s.step / max(p.total, 1)
	bar := strings.Repeat("=", done)
	if done < width {
		bar += ">" + strings.Repeat(" ", width-done-1)
	}
	fmt.Fprintf(p.w, "\r[%s] %d/%d loss %.4f acc %.3f %s tok/s ETA %s\x1b[K",
		bar, s.step, p.total, s.loss, s.acc, humanRate(s.tokensPerSec), humanDuration(s.eta))
	p.drawn = true
}

// line prints a message on its own line (an evaluation, a checkpoint).
func (p *progress) line(format string, args ...any) {
	if p.w == nil {
		return
	}
	if p.tty && p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
		p.last = time.Time{}
	}
	fmt.Fprintf(p.w, format+"\n", args...)
}

func (p *progress) finish() {
	if p.w != nil && p.tty && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

func humanRate(x float64) string {
	switch {
	case x >= 1e6:
		return fmt.Sprintf("%.2fM", x/1e6)
	case x >= 1e3:
		return fmt.Sprintf("%.1fk", x/1e3)
	}
	return fmt.Sprintf("%.0f", x)
}

func humanDuration(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	return d.Round(time.Second).String()
}
