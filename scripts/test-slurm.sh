#!/bin/bash
# Runs deploy/slurm-array.sh under a real Slurm (no stub): a one-node
# cluster on localhost, started by this script and stopped at its exit.
#
#   scripts/test-slurm.sh                      # builds bin/trainer first
#   TRAINER=/path/to/trainer scripts/test-slurm.sh
#
# Needs Debian's slurm-wlm (slurmctld, slurmd, sbatch, squeue, scancel,
# sinfo, scontrol) and munge, and python3 to compare the results. If sbatch
# (or a daemon, or munged) is missing it runs, as root:
#   apt-get update && apt-get install -y slurm-wlm munge
#
# What it does (everything lives in one temporary folder, removed at exit):
#  - starts its own munged (a fresh key and socket in the temporary folder,
#    so a munged already running is left alone), then slurmctld and slurmd
#    in the foreground of background jobs, from a slurm.conf written there:
#    one node (this host's CPUs and memory, as `slurmd -C` reads them), one
#    partition, no accounting, and cgroup-free plugins
#    (proctrack/linuxproc, task/none), since containers have no systemd and
#    usually no writable cgroups; SLURM_CONF points the client commands at
#    it, and all traffic goes to 127.0.0.1;
#  - test 1: a 4-run sweep (2 attention kinds x 2 learning rates, 30 steps
#    of a tiny model) submitted as `sbatch --array=0-1 --cpus-per-task=1`
#    with SHARDS=2 into one shared folder (both tasks run at once), then
#    `trainer report`; its results.jsonl and results.csv must equal, field
#    for field except timings and the build, those of an unsharded
#    `trainer compare --threads 1` of the same sweep, and each task must
#    give its runs GOMAXPROCS = cpus-per-task / WORKERS = 1;
#  - test 2: a 4-run sweep with one long run per shard, submitted without
#    SHARDS (the array's size is used); array task 0 is cancelled with
#    scancel while its long run trains; then the array is resubmitted
#    (SHARDS=2): it must complete, skipping the runs that had finished
#    (summary.json and train.log untouched) and resuming the cancelled one
#    from its checkpoint.
# Prints PASS or FAIL lines and a summary; exits 1 on any failure.
#
# Environment: TRAINER (a built trainer; default: build bin/trainer),
# SLURM_TEST_PORT (slurmctld's port, slurmd's is the next; default 16817),
# SLURM_TEST_TIMEOUT (seconds an array may take; default 600),
# LONG_STEPS (steps of test 2's long runs; default 20000, ~30 s here).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
START=$SECONDS
PORT=${SLURM_TEST_PORT:-16817}
JOB_TIMEOUT=${SLURM_TEST_TIMEOUT:-600}
LONG_STEPS=${LONG_STEPS:-20000}
# The caller's sweep settings must not leak into the jobs (sbatch exports
# the environment).
unset SHARDS SWEEP OUT WORKERS

say() { printf '%s [%4ds] %s\n' "$(date +%H:%M:%S)" "$((SECONDS - START))" "$*"; }
CHECKS=() # "PASS ..." or "FAIL ...", in order
NFAIL=0
pass() { CHECKS+=("PASS  $1"); say "PASS: $1"; }
fail() { CHECKS+=("FAIL  $1"); NFAIL=$((NFAIL + 1)); say "FAIL: $1"; }
die() {
	fail "$*"
	exit 1
}

# --- Slurm and munge -------------------------------------------------------
need_install=0
for c in sbatch squeue scancel sinfo scontrol slurmctld slurmd munged munge; do
	command -v "$c" >/dev/null || need_install=1
done
if ((need_install)); then
	say "sbatch/slurmctld/slurmd/munged missing: apt-get install -y slurm-wlm munge"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq slurm-wlm munge >/dev/null
fi
if ! command -v python3 >/dev/null; then
	say "python3 missing: apt-get install -y python3"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null
fi
SLURM_VERSION=$(slurmctld -V)
say "$SLURM_VERSION, $(munged --version 2>&1 | head -1)"

