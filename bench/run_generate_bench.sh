#!/usr/bin/env bash
# SDXL text-to-image images/s, ours (bench_text_to_image) vs diffusers' StableDiffusionXLPipeline,
# on the same small SDXL-family pipeline (tests/parity/text_to_image_oracle.py's, at 128x128 pixels:
# latents 64x64), prompts, seeds, batch, steps and thread count, in one run.
# Usage: bench/run_generate_bench.sh BUILD_DIR PYTHON [THREADS] [ITERS] [BATCH] [STEPS]
set -euo pipefail
BUILD=$1 PY=$2 THREADS=${3:-$(nproc)} ITERS=${4:-5} BATCH=${5:-4} STEPS=${6:-1}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
"$PY" -c "import sys; sys.path.insert(0, '$HERE/../tests/parity'); import text_to_image_oracle as o; o.build_pipeline('$DIR', 64)" \
  >/dev/null 2>&1
ours=$(OMP_NUM_THREADS=$THREADS "$BUILD/bench/bench_text_to_image" --pipeline="$DIR/turbo" --batch="$BATCH" \
  --steps="$STEPS" --iters="$ITERS" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["images_per_s"])')
ref=$(OMP_NUM_THREADS=$THREADS "$PY" "$HERE/text_to_image_reference.py" "$DIR/turbo" "$BATCH" "$STEPS" "$THREADS" \
  "$ITERS" 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["images_per_s"])')
"$PY" - "$ours" "$ref" "$THREADS" "$BATCH" "$STEPS" <<'PY'
import sys
ours, ref, threads, batch, steps = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
print(f"SDXL text-to-image (small SDXL-family pipeline, 128x128 px, batch {batch}, {steps} step(s), fp32, CPU, {threads} threads):")
print(f"  lookahead {ours:8.2f} images/s   diffusers {ref:8.2f} images/s   ratio ours/diffusers {ours / ref:.3f}")
PY
