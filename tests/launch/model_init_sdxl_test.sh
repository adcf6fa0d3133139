#!/usr/bin/env bash
# `lookahead model init --preset sdxl` at full size (≈ 12 GB on disk, kept only while the test
# runs): key counts and shapes against diffusers / transformers networks built on the meta device
# from the written configs (model_init_check.py sdxl), `model inspect` recognizes every file as
# the SDXL-stack network it imitates, and the wall time and peak RSS of the writer (GNU time).
# Usage: model_init_sdxl_test.sh LOOKAHEAD PYTHON SOURCE_DIR [PRESET]
set -uo pipefail
BIN=$1 PY=$2 SRC=$3 PRESET=${4:-sdxl}
T=$(mktemp -d "${TMPDIR:-/tmp}/model-init-sdxl.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0
ok() { echo "ok   $1"; }
fail() {
  echo "FAIL $1"
  fails=$((fails + 1))
}
W=$T/w
if /usr/bin/time -v "$BIN" model init --preset "$PRESET" --out "$W" >"$T/init.log" 2>"$T/time.log"; then
  cat "$T/init.log"
  ok "model init --preset $PRESET: $(grep -E 'Elapsed|Maximum resident' "$T/time.log" | sed 's/^\s*//' | tr '\n' ';')"
else
  cat "$T/init.log" "$T/time.log"
  fail "model init --preset $PRESET"
fi
"$PY" "$SRC/tests/launch/model_init_check.py" sdxl "$W" "$SRC/third_party/open_clip/bpe_simple_vocab_16e6.txt.gz" ||
  fail "key counts and shapes against diffusers / transformers (model_init_check.py sdxl)"

SD=$W/stable-diffusion-xl-base-1.0
[ "$PRESET" = sdxl-turbo ] && SD=$W/sdxl-turbo
complete='([0-9]+) of \1 tensors match \(complete\)'
expect() {  # expect REGEX FILE [--config C]
  local regex=$1
  shift
  local out
  out=$("$BIN" model inspect "$@" 2>&1)
  if grep -Eq "$regex" <<<"$out"; then
    ok "inspect ${1#"$W"/}: $(grep -Eo "$regex" <<<"$out" | head -1)"
  else
    sed -n '/matches:/,$p' <<<"$out" | head -8 | sed 's/^/    /'
    fail "inspect ${1#"$W"/}: no /$regex/"
  fi
}
# Without --config: the SDXL-stack networks inspect knows.
expect "UNet2DConditionModel \(SDXL base\): $complete" "$SD/unet/diffusion_pytorch_model.safetensors"
expect "CLIPTextModel \(CLIP ViT-L/14, SDXL text_encoder\): $complete" "$SD/text_encoder/model.safetensors"
expect "CLIPTextModelWithProjection \(OpenCLIP bigG, SDXL text_encoder_2\): $complete" \
  "$SD/text_encoder_2/model.safetensors"
expect "AutoencoderKL \(SDXL VAE\): $complete" "$SD/vae/diffusion_pytorch_model.safetensors"
expect "AutoencoderKL \(SDXL VAE\): $complete" "$W/sdxl-vae-fp16-fix/diffusion_pytorch_model.safetensors"
expect "AutoencoderTiny \(TAESDXL\): $complete" "$W/taesdxl/diffusion_pytorch_model.safetensors"
expect "CLIPVisionModelWithProjection \(ViT-H/14, IP-Adapter image encoder\): $complete" \
  "$W/IP-Adapter/models/image_encoder/model.safetensors"
for ext in safetensors bin; do
  expect "IP-Adapter Plus for UNet2DConditionModel \(SDXL base\): $complete; Resampler dim 1280, 20 heads, depth 4, 16 tokens of 2048" \
    "$W/IP-Adapter/sdxl_models/ip-adapter-plus-face_sdxl_vit-h.$ext"
done
expect "kohya LoRA for UNet2DConditionModel \(SDXL base\): 788 layers, 196751360 parameters, alpha 8" \
  "$W/lcm-lora-sdxl/pytorch_lora_weights.safetensors"
expect "ArcFace IR-SE50 \(TreB1eN layout\): $complete" "$W/arcface/model_ir_se50.pth"
expect "ArcFace iresnet100 \(insightface layout\): $complete" "$W/arcface/iresnet100/backbone.pth"
expect "MTCNN P/R/O-Net .*: $complete" "$W/facenet-pytorch/data"
if "$BIN" train --config "$W/lookahead.ini" --data.train_set="$W/lookahead.ini" --dry-run >"$T/dry.log" 2>&1; then
  ok "train --config lookahead.ini --dry-run accepts the written configuration"
else
  tail -5 "$T/dry.log"
  fail "train --dry-run on lookahead.ini"
fi
du -sh "$W" | sed 's/^/total on disk: /'
echo "$fails failure(s)"
[ $fails -eq 0 ]
