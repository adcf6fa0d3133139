#!/usr/bin/env bash
# `lookahead model init --preset tiny` end to end: the files load with diffusers / transformers /
# torch (model_init_check.py), `model inspect` recognizes each as the network it imitates, the
# written INI passes `train --dry-run`, values depend on (seed, name) only, and bad input exits 2
# naming the flag.
# Usage: model_init_test.sh LOOKAHEAD PYTHON SOURCE_DIR
set -uo pipefail
BIN=$1 PY=$2 SRC=$3
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
ok() { echo "ok   $1"; }
fail() {
  echo "FAIL $1"
  fails=$((fails + 1))
}

W=$T/w
if "$BIN" model init --preset tiny --out "$W" --seed 3 >"$T/init.log" 2>&1; then
  ok "model init --preset tiny: $(grep '^wrote' "$T/init.log")"
else
  cat "$T/init.log"
  fail "model init --preset tiny"
fi
SD=$W/stable-diffusion-xl-base-1.0

"$PY" "$SRC/tests/launch/model_init_check.py" tiny "$W" "$SRC/third_party/open_clip/bpe_simple_vocab_16e6.txt.gz" ||
  fail "third-party loading of the tiny set (model_init_check.py)"

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
UC=$SD/unet/config.json
expect "UNet2DConditionModel \(.*\): $complete" "$SD/unet/diffusion_pytorch_model.safetensors" --config "$UC"
expect "CLIPTextModel \(.*\): $complete" "$SD/text_encoder/model.safetensors" --config "$SD/text_encoder/config.json"
expect "CLIPTextModelWithProjection \(.*\): $complete" "$SD/text_encoder_2/model.safetensors" \
  --config "$SD/text_encoder_2/config.json"
expect "AutoencoderKL \(.*\): $complete" "$SD/vae/diffusion_pytorch_model.safetensors" --config "$SD/vae/config.json"
expect "AutoencoderKL \(.*\): $complete" "$W/sdxl-vae-fp16-fix/diffusion_pytorch_model.safetensors" \
  --config "$W/sdxl-vae-fp16-fix/config.json"
expect "AutoencoderTiny \(.*\): $complete" "$W/taesdxl/diffusion_pytorch_model.safetensors" \
  --config "$W/taesdxl/config.json"
expect "CLIPVisionModelWithProjection \(.*\): $complete" "$W/IP-Adapter/models/image_encoder/model.safetensors" \
  --config "$W/IP-Adapter/models/image_encoder/config.json"
for ext in safetensors bin; do
  expect "IP-Adapter Plus for .*: $complete" "$W/IP-Adapter/sdxl_models/ip-adapter-plus-face_sdxl_vit-h.$ext" \
    --config "$UC"
done
expect "kohya LoRA for .*: [0-9]+ layers, [0-9]+ parameters, alpha 4" \
  "$W/lcm-lora-sdxl/pytorch_lora_weights.safetensors" --config "$UC"
expect "ArcFace IR-SE50 \(TreB1eN layout\): $complete" "$W/arcface/model_ir_se50.pth"
expect "ArcFace iresnet, stage depths \[1, 1, 1, 1\] .*: $complete" "$W/arcface/iresnet50/backbone.pth"
expect "MTCNN P/R/O-Net .*: $complete" "$W/facenet-pytorch/data"