T=$(mktemp -d /tmp/attnlab-slurm.XXXXXX)
chmod 700 "$T"
mkdir -p "$T/munge" "$T/state" "$T/spool" "$T/log" "$T/jobs"
chmod 700 "$T/munge"

PIDS=() # daemons started here, stopped in reverse order at exit
JOBS=() # Slurm jobs submitted here, cancelled at exit if still there

show_logs() {
	for f in "$T"/log/*.log "$T"/munge/munged.log; do
		[[ -s $f ]] || continue
		echo "----- last lines of $f"
		tail -n 25 "$f"
	done
}

cleanup() {
	local rc=$?
	set +e
	if ((${#JOBS[@]})) && [[ -n ${SLURM_CONF:-} ]]; then
		local live
		live=$(squeue -h -o %A -j "$(IFS=,; echo "${JOBS[*]}")" 2>/dev/null)
		if [[ -n $live ]]; then
			say "cleanup: cancelling jobs still queued or running: $(echo $live)"
			scancel "${JOBS[@]}" 2>/dev/null
			for _ in $(seq 60); do
				[[ -z $(squeue -h -j "$(IFS=,; echo "${JOBS[*]}")" 2>/dev/null) ]] && break
				sleep 1
			done
		fi
	fi
	if ((rc != 0)) && [[ -d $T ]]; then show_logs; fi
	local i
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		kill -TERM "${PIDS[i]}" 2>/dev/null
	done
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		for _ in $(seq 50); do
			kill -0 "${PIDS[i]}" 2>/dev/null || break
			sleep 0.2
		done
		if kill -0 "${PIDS[i]}" 2>/dev/null; then
			say "cleanup: daemon pid ${PIDS[i]} ignored SIGTERM; killing it"
			kill -KILL "${PIDS[i]}" 2>/dev/null
		fi
		wait "${PIDS[i]}" 2>/dev/null
	done
	((${#PIDS[@]})) && say "cleanup: stopped the daemons started here (pids ${PIDS[*]})"
	rm -rf "$T"
	echo
	echo "==== test-slurm summary ($((SECONDS - START)) s)"
	local c
	for c in "${CHECKS[@]}"; do echo "  $c"; done
	if ((rc == 0 && NFAIL == 0)); then
		echo "PASS: deploy/slurm-array.sh works under a real Slurm ($SLURM_VERSION)"
		exit 0
	fi
	if ((NFAIL)); then
		echo "FAIL: $NFAIL of ${#CHECKS[@]} checks failed"
	else
		echo "FAIL: the script stopped with status $rc"
	fi
	exit 1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# munged of our own: its key and socket in $T, so whatever munged the
# machine may run is not touched.
dd if=/dev/urandom of="$T/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$T/munge/munge.key"
SOCK=$T/munge/munge.sock
munged --foreground --force --socket="$SOCK" --key-file="$T/munge/munge.key" \
	--pid-file="$T/munge/munged.pid" --log-file="$T/munge/munged.log" \
	--seed-file="$T/munge/munged.seed" >"$T/log/munged.stderr.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [[ -S $SOCK ]] && break; sleep 0.2; done
munge -S "$SOCK" -n | unmunge -S "$SOCK" >/dev/null || die "munged: a credential does not round-trip (see $T/munge/munged.log)"
say "munged (pid ${PIDS[-1]}) answers on $SOCK"

# --- slurm.conf ------------------------------------------------------------
NODE=$(hostname -s)
# The node as slurmd sees it: CPUs, sockets, cores, threads, memory.
HW=$(slurmd -C | head -1)
[[ $HW == NodeName=* ]] || die "slurmd -C printed no node line: $HW"
HW=${HW#NodeName=* }
MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$HW")
# A little under what slurmd reads, or a busy moment drains the node (Low RealMemory).
HW=${HW/RealMemory=$MEM/RealMemory=$((MEM * 95 / 100))}
CPUS=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$HW")
export SLURM_CONF=$T/slurm.conf
cat >"$SLURM_CONF" <<EOF
ClusterName=attnlab-test
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool/slurmd-%n
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No systemd and no cgroups in a container: process tracking by the
# process tree, no task binding, no resource-usage gathering.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
# Keep finished jobs visible to scontrol for the checks.
MinJobAge=3600
KillWait=30
SlurmdTimeout=300
NodeName=$NODE NodeAddr=127.0.0.1 $HW State=UNKNOWN
PartitionName=test Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
say "slurm.conf: $SLURM_CONF (node: $NODE $HW)"

slurmctld -D -i -f "$SLURM_CONF" >"$T/log/slurmctld.stderr.log" 2>&1 &
PIDS+=($!)
say "slurmctld started (pid ${PIDS[-1]})"
for _ in $(seq 60); do scontrol ping >/dev/null 2>&1 && break; sleep 0.5; done
scontrol ping | grep -q UP || die "slurmctld does not answer: $(scontrol ping 2>&1)"
slurmd -D -f "$SLURM_CONF" -N "$NODE" >"$T/log/slurmd.stderr.log" 2>&1 &
PIDS+=($!)
say "slurmd started (pid ${PIDS[-1]})"
state=
for _ in $(seq 120); do
	state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
	[[ $state == idle ]] && break
	kill -0 "${PIDS[-1]}" 2>/dev/null || die "slurmd exited (see its log below)"
	sleep 0.5
done
[[ $state == idle ]] || die "node $NODE is '$state', not idle, after 60 s: $(sinfo -R -h 2>&1)"
sinfo
scontrol show config | grep -E '^(ProctrackType|TaskPlugin|JobAcctGatherType|AccountingStorageType|SelectType|SLURM_VERSION) ' | sed 's/^/  /'
plugins=$(scontrol show config | grep -E '^(ProctrackType|TaskPlugin|JobAcctGatherType) ')
if grep -qi cgroup <<<"$plugins"; then
	die "a cgroup plugin is configured: $plugins"
fi
pass "one-node Slurm cluster up: node $NODE idle, cgroup-free plugins (proctrack/linuxproc, task/none)"

# --- helpers ---------------------------------------------------------------
if [[ -z ${TRAINER:-} ]]; then
	say "building bin/trainer"
	go build -o bin/trainer ./cmd/trainer
	TRAINER=$ROOT/bin/trainer
fi
[[ -x $TRAINER ]] || die "TRAINER=$TRAINER is not an executable"
TRAINER=$(realpath "$TRAINER")
say "trainer: $TRAINER"

# submit NAME [sbatch options...]: sbatch deploy/slurm-array.sh; sets JOB
# to the job id.
submit() {
	local name=$1
	shift
	local out
	out=$(sbatch --parsable --output="$T/jobs/$name-%A_%a.out" "$@" deploy/slurm-array.sh) || return 1
	JOB=${out%%;*}
	JOBS+=("$JOB")
}

# wait_job JOB: until squeue no longer lists the job (pending, running or
# completing); fails after JOB_TIMEOUT seconds.
wait_job() {
	local job=$1 t0=$SECONDS q
	while :; do
		q=$(squeue -h -j "$job" -o '%i %T' 2>/dev/null || true)
		[[ -z $q ]] && return 0
		if ((SECONDS - t0 > JOB_TIMEOUT)); then
			fail "job $job still in the queue after $JOB_TIMEOUT s: $(echo $q)"
			return 1
		fi
		sleep 1
	done
}

# task_states JOB: "TASK STATE EXIT" per array task, from scontrol.
task_states() {
	scontrol -o show job "$1" | tr ' ' '\n' | awk -F= '
		$1 == "ArrayTaskId" { id = $2 }
		$1 == "JobState" { st = $2 }
		$1 == "ExitCode" { print id, st, $2 }' | sort -n
}

# show_task_logs NAME JOB: the array tasks' output files.
show_task_logs() {
	local f
	for f in "$T/jobs/$1-$2_"*.out; do
		echo "----- ${f##*/}"
		sed 's/^/  | /' "$f"
	done
}

