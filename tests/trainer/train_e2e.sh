#!/usr/bin/env bash
# `lookahead train` end to end on the tiny model and the tiny synthetic set: runs at 2 and 3 ranks,
# bit-exact resume, resharding a checkpoint to another rank count, SIGTERM (checkpoint + exit 0),
# a killed rank (the job ends, nothing before the last checkpoint is lost), corrupt records (skipped
# with data.skip_corrupt, an error naming the record without), the exported IP-Adapter
# loading into diffusers, and config errors.
# Usage: train_e2e.sh MPIEXEC LOOKAHEAD SOURCE_DIR WORK_DIR MODE
#   MODE: np2 | np3 | bf16 | resume | reshard | sigterm | kill | corrupt | export_diffusers | config_errors
set -uo pipefail
MPIEXEC=$1 BIN=$2 SRC=$3 WORK=$4 MODE=$5
PY=${LA_PYTHON:-$SRC/.venv/bin/python}
CONFIG=$SRC/launch/configs/tiny.ini
T=$WORK/train_e2e_$MODE
rm -rf "$T" && mkdir -p "$T" || { echo "FAIL: cannot create $T"; exit 1; }
start_s=$(date +%s)

fail() {
  echo "FAIL: $MODE: $*"
  exit 1
}
show() { echo "---- $1"; sed 's/^/    /' "$1" | tail -${2:-40}; }

synth() {
  timeout 60 "$BIN" data synth --out "$T/data.h5" --identities 8 --per-identity 4 --size 64 --latent-size 8 \
    --prompt-embeds 3x24 --pooled 16 --clip-features 5x12 >"$T/synth.log" 2>&1 || { show "$T/synth.log"; fail "data synth failed"; }
}

# train NP OUT LOG [extra options...]: a tiny run that must succeed.
train() {
  local np=$1 out=$2 log=$3
  shift 3
  timeout 200 "$MPIEXEC" -np "$np" --oversubscribe "$BIN" train --config "$CONFIG" --data.train_set="$T/data.h5" \
    --train.out="$out" --train.progress=false "$@" >"$log" 2>&1
  local rc=$?
  [ "$rc" -eq 0 ] || { show "$log"; fail "training at np $np ($*) exited $rc"; }
}

# steps FILE: the step numbers of a metrics.jsonl, space separated.
steps() { "$PY" -c 'import json,sys; print(" ".join(str(json.loads(l)["step"]) for l in open(sys.argv[1]) if l.strip()))' "$1"; }
seq_str() { seq -s ' ' "$1" "$2"; }

# check_run OUT STEPS CKPT_EVERY [DTYPE]: metrics has STEPS finite lines 0..STEPS-1 that say they ran in
# DTYPE (default fp32, tiny.ini's), checkpoints and export exist.
check_run() {
  local out=$1 n=$2 every=$3 dtype=${4:-fp32}
  [ -f "$out/metrics.jsonl" ] || fail "no $out/metrics.jsonl"
  "$PY" - "$out/metrics.jsonl" "$n" "$dtype" <<'EOF' || fail "bad metrics in $out/metrics.jsonl"
import json, math, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
n = int(sys.argv[2])
if [m.get("dtype") for m in lines] != [sys.argv[3]] * len(lines): sys.exit(f"FAIL: dtype {[m.get('dtype') for m in lines]}, expected {sys.argv[3]}")
if len(lines) != n: sys.exit(f"FAIL: {len(lines)} metrics lines, expected {n}")
if [m["step"] for m in lines] != list(range(n)): sys.exit(f"FAIL: steps {[m['step'] for m in lines]}")
for m in lines:
    for k in ("loss_diffusion", "loss_lookahead", "alpha"):
        if k not in m or not math.isfinite(m[k]): sys.exit(f"FAIL: step {m['step']}: {k} = {m.get(k)}")
print(f"metrics: {n} steps, final loss_diffusion {lines[-1]['loss_diffusion']:.4f} loss_lookahead {lines[-1]['loss_lookahead']:.4f}")
EOF
  for ((s = every; s <= n; s += every)); do
    local f=$out/checkpoints/$(printf 'step-%06d.h5' "$s")
    [ -s "$f" ] || fail "missing checkpoint $f"
  done
  [ -e "$out/checkpoints/latest" ] || fail "missing $out/checkpoints/latest"
  for f in ip_adapter.safetensors kv_encoder.safetensors; do
    [ -s "$out/export/$f" ] || fail "missing export $out/export/$f"
  done
}

