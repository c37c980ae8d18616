package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/attnlab/attnlab/internal/finitejson"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/train"
)

func newEvalCmd() *cobra.Command {
	var dir, device string
	var examples int
	var asJSON, tensors bool
	cmd := &cobra.Command{
		Use:   "eval",
		Short: "Evaluate a run's checkpoint on held-out examples",
		Example: `  trainer eval --run runs/quickstart-20261123-101500
  trainer eval --run runs/quickstart-20261123-101500 --examples 4096 --json
  trainer eval --run runs/quickstart-20261123-101500 --tensors --json   # what scripts/check-safetensors.py compares`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usageError{fmt.Errorf("eval: --run DIR is required")}
			}
			exp, err := config.Load(filepath.Join(dir, train.ConfigFile))
			if err != nil {
				return &train.BadInputError{Err: fmt.Errorf("--run %s: %w", dir, err)}
			}
			if cmd.Flags().Changed("device") {
				exp.Device = device // validated with the rest when the model is built
			}
			if cmd.Flags().Changed("examples") {
				if examples < 1 {
					return usageError{fmt.Errorf("eval: --examples must be at least 1, got %d", examples)}
				}
				exp.Train.EvalExamples = examples
			}
			evaluate := train.Evaluate
			if tensors {
				evaluate = train.EvaluateTensors
			}
			res, err := evaluate(exp, filepath.Join(dir, train.CheckpointFile))
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				b, err := finitejson.Marshal(res) // a NaN loss is null, not a lost result
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(w, "%s\n", b)
				return err
			}
			fmt.Fprintf(w, "%s at step %d: eval_accuracy %.4f eval_loss %.4f over %d held-out examples\n",
				dir, res.Step, res.EvalAccuracy, res.EvalLoss, res.Examples)
			for _, t := range res.Tensors {
				fmt.Fprintf(w, "  %s %v %s sum %.6g first %.6g\n", t.Name, t.Shape, t.DType, t.Sum, t.First)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "run", "", "run folder")
	cmd.Flags().IntVar(&examples, "examples", 0, "held-out examples (default: the run's eval_examples)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	addDeviceFlag(cmd, &device)
	cmd.Flags().BoolVar(&tensors, "tensors", false, "also list every loaded parameter and buffer: checkpoint name, shape, dtype, sum, first values")
	return cmd
}
