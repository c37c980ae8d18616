package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/configs"
	"github.com/attnlab/attnlab/report"
	"github.com/attnlab/attnlab/sweep"
	"github.com/attnlab/attnlab/train"
)

func newCompareCmd() *cobra.Command {
	var cfgPath, out, shardSpec string
	var workers, threads int
	var sets []string
	cmd := &cobra.Command{
		Use:   "compare",
		Short: "Run a sweep (a grid of configs x seeds), each run in its own process, then write results and a report",
		Long: `compare expands a sweep file (a base experiment, fixed overrides, a grid of
dotted config keys and a list of seeds) into runs, checks every run's config,
and trains the runs, each as its own trainer process, --workers at a time.
Each run writes DIR/runs/NAME (NAME from its grid values and seed). A run
whose folder holds summary.json is not run again, one that left a checkpoint
is resumed, so rerunning the same command continues an interrupted sweep.
A run being run by another process (its DIR/runs/NAME/lock is fresh) is
left to it.
At the end DIR gets results.jsonl, results.csv, report.md and plots/.`,
		Example: `  trainer compare --config configs/sweeps/mqar-mini.yaml --out runs/mqar-mini --workers 2
  trainer compare --config sweeps/mqar-mini.yaml          # the embedded copy
  trainer compare --config sweep.yaml --shard 0/4 --out /shared/sweep   # one of 4 machines
  trainer compare --config sweep.yaml --set train.steps=20 --out /tmp/smoke`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" {
				return usageError{errors.New("compare: --config SWEEP.yaml is required (e.g. --config sweeps/mqar-mini.yaml)")}
			}
			shard, err := sweep.ParseShard(shardSpec)
			if err != nil {
				return usageError{err}
			}
			if workers < 1 {
				return usageError{fmt.Errorf("--workers: want at least 1, got %d", workers)}
			}
			if threads < 0 {
				return usageError{fmt.Errorf("--threads: want 0 (automatic) or more, got %d", threads)}
			}
			s, err := sweep.Load(cfgPath, configs.FS)
			if err != nil {
				return &train.BadInputError{Err: err}
			}
			for _, a := range sets {
				if err := s.AddSet(a); err != nil {
					return &train.BadInputError{Err: err}
				}
			}
			runs, err := s.Expand(func(e config.Experiment) (int, error) {
				st, err := train.Build(e)
				if err != nil {
					return 0, err
				}
				return st.Task.SeqLen(), nil
			})
			if err != nil {
				return &train.BadInputError{Err: err}
			}
			dir := out
			if dir == "" {
				dir = filepath.Join("runs", s.Name)
			}
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("compare: cannot find the trainer binary to start runs with: %w", err)
			}
			// As trainer train: Ctrl-C, SIGTERM, a closed terminal or a
			// reader that quit stop the sweep cleanly (runs checkpoint,
			// results are written), and a gone stdout does not fail it.
			ctx, stop := signal.NotifyContext(context.Background(), stopSignals()...)
			defer stop()
			stdout := &dropOnError{w: cmd.OutOrStdout()}
			res, err := sweep.Execute(ctx, s, runs, sweep.Options{
				Dir: dir, Shard: shard, Workers: workers, Threads: threads,
				Launcher: sweep.Exec{Path: exe}, Log: stdout,
			})
			interrupted := errors.Is(err, train.ErrInterrupted)
			if err != nil && !interrupted {
				return err
			}
			if rerr := writeReport(stdout, dir, []string{dir}, ""); rerr != nil && !interrupted {
				return rerr
			}
			if interrupted {
				killed := ""
				if n := len(res.Killed); n > 0 {
					killed = fmt.Sprintf(", %d killed after the grace period before saving one (they resume from their last periodic checkpoint)", n)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "interrupted: %d runs finished now, %d stopped with a checkpoint%s; rerun the same command to continue\n",
					len(res.Done), len(res.Interrupted), killed)
				return train.ErrInterrupted
			}
			fmt.Fprintf(stdout, "sweep %s: %d runs finished now, %d earlier, %d failed\n", s.Name, len(res.Done), len(res.Skipped), len(res.Failed))
			if n := len(res.Locked); n > 0 {
				fmt.Fprintf(stdout, "sweep %s: %d runs left to the other processes that hold their locks (%s); rerun the command once those end if they did not finish them\n",
					s.Name, n, strings.Join(res.Locked, " "))
			}
			if n := len(res.Interrupted); n > 0 {
				// A run stopped by a signal sent to it alone (not to the sweep).
				return fmt.Errorf("%d runs were interrupted (%s) and saved a checkpoint; rerun the command to resume them",
					n, strings.Join(res.Interrupted, " "))
			}
			if n := len(res.Failed); n > 0 {
				return fmt.Errorf("%d of %d runs failed (%s); see failure.json and train.log in their folders under %s; rerunning the command retries them",
					n, len(res.Done)+n, strings.Join(res.Failed, " "), filepath.Join(dir, sweep.RunsDir))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgPath, "config", "", "sweep YAML file (a path, or an embedded name such as sweeps/mqar-mini.yaml)")
	f.StringVar(&out, "out", "", "sweep folder (default runs/<sweep name>)")
	f.IntVar(&workers, "workers", 1, "runs trained at a time")
	f.IntVar(&threads, "threads", 0, "GOMAXPROCS of each run (default: the CPUs available divided by --workers, at least 1)")
	f.StringVar(&shardSpec, "shard", "", "run only the runs whose index modulo N is I, as I/N (e.g. $SLURM_ARRAY_TASK_ID/8 for an 8-task array)")
	f.StringArrayVar(&sets, "set", nil, "override a config key of every run, KEY=VALUE (repeatable; not a grid key, nor a key under a grid key that is a whole component)")
	return cmd
}

