// Command trainer trains and evaluates small Transformers with swappable
// attention from YAML experiment files.
//
//	trainer train                          # the embedded quickstart
//	trainer train --config FILE --set train.lr=1e-3
//	trainer train --resume runs/quickstart-20261123-101500
//	trainer eval --run DIR
//	trainer list
//	trainer gradcheck --variant all
//	trainer bench --config configs/bench/ref-t256.yaml
//	trainer bench attention --kinds standard,flash --T 1024,2048,4096
//
// Exit status: 0 on success, 1 when training fails (a NaN loss, say), 2 for
// bad input (config, flags, files), 130 when interrupted (a checkpoint is
// written first).
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"

	"github.com/spf13/cobra"

	"github.com/attnlab/attnlab/internal/version"
	"github.com/attnlab/attnlab/train"
)

// Exit statuses.
const (
	exitFailure     = 1
	exitBadInput    = 2
	exitInterrupted = 130
)

// usageError marks errors in how the command was called.
type usageError struct{ error }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line args and returns the exit status; no panic
// escapes it.
func run(args []string, stdout, stderr io.Writer) (code int) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "error: internal error: %v (please report this with the command line)\n", r)
			code = exitFailure
		}
	}()
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	switch {
	case err == nil:
		return 0
	case errors.Is(err, train.ErrInterrupted):
		return exitInterrupted
	}
	fmt.Fprintf(stderr, "error: %s\n", oneLine(err.Error()))
	var ue usageError
	if train.IsBadInput(err) || errors.As(err, &ue) || isUnknownCommand(err) {
		return exitBadInput
	}
	return exitFailure
}

// oneLine makes s one line of single spaces: cobra's messages carry
// newlines and tabs ("Did you mean this?\n\ttrain").
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// isUnknownCommand reports whether err is cobra's error for a subcommand
// that does not exist (cobra has no error type for it): a usage error, not
// a failed run.
func isUnknownCommand(err error) bool {
	return strings.HasPrefix(err.Error(), "unknown command ")
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "trainer",
		Short: "Train small Transformers with swappable attention from YAML experiments",
		Long: `trainer trains small Transformers whose attention layer is any registered
variant, on synthetic tasks, from YAML experiment files, and writes a run
folder (config.yaml, metrics.jsonl, summary.json, checkpoint.safetensors).`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Version:       version.String(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%s: %w (see %s --help)", c.CommandPath(), err, c.CommandPath())}
	})
	var cpuProfile string
	var stopProfile func()
	root.PersistentFlags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile (go tool pprof) to this file")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if cpuProfile == "" {
			return nil
		}
		f, err := os.Create(cpuProfile)
		if err != nil {
			return usageError{fmt.Errorf("--cpuprofile: %w", err)}
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		stopProfile = func() { pprof.StopCPUProfile(); f.Close() }
		return nil
	}
	root.PersistentPostRun = func(*cobra.Command, []string) {
		if stopProfile != nil {
			stopProfile()
		}
	}
	root.AddCommand(newTrainCmd(), newEvalCmd(), newSampleCmd(), newAttnmapCmd(), newInfoCmd(), newListCmd(),
		newGradcheckCmd(), newGpucheckCmd(), newCompareCmd(), newReportCmd(), newBenchCmd())
	for _, c := range root.Commands() {
		c.Args = wrapArgs(c.Args)
	}
	return root
}

// wrapArgs marks positional-argument errors as usage errors.
func wrapArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	if check == nil {
		check = cobra.NoArgs
	}
	return func(c *cobra.Command, args []string) error {
		if err := check(c, args); err != nil {
			return usageError{fmt.Errorf("%s: %w", c.CommandPath(), err)}
		}
		return nil
	}
}