# bg_train NP OUT LOG [extra...]: starts mpirun in the background; sets BG_PID.
bg_train() {
  local np=$1 out=$2 log=$3
  shift 3
  "$MPIEXEC" -np "$np" --oversubscribe "$BIN" train --config "$CONFIG" --data.train_set="$T/data.h5" \
    --train.out="$out" --train.progress=false "$@" >"$log" 2>&1 &
  BG_PID=$!
}
lines_of() { if [ -f "$1" ]; then grep -c . "$1"; else echo 0; fi; }
# wait_lines FILE N LIMIT_S: until FILE has N lines (fails if the background job ends first).
wait_lines() {
  local deadline=$(($(date +%s) + $3))
  while [ "$(lines_of "$1")" -lt "$2" ]; do
    kill -0 "$BG_PID" 2>/dev/null || fail "the run ended before $1 had $2 lines"
    [ "$(date +%s)" -lt "$deadline" ] || { kill -9 "$BG_PID"; fail "$1 did not reach $2 lines in $3 s"; }
    sleep 0.2
  done
}
# wait_bg LIMIT_S: waits for the background job; sets BG_RC (124 when it had to be killed).
wait_bg() {
  local deadline=$(($(date +%s) + $1))
  while kill -0 "$BG_PID" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
  if kill -0 "$BG_PID" 2>/dev/null; then
    kill -9 "$BG_PID" 2>/dev/null
    for p in $(pgrep -f -- "--train.out=$BG_OUT"); do kill -9 "$p" 2>/dev/null; done
    wait "$BG_PID" 2>/dev/null
    BG_RC=124
  else
    wait "$BG_PID"
    BG_RC=$?
  fi
}
latest_step() {  # the step of checkpoints/latest (a file naming the checkpoint, or a link to it)
  local l=$1/checkpoints/latest name
  if [ -L "$l" ]; then name=$(basename "$(readlink "$l")"); else name=$(head -1 "$l" 2>/dev/null); fi
  echo "$name" | sed -nE 's/^(.*\/)?step-0*([0-9]+)\.h5$/\2/p'
}

case $MODE in
np2 | np3)
  np=${MODE#np}
  synth
  train "$np" "$T/run" "$T/run.log" --train.steps=12 --train.checkpoint_every=6
  grep -q "trained 12 step(s), now at step 12 of 12" "$T/run.log" || { show "$T/run.log"; fail "no completion line"; }
  check_run "$T/run" 12 6
  # Logged values are the global batch's: one rank with the whole global batch logs the same.
  train 1 "$T/one" "$T/one.log" --train.steps=3 --train.checkpoint_every=3 --train.batch_per_rank=$((2 * np))
  "$PY" - "$T/run/metrics.jsonl" "$T/one/metrics.jsonl" "$np" <<'EOF' || fail "logged values depend on the rank count"
import json, math, sys
many = [json.loads(l) for l in open(sys.argv[1]) if l.strip()][:3]
one = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
bad = 0
for a, b in zip(many, one):
    for k in sorted(set(a) | set(b)):
        if k.startswith(("time_", "mem_", "comm_")): continue  # rank 0's own, by definition (1 rank sends nothing)
        x, y = a.get(k), b.get(k)
        exact = k in ("step", "dtype", "preview", "kv_encoder", "lambda_id", "lambda_dreamsim", "alpha", "t_diffusion_mean",
                      "t_lookahead_mean", "faces_valid", "records_skipped",
                      "lr_adapter", "lr_lora")
        # Losses and norms: the same samples, summed in another order (fp32).
        ok = x == y if exact else (x is not None and y is not None and math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-6))
        if not ok:
            print(f"FAIL: step {a['step']}: {k}: {sys.argv[3]} ranks {x!r}, 1 rank {y!r}")
            bad += 1
if bad or len(one) != 3: sys.exit(1)
print(f"{sys.argv[3]} ranks vs 1 rank with the same global batch: steps 0..2 log the same values")
EOF
  ;;

