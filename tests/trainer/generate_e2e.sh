#!/usr/bin/env bash
# `lookahead data generate` end to end on the tiny preset's SDXL pipeline (`lookahead model init
# --preset tiny`: random weights, the real CLIP tokenizers, facenet-pytorch's MTCNN weights).
# Usage: generate_e2e.sh MPIEXEC LOOKAHEAD GENERATE_TEST_BINARY SOURCE_DIR WORK_DIR MODE
#   ranks    1 and 3 ranks write the same records in the same order (kept and rejected files);
#            --dtype bf16 runs
#   resume   a run killed (SIGKILL) after its first finished identity, rerun with the same
#            arguments: same content as a clean run, no part file left, finished work skipped;
#            a rerun with other settings is refused (exit 2)
#   shared   --consistency shared-attention changes the pixels of the same plan; at --share-rate 0
#            it is byte-identical to collapse
#   filter   --filter arcface on faceless random-weight images: every image rejected as no_face,
#            every identity dropped, statistics, histograms and report written, the manifest empty
#   train    the generated set (vanilla flags, training prompts) encoded and trained on
#   badinput a pipeline folder missing a part, an unknown scheduler class, an empty prompts file,
#            an identities file with a blank line or a bidi override, a threshold out of range:
#            exit 2 with the file / option named
set -uo pipefail
MPIEXEC=$1 BIN=$2 CMP=$3 SRC=$4 WORK=$5 MODE=$6
T=$WORK/generate_e2e_$MODE
rm -rf "$T" && mkdir -p "$T" || { echo "FAIL: cannot create $T"; exit 1; }
fail() {
  echo "FAIL ($MODE): $*"
  exit 1
}
show() { echo "---- $1"; sed 's/^/    /' "$1" | tail -${2:-40}; }

timeout 120 "$BIN" model init --preset tiny --out "$T/w" >"$T/init.log" 2>&1 || { show "$T/init.log"; fail "model init"; }
PIPE=$T/w/stable-diffusion-xl-base-1.0
MTCNN=$T/w/facenet-pytorch/data
# 6 identities x (2 vanilla + 1 round of the 5 styles) = 42 images, 2 identities a shard.
COMMON=(--pipeline "$PIPE" --identities 6 --vanilla 2 --style-rounds 1 --steps 2 --identities-per-shard 2 --seed 11
        --quiet)

gen() {  # gen NP NAME [args...]: generate into $T/NAME (4 images a UNet call unless args say)
  local np=$1 name=$2 batch=(--batch 4)
  shift 2
  for a in "$@"; do [ "$a" = --batch ] && batch=(); done
  timeout 300 "$MPIEXEC" -np "$np" --oversubscribe "$BIN" data generate "${COMMON[@]}" "${batch[@]}" --out "$T/$name" "$@" \
    >"$T/$name.log" 2>&1 || { show "$T/$name.log"; fail "data generate $name (np $np) failed"; }
}
same() {  # same A B: identical content
  LA_GEN_A=$T/$1 LA_GEN_B=$T/$2 timeout 120 "$CMP" --gtest_filter=GeneratedSets.SameContent >"$T/cmp-$1-$2.log" 2>&1 ||
    { show "$T/cmp-$1-$2.log"; fail "$1 and $2 differ"; }
  grep -q "same content: 42 records" "$T/cmp-$1-$2.log" || { show "$T/cmp-$1-$2.log"; fail "$1 vs $2: not 42 records"; }
}
expect_usage_error() {  # expect_usage_error NAME PATTERN args...: exit 2 and PATTERN in the message
  local name=$1 pattern=$2
  shift 2
  timeout 120 "$BIN" data generate "$@" >"$T/$name.log" 2>&1
  local rc=$?
  [ "$rc" -eq 2 ] || { show "$T/$name.log"; fail "$name: exit $rc, expected 2"; }
  grep -q -- "$pattern" "$T/$name.log" || { show "$T/$name.log"; fail "$name: message does not name '$pattern'"; }
  echo "ok: $name -> exit 2: $(grep -m1 -- "$pattern" "$T/$name.log" | cut -c1-160)"
}

