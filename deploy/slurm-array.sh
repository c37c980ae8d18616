#!/bin/bash
# Run a sweep (trainer compare) as a Slurm job array: the array task with
# SLURM_ARRAY_TASK_ID I runs the sweep's runs whose index modulo SHARDS is
# I, all writing into one shared folder; a run finished by any task is never
# run again.
#
#   sbatch deploy/slurm-array.sh                        # 8 tasks, the embedded mqar-mini sweep
#   SWEEP=configs/sweeps/my.yaml OUT=/shared/sweeps/my sbatch --array=0-31 deploy/slurm-array.sh
#   SHARDS=8 sbatch --array=3,5 deploy/slurm-array.sh   # rerun shards 3 and 5 of the 8
#
# Then merge (every task also writes results and a report at its end, but
# tasks ending together may race; this one sees every run folder):
#
#   sbatch --dependency=afterany:<JOBID> --wrap "bin/trainer report /shared/sweeps/my"
#
# Resubmitting the same array continues an interrupted sweep: finished runs
# are skipped, runs that saved a checkpoint are resumed. Near the time
# limit Slurm sends SIGTERM (see --signal); the trainer passes it to its
# runs, which save a checkpoint and stop.
#
# Environment:
#   SHARDS   the number of shards the sweep is split into. Default: the
#            array's size, which is right only for a whole array numbered
#            from 0 (--array=0-7); resubmitting some tasks (--array=3,5)
#            needs SHARDS set to the original size, or the shards would
#            not match the first submission's.
#   SWEEP    the sweep file (an embedded name like sweeps/mqar-mini.yaml works too)
#   OUT      the shared sweep folder, on a file system every node sees
#   TRAINER  the trainer binary
#   WORKERS  runs at a time per task (each gets GOMAXPROCS = cpus-per-task / WORKERS,
#            passed as --threads: where Slurm does not bind a task to its
#            CPUs (TaskPlugin=task/none, no cgroups) the trainer would see
#            the whole node)
#
# --signal=B:TERM@300: Slurm signals the batch shell (which exec makes the
# trainer) 300 s before the time limit. The trainer gives its runs up to 2
# minutes after SIGTERM to save their checkpoints, then writes the task's
# results and report: the margin must exceed that grace.
#
#SBATCH --job-name=attnlab-sweep
#SBATCH --array=0-7
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=02:00:00
#SBATCH --signal=B:TERM@300
#SBATCH --output=attnlab-sweep-%A_%a.out
set -euo pipefail

SWEEP=${SWEEP:-sweeps/mqar-mini.yaml}
OUT=${OUT:-$PWD/runs/mqar-mini}
TRAINER=${TRAINER:-bin/trainer}
WORKERS=${WORKERS:-1}

: "${SLURM_ARRAY_TASK_ID:?run this with sbatch as a job array (sbatch --array=0-7 deploy/slurm-array.sh)}"
if [[ -z "${SHARDS:-}" ]]; then
	count=${SLURM_ARRAY_TASK_COUNT:?Slurm did not set SLURM_ARRAY_TASK_COUNT; set SHARDS}
	# The array's size is the number of shards only for --array=0-(N-1).
	if [[ "${SLURM_ARRAY_TASK_MIN:-0}" != 0 || "${SLURM_ARRAY_TASK_MAX:-}" != "$((count - 1))" ]]; then
		echo "error: the array is not 0-$((count - 1)) (min ${SLURM_ARRAY_TASK_MIN:-?}, max ${SLURM_ARRAY_TASK_MAX:-?}, $count tasks): set SHARDS to the sweep's number of shards, e.g. SHARDS=8 sbatch --array=3,5 deploy/slurm-array.sh" >&2
		exit 2
	fi
	SHARDS=$count
fi
if ! [[ "$SHARDS" =~ ^[1-9][0-9]*$ ]] || ((SLURM_ARRAY_TASK_ID >= SHARDS)); then
	echo "error: array task $SLURM_ARRAY_TASK_ID is not a shard of SHARDS=$SHARDS (task ids must be 0 to SHARDS-1)" >&2
	exit 2
fi
shard=$SLURM_ARRAY_TASK_ID

# Each run's GOMAXPROCS from the task's CPU allocation (0: the trainer's
# default, the CPUs it may run on).
threads=0
if [[ -n "${SLURM_CPUS_PER_TASK:-}" && "$WORKERS" =~ ^[1-9][0-9]*$ ]]; then
	threads=$((SLURM_CPUS_PER_TASK / WORKERS > 0 ? SLURM_CPUS_PER_TASK / WORKERS : 1))
fi

mkdir -p "$OUT"
echo "attnlab sweep $SWEEP: shard $shard/$SHARDS on $(hostname), ${SLURM_CPUS_PER_TASK:-?} CPUs, into $OUT"
# exec: the trainer receives Slurm's signals itself and forwards them to its runs.
exec "$TRAINER" compare --config "$SWEEP" --out "$OUT" --workers "$WORKERS" --threads "$threads" --shard "$shard/$SHARDS"