bf16)
  # model.dtype = bf16 is honoured on the CPU (as on a GPU): the dry run's memory, the log and every
  # metrics line say so. Numerics and resume: trainer_bf16_test.
  synth
  "$BIN" train --config "$CONFIG" --data.train_set="$T/data.h5" --model.dtype=bf16 --dry-run >"$T/dry.log" 2>&1 ||
    { show "$T/dry.log"; fail "dry run failed"; }
  grep -q "on CPU, placement full, frozen weights in bf16" "$T/dry.log" || { show "$T/dry.log"; fail "dry run: no bf16 memory"; }
  grep -q "^model.dtype = bf16 (frozen weights stored and gathered in bf16" "$T/dry.log" || { show "$T/dry.log"; fail "dry run: no precision line"; }
  train 2 "$T/run" "$T/run.log" --train.steps=4 --train.checkpoint_every=2 --model.dtype=bf16
  grep -q "^model.dtype = bf16 (frozen weights stored and gathered in bf16; trainables fp32 masters computed in bf16; gradients reduced and AdamW in fp32) on CPU" "$T/run.log" ||
    { show "$T/run.log"; fail "no precision line in the log"; }
  check_run "$T/run" 4 2 bf16
  ;;

resume)
  synth
  train 2 "$T/full" "$T/full.log" --train.steps=12 --train.checkpoint_every=6
  train 2 "$T/part" "$T/part1.log" --train.steps=6 --train.checkpoint_every=6
  train 2 "$T/part" "$T/part2.log" --train.steps=12 --train.checkpoint_every=6 --train.resume=latest
  grep -q "resumed from .* at step 6 (saved on 2 rank(s), now 2)" "$T/part2.log" || { show "$T/part2.log"; fail "no resume line"; }
  check_run "$T/full" 12 6
  check_run "$T/part" 12 6
  "$PY" - "$T/full/metrics.jsonl" "$T/part/metrics.jsonl" <<'EOF' || fail "resumed metrics differ from the uninterrupted run"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
b = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
bad = 0
for x, y in zip(a, b):
    for k in sorted(x):
        if k.startswith(("time_", "mem_")):
            continue  # wall-clock timings and allocator peaks are not state
        if k not in y or x[k] != y[k]:  # exact: the JSON numbers themselves
            print(f"FAIL: step {x['step']}: {k}: uninterrupted {x[k]!r} vs resumed {y.get(k)!r}")
            bad += 1
n = len([k for k in a[0] if not k.startswith(("time_", "mem_"))])
marked = [y["step"] for y in b if y.get("resumed")]
if marked != [6]:
    print(f"FAIL: records marked resumed: {marked}, expected [6]")
    bad += 1
if bad: sys.exit(1)
print(f"resume: steps 0..{len(a) - 1}: all {n} non-timing metrics bit-identical (resumed at step 6)")
EOF
  ;;

reshard)
  synth
  train 2 "$T/run" "$T/np2.log" --train.steps=6 --train.checkpoint_every=6
  train 3 "$T/run" "$T/np3.log" --train.steps=9 --train.checkpoint_every=3 --train.resume=latest
  grep -Eq "resumed from .* at step 6 \(saved on 2 rank\(s\), now 3\)" "$T/np3.log" ||
    { show "$T/np3.log"; fail "no 'resumed ... saved on 2 rank(s), now 3' line"; }
  got=$(steps "$T/run/metrics.jsonl")
  [ "$got" = "$(seq_str 0 8)" ] || fail "steps '$got', expected 0..8 (6,7,8 after the resume)"
  [ -s "$T/run/checkpoints/step-000009.h5" ] || fail "no checkpoint at step 9 after the np3 run"
  echo "reshard: np2 -> np3 resumed at step 6, steps: $got"
  ;;

