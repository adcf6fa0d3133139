#!/usr/bin/env bash
# Bad weight files are refused before any step, from their headers: `train`, `train --dry-run`,
# `eval` and `export` each exit 2 with one line naming the configuration key, the file and the
# tensor, for (1) a full-size weight file with one tensor of the wrong shape (the UNet, header
# rewritten), (2) a sharded UNet (diffusers' shard and index names) with one shard truncated,
# (3) a kohya LCM-LoRA for SD1.5 and (4) an IP-Adapter Plus Face for SD1.5 (bad_weights.py writes
# them). The intact sharded UNet (an fp16 variant's names) passes; on the tiny preset one training
# step runs on it. Prints each refusal's message once, and its wall time and peak RSS.
# Usage: bad_input_test.sh LOOKAHEAD PYTHON SOURCE_DIR tiny|sdxl [WEIGHTS_DIR]
# tiny: writes `model init --preset tiny` into its temporary folder. sdxl: WEIGHTS_DIR is a
# `model init --preset sdxl` folder (the sdxl_weights fixture); the broken UNet copies are sparse
# (header written, data section a hole), so nothing of the 5 GB is copied and nothing is read.
set -uo pipefail
BIN=$1 PY=$2 SRC=$3 PRESET=$4 W=${5:-}
T=$(mktemp -d "${TMPDIR:-/tmp}/bad-input.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0
ok() { echo "ok   $1"; }
fail() {
  echo "FAIL $1"
  fails=$((fails + 1))
}
BW="$PY $SRC/tests/launch/bad_weights.py"

hole=()
if [ "$PRESET" = tiny ]; then
  W=$T/weights
  "$BIN" model init --preset tiny --out "$W" >"$T/init.log" 2>&1 || {
    cat "$T/init.log"
    echo "FAIL model init --preset tiny"
    exit 1
  }
else
  [ -f "$W/lookahead.ini" ] || {
    echo "FAIL $W/lookahead.ini missing (the sdxl_weights fixture: lookahead model init --preset sdxl --out $W)"
    exit 1
  }
  hole=(--hole)
fi
INI=$W/lookahead.ini
UNET=$(sed -n 's/^unet_weights = //p' "$INI")
"$BIN" data synth --out "$T/synth.h5" --identities 2 --per-identity 2 --size 64 >"$T/synth.log" 2>&1 ||
  fail "data synth"
echo "a photo of a face" >"$T/prompts.txt"

# The broken and foreign files.
$BW reshape "$UNET" "$T/unet-reshaped.safetensors" conv_in.weight "${hole[@]}" >"$T/make.log" 2>&1 &&
  $BW shard "$UNET" "$T/unet-cut" 3 --truncate 2 "${hole[@]}" >>"$T/make.log" 2>&1 &&
  $BW shard "$UNET" "$T/unet-fp16" 3 --variant fp16 "${hole[@]}" >>"$T/make.log" 2>&1 &&
  $BW sd15 "$T/lcm-lora-sdv1-5.safetensors" "$T/ip-adapter-plus-face_sd15.bin" >>"$T/make.log" 2>&1 || {
  cat "$T/make.log"
  echo "FAIL bad_weights.py"
  exit 1
}
CUT=$T/unet-cut/diffusion_pytorch_model.safetensors.index.json
FP16=$T/unet-fp16/diffusion_pytorch_model.safetensors.index.fp16.json

# run NAME EXIT COMMAND...: runs one lookahead command under /usr/bin/time; sets $err (its
# stderr), $took ("0.62 s, 530 MiB") and fails unless it exits EXIT.
run() {
  local name=$1 want=$2
  shift 2
  /usr/bin/time -f "%e %M" -o "$T/time" "$@" >"$T/out.log" 2>"$T/err.log"
  local rc=$?
  err=$(grep -v '^Command exited' "$T/err.log")
  took=$(awk 'END { printf "%.2f s, %d MiB", $1, $2 / 1024 }' "$T/time")
  if [ "$rc" != "$want" ]; then
    tail -5 "$T/out.log" "$T/err.log" | sed 's/^/    /'
    fail "$name: exit $rc, expected $want"
    return 1
  fi
}

# refused KEY FILE WHAT OVERRIDE...: every command refuses with one line naming KEY = FILE, WHAT (the
# tensor, or the shard) and a tensor.
refused() {
  local key=$1 file=$2 tensor=$3
  shift 3
  local shown=0 cmd
  local -a base=(--config "$INI" --train.out="$T/run" "$@")
  for cmd in train dry-run eval export; do
    local -a c
    case $cmd in
      train) c=("$BIN" train "${base[@]}" --data.train_set="$T/synth.h5") ;;
      dry-run) c=("$BIN" train "${base[@]}" --data.train_set="$T/synth.h5" --dry-run) ;;
      eval) c=("$BIN" eval "${base[@]}" --eval-set "$T/synth.h5" --prompts "$T/prompts.txt" --out "$T/eval") ;;
      export) c=("$BIN" export "${base[@]}" --data.train_set="$T/synth.h5") ;;
    esac
    run "$key $cmd" 2 "${c[@]}" || continue
    local lines
    lines=$(grep -c . <<<"$err")
    if [ "$lines" != 1 ] || ! grep -qF "$key = $file: " <<<"$err" || ! grep -qF "$tensor" <<<"$err" ||
      ! grep -qF "tensor '" <<<"$err"; then
      sed 's/^/    /' <<<"$err"
      fail "$key $cmd: expected one line naming '$key = $file', $tensor and a tensor"
      continue
    fi
    if [ $shown = 0 ]; then
      echo "     ${err#*"$key = "}" | sed "s|$T/||g"
      shown=1
    fi
    ok "$key refused by $cmd ($took)"
  done
}

