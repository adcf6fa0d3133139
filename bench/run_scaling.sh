#!/usr/bin/env bash
# Weak scaling on the simulated cluster (launch/cluster), measured and predicted: bench_step with a
# fixed batch per rank on 1, 2 and 4 ranks of one node and on 2 and 4 ranks of two nodes, every
# placement; bench_collectives for the link figures the model takes (a rank's all-gather
# bandwidth within a node over shared memory, and across the shaped link); then
# `scaling_model --measured` predicts every run from those figures and the 1-rank run's compute
# rate, and prints measured against predicted (docs/scaling.md). Needs root (the cluster).
#
# Usage: bench/run_scaling.sh BUILD_DIR OUT_DIR
#   CONFIG=mid (or tiny)  RATE=2gbit (the inter-node link)  STEPS=3  WARMUP=1
#   PLACEMENTS=full,node,replicate  BATCH=2 (per rank)  LAYOUTS="1x1 1x2 1x4 2x1 2x2" (nodes x ranks per node)
#   RING=2 (dist.max_gathered_units)  REPLICATE_UNITS= (dist.replicate_units)
#   BENCH_ENV: the ranks' environment; by default glibc keeps freed buffers up to 32 MiB instead of
#     returning them to the kernel, so a gather's fresh buffer is not faulted in page by page on the
#     ranks' own cores (the CUDA caching allocator does the same on GPUs); BENCH_ENV= turns it off
set -euo pipefail
BUILD=${1:?usage: run_scaling.sh BUILD_DIR OUT_DIR}
OUT=${2:?usage: run_scaling.sh BUILD_DIR OUT_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONFIG=${CONFIG:-mid} RATE=${RATE:-2gbit} STEPS=${STEPS:-3} WARMUP=${WARMUP:-1}
PLACEMENTS=${PLACEMENTS:-full,node,replicate} BATCH=${BATCH:-2}
LAYOUTS=${LAYOUTS:-"1x1 1x2 1x4 2x1 2x2"}
RING=${RING:-2} REPLICATE_UNITS=${REPLICATE_UNITS:-}
BENCH_ENV=${BENCH_ENV-"MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296"}
CLUSTER="$ROOT/launch/cluster"
NAME=scal
[ "$(id -u)" -eq 0 ] || { echo "run_scaling.sh: the simulated cluster needs root" >&2; exit 2; }
source "$ROOT/launch/mpi_env.sh"
mkdir -p "$OUT"
trap '"$CLUSTER" down --name "$NAME" >/dev/null 2>&1 || true' EXIT
CORES=$(nproc)

up() {  # nodes slots
  "$CLUSTER" up --name "$NAME" --nodes "$1" --slots "$2" --rate "$RATE" >/dev/null
}
collectives() {  # out.json: all-gathers from 4 KiB (latency) to 64 MiB (bandwidth)
  "$CLUSTER" mpirun --name "$NAME" -- -np 2 "$BUILD/bench/bench_collectives" --min-bytes 4K --max-bytes 64M \
    --step-factor 4 --ops all_gather --iters 3 --rounds 5 --warmup 1 --no-verify-variant --json "$1" >"${1%.json}.log" 2>&1
}
# A link's figures from our communicator's all-gathers over 2 ranks: the bus bandwidth (what a rank
# sends per second), the median over 1-64 MiB (a shaped link's figure varies by size and run, by
# up to a third: docs/scaling.md), and the latency of one ring step, a 4 KiB all-gather.
link() {
  python3 - "$1" <<'PY'
import json, statistics, sys
rows = json.load(open(sys.argv[1]))["rows"]
bw = statistics.median(r["wrapper"]["busbw_gbs"] for r in rows if r["bytes"] >= 1 << 20)
alpha = min(r["wrapper"]["time_us"] for r in rows if r["bytes"] <= 4096)
print(f"{bw:.4g} {alpha:.3g}")
PY
}

# Link figures: 2 ranks on one node (shared memory), 2 nodes of 1 rank (the shaped link).
up 1 2 && collectives "$OUT/collectives_1x2.json"
up 2 1 && collectives "$OUT/collectives_2x1.json"
read -r INTRA ALPHA_INTRA <<<"$(link "$OUT/collectives_1x2.json")"
read -r INTER ALPHA_INTER <<<"$(link "$OUT/collectives_2x1.json")"
echo "# all-gather: in-node $INTRA GB/s per rank, $ALPHA_INTRA us per step; across the $RATE link $INTER GB/s, $ALPHA_INTER us"

files=()
for layout in $LAYOUTS; do
  nodes=${layout%x*} per=${layout#*x}
  up "$nodes" "$per"
  f="$OUT/step_${CONFIG}_${layout}.json"
  echo "# bench_step $CONFIG on $nodes node(s) x $per rank(s)"
  # shellcheck disable=SC2086
  "$CLUSTER" mpirun --name "$NAME" -- -np $((nodes * per)) --oversubscribe env $BENCH_ENV "$BUILD/bench/bench_step" \
    --config "$CONFIG" --batch $((BATCH * nodes * per)) --placements "$PLACEMENTS" --no-overlap-off \
    --ring "$RING" --replicate-units "$REPLICATE_UNITS" \
    --steps "$STEPS" --warmup "$WARMUP" --json "$f" >"${f%.json}.log" 2>&1 || { tail -20 "${f%.json}.log"; exit 1; }
  files+=("$f")
done
"$CLUSTER" down --name "$NAME" >/dev/null

IFS=, ; list="${files[*]}"; unset IFS
"$BUILD/bench/scaling_model" --measured "$list" --cores "$CORES" --intra-gbps "$INTRA" --inter-gbps "$INTER" \
  --alpha-intra-us "$ALPHA_INTRA" --alpha-inter-us "$ALPHA_INTER" \
  --json "$OUT/measured_vs_model.json" | tee "$OUT/measured_vs_model.txt"