sigterm)
  # Signals to mpirun itself, never to the ranks. SIGTERM (what schedulers send): mpirun does not
  # forward it but ends the job, sending the ranks SIGCONT at once, SIGTERM odls_base_sigkill_timeout
  # seconds later and SIGKILL as long again; the ranks take their parent's SIGCONT as the stop
  # request at once (each rank's SIGCONT line comes before any SIGTERM line of it) and finish the
  # step, the checkpoint and the export before mpirun's SIGKILL. mpirun's own exit code is then 1
  # whatever the ranks did, so 0 or 1 is accepted there and the clean stop is checked in the log.
  # 10 s instead of mpi_env.sh's 15 keeps the test shorter (mpirun always waits 2 x that); the
  # mechanism is the same at any value. SIGUSR1 is forwarded without ending the job:
  # mpirun's exit code is the ranks' and must be 0. Ctrl-Z and `fg` (SIGTSTP, SIGCONT forwarded
  # from mpirun) suspend and resume the run without stopping it.
  export OMPI_MCA_odls_base_sigkill_timeout=10
  synth
  BG_OUT=$T/run
  stop_and_check() {  # stop_and_check SIGNAL MIN_LINES ALLOWED_RCS
    local sig=$1 min=$2 ok_rcs=$3
    wait_lines "$T/run/metrics.jsonl" "$min" 120
    kill -"$sig" "$BG_PID"
    wait_bg 60
    [ "$BG_RC" -ne 124 ] || { show "$T/run.log"; fail "$sig: the run did not stop within 60 s"; }
    [[ " $ok_rcs " == *" $BG_RC "* ]] || { show "$T/run.log"; fail "$sig: mpirun exit code $BG_RC, expected one of: $ok_rcs"; }
    n=$(lines_of "$T/run/metrics.jsonl")
    [ "$n" -lt 24 ] || fail "$sig: the run finished all 24 steps before the signal took effect"
    grep -q "stop requested (signal): writing a checkpoint at step $n" "$T/run.log" ||
      { show "$T/run.log"; fail "$sig: no 'stop requested ... at step $n' line"; }
    grep -q "^trained [0-9]* step(s), now at step $n of 24" "$T/run.log" ||
      { show "$T/run.log"; fail "$sig: the ranks did not finish (export and summary) after the checkpoint"; }
    ! grep -Eq "exit code 3|collective timeout|terminate called|rror" "$T/run.log" ||
      { show "$T/run.log"; fail "$sig: errors in the log of the stopped run"; }
    ck=$T/run/checkpoints/$(printf 'step-%06d.h5' "$n")
    [ -s "$ck" ] || { ls -l "$T/run/checkpoints"; fail "$sig: no checkpoint $ck at the step it stopped"; }
    [ "$(latest_step "$T/run")" = "$n" ] || fail "$sig: latest does not point to step $n"
    echo "sigterm: $sig to mpirun -> mpirun rc $BG_RC, checkpoint at step $n"
  }
  bg_train 2 "$T/run" "$T/run.log" --train.steps=24 --train.checkpoint_every=100
  stop_and_check TERM 2 "0 1"
  for r in 0 1; do
    first=$(grep -m1 -oE "\[lookahead rank $r of 2 on [^]]*\] (SIGCONT|SIGTERM|SIGUSR1)" "$T/run.log" | awk '{print $NF}')
    [ "$first" = "SIGCONT" ] ||
      { show "$T/run.log"; fail "TERM: rank $r's first stop request was '$first', not mpirun's SIGCONT"; }
  done
  n1=$n
  bg_train 2 "$T/run" "$T/run.log" --train.steps=24 --train.checkpoint_every=100 --train.resume=latest
  stop_and_check USR1 $((n1 + 2)) "0"
  grep -q "resumed from .* at step $n1 " "$T/run.log" || { show "$T/run.log"; fail "no resume at step $n1"; }
  n2=$n
  bg_train 2 "$T/run" "$T/resume.log" --train.steps=24 --train.checkpoint_every=100 --train.resume=latest
  wait_lines "$T/run/metrics.jsonl" $((n2 + 2)) 120
  kill -TSTP "$BG_PID"
  sleep 2
  kill -CONT "$BG_PID"
  wait_bg 180
  [ "$BG_RC" -eq 0 ] || { show "$T/resume.log"; fail "after Ctrl-Z and fg: mpirun exit code $BG_RC"; }
  ! grep -q "stop requested" "$T/resume.log" || { show "$T/resume.log"; fail "Ctrl-Z and fg stopped the run"; }
  grep -q "resumed from .* at step $n2 " "$T/resume.log" || { show "$T/resume.log"; fail "no resume at step $n2"; }
  got=$(steps "$T/run/metrics.jsonl")
  [ "$got" = "$(seq_str 0 23)" ] || fail "steps '$got', expected 0..23"
  echo "sigterm: stopped at $n1 (SIGTERM to mpirun) and $n2 (SIGUSR1), each with a checkpoint; the last resume went through Ctrl-Z / fg and completed steps 0..23"
  ;;

