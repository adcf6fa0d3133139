#!/usr/bin/env bash
# `lookahead train` on the simulated cluster (launch/cluster): the tiny model on 2 nodes x 2 ranks
# with dist.placement = node; then a whole node dies (every process in its namespaces, OpenMPI's
# daemon included) and the survivors must say which collective they were waiting for and end
# within the timeout; then the run resumes on the one node left, 2 ranks (resharding 4 -> 2), and
# finishes with every step logged once.
# Usage: cluster_train_test.sh SOURCE_ROOT LOOKAHEAD
# Needs root (network and UTS namespaces): exits 77 (ctest: skipped) otherwise.
set -uo pipefail
ROOT=$1 BIN=$2
CLUSTER="$ROOT/launch/cluster"
NAME=ctrain
fail() { echo "FAIL: $*" >&2; "$CLUSTER" down --name "$NAME" >/dev/null 2>&1; exit 1; }
show() { echo "---- $1"; tail -"${2:-40}" "$1" | sed 's/^/    /'; }
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: the simulated cluster needs root (network and UTS namespaces)"
  exit 77
fi
source "$ROOT/launch/mpi_env.sh"
export OMPI_MCA_odls_base_sigkill_timeout=3
T=$(mktemp -d)
trap '"$CLUSTER" down --name "$NAME" >/dev/null 2>&1; rm -rf "$T"' EXIT
lines() { if [ -f "$1" ]; then grep -c . "$1"; else echo 0; fi; }

timeout 60 "$BIN" data synth --out "$T/data.h5" --identities 8 --per-identity 4 --size 64 --latent-size 8 \
  --prompt-embeds 3x24 --pooled 16 --clip-features 5x12 >"$T/synth.log" 2>&1 || { show "$T/synth.log"; fail "data synth"; }
"$CLUSTER" up --name "$NAME" --nodes 2 --slots 2 >/dev/null || fail "cluster up"
train=("$BIN" train --config "$ROOT/launch/configs/tiny.ini" --data.train_set="$T/data.h5" --train.out="$T/run"
  --train.progress=false --train.steps=12 --train.checkpoint_every=3 --dist.placement=node)

# --- 2 x 2, then node 1 dies ----------------------------------------------------------------------
"$CLUSTER" mpirun --name "$NAME" -- -np 4 --tag-output "${train[@]}" --timeout 5 >"$T/run.log" 2>&1 &
job=$!
deadline=$(($(date +%s) + 200))
while [ "$(lines "$T/run/metrics.jsonl")" -lt 5 ]; do
  kill -0 $job 2>/dev/null || { show "$T/run.log"; fail "the 2 x 2 run ended before step 5"; }
  [ "$(date +%s)" -lt $deadline ] || { show "$T/run.log"; fail "no step 5 within 200 s"; }
  sleep 0.5
done
victims=$(ip netns pids "la$NAME-n1")
[ -n "$victims" ] || fail "no process runs on node 1"
n_at_kill=$(lines "$T/run/metrics.jsonl")
kill -KILL $victims
killed_at=$(date +%s)
while kill -0 $job 2>/dev/null; do
  (($(date +%s) - killed_at <= 90)) || { kill -KILL $job; show "$T/run.log"; fail "the job hung after node 1 died"; }
  sleep 0.5
done
wait $job
rc=$?
took=$(($(date +%s) - killed_at))
[ "$took" -le 60 ] || fail "the job took $took s to end after node 1 died (limit 60 s)"
[ $rc -ne 0 ] || { show "$T/run.log"; fail "exit code 0 after a node died"; }
for r in 0 1; do  # the survivors, both on node 0
  grep -Eq "collective timeout: .*\(mpi, rank $r of 4\)|stop signal received while this rank has waited .*\(mpi, rank $r of 4\)" \
    "$T/run.log" || { show "$T/run.log" 60; fail "survivor rank $r did not say which collective it waited for"; }
done
n_after=$(lines "$T/run/metrics.jsonl")
((n_after < 12)) || fail "all 12 steps were logged although node 1 died at line $n_at_kill"
[ -s "$T/run/checkpoints/step-000003.h5" ] || { ls -l "$T/run/checkpoints"; fail "no checkpoint before node 1 died"; }
echo "node 1 (pids $(echo $victims)) killed at metrics line $n_at_kill; job ended rc $rc after $took s"

# --- resume on node 0 alone: 4 -> 2 ranks ---------------------------------------------------------
addr0=$(awk '$1 == 0 {print $4}' "/run/lookahead-cluster/$NAME/nodes")
timeout 300 "$CLUSTER" mpirun --name "$NAME" -- -np 2 --host "$addr0:2" "${train[@]}" --timeout 30 \
  --train.resume=latest >"$T/resume.log" 2>&1 || { show "$T/resume.log"; fail "the resume on one node failed"; }
grep -Eq "resumed from .*step-[0-9]+\.h5 at step [0-9]+ \(saved on 4 rank\(s\), now 2\)" "$T/resume.log" ||
  { show "$T/resume.log"; fail "no resume from a 4-rank checkpoint onto 2 ranks"; }
python3 - "$T/run/metrics.jsonl" <<'EOF' || fail "metrics lost, repeated or out of order across the node's death"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
steps = [m["step"] for m in lines]
if steps != list(range(12)): sys.exit(f"steps {steps}")
if sum(1 for m in lines if m.get("resumed")) != 1: sys.exit("not exactly one resumed mark")
# placement = node shards frozen weights within a node: 2 ranks on each of 2 nodes hold the same
# shard as 2 ranks on one node (a 4-rank group would hold half of it).
first = lines[0]["mem_frozen_shard_bytes"]
after = [m["mem_frozen_shard_bytes"] for m in lines if m["step"] >= 6]
if any(a != first for a in after): sys.exit(f"frozen shard on 2 x 2 {first} B, on 1 x 2 {after} B: node groups were not per node")
print(f"frozen shard per rank: {first:.0f} B on 2 nodes x 2 ranks and on 1 node x 2 ranks")
EOF
echo "PASS: 2 x 2 training, node 1 killed (job ended in $took s, survivors reported), resumed on 1 node with 2 ranks"