# same_rows A B: the rows of two sweep folders' results.jsonl and
# results.csv agree in every field but timings, memory and the build.
same_rows() {
	python3 - "$1" "$2" <<'EOF'
import csv, json, sys

# Timings, memory and the build differ between any two runs of the same
# config; every other field (grid values, seed, threads, config keys,
# params, losses, accuracies, steps, status, resumed...) must be equal.
IGNORE = {"step_ms_median", "train_tokens_per_sec", "peak_rss_bytes",
          "wall_seconds", "version", "commit"}

def jsonl(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]

def csvrows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))

bad = 0
for fname, load in (("results.jsonl", jsonl), ("results.csv", csvrows)):
    a = load(f"{sys.argv[1]}/{fname}")
    b = load(f"{sys.argv[2]}/{fname}")
    an = [r["run"] for r in a]
    bn = [r["run"] for r in b]
    if an != bn:
        print(f"  {fname}: runs differ: {an} vs {bn}")
        bad += 1
        continue
    keys = set()
    for ra, rb in zip(a, b):
        ks = (set(ra) | set(rb)) - IGNORE
        keys |= ks
        diff = [k for k in sorted(ks) if ra.get(k) != rb.get(k)]
        if diff:
            bad += 1
            for k in diff:
                print(f"  {fname}: {ra['run']}: {k}: sharded {ra.get(k)!r} vs unsharded {rb.get(k)!r}")
        elif fname == "results.jsonl":
            print(f"  equal: {ra['run']}: status {ra['status']}, eval_accuracy {ra['eval_accuracy']}, "
                  f"eval_loss {ra['eval_loss']}, train_loss {ra['train_loss']}, params {ra['params']}, threads {ra['threads']}")
    print(f"  {fname}: {len(a)} rows, {len(keys)} fields compared (ignored: {', '.join(sorted(IGNORE))})")
    if len(a) != 4:
        print(f"  {fname}: want 4 rows")
        bad += 1
