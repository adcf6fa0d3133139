#!/usr/bin/env bash
# `lookahead eval` end to end on the tiny model: a short training run makes the checkpoints, then
#   ranks:      the evaluation on 1 and on 3 ranks writes byte-identical metrics.json (and images);
#   compare:    two checkpoints x two guidance settings -> four runs and one comparison report;
#               `eval report` rebuilds it from the finished runs;
#   train_eval: eval.every = 2 during training logs eval_* figures and writes eval/step-N/;
#   errors:     a missing evaluation set, an empty prompts file, bad guidance scales, no checkpoint.
# Usage: eval_e2e.sh MPIEXEC LOOKAHEAD SOURCE_DIR WORK_DIR MODE
set -uo pipefail
MPIEXEC=$1 BIN=$2 SRC=$3 WORK=$4 MODE=$5
PY=${LA_PYTHON:-$SRC/.venv/bin/python}
CONFIG=$SRC/launch/configs/tiny.ini
PROMPTS=$SRC/launch/configs/eval_prompts.txt
T=$WORK/eval_e2e_$MODE
rm -rf "$T" && mkdir -p "$T" || { echo "FAIL: cannot create $T"; exit 1; }
cd "$SRC" || exit 1

fail() {
  echo "FAIL: $MODE: $*"
  exit 1
}
show() { echo "---- $1"; sed 's/^/    /' "$1" | tail -${2:-40}; }

# The package's data folder, found without importing it (its import needs torchvision).
MTCNN=$("$PY" -c 'import importlib.util as u, os; print(os.path.join(os.path.dirname(u.find_spec("facenet_pytorch").origin), "data"))') ||
  fail "facenet-pytorch (test requirement) is not importable by $PY"
[ -f "$MTCNN/pnet.pt" ] || fail "no MTCNN weights in $MTCNN"

timeout 60 "$BIN" data synth --out "$T/data.h5" --identities 4 --per-identity 3 --size 64 --latent-size 8 \
  --prompt-embeds 3x24 --pooled 16 --clip-features 5x12 >"$T/synth.log" 2>&1 || { show "$T/synth.log"; fail "data synth"; }
BASE=(--config "$CONFIG" --data.train_set="$T/data.h5" --train.progress=false
        --model.mtcnn="$MTCNN" --eval.prompts="$PROMPTS" --eval.identities=2 --eval.samples=2 --eval.steps=3
        --train.threads=1)
COMMON=("${BASE[@]}" --train.out="$T/run")

train() {  # train NP STEPS LOG [extra...]
  local np=$1 steps=$2 log=$3
  shift 3
  timeout 240 "$MPIEXEC" -np "$np" --oversubscribe "$BIN" train "${COMMON[@]}" --train.steps="$steps" \
    --train.checkpoint_every=2 "$@" >"$log" 2>&1 || { show "$log"; fail "training to step $steps"; }
}
evaluate() {  # evaluate NP LOG [extra...]
  local np=$1 log=$2
  shift 2
  timeout 240 "$MPIEXEC" -np "$np" --oversubscribe "$BIN" eval "${COMMON[@]}" --eval-set "$T/data.h5" "$@" >"$log" 2>&1 ||
    { show "$log"; fail "eval at np $np ($*)"; }
}

