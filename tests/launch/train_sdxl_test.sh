#!/usr/bin/env bash
# The SDXL preset at full size on the CPU, with `lookahead model init` weights (random values in
# the public layouts): `data encode` of a few synthetic 256² images with the full-size encoders,
# `lookahead train` of the full model (2.6 B frozen UNet parameters, the 431 M trainable ones) in
# bf16 at 256² (32² latents), batch 1, 2 steps with a checkpoint after each; a resume from the
# step-1 checkpoint that must reproduce step 1 bit for bit (metrics and exported files); the export
# loaded by diffusers' IP-Adapter loader into the full-size UNet; `lookahead eval` sampling 2
# images in 2 steps and scoring them; the same 2 steps on 2 ranks when memory allows. Prints the
# figures docs/results.md quotes (per step: time by phase, peak RSS per rank, the engine's parts;
# start-up from launch to the first step).
# Usage: train_sdxl_test.sh MPIEXEC LOOKAHEAD PYTHON SOURCE_DIR [WEIGHTS_DIR|-] [NP2=auto|on|off]
# WEIGHTS_DIR: a `model init --preset sdxl` folder to use; without one (or "-") the test writes the
# set (≈ 13 GB, about a minute and a half) into its temporary folder and removes it at the end.
set -uo pipefail
MPIEXEC=$1 BIN=$2 PY=$3 SRC=$4 W=${5:--} NP2=${6:-auto}
T=$(mktemp -d "${TMPDIR:-/tmp}/train-sdxl.XXXXXX")
trap 'rm -rf "$T"' EXIT
if [ "$W" = - ] || [ ! -f "$W/lookahead.ini" ]; then
  W=$T/weights
  "$BIN" model init --preset sdxl --out "$W" >"$T/init.log" 2>&1 || {
    tail -20 "$T/init.log"
    echo "FAIL: lookahead model init --preset sdxl --out $W"
    exit 1
  }
  echo "     wrote the full-size set: $(tail -1 "$T/init.log")"
fi
INI=$W/lookahead.ini
fails=0
ok() { echo "ok   $1"; }
fail() {
  echo "FAIL $1"
  fails=$((fails + 1))
}
show() { echo "---- $1"; tail -${2:-30} "$1" | sed 's/^/    /'; }
# timed LOG CMD...: runs CMD under GNU time; prints wall time and peak RSS of the process tree's largest.
timed() {
  local log=$1
  shift
  /usr/bin/time -v -o "$log.time" "$@" >"$log" 2>&1
  local rc=$?
  echo "     ($(grep -E 'Elapsed' "$log.time" | sed 's/.*: //') wall, $(grep -E 'Maximum resident' "$log.time" | sed 's/.*: //') KiB peak RSS)"
  return $rc
}

cd "$SRC" || exit 1 # the INI names launch/configs/eval_prompts.txt relative to the source tree
COMMON=(--config "$INI" --data.resolution=256 --train.batch_per_rank=1 --model.dtype=bf16
  --data.loader_threads=1 --train.progress=false --train.log_every=1 --train.checkpoint_every=1)

# 1. A training set of 2 identities x 2 images at 256², encoded by the full-size encoders.
"$BIN" data synth --out "$T/raw.h5" --identities 2 --per-identity 2 --size 256 >"$T/synth.log" 2>&1 ||
  { show "$T/synth.log"; fail "data synth"; }
if timed "$T/encode.log" "$BIN" data encode --config "$INI" --in "$T/raw.h5" --out "$T/set.h5" \
  --data.resolution=256; then
  ok "data encode with the full-size VAE, both text encoders, the ViT-H image encoder and ArcFace"
else
  show "$T/encode.log"
  fail "data encode"
fi

# 2. Two steps on one rank, a checkpoint after each; first what the dry run's analytic model says.
"$BIN" train "${COMMON[@]}" --data.train_set="$T/set.h5" --train.out="$T/a" --dry-run >"$T/dry.log" 2>&1 ||
  { show "$T/dry.log"; fail "train --dry-run"; }
