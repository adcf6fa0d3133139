#!/usr/bin/env bash
# launch/ablations on the tiny model: every preset of launch/configs/ablation/ layered over
# launch/configs/tiny.ini, trained 2 steps on 2 ranks (row 1 evaluated untrained), evaluated, and
# compared in one report; each run's metrics carry its variant; a rerun of a finished row does not
# train again. Proves the wiring, not the paper's numbers (random tiny networks).
# Usage: ablations_test.sh MPIEXEC LOOKAHEAD SOURCE_DIR WORK_DIR
set -uo pipefail
MPIEXEC=$1 BIN=$2 SRC=$3 WORK=$4
PY=${LA_PYTHON:-$SRC/.venv/bin/python}
T=$WORK/ablations_test
rm -rf "$T" && mkdir -p "$T" || { echo "FAIL: cannot create $T"; exit 1; }
cd "$SRC" || exit 1
fail() { echo "FAIL: $*"; exit 1; }
show() { echo "---- $1"; sed 's/^/    /' "$1" | tail -${2:-40}; }

MTCNN=$("$PY" -c 'import importlib.util as u, os; print(os.path.join(os.path.dirname(u.find_spec("facenet_pytorch").origin), "data"))') ||
  fail "facenet-pytorch (test requirement) is not importable by $PY"
timeout 60 "$BIN" data synth --out "$T/data.h5" --identities 4 --per-identity 3 --size 64 --latent-size 8 \
  --prompt-embeds 3x24 --pooled 16 --clip-features 5x12 >"$T/synth.log" 2>&1 || { show "$T/synth.log"; fail "data synth"; }

FLAGS=(--data.train_set="$T/data.h5" --eval.eval_set="$T/data.h5" --model.mtcnn="$MTCNN" --eval.identities=1
       --eval.samples=1 --eval.steps=2 --train.threads=1 --train.checkpoint_every=2 --train.log_every=1)
run() {  # run LOG [script args...]
  local log=$1
  shift
  timeout 600 "$SRC/launch/ablations" --base launch/configs/tiny.ini --steps 2 --out "$T/abl" --lookahead "$BIN" \
    --mpirun "$MPIEXEC -np 2 --oversubscribe" "$@" -- "${FLAGS[@]}" >"$log" 2>&1 || { show "$log" 60; fail "launch/ablations $*"; }
}
t0=$(date +%s)
run "$T/run1.log"
t1=$(date +%s)

"$PY" - "$T/abl" <<'PYEOF' || fail "ablation outputs"
import json, os, sys
out = sys.argv[1]
rows = sorted(d for d in os.listdir(out) if d[0].isdigit())
want = ["1-ip-adapter", "2-consistent-data", "3-x0-id", "4-lookahead-id", "5-full", "6-official"]
assert rows == want, rows
variants = {  # preview label, kv_encoder, lambda_id, lambda_dreamsim
    "2-consistent-data": ("none", "off", 0, 0), "3-x0-id": ("x0", "off", 1e-3, 0),
    "4-lookahead-id": ("lcm", "off", 1e-3, 0), "5-full": ("lcm", "on", 1e-3, 0), "6-official": ("lcm", "on", 1e-3, 1e-3)}
for row in rows:
    m = json.load(open(os.path.join(out, row, "eval", "metrics.json")))
    assert m["overall"]["n"] >= 1, row
    if row == "1-ip-adapter":
        assert not os.path.exists(os.path.join(out, row, "checkpoints")), "row 1 must not train"
        continue
    lines = [json.loads(l) for l in open(os.path.join(out, row, "metrics.jsonl")) if l.strip()]
    assert [l["step"] for l in lines] == [0, 1], (row, [l["step"] for l in lines])
    preview, kv, lid, lds = variants[row]
    for l in lines:
        assert (l["preview"], l["kv_encoder"], l["lambda_id"], l["lambda_dreamsim"]) == (preview, kv, lid, lds), (row, l)
        assert ("alpha" in l) == (preview == "lcm"), (row, "alpha")
        if preview == "none": assert l["loss_lookahead"] == 0, (row, l["loss_lookahead"])
        else: assert l["loss_lookahead"] > 0, (row, l["loss_lookahead"])
        assert (l["loss_dreamsim"] > 0) == (lds > 0), (row, l["loss_dreamsim"])
    exported = sorted(os.listdir(os.path.join(out, row, "export")))
    assert exported == (["ip_adapter.safetensors", "kv_encoder.safetensors"] if kv == "on" else ["ip_adapter.safetensors"]), (row, exported)
c = json.load(open(os.path.join(out, "report", "comparison.json")))
labels = [r["label"] for r in c["runs"]] if "runs" in c else None
assert labels is None or labels == want, labels
summary = open(os.path.join(out, "summary.txt")).read().splitlines()
assert [s.split(":")[0] for s in summary] == want, summary
print(f"{len(rows)} rows trained/evaluated; variants logged; report with {len(want)} runs")
PYEOF
[ -f "$T/abl/report/report.html" ] || fail "no comparison report"
cat "$T/abl/summary.txt"

# A rerun of a finished row resumes at its last step: nothing left to train.
run "$T/run2.log" --rows 5
grep -q "trained 0 step(s), now at step 2 of 2" "$T/abl/5-full/train.log" || { show "$T/abl/5-full/train.log"; fail "rerun trained again"; }
# Bad arguments are refused before anything runs.
"$SRC/launch/ablations" --base launch/configs/tiny.ini --steps 0 --out "$T/x" --lookahead "$BIN" >"$T/bad.log" 2>&1
[ $? -eq 2 ] && grep -q -- "--steps must be a positive integer" "$T/bad.log" || { show "$T/bad.log"; fail "--steps 0 accepted"; }
"$SRC/launch/ablations" --base launch/configs/tiny.ini --steps 1 --out "$T/x" --rows 9 --lookahead "$BIN" >"$T/bad.log" 2>&1
[ $? -eq 2 ] && grep -q "selects no preset" "$T/bad.log" || { show "$T/bad.log"; fail "--rows 9 accepted"; }
echo "ok: launch/ablations: 6 rows in $((t1 - t0)) s; rerun resumes; bad arguments refused"