# check_metrics FILE IDENTITIES PROMPTS SAMPLES: schema and counts of one metrics.json.
check_metrics() {
  "$PY" - "$@" <<'EOF' || fail "bad metrics in $1"
import json, math, os, sys
path, ids, prompts, samples = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
m = json.load(open(path))
assert m["format"] == "lookahead-eval" and m["version"] == 1, "format"
s = m["samples"]
assert len(s) == ids * prompts * samples, f"{len(s)} samples, expected {ids * prompts * samples}"
assert len(m["identities"]) == ids and len(m["prompts"]) == prompts, "groups"
for x in s:
    assert math.isfinite(x["clip_cosine"]) and -1 <= x["clip_cosine"] <= 1, x
    assert abs(x["clip_score"] - 100 * max(x["clip_cosine"], 0)) < 1e-9, x
    assert (x["id_similarity"] is None) == (not x["face_found"]), x
    assert os.path.isfile(os.path.join(os.path.dirname(path), x["image"])), x["image"]
o = m["overall"]
assert o["n"] == len(s)
fails = sum(not x["face_found"] for x in s) / len(s)
assert abs(o["face_failure_rate"] - fails) < 1e-12, (o["face_failure_rate"], fails)
mean = sum(x["clip_score"] for x in s) / len(s)
assert abs(o["clip_score"]["mean"] - mean) < 1e-9, (o["clip_score"]["mean"], mean)
lo, hi = o["clip_score"]["ci95"]
assert lo <= mean <= hi, (lo, mean, hi)
seeds = [x["seed"] for x in s]
assert len(set(seeds)) == len(seeds), "seeds must differ per (identity, prompt, sample)"
print(f"{path}: {len(s)} samples, CLIP score {mean:.3f}, no-face rate {fails:.2f}")
EOF
}
N_PROMPTS=$(grep -cv '^\s*\(#\|$\)' "$PROMPTS")

case "$MODE" in
ranks)
  train 2 2 "$T/train.log"
  evaluate 1 "$T/eval1.log" --out "$T/eval-np1"
  evaluate 3 "$T/eval3.log" --out "$T/eval-np3"
  check_metrics "$T/eval-np1/metrics.json" 2 "$N_PROMPTS" 2
  cmp "$T/eval-np1/metrics.json" "$T/eval-np3/metrics.json" || fail "metrics.json differs between 1 and 3 ranks"
  for f in $(cd "$T/eval-np1" && find images -name '*.png' | sort); do
    cmp -s "$T/eval-np1/$f" "$T/eval-np3/$f" || fail "image $f differs between 1 and 3 ranks"
  done
  [ -s "$T/eval-np1/report.html" ] || fail "no report.html"
  grep -q '"world_size": 3' "$T/eval-np3/run.json" || fail "run.json of the 3-rank run does not say 3 ranks"
  echo "PASS: 1 and 3 ranks wrote identical metrics.json and images"
  ;;
compare)
  train 2 4 "$T/train.log"
  evaluate 2 "$T/eval.log" --out "$T/cmp" --checkpoint "$T/run/checkpoints/step-000002.h5" \
    --checkpoint "$T/run/checkpoints/step-000004.h5" --label early --label late \
    --guidance-scales 3,2,2 --guidance-scales cfg=5
  for d in early_3_2_2 early_cfg_5 late_3_2_2 late_cfg_5; do
    check_metrics "$T/cmp/$d/metrics.json" 2 "$N_PROMPTS" 2
  done
  "$PY" - "$T/cmp" <<'EOF' || fail "comparison outputs"
import json, sys
d = sys.argv[1]
rows = json.load(open(f"{d}/comparison.json"))
rows = rows["rows"] if isinstance(rows, dict) else rows
labels = [r["label"] for r in rows]
assert labels == ["early 3/2/2", "early cfg 5", "late 3/2/2", "late cfg 5"], labels
early = json.load(open(f"{d}/early_3_2_2/metrics.json"))
late = json.load(open(f"{d}/late_3_2_2/metrics.json"))
assert early["settings"]["step"] == 2 and late["settings"]["step"] == 4
# Same seeds for every checkpoint, different weights: the images must differ.
assert [s["seed"] for s in early["samples"]] == [s["seed"] for s in late["samples"]]
assert early["samples"] != late["samples"], "the checkpoints gave identical results"
html = open(f"{d}/report.html").read()
for l in labels: assert l in html, l
print("comparison:", labels)
EOF
  timeout 60 "$BIN" eval report --runs "$T/cmp/early_3_2_2" "$T/cmp/late_3_2_2/metrics.json" --out "$T/rep" \
    >"$T/report.log" 2>&1 || { show "$T/report.log"; fail "eval report"; }
  grep -q "early 3/2/2" "$T/rep/report.html" && grep -q "late 3/2/2" "$T/rep/report.html" || fail "eval report misses a run"
  echo "PASS: comparison of 2 checkpoints x 2 guidance settings"
  ;;
