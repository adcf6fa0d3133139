#!/usr/bin/env bash
# Our training step (bench_step, 1 rank, placement replicate) against the official PyTorch iteration
# re-created in bench/step_reference.py: same model sizes, global batch, thread count and machine,
# the two run alternately so that outside load drifts over both alike.
# Usage: bench/run_step_vs_pytorch.sh BUILD_DIR PYTHON [STEPS]
#   environment: CONFIGS (default "tiny mid"), MODES ("sum alternate"), THREADS ("1 2"), WARMUP (2),
#   RECOMPUTE (bench_step --recompute: dist.recompute policies, the first is ours' headline "overlap on",
#   each further one an extra row; default "blocks", what train uses by default),
#   OUT (a folder for the JSON files; default a temporary one)
set -euo pipefail
BUILD=$1 PY=$2 STEPS=${3:-8}
CONFIGS=${CONFIGS:-tiny mid} MODES=${MODES:-sum alternate} THREADS=${THREADS:-1 2} WARMUP=${WARMUP:-2}
RECOMPUTE=${RECOMPUTE:-blocks}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../launch/mpi_env.sh
source "$HERE/../launch/mpi_env.sh"
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
echo "# step: ours (mpirun -np 1 bench_step --placements replicate --no-overlap-off --recompute $RECOMPUTE) vs PyTorch (bench/step_reference.py)"
echo "# $STEPS measured + $WARMUP warm-up steps each; global batch 2; load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
rows=()
for config in $CONFIGS; do
  for mode in $MODES; do
    for threads in $THREADS; do
      tag="$config-$mode-t$threads"
      mpirun -np 1 "$BUILD/bench/bench_step" --config "$config" --loss-mode "$mode" --placements replicate \
        --no-overlap-off --recompute "$RECOMPUTE" --steps "$STEPS" --warmup "$WARMUP" --threads "$threads" --json "$OUT/ours-$tag.json" >"$OUT/ours-$tag.log"
      OMP_NUM_THREADS=$threads "$PY" "$HERE/step_reference.py" --config "$config" --loss-mode "$mode" \
        --steps "$STEPS" --warmup "$WARMUP" --threads "$threads" >"$OUT/pytorch-$tag.json"
      rows+=("$config $mode $threads $OUT/ours-$tag.json $OUT/pytorch-$tag.json")
    done
  done
done
printf '%s\n' "${rows[@]}" >"$OUT/rows.txt"
"$PY" - "$OUT/rows.txt" <<'PY'
import json, sys
head = ("config", "mode", "threads", "ours ms", "PyTorch ms", "ours/PyTorch")
print("%-6s %-9s %7s %9s %10s %12s %8s   ours: recompute, compute / gather wait / optimizer / other ms" % (head + ("CPU ratio",)))
for line in open(sys.argv[1]):
    config, mode, threads, ours_path, ref_path = line.split()
    ref = json.load(open(ref_path))
    p, p_cpu = ref["median_ms"], ref.get("median_cpu_ms")
    # "overlap on" (the headline), then the extra recompute policies (overlap on too).
    for r in json.load(open(ours_path))["runs"]:
        if r["config"] != "overlap on" and not r["config"].startswith("recompute "):
            continue
        run = r["median"]
        o = run["step_s"] * 1e3
        # Median process CPU time per step, ours / PyTorch: the work, less disturbed by outside load.
        cpu = "%.3f" % (run["cpu_s"] * 1e3 / p_cpu) if p_cpu and "cpu_s" in run else "-"
        print("%-6s %-9s %7s %9.1f %10.1f %12.3f %9s   %s, %.1f / %.1f / %.1f / %.1f" % (config, mode, threads, o, p, o / p, cpu,
              r.get("recompute", "?"), run["compute_s"] * 1e3, run["gather_wait_s"] * 1e3, run["optimizer_s"] * 1e3,
              run["other_s"] * 1e3))
PY
echo "# load average at the end $(cut -d' ' -f1-3 /proc/loadavg); JSON and logs in $OUT"
