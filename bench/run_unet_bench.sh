#!/usr/bin/env bash
# UNet forward+backward, ours vs diffusers eager, same config, inputs, machine and thread count,
# in one run. Usage: bench/run_unet_bench.sh BUILD_DIR PYTHON [THREADS] [ITERS]
set -euo pipefail
BUILD=$1 PY=$2 THREADS=${3:-$(nproc)} ITERS=${4:-10}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONFIG="$HERE/unet_bench_config.json"
ours=$(OMP_NUM_THREADS=$THREADS "$BUILD/bench/bench_unet" --config="$CONFIG" --iters="$ITERS" \
  --benchmark_format=json | "$PY" -c \
  'import json,sys; r=json.load(sys.stdin)["benchmarks"][0]; print(r["real_time"])')
ref=$(OMP_NUM_THREADS=$THREADS "$PY" "$HERE/unet_bench_reference.py" "$CONFIG" "$THREADS" "$ITERS" 2>/dev/null |
  "$PY" -c 'import json,sys; print(json.load(sys.stdin)["mean_ms"])')
"$PY" - "$ours" "$ref" "$THREADS" <<'PY'
import sys
ours, ref, threads = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
print(f"UNet fwd+bwd (bench/unet_bench_config.json, batch 2, 32x32, fp32, CPU, {threads} threads):")
print(f"  lookahead {ours:9.1f} ms   diffusers eager {ref:9.1f} ms   ratio ours/diffusers {ours / ref:.3f}")
PY
