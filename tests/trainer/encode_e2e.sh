#!/usr/bin/env bash
# `lookahead data encode` end to end: a synthetic set without precomputed tensors, encoded with the
# tiny preset's encoders at 1 and 2 ranks (the files' tensors must be bit-identical), then a short
# tiny training run on the encoded set and one on the raw set (encoded on the fly), with and without
# augmentation; and the refusals of augmentation on an encoded set and of an sdxl config without
# its folders.
# Usage: encode_e2e.sh MPIEXEC LOOKAHEAD ENCODE_TEST_BINARY SOURCE_DIR WORK_DIR
set -uo pipefail
MPIEXEC=$1 BIN=$2 CMP=$3 SRC=$4 WORK=$5
CONFIG=$SRC/launch/configs/tiny.ini
T=$WORK/encode_e2e
rm -rf "$T" && mkdir -p "$T" || { echo "FAIL: cannot create $T"; exit 1; }

fail() {
  echo "FAIL: $*"
  exit 1
}
show() { echo "---- $1"; sed 's/^/    /' "$1" | tail -${2:-40}; }

timeout 60 "$BIN" data synth --out "$T/raw.h5" --identities 8 --per-identity 4 --size 64 >"$T/synth.log" 2>&1 ||
  { show "$T/synth.log"; fail "data synth failed"; }

for np in 1 2; do
  timeout 120 "$MPIEXEC" -np "$np" --oversubscribe "$BIN" data encode --config "$CONFIG" --in "$T/raw.h5" \
    --out "$T/np$np.h5" --batch 3 --train.threads=1 >"$T/encode-$np.log" 2>&1 ||
    { show "$T/encode-$np.log"; fail "data encode at np $np failed"; }
  grep -q "encoded 32 records" "$T/encode-$np.log" || { show "$T/encode-$np.log"; fail "np $np: no summary"; }
done
grep -q "prompt_embeds: *\[77, 24\]" "$T/encode-2.log" || { show "$T/encode-2.log"; fail "unexpected prompt shape"; }

LA_ENCODED_A=$T/np1.h5 LA_ENCODED_B=$T/np2.h5 timeout 60 "$CMP" --gtest_filter=EncodedFiles.* >"$T/compare.log" 2>&1 ||
  { show "$T/compare.log"; fail "the np1 and np2 encodings differ"; }

timeout 200 "$MPIEXEC" -np 2 --oversubscribe "$BIN" train --config "$CONFIG" --data.train_set="$T/np2.h5" \
  --train.steps=2 --train.out="$T/run" --train.progress=false >"$T/train.log" 2>&1 ||
  { show "$T/train.log"; fail "training on the encoded set failed"; }
[ "$(grep -c '"step"' "$T/run/metrics.jsonl")" -eq 2 ] || { show "$T/train.log"; fail "expected 2 metrics lines"; }

# The raw set trains too: each rank encodes its own samples on the fly with the same encoders.
timeout 200 "$MPIEXEC" -np 2 --oversubscribe "$BIN" train --config "$CONFIG" --data.train_set="$T/raw.h5" \
  --train.steps=2 --train.out="$T/run_raw" --train.progress=false >"$T/train_raw.log" 2>&1 ||
  { show "$T/train_raw.log"; fail "training on the raw set (on-the-fly encoding) failed"; }
[ "$(grep -c '"step"' "$T/run_raw/metrics.jsonl")" -eq 2 ] || { show "$T/train_raw.log"; fail "expected 2 metrics lines (raw)"; }

# Augmentation (random crop + flip) trains on the raw set, changes what the model sees (the first
# step's loss differs from the plain run's), and is refused on a set with precomputed latents.
timeout 200 "$MPIEXEC" -np 2 --oversubscribe "$BIN" train --config "$CONFIG" --data.train_set="$T/raw.h5" \
  --train.steps=2 --train.out="$T/run_aug" --train.progress=false --data.random_crop=true --data.hflip_p=0.5 \
  >"$T/train_aug.log" 2>&1 || { show "$T/train_aug.log"; fail "training with augmentation failed"; }
first_loss() { head -1 "$1" | grep -o '"loss_diffusion":[^,}]*'; }
[ -n "$(first_loss "$T/run_aug/metrics.jsonl")" ] || fail "no loss in the augmented run"
[ "$(first_loss "$T/run_aug/metrics.jsonl")" != "$(first_loss "$T/run_raw/metrics.jsonl")" ] ||
  fail "augmentation did not change the first step"
timeout 60 "$BIN" train --config "$CONFIG" --data.train_set="$T/np2.h5" --train.steps=1 --train.out="$T/run_refused" \
  --data.hflip_p=0.5 >"$T/refused.log" 2>&1
rc=$?
[ "$rc" -eq 1 ] || { show "$T/refused.log"; fail "augmentation on a precomputed set exited $rc, expected 1"; }
grep -q "data.hflip_p need on-the-fly encoding" "$T/refused.log" || { show "$T/refused.log"; fail "refusal not named"; }

# An sdxl config without its encoder folders is refused, naming the key (exit 1). Encoding needs
# none of the training weights, so their keys stay unset.
timeout 60 "$BIN" data encode --config "$CONFIG" --in "$T/raw.h5" --out "$T/sdxl.h5" --model.preset=sdxl \
  --model.dtype=fp32 >"$T/sdxl.log" 2>&1
rc=$?
[ "$rc" -eq 1 ] || { show "$T/sdxl.log"; fail "sdxl without folders exited $rc, expected 1"; }
grep -q "model.sdxl_folder" "$T/sdxl.log" || { show "$T/sdxl.log"; fail "the error does not name model.sdxl_folder"; }
[ ! -e "$T/sdxl.h5" ] || fail "a refused encode left $T/sdxl.h5"

echo "PASS: data encode np1 == np2, training on the encoded and on the raw set, sdxl refusal"
