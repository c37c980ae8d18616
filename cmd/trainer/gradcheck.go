package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/attnlab/attnlab/layers"
)

type gradcheckRow struct {
	Variant   string  `json:"variant"`
	Setting   string  `json:"setting"`
	MaxRelErr float64 `json:"max_rel_err"`
	Pass      bool    `json:"pass"`
	Skipped   string  `json:"skipped,omitempty"` // why the variant refuses this setting
	Seed      uint64  `json:"seed"`
	Error     string  `json:"error,omitempty"`
}

func newGradcheckCmd() *cobra.Command {
	var variant string
	var asJSON bool
	var seed uint64
	cmd := &cobra.Command{
		Use:   "gradcheck",
		Short: "Check each attention variant's gradients against finite differences (float64)",
		Long: `gradcheck builds one attention layer of each variant in float64 at tiny sizes
(causal, bidirectional, both with a key-padding mask, with the position schemes
that act inside attention: rope, xpos, partial_rope, alibi, and the "tiles"
settings, whose tiled cores use 4 x 4 tiles over 9 positions), with random
inputs and parameters (sparse variants with the small windows they declare
for checks, trainer list --json shows them), and compares the gradients of the input and of every
parameter with central finite differences. A setting the variant does not
declare (trainer list shows what each supports) is n/a; in a declared one, a
refusal is a failure like a wrong gradient. It exits non-zero if any fails.`,
		Example: `  trainer gradcheck                  # every variant
  trainer gradcheck --variant standard --json
  trainer gradcheck --seed 42        # repeat a run exactly`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var names []string
			for _, v := range layers.Variants() {
				if variant == "all" || variant == v.Name {
					names = append(names, v.Name)
				}
			}
			if len(names) == 0 {
				return usageError{fmt.Errorf("--variant %s: unknown attention kind (see trainer list)", variant)}
			}
			if seed == 0 {
				seed = uint64(time.Now().UnixNano())
			}
			var rows []gradcheckRow
			failed := 0
			for _, n := range names {
				sup, err := layers.SupportOf(n)
				if err != nil {
					return err
				}
				for _, st := range layers.CheckSettings() {
					if refusal := sup.Allows(st.Setting()); refusal != nil {
						rows = append(rows, gradcheckRow{Variant: n, Setting: st.Name, Pass: true, Skipped: refusal.Error(), Seed: seed})
						continue
					}
					res, err := layers.CheckAttention(n, st, seed)
					r := gradcheckRow{Variant: n, Setting: st.Name, MaxRelErr: res.MaxRelErr, Pass: err == nil && res.Pass, Seed: seed}
					if err != nil { // declared, so even layers.ErrNotApplicable is a failure here
						r.Error = err.Error()
					}
					if !r.Pass {
						failed++
					}
					rows = append(rows, r)
				}
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rows); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "VARIANT\tSETTING\tMAX REL ERR\tPASS")
				for _, r := range rows {
					pass := "ok"
					switch {
					case r.Skipped != "":
						pass = "n/a: " + r.Skipped
					case !r.Pass:
						pass = "FAIL " + r.Error
					}
					errText := fmt.Sprintf("%.2e", r.MaxRelErr)
					if r.Skipped != "" || r.Error != "" { // nothing measured
						errText = "-"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Variant, r.Setting, errText, pass)
				}
				tw.Flush()
				fmt.Fprintf(w, "seed %d; tolerance: relative error <= 1e-5\n", seed)
			}
			if failed > 0 {
				return errors.New(fmt.Sprint(failed, " gradient check(s) failed"))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&variant, "variant", "all", "variant name, or all")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().Uint64Var(&seed, "seed", 0, "random seed (default: fresh each run)")
	return cmd
}