# Our loaders on the written files: the UNet alone (compared with diffusers' forward on the same
# folder), then with the LCM-LoRA file and the IP-Adapter .bin attached (finite, and they change it).
"$PY" - "$T/in.safetensors" <<'PYEOF'
import sys, torch
from safetensors.torch import save_file
g = torch.Generator().manual_seed(0)
save_file({"sample": torch.randn(1, 4, 8, 8, generator=g), "timestep": torch.tensor([500.0]),
           "encoder_hidden_states": torch.randn(1, 77, 24, generator=g), "text_embeds": torch.randn(1, 16, generator=g),
           "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]]), "image_embeds": torch.randn(1, 5, 12, generator=g)},
          sys.argv[1])
PYEOF
UW=$SD/unet/diffusion_pytorch_model.safetensors
IPB=$W/IP-Adapter/sdxl_models/ip-adapter-plus-face_sdxl_vit-h.bin
if "$BIN" model run --model unet --config "$SD/unet/config.json" --weights "$UW" --inputs "$T/in.safetensors" \
  --out "$T/base.safetensors" >"$T/run.log" 2>&1 &&
  "$BIN" model run --model unet --config "$SD/unet/config.json" --weights "$UW" --inputs "$T/in.safetensors" \
    --lora "$W/lcm-lora-sdxl/pytorch_lora_weights.safetensors" --ip-adapter "$IPB" --out "$T/full.safetensors" \
    >>"$T/run.log" 2>&1 &&
  "$PY" - "$SD/unet" "$T/in.safetensors" "$T/base.safetensors" "$T/full.safetensors" <<'PYEOF'; then
import sys, torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file
unet = UNet2DConditionModel.from_pretrained(sys.argv[1]).float().eval()
x = load_file(sys.argv[2])
with torch.no_grad():
    want = unet(x["sample"], x["timestep"], encoder_hidden_states=x["encoder_hidden_states"],
                added_cond_kwargs={"text_embeds": x["text_embeds"], "time_ids": x["time_ids"]}).sample
base, full = load_file(sys.argv[3])["out"], load_file(sys.argv[4])["out"]
err = (base - want).abs().max().item()
assert err < 1e-4, f"model run vs diffusers on the written UNet: max error {err}"
assert torch.isfinite(full).all() and (full - base).abs().max().item() > 1e-3, "LoRA + IP-Adapter change nothing"
print(f"unet: max |ours - diffusers| {err:.2e}; with LCM-LoRA + IP-Adapter .bin: finite, "
      f"moved by {(full - base).abs().max().item():.3f}")
PYEOF
  ok "model run --model unet on the written UNet (= diffusers), + --lora lcm-lora + --ip-adapter .bin"
else
  cat "$T/run.log"
  fail "model run on the written UNet / LCM-LoRA / IP-Adapter"
fi

# The INI: the tiny preset's configuration with the weight paths in the set.
if grep -q "^sdxl_folder = $SD\$" "$W/lookahead.ini" && grep -q "^preset = tiny" "$W/lookahead.ini" &&
  "$BIN" train --config "$W/lookahead.ini" --data.train_set="$W/lookahead.ini" --dry-run >"$T/dry.log" 2>&1; then
  ok "train --config lookahead.ini --dry-run accepts the written configuration"
else
  cat "$T/dry.log"
  fail "train --dry-run on lookahead.ini"
fi

# Values: a function of (seed, name); another seed draws other values.
"$BIN" model init --preset tiny --out "$T/same" --seed 3 >/dev/null 2>&1
"$BIN" model init --preset tiny --out "$T/other" --seed 4 >/dev/null 2>&1
U=stable-diffusion-xl-base-1.0/unet/diffusion_pytorch_model.safetensors
if cmp -s "$W/$U" "$T/same/$U" && cmp -s "$W/arcface/model_ir_se50.pth" "$T/same/arcface/model_ir_se50.pth" &&
  ! cmp -s "$W/$U" "$T/other/$U"; then
  ok "seed 3 twice: identical files; seed 4: other values"
else
  fail "determinism of the values"
fi

# Bad input: exit 2 and a message naming the flag or the path.
bad() {  # bad REGEX ARGS...
  local regex=$1
  shift
  local out rc
  out=$("$BIN" model init "$@" 2>&1)
  rc=$?
  if [ $rc -eq 2 ] && grep -Eq -- "$regex" <<<"$out"; then
    ok "exit 2 for $*: $(grep -Eo -- "$regex" <<<"$out" | head -1)"
  else
    echo "$out" | tail -3
    fail "expected exit 2 and /$regex/ for $* (rc $rc)"
  fi
}
bad "--preset must be sdxl, sdxl-turbo or tiny, got 'sd15'" --preset sd15 --out "$T/x"
: >"$T/file"
bad "--out $T/file/x: cannot create the folder" --preset tiny --out "$T/file/x"
bad "--out $W: folder is not empty \(pass --force" --preset tiny --out "$W"
bad "--dtype must be" --preset tiny --out "$T/y" --dtype fp8
if "$BIN" model init --preset tiny --out "$W" --force --dtype bf16 >/dev/null 2>&1 &&
  "$BIN" model inspect "$W/$U" --config "$SD/unet/config.json" | grep -Eq "^  BF16: [0-9]+ tensors"; then
  ok "--force writes into the set again; --dtype bf16 stores BF16"
else
  fail "--force / --dtype bf16"
fi

echo "$fails failure(s)"
[ $fails -eq 0 ]