sed -n '/^memory per rank/,/^predicted peak/p' "$T/dry.log" | sed 's/^/     dry run: /'

if timed "$T/a.log" "$BIN" train "${COMMON[@]}" --data.train_set="$T/set.h5" --train.out="$T/a" --train.steps=2; then
  ok "train: 2 steps of the full SDXL preset in bf16 at 256² on 1 rank"
else
  show "$T/a.log"
  fail "train on 1 rank"
fi
grep -E "start-up|parameters|frozen base|trainable" "$T/a.log" | sed 's/^/     /'
"$PY" - "$T/a/metrics.jsonl" <<'EOF' || fail "metrics.jsonl of the 1-rank run"
import json, math, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert [m["step"] for m in lines] == [0, 1], f"steps {[m['step'] for m in lines]}"
gib = 1 << 30
for m in lines:
    for k in ("loss_diffusion", "loss_lookahead", "grad_norm", "time_step_s", "time_diffusion_s", "time_lookahead_s",
              "time_optimizer_s", "mem_rss_peak_bytes_rank0", "mem_frozen_shard_bytes", "mem_optimizer_bytes"):
        assert k in m and math.isfinite(m[k]), f"step {m['step']}: {k} = {m.get(k)}"
    assert m["dtype"] == "bf16", m["dtype"]
    # What must be resident at least: the bf16 frozen UNet and the fp32 AdamW moments.
    assert m["mem_rss_peak_bytes_rank0"] > m["mem_frozen_shard_bytes"] + m["mem_optimizer_bytes"], m
    print(f"     step {m['step']}: {m['time_step_s']:.1f} s (diffusion {m['time_diffusion_s']:.1f}, lookahead "
          f"{m['time_lookahead_s']:.1f}, optimizer {m['time_optimizer_s']:.1f}, data {m['time_data_s']:.2f}); "
          f"peak RSS {m['mem_rss_peak_bytes_rank0'] / gib:.2f} GiB ({m['mem_rss_peak_scope']}); engine: frozen "
          f"{m['mem_frozen_shard_bytes'] / gib:.2f}, trainable {m['mem_trainable_shard_bytes'] / gib:.2f}, AdamW "
          f"{m['mem_optimizer_bytes'] / gib:.2f}, gathered peak {m['mem_peak_gathered_bytes'] / gib:.2f} GiB; "
          f"losses {m['loss_diffusion']:.4f} / {m['loss_lookahead']:.3e}")
first = lines[0]
assert "time_launch_to_step_s" in first and "time_launch_to_step_s" not in lines[1], "start-up time on step 0 only"
print(f"     start-up: {first['time_launch_to_step_s']:.1f} s from launch to the first step "
      f"(model built, loaded and sharded in {first['time_setup_s']:.1f} s)")
EOF

# 3. Resume from the step-1 checkpoint: step 1 again, bit for bit.
mkdir -p "$T/b"
if timed "$T/b.log" "$BIN" train "${COMMON[@]}" --data.train_set="$T/set.h5" --train.out="$T/b" --train.steps=2 \
  --train.resume="$T/a/checkpoints/step-000001.h5"; then
  "$PY" - "$T/a/metrics.jsonl" "$T/b/metrics.jsonl" <<'EOF' && ok "resume from step 1: step 1's losses, norm and alpha bit-identical" || fail "resume: step 1 differs"
import json, sys
a = {json.loads(l)["step"]: json.loads(l) for l in open(sys.argv[1]) if l.strip()}
b = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
assert [m["step"] for m in b] == [1], [m["step"] for m in b]
for k in ("loss_diffusion", "loss_lookahead", "grad_norm", "alpha", "t_diffusion_mean", "t_lookahead_mean"):
    assert a[1][k] == b[0][k], f"{k}: uninterrupted {a[1][k]!r}, resumed {b[0][k]!r}"
EOF
  for f in ip_adapter.safetensors kv_encoder.safetensors; do
    if cmp -s "$T/a/export/$f" "$T/b/export/$f"; then
      ok "resume: export/$f byte-identical to the uninterrupted run's ($(stat -c %s "$T/a/export/$f") bytes)"
    else
      fail "resume: export/$f differs"
    fi
  done
