#!/usr/bin/env bash
# The launch scripts on this machine: launch/templates/train-mpirun.sh with a hostfile of
# localhost (2 slots), and launch/slurm/train.sbatch run as SLURM would run the batch script (its
# SLURM_* variables set, no SLURM job id, so mpirun starts the ranks locally and nothing is
# requeued): a run, SIGUSR1 to the batch shell (checkpoint, exit 0), the script again resuming; bad
# input. Under a real SLURM: slurm_test.sh (ctest launch_slurm).
# Usage: templates_test.sh LOOKAHEAD SOURCE_DIR WORK_DIR
set -uo pipefail
BIN=$1 SRC=$2 WORK=$3
T=$WORK/templates_test
rm -rf "$T" && mkdir -p "$T" || { echo "FAIL: cannot create $T"; exit 1; }
fail() { echo "FAIL: $*"; exit 1; }
show() { echo "---- $1"; sed 's/^/    /' "$1" | tail -${2:-30}; }
JOB=""
# A failed check must not leave a run behind: the batch script forwards TERM to mpirun.
trap '[ -n "$JOB" ] && kill -TERM $JOB 2>/dev/null' EXIT
lines() { cat "$1" 2>/dev/null | grep -c . || true; }

timeout 60 "$BIN" data synth --out "$T/data.h5" --identities 8 --per-identity 4 --size 64 --latent-size 8 \
  --prompt-embeds 3x24 --pooled 16 --clip-features 5x12 >"$T/synth.log" 2>&1 || { show "$T/synth.log"; fail "data synth"; }
COMMON=(--data.train_set="$T/data.h5" --train.progress=false --train.checkpoint_every=2)

# ---- mpirun template: the hostfile's slots give the rank count.
printf '# two ranks on this host\nlocalhost slots=2\n\n' >"$T/hostfile"
HOSTFILE=$T/hostfile CONFIG=$SRC/launch/configs/tiny.ini OUT=$T/mpirun LOOKAHEAD=$BIN \
  timeout 200 "$SRC/launch/templates/train-mpirun.sh" "${COMMON[@]}" --train.steps=2 >"$T/mpirun.log" 2>&1 ||
  { show "$T/mpirun.log"; fail "train-mpirun.sh exited $?"; }
grep -q "train-mpirun: 2 ranks" "$T/mpirun.log" || { show "$T/mpirun.log"; fail "train-mpirun.sh did not count 2 ranks"; }
# faces_valid counts the global batch: batch_per_rank 2 × 2 ranks.
grep -q '"faces_valid":4.0' "$T/mpirun/metrics.jsonl" || { show "$T/mpirun/metrics.jsonl"; fail "the run did not have 2 ranks"; }
[ "$(lines "$T/mpirun/metrics.jsonl")" -eq 2 ] || fail "mpirun template: expected 2 metrics lines"
[ -s "$T/mpirun/checkpoints/step-000002.h5" ] || fail "mpirun template: no checkpoint at step 2"
echo "ok: train-mpirun.sh, 2 ranks from the hostfile, 2 steps, checkpoint"

HOSTFILE=$T/missing LOOKAHEAD=$BIN "$SRC/launch/templates/train-mpirun.sh" >"$T/nohost.log" 2>&1
rc=$?
[ "$rc" -eq 2 ] && grep -q "no hostfile '$T/missing'" "$T/nohost.log" || { show "$T/nohost.log"; fail "missing hostfile: rc $rc"; }
printf '# nothing\n\n' >"$T/empty_hostfile"
HOSTFILE=$T/empty_hostfile LOOKAHEAD=$BIN "$SRC/launch/templates/train-mpirun.sh" >"$T/empty.log" 2>&1
rc=$?
[ "$rc" -eq 2 ] && grep -q "names no host" "$T/empty.log" || { show "$T/empty.log"; fail "empty hostfile: rc $rc"; }
echo "ok: train-mpirun.sh refuses a missing or empty hostfile"

