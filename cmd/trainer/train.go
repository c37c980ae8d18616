package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/configs"
	"github.com/attnlab/attnlab/train"
)

func newTrainCmd() *cobra.Command {
	var cfgPath, out, resume, device string
	var sets []string
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Train a model from an experiment file (default: the embedded quickstart)",
		Long: `train trains the experiment (a file, or the embedded quickstart) and writes the run
folder --out: a new or empty folder, or a run folder without a checkpoint. A folder
of other files is refused (a run would overwrite them); one holding a run is
continued with --resume.

--resume DIR continues the run in DIR exactly from its checkpoint, with its own
config.yaml. --set may change only these keys there:
  ` + strings.Join(train.ResumeChangeable, ", ") + `
Any other key is refused (the checkpoint and the metrics so far belong to the
run's config). train.steps may extend the run, not shorten it below the
checkpoint's step; with schedule cosine or linear the learning rate then follows
the new length's curve from the checkpoint on, so the run differs from one
trained at the new length from the start (with constant it does not).
A refused resume writes nothing.

One process writes a run folder at a time: train holds DIR/lock while it runs,
and a second one exits with status 2 ("locked by HOST pid N"). A lock left by a
killed process is taken over.

Ctrl-C, SIGTERM, SIGHUP (the terminal closed) and SIGPIPE (its output piped
into a reader that quit, e.g. | head) finish the step in flight, save a
checkpoint and exit with status 130; a closed stdout only stops the progress
output, never the run's files.`,
		Example: `  trainer train                                   # embedded quickstart: MQAR, ~2 minutes on 2 cores
  trainer train --config configs/quickstart.yaml --set train.lr=1e-3 --out runs/lr1e-3
  trainer train --config configs/quickstart.yaml --set model.attention.kind=standard --set task.seq_len=128
  trainer train --resume runs/quickstart-20261123-101500   # continue an interrupted run`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("resume") && resume == "" {
				return usageError{errors.New("--resume: give the run folder to continue, e.g. --resume runs/quickstart-20261123-101500")}
			}
			if resume != "" && (cfgPath != "" || out != "") {
				return usageError{errors.New("--resume continues the run in its own folder with its own config; drop --config and --out")}
			}
			dir := out
			if resume != "" {
				dir = resume
			}
			exp, err := loadExperiment(cfgPath, resume, withDevice(cmd, sets, device), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if dir == "" {
				dir = filepath.Join("runs", exp.Name+"-"+time.Now().Format("20060102-150405"))
			}
			// train.Run checks the folder (--out may not hold others' files
			// nor a run; --resume only a run) and takes its lock.
			ctx, stop := signal.NotifyContext(context.Background(), stopSignals()...)
			defer stop()
			tty := cmd.OutOrStdout() == os.Stdout && train.IsTerminal(os.Stdout)
			stdout := &dropOnError{w: cmd.OutOrStdout()}
			banner := fmt.Sprintf("run %s: %s, %s attention, task %s; writing %s", exp.Name, exp.Model.Kind, exp.Model.Attention.Kind, exp.Task.Kind, dir)
			sum, err := train.Run(ctx, exp, train.Options{Dir: dir, Resume: resume != "", Progress: stdout, TTY: tty, Banner: banner,
				Columns: func() int { return train.TerminalWidth(os.Stdout) }})
			if errors.Is(err, train.ErrInterrupted) {
				fmt.Fprintf(cmd.ErrOrStderr(), "interrupted: checkpoint saved; continue with: trainer train --resume %s\n", dir)
				return err
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "done: eval_accuracy %.4f eval_loss %.4f train_loss %.4f, %d steps, %d params, %.1f ms/step, %.0fs; results in %s\n",
				sum.EvalAccuracy, sum.EvalLoss, sum.TrainLoss, sum.Steps, sum.Params, sum.StepMsMedian, sum.WallSeconds, dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgPath, "config", "", "experiment YAML file (default: the embedded quickstart)")
	f.StringArrayVar(&sets, "set", nil, "override a config key by dotted path, KEY=VALUE (repeatable)")
	f.StringVar(&out, "out", "", "run folder (default runs/<name>-<timestamp>)")
	f.StringVar(&resume, "resume", "", "continue the run in this folder from its checkpoint")
	addDeviceFlag(cmd, &device)
	return cmd
}

// stopSignals are the signals that stop a run with a checkpoint: Ctrl-C,
// SIGTERM (a scheduler, compare), SIGHUP (the terminal closed) and SIGPIPE
// (stdout was a pipe whose reader quit: a write to it would otherwise kill
// the process). SIGINT and SIGHUP that the process was started ignoring
// (nohup, a background job of a script) stay ignored: asking for them
// would undo that.
func stopSignals() []os.Signal {
	sigs := []os.Signal{syscall.SIGTERM, syscall.SIGPIPE}
	for _, s := range []os.Signal{os.Interrupt, syscall.SIGHUP} {
		if !signal.Ignored(s) {
			sigs = append(sigs, s)
		}
	}
	return sigs
}

// dropOnError passes writes to w until one fails (stdout closed: a pipe
// whose reader quit, a closed terminal), then drops them: the run goes on
// writing its files, its progress output just stops.
type dropOnError struct {
	w      io.Writer
	failed bool
}

func (d *dropOnError) Write(p []byte) (int, error) {
	if !d.failed {
		if _, err := d.w.Write(p); err != nil {
			d.failed = true
		}
	}
	return len(p), nil
}

// loadExperiment reads the experiment of a run folder (resume), of a file
// (cfgPath) or the embedded quickstart, applies the --set overrides and
// validates it. Every error is a bad-input error naming the file or key.
// addDeviceFlag adds --device, which sets the config's device.
func addDeviceFlag(cmd *cobra.Command, device *string) {
	cmd.Flags().StringVar(device, "device", "", "where the model runs: cpu or cuda (sets the config's device; cuda needs the CUDA build, see trainer gpucheck)")
}

// withDevice appends --device, if given, to the --set overrides.
func withDevice(cmd *cobra.Command, sets []string, device string) []string {
	if !cmd.Flags().Changed("device") {
		return sets
	}
	return append(append([]string(nil), sets...), "device="+device)
}

func loadExperiment(cfgPath, resume string, sets []string, notes io.Writer) (config.Experiment, error) {
	var exp config.Experiment
	var err error
	switch {
	case resume != "":
		exp, err = config.Load(filepath.Join(resume, train.ConfigFile))
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat(resume); serr != nil {
				return exp, &train.BadInputError{Err: fmt.Errorf("--resume %s: no such folder", resume)}
			}
			return exp, &train.BadInputError{Err: fmt.Errorf("--resume %s: no %s there, not a run folder", resume, train.ConfigFile)}
		}
	case cfgPath != "":
		exp, err = config.Load(cfgPath)
	default:
		var text []byte
		if text, err = configs.FS.ReadFile(configs.Quickstart); err == nil {
			exp, err = config.Parse("quickstart.yaml (embedded)", text)
		}
	}
	if err != nil {
		return exp, &train.BadInputError{Err: err}
	}
	return finishExperiment(exp, sets, notes)
}

// finishExperiment applies the --set overrides to exp and validates it;
// errors are bad-input errors naming the key.
func finishExperiment(exp config.Experiment, sets []string, notes io.Writer) (config.Experiment, error) {
	for _, s := range sets {
		note, err := exp.SetNoted(s)
		if err != nil {
			return exp, &train.BadInputError{Err: err}
		}
		if note != "" && notes != nil {
			fmt.Fprintf(notes, "note: %s\n", note)
		}
	}
	if err := exp.Validate(); err != nil {
		return exp, &train.BadInputError{Err: err}
	}
	return exp, nil
}
