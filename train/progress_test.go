package train

import (
	"strings"
	"testing"
	"time"
)

// The redrawn line never reaches the terminal's last column (a wrapped
// line scrolls instead of redrawing), whatever the width and step count.
func TestProgressLineFitsTheTerminal(t *testing.T) {
	s := progressState{step: 12345, loss: 1.23456, acc: 0.5, tokensPerSec: 123456, eta: 3*time.Hour + 25*time.Minute, lr: 1e-3}
	for _, total := range []int{100, 100000, 1 << 40} {
		for _, cols := range []int{1, 5, 20, 40, 60, 80, 120, 200} {
			line := progressLine(s, total, cols)
			if len(line) > max(cols-1, 1) {
				t.Errorf("total %d, %d columns: %d characters: %q", total, cols, len(line), line)
			}
			if cols >= 20 && !strings.Contains(line, "12345/") {
				t.Errorf("total %d, %d columns: no step count: %q", total, cols, line)
			}
		}
	}
	if line := progressLine(s, 100000, 120); !strings.HasPrefix(line, "[") || !strings.Contains(line, "ETA") {
		t.Errorf("120 columns: want the bar and every field, got %q", line)
	}
	if line := progressLine(s, 100000, 60); strings.HasPrefix(line, "[") || !strings.Contains(line, "loss") {
		t.Errorf("60 columns: want the fields before the bar, got %q", line)
	}
}
