package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// largeConfig returns a valid experiment file of about size bytes (a task
// option holding a long list, one item a line) followed by tail, and the
// number of its lines before tail.
func largeConfig(size int, tail string) (string, int) {
	var b strings.Builder
	b.WriteString("name: big\ntask:\n  kind: assoc_recall\n  table:\n")
	lines := 4
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "    - [%d, %d, %d]\n", i, i*7, i*13)
		lines++
	}
	b.WriteString(tail)
	return b.String(), lines
}

// TestParseLargeSyntaxError checks that a syntax error near the end of a
// large file is placed on its line in bounded time: the old search parsed
// every prefix of the file, about a minute for this 512 KB one.
func TestParseLargeSyntaxError(t *testing.T) {
	tests := []struct {
		name string
		tail string
		line int // of the problem, counted from the first line of tail
		want string
	}{
		{"bad indent", "train:\n  steps: 10\n lr: 1\n", 3, "yaml syntax: did not find expected key"},
		{"mapping in a value", "model:\n  d_model: 4\n  n_heads: a: b\n", 3, "yaml syntax: mapping values are not allowed in this context"},
		{"unclosed flow", "train: {steps: 10\nmodel:\n  d_model: 4\n", 1, "yaml syntax: did not find expected ',' or '}'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			text, before := largeConfig(512<<10, tc.tail)
			start := time.Now()
			_, err := Parse("big.yaml", []byte(text))
			elapsed := time.Since(start)
			want := fmt.Sprintf("big.yaml: line %d: %s", before+tc.line, tc.want)
			if err == nil || err.Error() != want {
				t.Errorf("err = %v, want %s", err, want)
			}
			if elapsed > 5*time.Second { // generous: it takes well under a second
				t.Errorf("finding the error took %v", elapsed)
			}
		})
	}
}
