#!/usr/bin/env bash
# Kills (or stalls) one rank during a collective and checks that every surviving rank ends with a
# timeout report naming the op, its rank and its collective history, within the configured time.
# For `kill`, mpirun runs with --enable-recovery so that it does not tear the job down itself when
# a rank dies: the point is that our watchdog, not the launcher, turns the hang into an error.
# (With --enable-recovery mpirun exits 0 whatever its ranks did, so there each survivor's own
# "ending the job (exit code 3)" line is the evidence; for `stall` the job's exit code must be 3.)
# `engine` stalls a rank while the others gather a sharded-engine unit: the engine is destroyed
# while the gather's timeout error unwinds, which must still end in the report, not in a crash.
# Usage: fault_test.sh MPIEXEC PROBE kill|stall|engine NP
set -uo pipefail
MPIEXEC=$1 PROBE=$2 MODE=$3 NP=$4
# The limit measures our detection and abort. After MPI_Abort mpirun waits 2 x its kill delay
# before it exits (launch/mpi_env.sh sets 15 s for preemption checkpoints); OpenMPI's 1 s here.
export OMPI_MCA_odls_base_sigkill_timeout=1
TIMEOUT_S=3      # collective timeout given to the probe
GRACE_S=1        # the probe's abort grace
LIMIT_S=$((TIMEOUT_S + GRACE_S + 12))  # + start-up of NP ranks on a loaded 2-core machine
log=$(mktemp)
start=$(date +%s.%N)
recovery=()
[ "$MODE" = kill ] && recovery=(--enable-recovery)
timeout $((LIMIT_S + 30)) "$MPIEXEC" -np "$NP" --oversubscribe "${recovery[@]}" "$PROBE" "$MODE" "$TIMEOUT_S" >"$log" 2>&1
rc=$?
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
cat "$log"
fail() { echo "FAIL: $*"; rm -f "$log"; exit 1; }
[ "$rc" -ne 124 ] || fail "the job hung (killed by timeout(1) after $((LIMIT_S + 30)) s)"
[ "$MODE" = kill ] || [ "$rc" -eq 3 ] || fail "the job exited $rc, expected 3 (distributed failure)"
# The stuck op: the fourth all_reduce, or the unit's weight gather (1000 weights padded for NP shards).
op="all_reduce #3 (float32, 4096 bytes)" history="#3 world/mpi all_reduce float32 4096 B"
[ "$MODE" = engine ] && op="all_gather #3 (float32, " history="#3 world/mpi all_gather float32 [0-9]* B"
! grep -q "terminate called\|Aborted (core dumped)\|signal 6" "$log" || fail "a rank crashed instead of reporting"
for ((r = 0; r < NP - 1; r++)); do
  grep -qF "collective timeout: $op" "$log" || fail "no rank reported the timed-out ${op%% *}"
  grep -q "on communicator 'world' (mpi, rank $r of $NP)" "$log" || fail "rank $r did not report the timed-out op"
  grep -q "\[lookahead rank $r of $NP on host .*\] ending the job (exit code 3)" "$log" ||
    fail "rank $r did not end the job with the distributed-failure exit code"
done
grep -q "#2 world/mpi all_reduce float32 4096 B .* done" "$log" || fail "the report lacks the collective history"
grep -q "$history .* running" "$log" || fail "the report does not show the stuck op"
awk -v e="$elapsed" -v l="$LIMIT_S" 'BEGIN { exit !(e < l) }' || fail "took ${elapsed} s, limit ${LIMIT_S} s"
echo "PASS: $MODE: survivors reported the timeout and the job ended (rc $rc) after ${elapsed} s (limit ${LIMIT_S} s)"
rm -f "$log"