case "$MODE" in
ranks)
  gen 1 np1 --filter none
  gen 3 np3 --filter none
  same np1 np3
  grep -q "42 of 42 images kept, 6 of 6 identities" "$T/np1.log" || { show "$T/np1.log"; fail "np1 summary"; }
  grep -q 'id="run-note">--filter none' "$T/np1/report.html" || fail "report.html does not say the filter was off"
  "$BIN" data info "$T/np3/manifest.json" >"$T/info.log" 2>&1 || { show "$T/info.log"; fail "data info"; }
  grep -q "3 shards" "$T/info.log" && grep -q "records *42 (12 photos" "$T/info.log" ||
    { show "$T/info.log"; fail "data info of the manifest"; }
  [ -z "$(ls -A "$T/np3/parts")" ] || fail "parts/ not empty after a finished run"
  # The GPU dtypes run on the CPU too (bf16 arithmetic; the scheduler stays float32).
  gen 2 bf16 --filter none --dtype bf16
  grep -q "42 of 42 images kept" "$T/bf16.log" || { show "$T/bf16.log"; fail "bf16 summary"; }
  ;;
resume)
  gen 1 clean --filter none --batch 1
  # Killed once its first identity is on disk; the rerun must finish the job with the same content.
  "$BIN" data generate "${COMMON[@]}" --out "$T/killed" --filter none --batch 1 >"$T/killed-1.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    if ls "$T/killed/parts/"id-*.h5 >/dev/null 2>&1 || ls "$T/killed/shards/"*.json >/dev/null 2>&1; then break; fi
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  [ -f "$T/killed/manifest.json" ] && fail "the run finished before it could be killed (nothing to resume)"
  finished=$(ls "$T/killed/parts/" 2>/dev/null | grep -c '^id-.*\.h5$')
  echo "killed with $finished finished identity part(s): $(ls "$T/killed/parts" "$T/killed/shards" 2>/dev/null | tr '\n' ' ')"
  "$BIN" data generate "${COMMON[@]}" --out "$T/killed" --filter none --batch 1 >"$T/killed-2.log" 2>&1 ||
    { show "$T/killed-2.log"; fail "the resumed run failed"; }
  grep -q "skipped [1-9][0-9]* finished identities" "$T/killed-2.log" || { show "$T/killed-2.log"; fail "nothing was skipped"; }
  same clean killed
  [ -z "$(ls -A "$T/killed/parts")" ] || fail "parts/ not empty after the resumed run"
  ls "$T/killed/parts" "$T/killed/shards" | grep -q '\.tmp' && fail "a temporary file was left behind"
  expect_usage_error other-settings "other settings" "${COMMON[@]}" --out "$T/killed" --filter none --batch 1 --placeholder person
  ;;
shared)
  gen 1 collapse --filter none
  gen 1 shared --filter none --consistency shared-attention --share-rate 0.5
  gen 1 rate0 --filter none --consistency shared-attention --share-rate 0
  same collapse rate0
  # Images in batches of 4 and 3 share; the last batch of each identity holds 3 images, all sharing.
  LA_GEN_A=$T/collapse LA_GEN_B=$T/shared LA_GEN_MIN_DIFFERENT=1 timeout 120 "$CMP" \
    --gtest_filter=GeneratedSets.SamePlanOtherPixels >"$T/cmp-shared.log" 2>&1 || { show "$T/cmp-shared.log"; fail "shared-attention did not change every image"; }
  grep "images differ" "$T/cmp-shared.log"
  ;;
