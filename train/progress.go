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
	columns  func() int // the terminal's width; nil or 0: 80
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
	cols := 0
	if p.columns != nil {
		cols = p.columns()
	}
	if cols <= 0 {
		cols = 80
	}
	fmt.Fprintf(p.w, "\r%s\x1b[K", progressLine(s, p.total, cols))
	p.drawn = true
}

// progressLine is the redrawn progress line for a terminal cols columns
// wide: at most cols-1 characters, so that it never wraps (a wrapped line
// cannot be redrawn with a carriage return and scrolls instead). Fields are
// dropped from the least useful (the bar, then ETA, tokens/s, accuracy) as
// the width shrinks; the step count always stays.
func progressLine(s progressState, total, cols int) string {
	limit := max(cols-1, 1)
	counter := fmt.Sprintf("%d/%d", s.step, total)
	fields := []string{
		counter,
		fmt.Sprintf("loss %.4f", s.loss),
		fmt.Sprintf("acc %.3f", s.acc),
		humanRate(s.tokensPerSec) + " tok/s",
		"ETA " + humanDuration(s.eta),
	}
	for n := len(fields); n >= 1; n-- {
		text := strings.Join(fields[:n], " ")
		if room := limit - len(text) - 1; n == len(fields) && room >= 12 { // a bar of at least 10 cells
			return bar(s.step, total, min(room-2, 24)) + " " + text
		}
		if len(text) <= limit {
			return text
		}
	}
	return counter[:min(len(counter), limit)]
}

// bar is "[====>    ]" with width cells inside the brackets.
func bar(step, total, width int) string {
	done := min(width*step/max(total, 1), width)
	b := strings.Repeat("=", done)
	if done < width {
		b += ">" + strings.Repeat(" ", width-done-1)
	}
	return "[" + b + "]"
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
