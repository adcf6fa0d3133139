#!/usr/bin/env bash
# KV-encoder parity with diffusers through the product's own tool: the oracle builds a random small
# SDXL-family UNet, an IP-Adapter Plus, KV-encoder trainables and a kohya LoRA, and computes the
# reference K/V, IP K/V and decoder outputs with custom diffusers attention processors;
# `lookahead model run --model kv-encoder` loads the same files; every output must agree to TOL
# (max abs, fp32). `model inspect` must recognize the trainables file.
# Usage: kv_encoder_parity.sh PYTHON LOOKAHEAD WORKDIR SEED|random [--fixed]
set -euo pipefail
PY=$1 BIN=$2 WORK=$3 SEED=$4
shift 4
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOL=1e-4
if [ "$SEED" = random ]; then SEED=$(( $(date +%s%N) % 1000000 )); fi
echo "kv-encoder parity: seed $SEED $* (rerun: $0 $PY $BIN $WORK $SEED $*)"
rm -rf "$WORK" && mkdir -p "$WORK"
"$PY" "$HERE/kv_encoder_oracle.py" make "$WORK" "$SEED" "$@" 2> >(grep -v torchvision >&2)
case_value() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$WORK/case.json" "$1"; }
"$BIN" model run --model kv-encoder --config "$WORK/unet/config.json" \
  --weights "$WORK/unet/diffusion_pytorch_model.safetensors" --ip-adapter "$WORK/ip_adapter.safetensors" \
  --encoder-weights "$WORK/encoder.safetensors" --inputs "$WORK/inputs.safetensors" \
  --ip-scale "$(case_value ip_scale)" --lora "$WORK/lora.safetensors" --lora-scale "$(case_value lora_scale)" \
  --out "$WORK/ours.safetensors"
"$PY" "$HERE/kv_encoder_oracle.py" compare "$WORK/expected.safetensors" "$WORK/ours.safetensors" $TOL
# `model inspect` recognizes the trainables file for this config, with the oracle's counts.
out=$("$BIN" model inspect "$WORK/encoder.safetensors" --config "$WORK/unet/config.json")
regex="KV-encoder trainables for UNet2DConditionModel .*: ([0-9]+) of \\1 tensors match \\(complete\\); $(case_value blocks) blocks, $(case_value encoder_lora_layers) LoRA layers, rank $(case_value rank), KV-head rank $(case_value kv_rank)"
grep -Eq "$regex" <<<"$out" || { echo "FAIL: model inspect does not say /$regex/:"; echo "$out" | tail -5; exit 1; }
echo "inspect: $(grep 'KV-encoder' <<<"$out")"
echo "1 passed, 0 failed"
