#!/usr/bin/env bash
# `lookahead model inspect` on the files the CLIP, VAE and face parity oracles wrote (the real
# layouts, random values): each must be recognized as complete for its network.
# facenet-pytorch ships MTCNN as pnet.pt / rnet.pt / onet.pt: inspect and run take their folder or
# the three paths, and the run finds the astronaut's face where facenet-pytorch's MTCNN.detect did.
# Usage: inspect_test.sh LOOKAHEAD CLIP_DIR VAE_DIR FACE_DIR TORCH_FIXTURES_DIR PYTHON
set -uo pipefail
BIN=$1 CLIP=$2 VAE=$3 FACE=$4 TORCH_FIXTURES=$5 PY=$6
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
FACENET=$(dirname "$(head -1 "$TORCH_FIXTURES/facenet_paths.txt")")
expect "MTCNN P/R/O-Net .*: $complete" "$FACENET"
expect "MTCNN P/R/O-Net .*: $complete" "$FACENET/pnet.pt,$FACENET/rnet.pt,$FACENET/onet.pt"
total=$((total + 1))
T=$(mktemp -d)
"$PY" - "$FACE/mtcnn_photos.safetensors" "$T/in.safetensors" <<'EOF'
import sys
from safetensors.torch import load_file, save_file
save_file({"image": load_file(sys.argv[1])["astronaut.image"]}, sys.argv[2])
EOF
ran=0
for w in "$FACENET" "$FACENET/pnet.pt,$FACENET/rnet.pt,$FACENET/onet.pt"; do
  ran=$((ran + 1))
  "$BIN" model run --model mtcnn --weights "$w" --inputs "$T/in.safetensors" --out "$T/out$ran.safetensors" \
    >"$T/run.log" 2>&1 || { cat "$T/run.log"; }
done
if "$PY" - "$FACE/mtcnn_photos.safetensors" "$T/out1.safetensors" "$T/out2.safetensors" <<'EOF'; then
import sys
import torch
from safetensors.torch import load_file
want = load_file(sys.argv[1])
a, b = load_file(sys.argv[2]), load_file(sys.argv[3])
for k in ("boxes", "probs", "landmarks"):
    assert torch.equal(a[k], b[k]), f"folder and three-path runs differ in {k}"
    err = (a[k][:1] - want["astronaut." + k]).abs().max().item()
    assert err < 1e-2, f"{k}: off by {err} from facenet-pytorch's MTCNN.detect"
print(f"mtcnn run on facenet-pytorch's files: {a['boxes'].shape[0]} face(s), the astronaut's as facenet-pytorch found it")
EOF
  echo "ok   model run --model mtcnn on the folder and on the three files"
else
  echo "FAIL model run --model mtcnn on facenet-pytorch's files"
  fails=$((fails + 1))
fi
rm -rf "$T"
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