sys.exit(1 if bad else 0)
EOF
}

# A tiny base experiment: 30 steps of a 1-layer, d_model 16 decoder on a
# small associative-recall task take well under a second.
cat >"$T/base.yaml" <<'EOF'
name: slurm-test
seed: 1
dtype: float32
task: {kind: assoc_recall, seq_len: 16, vocab: 32, kv_pairs: 2}
model:
  kind: decoder
  d_model: 16
  n_layers: 1
  n_heads: 2
  d_ff: 32
  norm: layernorm
  positional: learned
  attention: {kind: standard}
train: {steps: 30, batch_size: 8, lr: 3.0e-3, weight_decay: 0.01, warmup_steps: 5,
        schedule: cosine, grad_clip: 1.0, eval_every: 0, eval_examples: 64, checkpoint_every: 10}
EOF

# --- test 1: a sharded sweep equals the unsharded one -----------------------
cat >"$T/smoke.yaml" <<'EOF'
name: slurm-smoke
base: base.yaml
grid:
  model.attention.kind: [standard, flash]
  train.lr: [1.0e-3, 3.0e-3]
seeds: [1]
EOF
echo
say "test 1: 4 runs as a 2-task array (SHARDS=2, 1 CPU a task: both at once) into $T/sharded"
submit smoke --array=0-1 --cpus-per-task=1 \
	--export=ALL,SWEEP="$T/smoke.yaml",OUT="$T/sharded",TRAINER="$TRAINER",SHARDS=2,WORKERS=1 ||
	die "sbatch refused the array"
