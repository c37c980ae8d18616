package layers

import (
	"errors"
	"testing"
	"time"
)

func TestAttentionGradients(t *testing.T) {
	for _, v := range Variants() {
		for _, st := range CheckSettings() {
			t.Run(v.Name+"/"+st.Name, func(t *testing.T) {
				seed := uint64(time.Now().UnixNano())
				res, err := CheckAttention(v.Name, st, seed)
				if errors.Is(err, ErrNotApplicable) {
					t.Skip(err)
				}
				if err != nil {
					t.Fatal(err)
				}
				if !res.Pass {
					t.Errorf("%v", res)
				}
			})
		}
	}
}

func TestBlockGradients(t *testing.T) {
	for _, norm := range []string{"layernorm", "rmsnorm"} {
		for _, st := range CheckSettings() {
			if st.FlashBlock > 0 {
				continue // small flash tiles: standard's dense core has none
			}
			t.Run(norm+"/"+st.Name, func(t *testing.T) {
				res, err := CheckBlock("standard", norm, st, uint64(time.Now().UnixNano()))
				if err != nil {
					t.Fatal(err)
				}
				if !res.Pass {
					t.Errorf("%v", res)
				}
			})
		}
	}
}