else
  show "$T/b.log"
  fail "resume on 1 rank"
fi

# 4. The export in diffusers' IP-Adapter loader, into the full-size UNet of the written config.
SD=$(sed -n 's/^sdxl_folder *= *//p' "$INI")
if timed "$T/export.log" "$PY" "$SRC/tests/trainer/export_check.py" "$T/a/export/ip_adapter.safetensors" \
  --unet-folder "$SD/unet"; then
  grep export_check "$T/export.log" | sed 's/^/     /'
  ok "export loads with diffusers' IP-Adapter loader into the full-size SDXL UNet"
else
  show "$T/export.log"
  fail "export_check.py at full size"
fi

# 5. Evaluation: 1 identity x 1 prompt x 2 samples, 2 sampler steps, 256²; ID similarity and CLIP score.
echo "a photo of a person in a garden" >"$T/prompts.txt"
if timed "$T/eval.log" "$BIN" eval "${COMMON[@]}" --train.out="$T/a" --eval-set "$T/set.h5" --out "$T/eval" \
  --checkpoint "$T/a/checkpoints/step-000002.h5" --eval.prompts="$T/prompts.txt" --eval.identities=1 \
  --eval.samples=2 --eval.steps=2 --eval.resolution=256; then
  "$PY" - "$T/eval" <<'EOF' && ok "eval: 2 images sampled in 2 steps and scored" || { show "$T/eval.log"; fail "eval output"; }
import glob, json, math, os, sys
found = glob.glob(os.path.join(sys.argv[1], "**", "metrics.json"), recursive=True)
assert found, "no metrics.json"
m = json.load(open(found[0]))
flat = json.dumps(m)
images = glob.glob(os.path.join(sys.argv[1], "**", "*.png"), recursive=True)
assert len(images) >= 2, f"{len(images)} images"
print(f"     {found[0]}: {len(images)} images; {flat[:300]}")
EOF
else
  show "$T/eval.log"
  fail "eval"
fi

# 6. Two ranks, if two ranks' peaks fit: the 1-rank peak stands for each (the UNet is built whole on
# every rank before the engine shards it) plus 2 GiB of margin.
peak_kib=$(grep -E 'Maximum resident' "$T/a.log.time" | sed 's/.*: //')
avail_kib=$(sed -n 's/^MemAvailable: *\([0-9]*\) kB/\1/p' /proc/meminfo)
if [ "$NP2" = on ] || { [ "$NP2" = auto ] && [ $((2 * peak_kib + 2097152)) -lt "$avail_kib" ]; }; then
  if timed "$T/np2.log" "$MPIEXEC" -np 2 --oversubscribe "$BIN" train "${COMMON[@]}" --data.train_set="$T/set.h5" \
    --train.out="$T/np2" --train.steps=2 --train.batch_per_rank=1; then
    "$PY" - "$T/np2/metrics.jsonl" <<'EOF' && ok "train on 2 ranks (placement node: the frozen UNet sharded 2 ways)" || fail "2-rank metrics"
import json, math
lines = [json.loads(l) for l in open(__import__("sys").argv[1]) if l.strip()]
assert [m["step"] for m in lines] == [0, 1]
gib = 1 << 30
for m in lines:
    assert all(math.isfinite(m[k]) for k in ("loss_diffusion", "loss_lookahead", "grad_norm"))
    print(f"     step {m['step']}: {m['time_step_s']:.1f} s; peak RSS rank 0 {m['mem_rss_peak_bytes_rank0'] / gib:.2f}, "
          f"rank 1 {m['mem_rss_peak_bytes_rank1'] / gib:.2f} GiB; frozen shard {m['mem_frozen_shard_bytes'] / gib:.2f} GiB")
EOF
  else
    show "$T/np2.log"
    fail "train on 2 ranks"
  fi
else
  echo "skip 2 ranks: 2 x $((peak_kib / 1024)) MiB peak + 2 GiB margin > $((avail_kib / 1024)) MiB available"
fi
echo "$fails failure(s)"
[ $fails -eq 0 ]