job=$JOB
say "submitted job $job"
squeue -j "$job" || true
if wait_job "$job"; then
	say "job $job left the queue; its tasks (task state exit):"
	states=$(task_states "$job")
	sed 's/^/  /' <<<"$states"
	show_task_logs smoke "$job"
	if [[ $states == $'0 COMPLETED 0:0\n1 COMPLETED 0:0' ]]; then
		pass "test 1: array job $job: both tasks COMPLETED, exit 0"
	else
		fail "test 1: array job $job: tasks not both COMPLETED 0:0"
	fi
	for i in 0 1; do
		if grep -q "shard $i/2: 2 runs" "$T/jobs/smoke-${job}_$i.out"; then
			pass "test 1: task $i ran shard $i/2 (2 runs)"
		else
			fail "test 1: task $i's output does not show shard $i/2 with 2 runs"
		fi
		if grep -q "GOMAXPROCS=1 each" "$T/jobs/smoke-${job}_$i.out"; then
			pass "test 1: task $i (--cpus-per-task=1, WORKERS=1) gave its runs GOMAXPROCS=1"
		else
			fail "test 1: task $i (--cpus-per-task=1, WORKERS=1) did not give its runs GOMAXPROCS=1"
		fi
	done
	say "trainer report $T/sharded"
	"$TRAINER" report "$T/sharded" | sed 's/^/  /'
	say "unsharded reference: trainer compare --config smoke.yaml --out $T/unsharded --workers 1 --threads 1"
	"$TRAINER" compare --config "$T/smoke.yaml" --out "$T/unsharded" --workers 1 --threads 1 >"$T/log/unsharded.out" 2>&1 ||
		{ cat "$T/log/unsharded.out"; die "the unsharded compare failed"; }
	tail -n 2 "$T/log/unsharded.out" | sed 's/^/  /'
	if same_rows "$T/sharded" "$T/unsharded"; then
		pass "test 1: the Slurm array's merged results.jsonl and results.csv equal the unsharded sweep's (4 runs, all but timing fields)"
	else
		fail "test 1: the Slurm array's results differ from the unsharded sweep's"
	fi
fi

# --- test 2: scancel a task mid-run, resubmit, nothing finished reruns -------
cat >"$T/cancel.yaml" <<EOF
name: slurm-cancel
base: base.yaml
set:
  train.checkpoint_every: 1000
# Runs: 0 steps=30 seed 1, 1 steps=30 seed 2, 2 long seed 1, 3 long seed 2;
# shard 0 gets runs 0 and 2, shard 1 runs 1 and 3.
grid:
  train.steps: [30, $LONG_STEPS]
seeds: [1, 2]
EOF
echo
say "test 2: 4 runs (a short and a $LONG_STEPS-step run per shard) as a 2-task array, SHARDS unset, into $T/cancel"
C=$T/cancel
short0=$C/runs/train.steps=30,seed=1
long0=$C/runs/train.steps=$LONG_STEPS,seed=1
submit cancel --array=0-1 \
	--export=ALL,SWEEP="$T/cancel.yaml",OUT="$C",TRAINER="$TRAINER",WORKERS=1 ||
	die "sbatch refused the array"
job=$JOB
say "submitted job $job; waiting for task 0's long run to save a checkpoint"
t0=$SECONDS
until [[ -f $long0/checkpoint.safetensors ]]; do
	if ((SECONDS - t0 > JOB_TIMEOUT)); then die "task 0's long run saved no checkpoint in $JOB_TIMEOUT s"; fi
	if [[ -z $(squeue -h -j "${job}_0" 2>/dev/null) ]]; then die "task 0 ended before its long run checkpointed: $(task_states "$job" | tr '\n' ' ')"; fi
	sleep 0.2
done
sleep 1
squeue -j "$job" || true
[[ -f $short0/summary.json ]] || fail "test 2: task 0's short run had not finished before its long run started"
say "scancel ${job}_0 while its long run trains ($(wc -l <"$long0/metrics.jsonl" 2>/dev/null || echo ?) lines in its metrics.jsonl)"
scancel "${job}_0"
wait_job "$job" || die "the first array of test 2 did not end"
states=$(task_states "$job")
say "job $job left the queue; its tasks (task state exit):"
sed 's/^/  /' <<<"$states"
show_task_logs cancel "$job"
if [[ $states == 0\ CANCELLED* && $states == *$'\n1 COMPLETED 0:0' ]]; then
	pass "test 2: task 0 CANCELLED by scancel, task 1 COMPLETED"
