#!/usr/bin/env bash
# launch/slurm/train.sbatch under a real SLURM (Debian's slurmctld, slurmd and munge) started on the
# loopback by this test and stopped after it, with a private configuration, key, ports and state in a
# temporary folder (it leaves the host's /etc/slurm and /etc/munge alone):
#   1. `sbatch --wait` of the tiny training, 2 tasks by mpirun inside the allocation: the job
#      completes, both ranks trained (the global batch), a checkpoint, the export, nothing marked
#      "resumed".
#   2. the same script with LAUNCHER=srun (srun --mpi=pmix), signalled mid-run as --signal=B:USR1
#      signals it (`scancel --signal=USR1 --batch`): the ranks checkpoint and exit 0, the script
#      requeues the job, SLURM starts it again and it resumes from that checkpoint and finishes; one
#      log, appended to; every step logged once.
#   3. LAUNCHER=mpirun with a 1-minute limit and --signal=B:USR1@45: SLURM's own warning signal
#      stops it the same way.
# Needs root (slurmd starts the job's processes as the submitting user) and the packages slurmctld,
# slurmd, slurm-client, munge (launch/setup installs them); without them it reports itself skipped.
# Usage: slurm_test.sh LOOKAHEAD SOURCE_DIR WORK_DIR
set -uo pipefail
BIN=$1 SRC=$2 WORK=$3
SKIP=77
PATH=$PATH:/usr/sbin:/sbin  # the daemons
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root (slurmd runs the job as its submitter)"; exit $SKIP; }
for c in munged slurmctld slurmd sbatch scontrol scancel squeue sinfo; do
  command -v "$c" >/dev/null || { echo "SKIP: no $c (apt-get install slurmctld slurmd slurm-client munge)"; exit $SKIP; }