# ---- SLURM script, as sbatch runs it: SIGUSR1 (--signal=B:USR1) to the batch shell mid-run.
# slurm LOG STEPS: the batch script in the background as sbatch starts it; $! is its shell.
slurm() {
  env -u SLURM_JOB_ID -u SLURM_JOBID SLURM_NTASKS=2 SLURM_JOB_NUM_NODES=1 SLURM_JOB_NAME=la-test SLURM_CPUS_PER_TASK=1 \
    LOOKAHEAD_ROOT="$SRC" CONFIG="$SRC/launch/configs/tiny.ini" OUT="$T/slurm" LOOKAHEAD="$BIN" \
    bash "$SRC/launch/slurm/train.sbatch" "${COMMON[@]}" --train.steps="$2" >"$1" 2>&1 &
}
slurm "$T/slurm-1.log" 400
JOB=$!
for _ in $(seq 1 150); do
  [ "$(lines "$T/slurm/metrics.jsonl")" -ge 3 ] && break
  sleep 1
done
[ "$(lines "$T/slurm/metrics.jsonl")" -ge 3 ] || { kill -KILL $JOB; show "$T/slurm-1.log"; fail "SLURM script: no training progress"; }
kill -USR1 $JOB
timeout 120 bash -c "while kill -0 $JOB 2>/dev/null; do sleep 0.5; done" || { kill -KILL $JOB; fail "SLURM script: did not end after SIGUSR1"; }
wait $JOB
rc=$?
[ "$rc" -eq 0 ] || { show "$T/slurm-1.log"; fail "SLURM script: exit $rc after SIGUSR1 (expected 0)"; }
grep -q "SIGUSR1: asking the ranks" "$T/slurm-1.log" || { show "$T/slurm-1.log"; fail "SLURM script: USR1 not forwarded"; }
stopped=$(lines "$T/slurm/metrics.jsonl")
[ "$stopped" -lt 400 ] || fail "SLURM script: the run did not stop early"
ls "$T/slurm/checkpoints/"step-*.h5 >/dev/null 2>&1 || fail "SLURM script: no checkpoint after SIGUSR1"
echo "ok: train.sbatch: SIGUSR1 after $stopped steps -> checkpoint, exit 0"

# The requeued job: the same script resumes from the latest checkpoint.
target=$((stopped + 2))
slurm "$T/slurm-2.log" $target
JOB=$!
timeout 200 bash -c "while kill -0 $JOB 2>/dev/null; do sleep 0.5; done" || { kill -KILL $JOB; fail "SLURM script: requeued run hangs"; }
wait $JOB
rc=$?
[ "$rc" -eq 0 ] || { show "$T/slurm-2.log"; fail "SLURM script: requeued run exited $rc"; }
# Exactly one record marked: the first after the resume (the fresh start at step 0 is none).
marked=$(grep '"resumed": *1' "$T/slurm/metrics.jsonl" | sed 's/.*"step": *\([0-9]*\).*/\1/' | tr '\n' ' ')
[ "$marked" = "$stopped " ] || { show "$T/slurm-2.log"; fail "SLURM script: records marked resumed: '$marked', expected '$stopped '"; }
last=$(tail -1 "$T/slurm/metrics.jsonl" | sed 's/.*"step": *\([0-9]*\).*/\1/')
[ "$last" -eq $((target - 1)) ] || fail "SLURM script: last step $last, expected $((target - 1))"
echo "ok: train.sbatch requeued: resumed and trained to step $target"

env -u SLURM_JOB_ID LAUNCHER=pmi2 LOOKAHEAD_ROOT="$SRC" LOOKAHEAD="$BIN" bash "$SRC/launch/slurm/train.sbatch" >"$T/launcher.log" 2>&1
rc=$?
[ "$rc" -eq 2 ] && grep -q "LAUNCHER='pmi2': use mpirun or srun" "$T/launcher.log" || { show "$T/launcher.log"; fail "bad LAUNCHER: rc $rc"; }
echo "ok: train.sbatch refuses an unknown LAUNCHER"
echo "PASS"