else
	fail "test 2: want task 0 CANCELLED and task 1 COMPLETED 0:0"
fi
if grep -q "shard 0/2: 2 runs" "$T/jobs/cancel-${job}_0.out" && grep -q "shard 1/2: 2 runs" "$T/jobs/cancel-${job}_1.out"; then
	pass "test 2: SHARDS unset: the tasks of --array=0-1 ran shards 0/2 and 1/2"
else
	fail "test 2: SHARDS unset: the tasks did not run shards 0/2 and 1/2"
fi
if [[ -f $long0/summary.json ]]; then
	fail "test 2: the long run finished before the cancel (raise LONG_STEPS); nothing was interrupted"
fi
if [[ -f $long0/checkpoint.safetensors ]]; then
	pass "test 2: the cancelled run left a checkpoint and no summary.json"
else
	fail "test 2: the cancelled run left no checkpoint"
fi
declare -A before
finished=()
for d in "$C"/runs/*/; do
	d=${d%/}
	[[ -f $d/summary.json ]] || continue
	finished+=("$d")
	before[$d]="$(stat -c %y "$d/summary.json") $(stat -c %y "$d/checkpoint.safetensors") $(grep -c '^=== ' "$d/train.log" || true)"
done
say "finished before the resubmission: ${#finished[@]} runs: $(for d in "${finished[@]}"; do printf '%s ' "${d##*/}"; done)"
((${#finished[@]} == 3)) || fail "test 2: want 3 runs finished before the resubmission, got ${#finished[@]}"

say "resubmitting the array (SHARDS=2, --array=0-1)"
submit cancel --array=0-1 \
	--export=ALL,SWEEP="$T/cancel.yaml",OUT="$C",TRAINER="$TRAINER",SHARDS=2,WORKERS=1 ||
	die "sbatch refused the resubmission"
job2=$JOB
say "submitted job $job2"
wait_job "$job2" || die "the resubmitted array did not end"
states=$(task_states "$job2")
say "job $job2 left the queue; its tasks (task state exit):"
sed 's/^/  /' <<<"$states"
show_task_logs cancel "$job2"
if [[ $states == $'0 COMPLETED 0:0\n1 COMPLETED 0:0' ]]; then
	pass "test 2: resubmitted array job $job2: both tasks COMPLETED, exit 0"
else
	fail "test 2: resubmitted array job $job2: tasks not both COMPLETED 0:0"
fi
logs2=$(cat "$T/jobs/cancel-${job2}_"*.out)
for d in "${finished[@]}"; do
	n=${d##*/}
	now="$(stat -c %y "$d/summary.json") $(stat -c %y "$d/checkpoint.safetensors") $(grep -c '^=== ' "$d/train.log" || true)"
	if [[ $now == "${before[$d]}" ]] && grep -qF "skip $n: finished earlier" <<<"$logs2"; then
		pass "test 2: $n not retrained (skipped; summary.json, checkpoint and train.log unchanged)"
	else
		fail "test 2: $n was touched by the resubmission (before: ${before[$d]}; now: $now)"
	fi
done
n=${long0##*/}
if grep -qF "resume $n" <<<"$logs2" && grep -q '"resumed": *true' "$long0/summary.json"; then
	pass "test 2: the cancelled run $n resumed from its checkpoint and finished"
else
	fail "test 2: the cancelled run $n did not resume and finish"
fi
say "trainer report $C"
rep=$("$TRAINER" report "$C")
sed 's/^/  /' <<<"$rep"
if grep -q "report: 4 runs (0 failed, 0 unfinished, 0 not started)" <<<"$rep"; then
	pass "test 2: the sweep is complete: 4 runs, none failed, unfinished or missing"
else
	fail "test 2: the sweep is not complete after the resubmission"
fi
