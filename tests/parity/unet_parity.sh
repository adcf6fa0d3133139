#!/usr/bin/env bash
# UNet, LoRA and IP-Adapter parity with diffusers through the product's own tool: the oracle builds a random
# small SDXL-family UNet with diffusers and saves it in the diffusers layout; `lookahead model run`
# loads those files and runs the same inputs; outputs must agree to TOL (max abs, fp32). The same
# for one LoRA written in each layout we read (kohya, SGM-named kohya, PEFT, diffusers' pre-PEFT keys) and
# loaded by diffusers' own loader, at two scales.
# Usage: unet_parity.sh PYTHON LOOKAHEAD WORKDIR SEED|random [--fixed]
set -euo pipefail
PY=$1 BIN=$2 WORK=$3 SEED=$4
shift 4
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOL=1e-4
if [ "$SEED" = random ]; then SEED=$(( $(date +%s%N) % 1000000 )); fi
echo "unet parity: seed $SEED $* (rerun: $0 $PY $BIN $WORK $SEED $*)"
rm -rf "$WORK" && mkdir -p "$WORK"
"$PY" "$HERE/unet_oracle.py" make "$WORK" "$SEED" "$@" 2> >(grep -v torchvision >&2)
run() {  # run OUT [extra args]
  local out=$1
  shift
  "$BIN" model run --model unet --config "$WORK/unet/config.json" \
    --weights "$WORK/unet/diffusion_pytorch_model.safetensors" --inputs "$WORK/inputs.safetensors" --out "$out" "$@"
}
run "$WORK/ours.safetensors"
"$PY" "$HERE/unet_oracle.py" compare "$WORK/expected.safetensors" "$WORK/ours.safetensors" $TOL
# The LoRA must matter, or the comparisons below would pass without applying it.
if "$PY" "$HERE/unet_oracle.py" compare "$WORK/expected.safetensors" "$WORK/expected_lora_1.0.safetensors" 1e-2 \
  >/dev/null; then
  echo "FAIL: the oracle's LoRA changes diffusers' output by less than 1e-2"
  exit 1
fi
# The same LoRA weights in every layout we read, each against what diffusers computes from that file
# (kohya, SGM-named kohya and PEFT with its header config agree; the files without alpha run at factor 1).
# The run-time scale is the same code for every layout: the other layouts run at 0.35 only.
# lora_peft_pattern: per-module alphas from the header's alpha_pattern, matched as PEFT matches them.
for scale in 0.35 1.0; do
  files="lora"
  [ $scale = 0.35 ] && files="lora lora_sgm lora_peft lora_peft_bare lora_diffusers lora_peft_pattern"
  for file in $files; do
    expected=expected_lora_$scale
    case $file in lora_peft_bare | lora_diffusers) expected=expected_lora_bare_$scale ;; esac
    [ $file = lora_peft_pattern ] && expected=expected_lora_pattern_$scale
    run "$WORK/ours_${file}_$scale.safetensors" --lora "$WORK/$file.safetensors" --lora-scale $scale
    "$PY" "$HERE/unet_oracle.py" compare "$WORK/$expected.safetensors" "$WORK/ours_${file}_$scale.safetensors" $TOL
  done
done
if "$PY" "$HERE/unet_oracle.py" compare "$WORK/expected_lora_1.0.safetensors" "$WORK/expected_lora_bare_1.0.safetensors" \
  1e-3 >/dev/null; then
  echo "FAIL: the oracle's LoRA alpha changes diffusers' output by less than 1e-3"
  exit 1
fi
# IP-Adapter Plus (Resampler + decoupled cross-attention), from the .safetensors and the .bin pickle.
if "$PY" "$HERE/unet_oracle.py" compare "$WORK/expected.safetensors" "$WORK/expected_ip_1.0.safetensors" 1e-2 \
  >/dev/null; then
  echo "FAIL: the oracle's IP-Adapter changes diffusers' output by less than 1e-2"
  exit 1
fi
for scale in 0.5 1.0; do
  for file in ip_adapter.safetensors ip_adapter.bin; do
    "$BIN" model run --model unet --config "$WORK/unet/config.json" \
      --weights "$WORK/unet/diffusion_pytorch_model.safetensors" --inputs "$WORK/inputs_ip.safetensors" \
      --ip-adapter "$WORK/$file" --ip-scale $scale --out "$WORK/ours_ip_$scale.safetensors"
    "$PY" "$HERE/unet_oracle.py" compare "$WORK/expected_ip_$scale.safetensors" "$WORK/ours_ip_$scale.safetensors" $TOL
  done
done
# `model inspect` recognizes each file for this config.
expect_inspect() {  # FILE REGEX
  local out
  out=$("$BIN" model inspect "$1" --config "$WORK/unet/config.json")
  grep -Eq "$2" <<<"$out" || { echo "FAIL: model inspect $1 does not say /$2/:"; echo "$out" | tail -5; exit 1; }
}
expect_inspect "$WORK/unet/diffusion_pytorch_model.safetensors" "UNet2DConditionModel .*: ([0-9]+) of \\1 tensors match \\(complete\\)"
expect_inspect "$WORK/lora.safetensors" "kohya LoRA for UNet2DConditionModel .*: [1-9][0-9]* layers"
expect_inspect "$WORK/lora_sgm.safetensors" "kohya LoRA \\(SGM block names\\) for UNet2DConditionModel .*: [1-9][0-9]* layers"
expect_inspect "$WORK/lora_peft.safetensors" "PEFT LoRA for UNet2DConditionModel .*: [1-9][0-9]* layers.*alpha [0-9.]+ \\(lora_adapter_metadata\\)"
expect_inspect "$WORK/lora_peft_bare.safetensors" "PEFT LoRA for UNet2DConditionModel .*: [1-9][0-9]* layers.*alpha [0-9.]+ \\(alpha = rank\\), 4 text-encoder keys ignored"
expect_inspect "$WORK/lora_diffusers.safetensors" "diffusers LoRA \\(pre-PEFT keys\\) for UNet2DConditionModel .*: [1-9][0-9]* layers"
expect_inspect "$WORK/ip_adapter.safetensors" "IP-Adapter Plus for UNet2DConditionModel .*\\(complete\\)"
echo "1 passed, 0 failed"