func newReportCmd() *cobra.Command {
	var out, accuracy string
	cmd := &cobra.Command{
		Use:   "report DIR...",
		Short: "Merge the results of sweep folders (e.g. the shards') into results.jsonl, results.csv, report.md and plots/",
		Long: `report reads the run folders (DIR/runs/*/: run.json, config.yaml, summary.json)
of one or more sweep folders, keeps each run once (by name: a finished copy
before a failed one), and writes results.jsonl, results.csv, report.md and
plots/ into the first DIR or --out. Nothing is trained.

When the baseline (standard) ran at two or more sequence lengths, report.md
gets the speed and memory of every variant relative to it at each length,
as Long Range Arena's table gives them. --accuracy names another sweep
folder (of one task) whose accuracies are then drawn against those speeds
(LRA's figure), variant by variant.`,
		Example: `  trainer report runs/mqar-mini
  trainer report shard-0 shard-1 shard-2 --out merged
  trainer report runs/lra-speed --accuracy runs/lra-listops`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dest := out
			if dest == "" {
				dest = args[0]
			}
			return writeReport(cmd.OutOrStdout(), dest, args, accuracy)
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "folder to write into (default: the first DIR)")
	cmd.Flags().StringVar(&accuracy, "accuracy", "", "a sweep folder of one task whose accuracies the relative-speed figure plots (LRA's figure)")
	return cmd
}

// writeReport collects the runs of dirs and writes the result files and the
// report into dest; accuracy, if not empty, is the sweep folder whose
// accuracies the relative-speed figure draws.
func writeReport(w io.Writer, dest string, dirs []string, accuracy string) error {
	c, err := sweep.Collect(dirs...)
	if err != nil {
		return err
	}
	opts := report.Options{AccuracyFrom: accuracy}
	if accuracy != "" {
		if opts.Accuracy, err = sweep.Collect(accuracy); err != nil {
			return fmt.Errorf("--accuracy: %w", err)
		}
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return &train.BadInputError{Err: fmt.Errorf("--out: %w", err)}
	}
	if err := sweep.WriteResults(dest, c.Rows); err != nil {
		return err
	}
	wr, err := report.WriteWith(dest, c, opts)
	if err != nil {
		return err
	}
	for _, s := range c.Skipped {
		fmt.Fprintf(w, "report: skipped %s: no %s there, not a run of a sweep\n", s, sweep.RunInfoFile)
	}
	failed := 0
	for _, r := range c.Rows {
		if r.Status != sweep.StatusOK {
			failed++
		}
	}
	fmt.Fprintf(w, "report: %d runs (%d failed, %d unfinished, %d not started) -> %s, %s, %s and %d plot files in %s\n",
		len(c.Rows), failed, len(c.Unfinished), len(c.Missing), sweep.ResultsJSONL, sweep.ResultsCSV, report.ReportFile, len(wr.Files)-1, dest)
	return nil
}