kill)
  # mpirun ends the survivors with SIGCONT, then SIGKILL 2 x its kill delay later; 3 s instead of
  # mpi_env.sh's 15 keeps the test short (the survivors report after 1 s either way).
  export OMPI_MCA_odls_base_sigkill_timeout=3
  synth
  BG_OUT=$T/run
  t0=$(date +%s)
  bg_train 3 "$T/run" "$T/run.log" --timeout 5 --train.steps=12 --train.checkpoint_every=3
  wait_lines "$T/run/metrics.jsonl" 5 150
  victim=
  for p in $(pgrep -f -- "--train.out=$T/run"); do
    r=$(tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
    [ "$r" = 1 ] && victim=$p
  done
  [ -n "$victim" ] || fail "no rank-1 process found with pgrep -f -- --train.out=$T/run"
  kill -KILL "$victim"
  killed_at=$(date +%s)
  n_at_kill=$(lines_of "$T/run/metrics.jsonl")
  wait_bg 90
  took=$(($(date +%s) - killed_at))
  [ "$BG_RC" -ne 124 ] || { show "$T/run.log"; fail "the job hung after rank 1 was killed (killed after 90 s)"; }
  [ "$took" -le 60 ] || fail "the job took $took s to end after the kill (limit 60 s)"
  if [ "$BG_RC" -eq 0 ] && ! grep -q "collective timeout\|ending the job" "$T/run.log"; then
    show "$T/run.log"
    fail "exit code 0 and no timeout report after a rank was killed"
  fi
  # mpirun ends the survivors after the death (SIGCONT at once, SIGKILL later); each says first which
  # collective it was waiting for, with its history (or reports the timeout, if that came first).
  for r in 0 2; do
    grep -Eq "stop signal received while this rank has waited .* \(mpi, rank $r of 3\)|collective timeout: .*rank $r of 3" \
      "$T/run.log" || { show "$T/run.log" 60; fail "survivor rank $r left no word about the collective it waited for"; }
  done
  n_after=$(lines_of "$T/run/metrics.jsonl")
  [ "$n_after" -lt 12 ] || fail "the run completed all 12 steps although rank 1 was killed at line $n_at_kill"
  ck=$(latest_step "$T/run")
  [ -n "$ck" ] && [ "$ck" -ge 3 ] || { ls -l "$T/run/checkpoints"; fail "no checkpoint before the kill (latest '$ck')"; }
  echo "kill: rank 1 (pid $victim) killed at metrics line $n_at_kill; job ended rc $BG_RC in $took s; last checkpoint step $ck"
  train 3 "$T/run" "$T/resume.log" --timeout 30 --train.steps=12 --train.checkpoint_every=3 --train.resume=latest
  grep -q "resumed from .* at step $ck " "$T/resume.log" || { show "$T/resume.log"; fail "no resume at step $ck"; }
  "$PY" - "$T/run/metrics.jsonl" "$n_after" "$ck" 12 <<'EOF' || fail "metrics lost, repeated or out of order across the kill"
import json, sys
records = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
steps = [r["step"] for r in records]
n_before, ck, total = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
# The resume drops what the killed run logged after its checkpoint: every step appears once.
if steps != list(range(total)): sys.exit(f"FAIL: steps {steps}, expected 0..{total - 1} once each")
marked = [r["step"] for r in records if r.get("resumed")]
if marked != [ck]: sys.exit(f"FAIL: records marked resumed: {marked}, expected [{ck}]")
print(f"kill: steps 0..{ck - 1} kept, {n_before - ck} logged after the checkpoint redone once, resumed at {ck}")
EOF
  [ -s "$T/run/export/ip_adapter.safetensors" ] || fail "no export after the resumed run"
  ;;

corrupt)
  # Records whose image no longer decodes: skipped (replaced) with data.skip_corrupt, every rank's
  # batch keeping its size; without it the run stops naming the record.
  synth
  "$PY" - "$T/data.h5" <<'EOF' || fail "could not corrupt the set"
import sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
sig = b"\x89PNG\r\n\x1a\n"
starts, i = [], data.find(sig)
while i >= 0:
    starts.append(i)
    i = data.find(sig, i + 1)