train_eval)
  train 2 4 "$T/train.log" --eval.every=2 --eval.eval_set="$T/data.h5"
  "$PY" - "$T/run/metrics.jsonl" <<'EOF' || fail "eval figures in metrics.jsonl"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
with_eval = [m["step"] for m in lines if "eval_clip_score" in m]
assert with_eval == [1, 3], with_eval  # records carry the step before increment: evaluation after steps 2 and 4
for m in lines:
    if "eval_clip_score" in m:
        assert 0 <= m["eval_face_failure_rate"] <= 1 and m["eval_clip_score"] >= 0, m
EOF
  for s in 000002 000004; do check_metrics "$T/run/eval/step-$s/metrics.json" 2 "$N_PROMPTS" 2; done
  # Evaluation leaves training alone: a run without it has the same losses, and `lookahead eval`
  # of the step-4 checkpoint gives the same samples as the evaluation done during training.
  timeout 240 "$MPIEXEC" -np 2 --oversubscribe "$BIN" train "${BASE[@]}" --train.out="$T/plain" --train.steps=4 \
    --train.checkpoint_every=2 >"$T/plain.log" 2>&1 || { show "$T/plain.log"; fail "training without evaluation"; }
  evaluate 2 "$T/eval_after.log" --out "$T/after" --checkpoint "$T/run/checkpoints/step-000004.h5"
  "$PY" - "$T" <<'EOF' || fail "evaluation changed training, or differs from lookahead eval"
import json, sys
t = sys.argv[1]
def losses(path):
    return [(m["loss_diffusion"], m["loss_lookahead"], m["grad_norm"]) for m in map(json.loads, open(path))]
assert losses(f"{t}/run/metrics.jsonl") == losses(f"{t}/plain/metrics.jsonl"), "losses differ with evaluation on"
during = json.load(open(f"{t}/run/eval/step-000004/metrics.json"))
after = json.load(open(f"{t}/after/metrics.json"))
assert during["samples"] == after["samples"] and during["overall"] == after["overall"], "eval during != eval after"
print("training with evaluation == without; evaluation during training == lookahead eval of the checkpoint")
EOF
  echo "PASS: evaluation every 2 steps during training"
  ;;
errors)
  expect_error() {  # expect_error CODE PATTERN LOG -- command...
    local code=$1 pattern=$2 log=$3
    shift 4
    timeout 120 "$@" >"$log" 2>&1
    local rc=$?
    [ "$rc" -eq "$code" ] || { show "$log"; fail "expected exit $code, got $rc: $*"; }
    grep -q "$pattern" "$log" || { show "$log"; fail "no '$pattern' in the message"; }
  }
  train 1 2 "$T/train.log"
  expect_error 1 "missing.h5" "$T/e1.log" -- "$BIN" eval "${COMMON[@]}" --eval-set "$T/missing.h5"
  : >"$T/empty.txt"
  expect_error 1 "holds no prompt" "$T/e2.log" -- "$BIN" eval "${COMMON[@]}" --eval-set "$T/data.h5" --prompts "$T/empty.txt"
  expect_error 2 "guidance-scales" "$T/e3.log" -- "$BIN" eval "${COMMON[@]}" --eval-set "$T/data.h5" --guidance-scales 3,2
  expect_error 2 "eval.sampler" "$T/e4.log" -- "$BIN" eval "${COMMON[@]}" --eval-set "$T/data.h5" --eval.sampler=plms
  expect_error 1 "no checkpoint" "$T/e5.log" -- "$BIN" eval "${BASE[@]}" --eval-set "$T/data.h5" --train.out="$T/none"
  echo "PASS: evaluation errors are named"
  ;;
*) fail "unknown mode" ;;
esac