filter)
  gen 2 filtered --filter arcface --mtcnn "$MTCNN" --arcface "$T/w/arcface/model_ir_se50.pth" --min-face-size 20
  grep -q "0 of 42 images kept, 0 of 6 identities" "$T/filtered.log" || { show "$T/filtered.log"; fail "summary"; }
  for f in filter_stats.json histograms.json duplicates.json report.html manifest.json; do
    [ -s "$T/filtered/$f" ] || fail "$f missing"
  done
  grep -q '"identity_dropped": 42' "$T/filtered/filter_stats.json" || { show "$T/filtered/filter_stats.json"; fail "stats"; }
  [ "$(grep -o 'class="tile rejected"' "$T/filtered/report.html" | wc -l)" -eq 42 ] ||
    fail "report.html does not show 42 rejected tiles"
  ;;
train)
  gen 2 set --filter none
  CONFIG=$SRC/launch/configs/tiny.ini
  timeout 200 "$MPIEXEC" -np 2 --oversubscribe "$BIN" data encode --config "$CONFIG" --in "$T/set/manifest.json" \
    --out "$T/encoded.h5" --train.threads=1 >"$T/encode.log" 2>&1 || { show "$T/encode.log"; fail "data encode"; }
  "$BIN" data info "$T/encoded.h5" >"$T/info.log" 2>&1 || { show "$T/info.log"; fail "data info"; }
  grep -q "columns/seed" "$T/info.log" && grep -q "columns/full_prompt" "$T/info.log" ||
    { show "$T/info.log"; fail "data encode dropped the generation columns"; }
  timeout 200 "$MPIEXEC" -np 2 --oversubscribe "$BIN" train --config "$CONFIG" --data.train_set="$T/set/manifest.json" \
    --train.steps=2 --train.out="$T/run" --train.progress=false >"$T/train.log" 2>&1 ||
    { show "$T/train.log"; fail "training on the generated manifest failed"; }
  [ "$(grep -c '"step"' "$T/run/metrics.jsonl")" -eq 2 ] || { show "$T/train.log"; fail "expected 2 metrics lines"; }
  ;;
badinput)
  cp -r "$PIPE" "$T/no-te2" && rm -rf "$T/no-te2/text_encoder_2"
  expect_usage_error missing-part "text_encoder_2" --pipeline "$T/no-te2" --out "$T/o1" --filter none
  cp -r "$PIPE" "$T/bad-sched"
  sed -i 's/EulerDiscreteScheduler/HeunDiscreteScheduler/' "$T/bad-sched/model_index.json"
  expect_usage_error unknown-scheduler "HeunDiscreteScheduler" --pipeline "$T/bad-sched" --out "$T/o2" --filter none
  : >"$T/empty.txt"
  expect_usage_error empty-prompts "empty.txt" "${COMMON[@]}" --out "$T/o3" --filter none --prompts-file "$T/empty.txt"
  printf 'a tall man with red hair\n\na short woman\n' >"$T/blank.txt"
  expect_usage_error blank-line "blank.txt: line 2" "${COMMON[@]}" --out "$T/o4" --filter none --identities-file "$T/blank.txt"
  printf 'a tall man\nan evil \xe2\x80\xae override\n' >"$T/bidi.txt"
  expect_usage_error bidi "bidi.txt: line 2" "${COMMON[@]}" --out "$T/o5" --filter none --identities-file "$T/bidi.txt"
  expect_usage_error threshold "keep-threshold" "${COMMON[@]}" --out "$T/o6" --mtcnn "$MTCNN" --arcface x --keep-threshold 1.5
  expect_usage_error no-arcface "--arcface" "${COMMON[@]}" --out "$T/o7" --mtcnn "$MTCNN"
  for o in o1 o2 o3 o4 o5 o6 o7; do [ -e "$T/$o/manifest.json" ] && fail "$o: a refused run wrote a manifest"; done
  ;;
*)
  fail "unknown mode $MODE"
  ;;
esac
echo "PASS generate_e2e $MODE"
