#!/usr/bin/env bash
# `lookahead model inspect` on the files the CLIP, VAE and face parity oracles wrote (the real
# layouts, random values): each must be recognized as complete for its network.
# Usage: inspect_test.sh LOOKAHEAD CLIP_DIR VAE_DIR FACE_DIR
set -uo pipefail
BIN=$1 CLIP=$2 VAE=$3 FACE=$4
fails=0 total=0
expect() {  # expect REGEX FILE [--config C]
  local regex=$1
  shift
  total=$((total + 1))
  local out
  out=$("$BIN" model inspect "$@" 2>&1)
  if grep -Eq "$regex" <<<"$out"; then
    echo "ok   $1"
  else
    echo "FAIL $1: output does not match /$regex/:"
    sed -n '/matches:/,$p' <<<"$out" | head -8 | sed 's/^/    /'
    fails=$((fails + 1))
  fi
}
complete='([0-9]+) of \1 tensors match \(complete\)'
expect "CLIPTextModel \(.*\): $complete" "$CLIP/models/fixed_l/model.safetensors" --config "$CLIP/models/fixed_l/config.json"
expect "CLIPTextModelWithProjection \(.*\): $complete" "$CLIP/models/fixed_g/model.safetensors" \
  --config "$CLIP/models/fixed_g/config.json"
expect "CLIPVisionModelWithProjection \(.*\): $complete" "$CLIP/models/vision_fixed/model.safetensors" \
  --config "$CLIP/models/vision_fixed/config.json"
expect "AutoencoderTiny \(TAESDXL\): $complete" "$VAE/taesdxl_fixed/model/diffusion_pytorch_model.safetensors"
expect "AutoencoderKL \(.*\): $complete" "$VAE/kl_small_fixed/model/diffusion_pytorch_model.safetensors" \
  --config "$VAE/kl_small_fixed/model/config.json"
expect "MTCNN P/R/O-Net .*: $complete" "$FACE/mtcnn_all.safetensors"
expect "ArcFace IR-SE50 \(TreB1eN layout\): $complete" "$FACE/irse_weights.safetensors"
# A file of no supported network (the oracle's photos) matches nothing.
total=$((total + 1))
if "$BIN" model inspect "$FACE/mtcnn_photos.safetensors" | sed -n '/matches:/,$p' | grep -q "tensors match"; then
  echo "FAIL mtcnn_photos.safetensors: claimed by a network"
  fails=$((fails + 1))
else
  echo "ok   mtcnn_photos.safetensors matches no network"
fi
echo "$((total - fails)) passed, $fails failed"
[ "$fails" -eq 0 ]
