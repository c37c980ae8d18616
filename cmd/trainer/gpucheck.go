package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/attnlab/attnlab/gpu"
)

func newGpucheckCmd() *cobra.Command {
	var asJSON bool
	var seed uint64
	cmd := &cobra.Command{
		Use:   "gpucheck",
		Short: "Check the GPU ops against the CPU in float64 (CUDA build only)",
		Long: `gpucheck runs each op of the CUDA path on GPU 0 in float32 on fresh random
inputs, twice with new inputs, and compares it with the same op computed in
float64 on the CPU (relative error ||gpu - cpu|| / ||cpu||, bound 1e-5),
then times a 4096 x 4096 x 4096 matrix product. It needs the binary that
scripts/build-cuda.sh builds (bin/trainer-cuda) and a machine with an NVIDIA
GPU; the default build says so and exits non-zero. It exits non-zero if any
case fails.`,
		RunE: func(c *cobra.Command, _ []string) error {
			rep, err := gpu.Check(seed)
			if err != nil {
				return fmt.Errorf("gpucheck: %w", err)
			}
			out := c.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(out, "device: %s\n", rep.Device)
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "op\tshape\trel err\tresult")
				for _, cs := range rep.Cases {
					res := "ok"
					switch {
					case cs.Error != "":
						res = "ERROR: " + cs.Error
					case !cs.Pass:
						res = fmt.Sprintf("FAIL (bound %.0e)", cs.Limit)
					}
					fmt.Fprintf(tw, "%s\t%s\t%.2e\t%s\n", cs.Name, cs.Shape, cs.RelErr, res)
				}
				tw.Flush()
				for _, t := range rep.Timings {
					if t.Error != "" {
						fmt.Fprintf(out, "%s: ERROR: %s\n", t.Name, t.Error)
						continue
					}
					fmt.Fprintf(out, "%s: median %.3f ms of %d runs, %.1f TFLOP/s\n", t.Name, t.MedianMS, t.Runs, t.TFLOPS)
				}
			}
			for _, cs := range rep.Cases {
				if !cs.Pass {
					return errors.New("gpucheck: some GPU ops do not match the CPU")
				}
			}
			for _, t := range rep.Timings {
				if t.Error != "" {
					return errors.New("gpucheck: a timing failed")
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.Flags().Uint64Var(&seed, "seed", 1, "seed of the random inputs")
	return cmd
}
