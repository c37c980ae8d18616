package data

import (
	"strings"
	"testing"

	"github.com/attnlab/attnlab/config"
)

// Every task with a seq_len refuses one beyond MaxSeqLen before it
// allocates anything proportional to it (assoc_recall's gap table and the
// probe examples made 1e12 positions crash the runtime).
func TestNewRefusesHugeSeqLen(t *testing.T) {
	for _, e := range Entries() {
		has := false
		for _, o := range e.Options {
			has = has || o.Name == "seq_len"
		}
		if !has {
			continue
		}
		for _, n := range []int{MaxSeqLen + 1, 1_000_000_000_000} {
			_, err := New(config.Component{Kind: e.Name, Options: map[string]any{"seq_len": n}}, 1)
			if err == nil || !strings.Contains(err.Error(), "task.seq_len: must be at most 1048576") {
				t.Errorf("%s with seq_len %d: error %v, want task.seq_len: must be at most 1048576", e.Name, n, err)
			}
		}
	}
}