if len(starts) != 32: sys.exit(f"FAIL: {len(starts)} PNG images in the set, expected 32")
for k in (3, 11, 17, 26):  # four records of four identities
    j = data.index(b"IDAT", starts[k])
    n = int.from_bytes(data[j - 4:j], "big")
    mid = j + 4 + n // 2
    data[mid:mid + 4] = bytes(255 - b for b in data[mid:mid + 4])
open(path, "wb").write(data)
print("corrupted the images of 4 records")
EOF
  timeout 120 "$MPIEXEC" -np 2 --oversubscribe "$BIN" train --config "$CONFIG" --data.train_set="$T/data.h5" \
    --train.out="$T/strict" --train.progress=false --train.steps=8 >"$T/strict.log" 2>&1
  rc=$?
  [ "$rc" -ne 0 ] || { show "$T/strict.log"; fail "training over corrupt records without data.skip_corrupt succeeded"; }
  grep -Eq "data\.h5.* record [0-9]+" "$T/strict.log" || { show "$T/strict.log"; fail "the error does not name the record"; }
  # One epoch (32 records, global batch 4): every record is a target once.
  train 2 "$T/run" "$T/run.log" --train.steps=8 --train.checkpoint_every=8 --data.skip_corrupt=true
  check_run "$T/run" 8 8
  "$PY" - "$T/run/metrics.jsonl" <<'EOF' || fail "corrupt records not counted"
import json, sys
rs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
n = sum(r["records_skipped"] for r in rs)
if n < 4: sys.exit(f"FAIL: {n} records skipped over one epoch, expected at least 4")
print(f"corrupt: {n} corrupt pairs replaced over one epoch; every step trained the full global batch")
EOF
  ;;

export_diffusers)
  synth
  train 2 "$T/run" "$T/run.log" --train.steps=2 --train.checkpoint_every=2
  [ -s "$T/run/export/ip_adapter.safetensors" ] || fail "no export"
  timeout 120 "$PY" "$SRC/tests/trainer/export_check.py" "$T/run/export/ip_adapter.safetensors" \
    "$SRC/model/lookahead/lookahead_model.cpp" 2>&1 | grep -v "should be kept in float32"
  [ "${PIPESTATUS[0]}" -eq 0 ] || fail "export_check.py failed"
  ;;