refused model.unet_weights "$T/unet-reshaped.safetensors" "'conv_in.weight' is [" \
  --model.unet_weights="$T/unet-reshaped.safetensors"
refused model.unet_weights "$CUT" "unet-cut/diffusion_pytorch_model-00002-of-00003.safetensors'" \
  --model.unet_weights="$CUT"
refused model.lcm_lora "$T/lcm-lora-sdv1-5.safetensors" \
  "'lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight' is [64, 768]" \
  --model.lcm_lora="$T/lcm-lora-sdv1-5.safetensors"
refused model.ip_adapter "$T/ip-adapter-plus-face_sd15.bin" "'ip_adapter.1.to_k_ip.weight' is [320, 768]" \
  --model.ip_adapter="$T/ip-adapter-plus-face_sd15.bin"
# Which messages say what the foreign files are.
grep -qF "an SD1.5 kohya LoRA (cross-attention dim 768" <<<"$("$BIN" train --config "$INI" --data.train_set="$T/synth.h5" \
  --model.lcm_lora="$T/lcm-lora-sdv1-5.safetensors" --dry-run 2>&1)" || fail "the LoRA's message says SD1.5"
if out=$("$BIN" model inspect "$T/lcm-lora-sdv1-5.safetensors" 2>&1) && grep -qF "base model: SD1.5 (cross-attention dim 768" <<<"$out"; then
  ok "model inspect: $(grep -F 'base model:' <<<"$out" | sed 's/^ *//')"
else
  fail "model inspect of the SD1.5 LoRA: no 'base model: SD1.5'"
fi

# The intact shards pass, under an fp16 variant's names (the index diffusers writes for them).
if run "sharded fp16 dry-run" 0 "$BIN" train --config "$INI" --data.train_set="$T/synth.h5" --model.unet_weights="$FP16" \
  --dry-run; then
  ok "the intact sharded UNet (${FP16#"$T"/}) passes train --dry-run ($took)"
fi
if [ "$PRESET" = tiny ] &&
  run "sharded train" 0 "$BIN" train --config "$INI" --data.train_set="$T/synth.h5" --model.unet_weights="$FP16" \
    --train.out="$T/run-sharded" --train.steps=1 --train.progress=false; then
  ok "one training step on the sharded UNet ($took)"
fi

[ $fails = 0 ] && echo "all bad-input checks passed ($PRESET)" || echo "$fails check(s) failed"
[ $fails = 0 ]