done
T=$WORK/slurm_test
rm -rf "$T" && mkdir -p "$T" || { echo "FAIL: cannot create $T"; exit 1; }
# The daemons' folder: short (munge's socket path must fit a sockaddr_un) and searchable by all
# (munged refuses a socket in a folder others cannot enter).
D=$(mktemp -d /tmp/la-slurm.XXXXXX) || { echo "FAIL: mktemp"; exit 1; }
chmod 755 "$D"
mkdir -p "$D/munge" "$D/state" "$D/spool" "$D/log" && chmod 755 "$D/munge"
export SLURM_CONF=$D/slurm.conf
START=$(date +%s)
fail() { echo "FAIL: $*"; exit 1; }
show() { echo "---- $1"; sed 's/^/    /' "$1" | tail -"${2:-30}"; }
lines() { cat "$1" 2>/dev/null | grep -c . || true; }
daemon_logs() { for f in "$D"/log/*.log "$D"/munge/munged.log; do [ -f "$f" ] && show "$f" 15; done; }

# Stops what this test started: its jobs, then the daemons by their pid files, then any process left
# holding a file of the daemons' folder open (slurmstepd logs there) or working in the test's folder
# (the ranks run with --chdir=$T).
cleanup() {
  if [ -f "$D/slurmctld.pid" ]; then
    timeout 10 scancel --user=root >/dev/null 2>&1
    for _ in $(seq 1 20); do [ -z "$(timeout 5 squeue -h -t R,CG 2>/dev/null)" ] && break; sleep 0.5; done
  fi
  for f in slurmd.pid slurmctld.pid munge/munged.pid; do
    [ -f "$D/$f" ] && kill -TERM "$(cat "$D/$f")" 2>/dev/null
  done
  sleep 1
  for f in slurmd.pid slurmctld.pid munge/munged.pid; do
    [ -f "$D/$f" ] && kill -KILL "$(cat "$D/$f")" 2>/dev/null
  done
  local p
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    if [ "$(readlink "$p/cwd" 2>/dev/null)" = "$T" ] ||
      ls -l "$p/fd" 2>/dev/null | grep -q -- "-> $D/"; then
      echo "cleanup: killing leftover $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null | cut -c1-80) (pid ${p#/proc/})"
      kill -KILL "${p#/proc/}" 2>/dev/null
    fi
  done
  rm -rf "$D"
}
trap cleanup EXIT

# ---- munge: a fresh key, its own socket, pid and seed files.
dd if=/dev/urandom of="$D/munge/munge.key" bs=1024 count=1 status=none && chmod 400 "$D/munge/munge.key"
munged --socket="$D/munge/munge.socket" --key-file="$D/munge/munge.key" --pid-file="$D/munge/munged.pid" \
  --log-file="$D/munge/munged.log" --seed-file="$D/munge/munged.seed" || { daemon_logs; fail "munged did not start"; }

# ---- slurm.conf: one node (this host, 2 CPUs) on 127.0.0.1, free loopback ports, no accounting.
free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 30000))
    ss -Htln "sport = :$p" 2>/dev/null | grep -q . || { echo $p; return; }
  done
  echo 0
}
CTLD_PORT=$(free_port)
SLURMD_PORT=$(free_port)
[ "$SLURMD_PORT" != "$CTLD_PORT" ] || SLURMD_PORT=$((CTLD_PORT + 1))
H=$(hostname -s)
cat >"$D/slurm.conf" <<EOF
ClusterName=la$$
SlurmctldHost=$H(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$D/munge/munge.socket,cred_expire=10
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
NodeName=$H NodeAddr=127.0.0.1 CPUs=2 RealMemory=2000 State=UNKNOWN
PartitionName=la Nodes=$H Default=YES MaxTime=INFINITE State=UP
EOF
# No cgroups: processes are tracked by their parent chain (proctrack/linuxproc).
printf 'CgroupPlugin=autodetect\nConstrainCores=no\nConstrainRAMSpace=no\nConstrainDevices=no\n' >"$D/cgroup.conf"

slurmctld -f "$SLURM_CONF" -i || { daemon_logs; fail "slurmctld did not start"; }
slurmd -f "$SLURM_CONF" || { daemon_logs; fail "slurmd did not start"; }
for _ in $(seq 1 60); do
  [ "$(timeout 5 sinfo -h -o %t 2>/dev/null)" = "idle" ] && break
  sleep 0.5
done
[ "$(timeout 5 sinfo -h -o %t 2>/dev/null)" = "idle" ] || { sinfo; daemon_logs; fail "the node did not come up idle"; }
echo "ok: munged, slurmctld (port $CTLD_PORT) and slurmd (port $SLURMD_PORT) up, node $H idle in $(($(date +%s) - START)) s"

timeout 60 "$BIN" data synth --out "$T/data.h5" --identities 8 --per-identity 4 --size 64 --latent-size 8 \
  --prompt-embeds 3x24 --pooled 16 --clip-features 5x12 >"$T/synth.log" 2>&1 || { show "$T/synth.log"; fail "data synth"; }
# A run's INI: tiny.ini with train.steps set by the test (a requeued job gets its script's arguments
# again, so the test shortens the run there while the job waits in the queue). ini FILE STEPS
ini() { sed "/^\[train\]/,/^\[/ s/^steps = .*/steps = $2/" "$SRC/launch/configs/tiny.ini" >"$1"; }
# The script as is; the options below override its #SBATCH lines for this 2-CPU node without GPUs.
# submit LAUNCHER NAME [sbatch options]: the tiny training into $T/NAME, configured by $T/NAME.ini,
# logged to $T/NAME-<job id>.out; prints the job id.
submit() {
  env LAUNCHER="$1" OUT="$T/$2" LOOKAHEAD_ROOT="$SRC" CONFIG="$T/$2.ini" LOOKAHEAD="$BIN" \
    sbatch --parsable --chdir="$T" --job-name="$2" --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 \
    --gpus-per-node=0 --output="$T/%x-%j.out" "${@:3}" "$SRC/launch/slurm/train.sbatch" \
    --data.train_set="$T/data.h5" --train.progress=false --train.checkpoint_every=2 | cut -d';' -f1
}
job_field() { timeout 10 scontrol show job "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }

# ---- 1. sbatch --wait, LAUNCHER=mpirun, 4 steps.
ini "$T/mpirun.ini" 4
t0=$(date +%s)
J1=$(submit mpirun mpirun --time=30 --wait)
rc=$?
LOG1=$T/mpirun-$J1.out
[ "$rc" -eq 0 ] || { [ -f "$LOG1" ] && show "$LOG1"; daemon_logs; fail "sbatch --wait (mpirun) exited $rc"; }
[ "$(job_field "$J1" JobState)" = COMPLETED ] || { timeout 10 scontrol show job "$J1"; show "$LOG1"; fail "job $J1 not COMPLETED"; }
[ "$(job_field "$J1" ExitCode)" = 0:0 ] || fail "job $J1: ExitCode $(job_field "$J1" ExitCode)"
[ "$(job_field "$J1" NumTasks)" = 2 ] || fail "job $J1: NumTasks $(job_field "$J1" NumTasks), expected 2"
grep -q "train.sbatch: job $J1 (restart 0), 2 ranks on 1 node(s) by mpirun" "$LOG1" || { show "$LOG1"; fail "job $J1: no start line"; }
# faces_valid counts the global batch: batch_per_rank 2 x 2 ranks.
[ "$(grep -c '"faces_valid":4.0' "$T/mpirun/metrics.jsonl")" -eq 4 ] || { show "$T/mpirun/metrics.jsonl"; fail "job $J1: not 4 steps of 2 ranks"; }
grep -q '"resumed"' "$T/mpirun/metrics.jsonl" && { show "$T/mpirun/metrics.jsonl"; fail "job $J1: a fresh run marked resumed"; }
[ -s "$T/mpirun/checkpoints/step-000004.h5" ] || fail "job $J1: no checkpoint at step 4"
[ -s "$T/mpirun/export/ip_adapter.safetensors" ] || fail "job $J1: no export"
echo "ok: sbatch --wait, mpirun: job $J1 COMPLETED, 2 tasks, 4 steps, checkpoint, export ($(($(date +%s) - t0)) s)"

# ---- 2, 3. A run stopped by SIGUSR1 to the batch shell, requeued by the script, resumed to the end.
# preempted LAUNCHER NAME HOW: HOW scancel sends the signal with `scancel --signal=USR1 --batch` once
# the run has logged 3 steps; HOW timelimit leaves it to SLURM: --time=1 --signal=B:USR1@45 (the
# script's own warning, shortened: due 15 s into the job, sent at slurmctld's next time-limit check,
# which runs every 30 s).
preempted() {
  local launcher=$1 name=$2 how=$3 J LOG t0 stopped target state opts=(--time=30)
  [ "$how" = timelimit ] && opts=(--time=1 --signal=B:USR1@45)
  ini "$T/$name.ini" 400
  t0=$(date +%s)
  J=$(submit "$launcher" "$name" "${opts[@]}")
  [ -n "$J" ] || fail "$name: sbatch failed"
  LOG=$T/$name-$J.out
  if [ "$how" = scancel ]; then
    for _ in $(seq 1 150); do
      [ "$(lines "$T/$name/metrics.jsonl")" -ge 3 ] && break
      sleep 1
    done
    [ "$(lines "$T/$name/metrics.jsonl")" -ge 3 ] || { show "$LOG"; daemon_logs; fail "job $J: no training progress"; }
    timeout 10 scancel --signal=USR1 --batch "$J" || fail "scancel --signal=USR1 --batch $J"
  fi
  for _ in $(seq 1 240); do
    grep -q "requeueing job $J" "$LOG" 2>/dev/null && break
    sleep 0.5
  done
  grep -q "requeueing job $J" "$LOG" || { show "$LOG"; daemon_logs; fail "job $J: not requeued after SIGUSR1"; }
  grep -q "train.sbatch: SIGUSR1: asking the ranks" "$LOG" || { show "$LOG"; fail "job $J: the batch shell saw no SIGUSR1"; }
  stopped=$(sed -n 's/.*checkpoint .*(step \([0-9]*\),.*/\1/p' "$LOG" | tail -1)
  [ -n "$stopped" ] || { show "$LOG"; fail "job $J: no checkpoint after SIGUSR1"; }
  [ "$stopped" -lt 400 ] || fail "job $J: the run did not stop early"
  # Written once, also when the stop comes right after a periodic checkpoint of the same step.
  [ "$(grep -c "checkpoint .*(step $stopped," "$LOG")" -eq 1 ] || { show "$LOG"; fail "job $J: step $stopped checkpointed twice"; }
  echo "ok: job $J ($launcher, $how): SIGUSR1 -> checkpoint at step $stopped, exit 0, requeued" \
    "($(job_field "$J" JobState), $(($(date +%s) - t0)) s after submission)"
  # The requeued run: 4 more steps, and no second warning.
  target=$((stopped + 4))
  ini "$T/$name.ini" $target
  if [ "$how" = timelimit ]; then
    timeout 10 scontrol update JobId="$J" TimeLimit=30 || fail "job $J: scontrol update TimeLimit"
  fi
  for _ in $(seq 1 240); do
    case "$(job_field "$J" JobState)" in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY) break ;; esac
    sleep 0.5
  done
  state=$(job_field "$J" JobState)
  [ "$state" = COMPLETED ] || { timeout 10 scontrol show job "$J"; show "$LOG" 60; daemon_logs; fail "job $J: $state after the requeue"; }
  [ "$(job_field "$J" Restarts)" = 1 ] || fail "job $J: Restarts $(job_field "$J" Restarts), expected 1"
  [ "$(job_field "$J" ExitCode)" = 0:0 ] || fail "job $J: ExitCode $(job_field "$J" ExitCode)"
  grep -q "train.sbatch: job $J (restart 0), 2 ranks on 1 node(s) by $launcher" "$LOG" || { show "$LOG"; fail "job $J: no first start in the log"; }
  grep -q "train.sbatch: job $J (restart 1), 2 ranks on 1 node(s) by $launcher" "$LOG" || { show "$LOG"; fail "job $J: the requeued run is not appended to the log"; }
  grep -q "resumed from .* at step $stopped " "$LOG" || { show "$LOG" 60; fail "job $J: did not resume at step $stopped"; }
  python3 - "$T/$name/metrics.jsonl" "$stopped" "$target" <<'EOF' || { show "$T/$name/metrics.jsonl"; fail "job $J: metrics"; }
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
stopped, target = int(sys.argv[2]), int(sys.argv[3])
steps = [r["step"] for r in recs]
assert steps == list(range(target)), f"steps {steps}, expected 0..{target - 1} once each"
marked = [r["step"] for r in recs if r.get("resumed")]
assert marked == [stopped], f"records marked resumed: {marked}, expected [{stopped}]"
assert all(r["faces_valid"] == 4.0 for r in recs), "not 2 ranks throughout"
EOF
  [ -s "$T/$name/checkpoints/step-$(printf %06d $target).h5" ] || fail "job $J: no checkpoint at step $target"
  echo "ok: job $J requeued (Restarts=1): resumed at step $stopped, trained to step $target, COMPLETED, one log ($(($(date +%s) - t0)) s)"
}
preempted srun srun scancel
preempted mpirun mpirun-timelimit timelimit
echo "PASS ($(($(date +%s) - START)) s)"