config_errors)
  expect() {  # expect NAME RC REGEX -- command...
    local name=$1 want=$2 re=$3
    shift 4
    timeout 60 "$@" >"$T/out.log" 2>&1
    local rc=$?
    if [ "$rc" -ne "$want" ] || ! grep -Eq -- "$re" "$T/out.log"; then
      show "$T/out.log"
      fail "$name: exit code $rc (want $want), output must match /$re/"
    fi
    echo "ok   $name"
  }
  expect bad-loss-mode 2 "loss\.mode" -- "$BIN" train --config "$CONFIG" --loss.mode=bogus
  { cat "$CONFIG"; printf '\n[train]\nbogus_key_e2e = 1\n'; } >"$T/bad.ini"
  expect unknown-ini-key 2 "bogus_key_e2e" -- "$BIN" train --config "$T/bad.ini"
  # Each error names the key that is wrong, not a neighbour checked in the same breath.
  expect bad-lr-lora 2 "optim\.lr_lora: must be >= 0, got -1" -- "$BIN" train --config "$CONFIG" --optim.lr_lora=-1
  expect bad-beta2 2 "optim\.beta2: must be in \[0, 1\), got 1\.5" -- "$BIN" train --config "$CONFIG" --optim.beta2=1.5
  expect no-config 2 "--config: no configuration file given" -- "$BIN" train
  # The ablation switches (docs/ablations.md): spellings, the x0 / alternate conflict, layered files.
  expect bad-preview 2 "loss\.preview: must be lcm or x0, got 'x1'" -- "$BIN" train --config "$CONFIG" --loss.preview=x1
  expect bad-kv-encoder 2 "model\.kv_encoder: must be on or off, got 'no'" -- "$BIN" train --config "$CONFIG" --model.kv_encoder=no
  expect bad-dreamsim-weight 2 "loss\.lambda_dreamsim: must be >= 0" -- "$BIN" train --config "$CONFIG" --loss.lambda_dreamsim=-1
  expect x0-alternate 2 "loss\.preview: x0 previews .* set loss\.mode = sum" -- "$BIN" train --config "$CONFIG" \
    --loss.preview=x0 --loss.mode=alternate
  expect sdxl-dreamsim 2 "model\.dreamsim: is required with loss\.lambda_dreamsim > 0" -- "$BIN" train \
    --config "$SRC/launch/configs/sdxl-lookahead.ini" --loss.lambda_dreamsim=0.001
  expect layered-missing 2 "--config: cannot open '$T/none.ini'" -- "$BIN" train --config "$CONFIG" --config "$T/none.ini"
  # --help shows defaults as written: 1e-05 and true/false, never 17 digits or 0/1.
  expect help 0 "optim\.lr_adapter arg \(=1e-05\)" -- "$BIN" train --help
  grep -q "train\.progress arg (=true)" "$T/out.log" || { show "$T/out.log"; fail "help: booleans not shown as true/false"; }
  ! grep -q "0\.1000000000000000" "$T/out.log" || { show "$T/out.log"; fail "help: 17-digit defaults"; }
  # The dry run names every missing input and fails; with the inputs present it passes.
  expect dry-run-missing 2 "data\.train_set = $T/none\.h5: no such file" -- "$BIN" train --config "$CONFIG" --dry-run \
    --data.train_set="$T/none.h5" --model.mtcnn="$T/no-mtcnn"
  grep -q "model\.mtcnn = $T/no-mtcnn: no such folder" "$T/out.log" || { show "$T/out.log"; fail "dry-run: mtcnn not named"; }
  synth
  expect dry-run 0 "\[loss\]" -- "$BIN" train --config "$CONFIG" --dry-run --data.train_set="$T/data.h5"
  grep -q "trainable adapter .*(lr 0\.001)" "$T/out.log" || { show "$T/out.log"; fail "dry-run: learning rate not shown as 0.001"; }
  grep -q "lr_lora = 0\.0005$" "$T/out.log" || { show "$T/out.log"; fail "dry-run: resolved INI does not show lr_lora = 0.0005"; }
  # A preset layered over the base: its keys win, the base's others stay; a flag wins over both.
  expect dry-run-layered 0 "kv_encoder = off" -- "$BIN" train --config "$CONFIG" \
    --config "$SRC/launch/configs/ablation/3-x0-id.ini" --dry-run --data.train_set="$T/data.h5" --loss.lambda_id=0.5
  grep -q "^preview = x0$" "$T/out.log" && grep -q "^lambda_id = 0\.5$" "$T/out.log" && grep -q "^lr_lora = 0\.0005$" "$T/out.log" ||
    { show "$T/out.log"; fail "dry-run: layered configuration not resolved as base < preset < flags"; }
  grep -q "trainable LoRA   0 " "$T/out.log" || { show "$T/out.log"; fail "dry-run: kv_encoder = off still has LoRA trainables"; }
  # A unit name that is not one: the error names it and lists the model's units.
  expect bad-replicate-unit 1 "dist\.replicate_units names 'no\.such\.unit', which is no unit of this model; its units: .*arcface" \
    -- "$BIN" train --config "$CONFIG" --dry-run --data.train_set="$T/data.h5" --dist.replicate_units=arcface,no.such.unit
  expect train-missing 2 "missing inputs:" -- "$BIN" train --config "$CONFIG" --data.train_set="$T/none.h5"
  # Export loads a checkpoint; it resumes nothing and leaves the run's metrics alone.
  train 1 "$T/run" "$T/run.log" --train.steps=2 --train.checkpoint_every=1
  before=$(cat "$T/run/metrics.jsonl")
  expect export 0 "loaded checkpoint .* at step 1 " -- "$BIN" export --config "$CONFIG" --train.out="$T/run" \
    --checkpoint "$T/run/checkpoints/step-000001.h5" --out "$T/exp"
  ! grep -q "resumed from" "$T/out.log" || { show "$T/out.log"; fail "export: says 'resumed from'"; }
  [ "$(cat "$T/run/metrics.jsonl")" = "$before" ] || fail "export changed metrics.jsonl"
  ;;

*)
  fail "unknown mode '$MODE'"
  ;;
esac
echo "PASS: $MODE ($(($(date +%s) - start_s)) s)"
rm -rf "$T"
