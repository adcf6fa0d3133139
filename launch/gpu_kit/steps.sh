# The measuring steps of `launch/gpu-kit check`, after the build (sourced by check.sh: ROOT, BUILD,
# WORK, OUT, PY_HELPER, TORCH_PY, GPU_COUNT, GPU_NAME and the record/step/tb helpers are set). Every
# step is time-boxed; a failure is recorded and the next step runs. Each GPU step is skipped with
# "no CUDA device" where torch sees none. LOOKAHEAD_GPU_CHECK_ON_CPU=1 runs the GPU steps on the
# CPU anyway (to try the steps themselves on a machine without a GPU; the SDXL step then uses the
# tiny preset at 64², LOOKAHEAD_GPU_CHECK_SDXL_PRESET / _RES override).

LA="$BUILD/launch/lookahead"
DIST_TESTS="$BUILD/tests/dist"
MPIEXEC=(mpiexec --bind-to none)
on_gpu() { [ "${GPU_COUNT:-0}" -gt 0 ] || [ "${LOOKAHEAD_GPU_CHECK_ON_CPU:-0}" = 1 ]; }
no_gpu_reason="no CUDA device"
built() { [ -x "$1" ]; }
# can_run NAME gpu|cpu BINARY...: records the skip (and returns 1) when the step cannot run here.
can_run() {
  local name=$1 gpu=$2
  shift 2
  wanted "$name" || return 1
  if [ "$gpu" = gpu ] && ! on_gpu; then
    skip "$name" "$no_gpu_reason"
    return 1
  fi
  local b
  for b in "$@"; do
    built "$b" || { skip "$name" "$(basename "$b") was not built (see the build step)"; return 1; }
  done
  return 0
}
gtest_details() {  # FILE.json -> a details file for the record
  "$PY_HELPER" "$HERE/kit.py" gtest "$1" >"$1.details" 2>/dev/null && STEP_DETAILS+=(--detail-json "$1.details")
}

# A gtest binary under mpiexec -n NP with a JSON report; fails when any test was skipped on a GPU run
# (a skipped NCCL test on a GPU node means the path did not run).
gtest_run() {  # NAME NP ALLOW_SKIPS BINARY [ARGS...]
  local name=$1 np=$2 allow_skips=$3 bin=$4
  shift 4
  local json="$WORK/$name.gtest.json"
  rm -f "$json"
  # In the work folder: some tests write their files into the current directory.
  cd "$WORK" || return 1
  tb "${MPIEXEC[@]}" -n "$np" "$bin" --gtest_output="json:$json" "$@"
  local rc=$?
  cd "$ROOT" || return 1
  gtest_details "$json"
  if [ $rc -eq 0 ] && [ "$allow_skips" = no ] && [ -f "$json" ] &&
    [ "$("$PY_HELPER" -c 'import json,sys; print(json.load(open(sys.argv[1]))["skipped"])' "$json.details")" != 0 ]; then
    STEP_FAIL="tests were skipped: $("$PY_HELPER" -c 'import json,sys; print("; ".join(json.load(open(sys.argv[1]))["skipped_tests"])[:400])' "$json.details")"
    return 1
  fi
  return $rc
}

# ---- 0. the built binaries load MPI, HDF5, ... from the kit ------------------------------------------
step_libraries() {
  local site cuda
  site=$("$TORCH_PY" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
  cuda=$(sed -n 's/^CUDA_TOOLKIT_ROOT_DIR:PATH=//p' "$BUILD/CMakeCache.txt")
  local bins=("$LA" "$DIST_TESTS/dist_collectives_test" "$DIST_TESTS/dist_nccl_fault_test" "$BUILD/bench/bench_collectives"
    "$BUILD/bench/bench_overlap" "$DIST_TESTS/dist_engine_test" "$BUILD/tests/trainer/trainer_train_state_test"
    "$BUILD/tests/trainer/trainer_bf16_test")
  "$PY_HELPER" "$HERE/kit.py" libs --prefix "$PREFIX" --allow "$site" ${cuda:+--allow "$cuda"} "${bins[@]}" >"$WORK/libs.json"
  local rc=$?
  STEP_DETAILS+=(--detail-json "$WORK/libs.json")
  [ $rc -eq 0 ] && STEP_NOTE="every library of the built binaries comes from the kit, torch's wheels or the node's C/C++ runtime"
  [ $rc -eq 0 ] || STEP_FAIL="libraries from outside the kit: $("$PY_HELPER" -c 'import json,sys; print("; ".join(json.load(open(sys.argv[1]))["outside"])[:300])' "$WORK/libs.json")"
  return $rc
}

# ---- 1. environment, collectives, bench_collectives --------------------------------------------
step_env() { tb "${MPIEXEC[@]}" -n 1 "$LA" env; }
step_collectives_nccl() {
  STEP_NOTE="world of 1 on NCCL: init (World::nccl_comm), streams and events (Work::wait orders the caller's stream)"
  gtest_run collectives_nccl 1 no "$DIST_TESTS/dist_collectives_test" \
    --gtest_filter='Backends/Collectives.*/nccl:World.RanksAndNodesAreConsistent:World.CommForPicksTheBackendByDevice:World.WatchdogThreadRunsOnTheWorldsDevice'
}
step_nccl_faults() {
  STEP_NOTE="NCCL faults at world 1: abort() fails a pending and a later collective with its reason; a collective held 2 s behind a host function on the caller's stream, with timeout_s 0.5, is reported by the watchdog as a timeout naming it and aborts the communicator"
  gtest_run nccl_faults 1 no "$DIST_TESTS/dist_nccl_fault_test"
}
step_collectives_mpi() {
  gtest_run collectives_mpi 2 yes "$DIST_TESTS/dist_collectives_test" --gtest_filter='Backends/Collectives.*/mpi:CollectiveArguments.*:HostValues.*:Split.*:World.*'
}
step_bench_collectives_nccl() {
  local json="$WORK/bench_collectives_nccl.json"
  rm -f "$json"
  tb "${MPIEXEC[@]}" -n 1 "$BUILD/bench/bench_collectives" --backend nccl --min-bytes 1K --max-bytes 256M --step-factor 4 \
    --json "$json" || return 1
  [ -f "$json" ] && STEP_DETAILS+=(--detail-json "$json")
}

# ---- 2. equivalence on CUDA: fp32 and bf16 ----------------------------------------------------------
step_engine_fp32() {
  STEP_NOTE="the sharded engine (1 rank, on the World's GPU) against one unsharded model with torch's AdamW, fp32"
  gtest_run engine_fp32 1 no "$DIST_TESTS/dist_engine_test"
}
step_train_state_fp32() {
  STEP_NOTE="TrainState::step (tiny model, 1 rank on the GPU) against an unsharded model, fp32"
  gtest_run train_state_fp32 1 no "$BUILD/tests/trainer/trainer_train_state_test"
}
step_bf16() {
  STEP_NOTE="model.dtype = bf16 on the GPU: tracks fp32, N=1 reproduces the unsharded mixed-precision model, bf16 checkpoint resumes bit-identically"
  gtest_run bf16 1 no "$BUILD/tests/trainer/trainer_bf16_test"
}

# ---- 3. the tiny trainer end to end ----------------------------------------------------------------
step_tiny_e2e() {
  local W="$WORK/tiny" cfg="$ROOT/launch/configs/tiny.ini"
  rm -rf "$W" && mkdir -p "$W" || return 1
  local common=(--config "$cfg" --train.progress=false --train.log_every=1)
  tb "$LA" data synth --out "$W/raw.h5" --identities 8 --per-identity 4 --size 64 || { STEP_FAIL="lookahead data synth failed"; return 1; }
  tb "${MPIEXEC[@]}" -n 1 "$LA" data encode --config "$cfg" --in "$W/raw.h5" --out "$W/set.h5" ||
    { STEP_FAIL="lookahead data encode failed"; return 1; }
  # A: 6 steps, checkpoints at 3 and 6. B: resumed from A's step-3 checkpoint to step 6.
  tb "${MPIEXEC[@]}" -n 1 "$LA" train "${common[@]}" --data.train_set="$W/set.h5" --train.out="$W/a" --train.steps=6 \
    --train.checkpoint_every=3 || { STEP_FAIL="lookahead train (6 steps) failed"; return 1; }
  tb "${MPIEXEC[@]}" -n 1 "$LA" train "${common[@]}" --data.train_set="$W/set.h5" --train.out="$W/b" --train.steps=6 \
    --train.checkpoint_every=3 --train.resume="$W/a/checkpoints/step-000003.h5" || { STEP_FAIL="lookahead train resumed from step 3 failed"; return 1; }
  tb "$LA" export --config "$cfg" --train.out="$W/a" --checkpoint latest --out "$W/export" || { STEP_FAIL="lookahead export failed"; return 1; }
  tb "${MPIEXEC[@]}" -n 1 "$LA" eval "${common[@]}" --train.out="$W/a" --model.mtcnn="$ROOT/third_party/facenet_pytorch/data" \
    --eval-set "$W/set.h5" --out "$W/eval" --checkpoint "$W/a/checkpoints/step-000006.h5" || { STEP_FAIL="lookahead eval failed"; return 1; }
  # The resume: steps 3..5 of B against A's, bit for bit or within the stated tolerance; the exports.
  "$PY_HELPER" "$HERE/kit.py" resume-compare "$W/a" "$W/b" "$W/export" "$W/eval" --tolerance 1e-5 >"$W/compare.json" ||
    { STEP_FAIL="$("$PY_HELPER" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error",""))' "$W/compare.json" 2>/dev/null)"
      STEP_DETAILS+=(--detail-json "$W/compare.json"); return 1; }
  STEP_DETAILS+=(--detail-json "$W/compare.json")
  STEP_NOTE="train 6 steps, resume from step 3 ($("$PY_HELPER" -c 'import json,sys; print(json.load(open(sys.argv[1]))["resume"])' "$W/compare.json")), export, eval"
}

# ---- 4. SDXL at full size --------------------------------------------------------------------------
SDXL_PRESET=${LOOKAHEAD_GPU_CHECK_SDXL_PRESET:-sdxl}
SDXL_RES=${LOOKAHEAD_GPU_CHECK_SDXL_RES:-1024}
if [ "${GPU_COUNT:-0}" -eq 0 ] && [ "${LOOKAHEAD_GPU_CHECK_ON_CPU:-0}" = 1 ]; then
  SDXL_PRESET=${LOOKAHEAD_GPU_CHECK_SDXL_PRESET:-tiny}
  SDXL_RES=${LOOKAHEAD_GPU_CHECK_SDXL_RES:-64}
fi
step_sdxl_setup() {
  local W="$WORK/sdxl"
  mkdir -p "$W"
  local free_kb
  free_kb=$(df -Pk "$W" | awk 'NR == 2 { print $4 }')
  if [ "$SDXL_PRESET" = sdxl ] && [ "$free_kb" -lt $((16 * 1024 * 1024)) ] && [ ! -f "$W/weights/lookahead.ini" ]; then
    STEP_FAIL="$W: $((free_kb / 1048576)) GiB free; the full-size weights need 13 (LOOKAHEAD_GPU_WORK moves them)"
    return 1
  fi
  if [ ! -f "$W/weights/lookahead.ini" ] || [ "$(cat "$W/weights/.preset" 2>/dev/null)" != "$SDXL_PRESET" ]; then
    rm -rf "$W/weights"
    tb "$LA" model init --preset "$SDXL_PRESET" --out "$W/weights" || { STEP_FAIL="lookahead model init --preset $SDXL_PRESET failed"; return 1; }
    echo "$SDXL_PRESET" >"$W/weights/.preset"
  fi
  rm -f "$W/raw.h5" "$W/set.h5"
  # 4 identities x 3 images (enough pairs for a batch of 4), encoded by the preset's own encoders.
  tb "$LA" data synth --out "$W/raw.h5" --identities 4 --per-identity 3 --size "$SDXL_RES" || { STEP_FAIL="lookahead data synth failed"; return 1; }
  tb "${MPIEXEC[@]}" -n 1 "$LA" data encode --config "$W/weights/lookahead.ini" --in "$W/raw.h5" --out "$W/set.h5" \
    --data.resolution="$SDXL_RES" || { STEP_FAIL="lookahead data encode at ${SDXL_RES}² failed"; return 1; }
  STEP_NOTE="lookahead model init --preset $SDXL_PRESET, data synth + encode of 12 images at ${SDXL_RES}²"
}
step_sdxl_batch() {  # BATCH
  local b=$1 W="$WORK/sdxl" run="$WORK/sdxl/b$1"
  [ -f "$W/set.h5" ] || { STEP_FAIL="no encoded set (the sdxl_setup step failed)"; return 1; }
  rm -rf "$run" && mkdir -p "$run"
  local common=(--config "$W/weights/lookahead.ini" --data.train_set="$W/set.h5" --data.resolution="$SDXL_RES"
    --model.dtype=bf16 --train.batch_per_rank="$b" --train.out="$run/out" --train.progress=false --train.log_every=1
    --train.checkpoint_every=1000 --data.loader_threads=2)
  # The analytic models first: memory per phase and FLOPs per step.
  tb "${MPIEXEC[@]}" -n 1 "$LA" train "${common[@]}" --dry-run >"$run/dry.log" 2>&1 ||
    { cat "$run/dry.log"; STEP_FAIL="lookahead train --dry-run failed"; return 1; }
  cat "$run/dry.log"
  # GPU memory as the driver sees it (cudaMemGetInfo's used = total - free), sampled every 100 ms: beside
  # the trainer's own mem_cuda_* values (the caching allocator's peaks per step, cudaMemGetInfo at
  # the step's end), it shows what lies outside the allocator (CUDA context, NCCL and cuBLAS buffers).
  local smi_pid=""
  if command -v nvidia-smi >/dev/null && [ "${GPU_COUNT:-0}" -gt 0 ]; then
    nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader,nounits -i 0 >"$run/smi-idle.csv" 2>/dev/null
    nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader,nounits -i 0 -lms 100 >"$run/smi.csv" 2>/dev/null &
    smi_pid=$!
  fi
  tb "${MPIEXEC[@]}" -n 1 "$LA" train "${common[@]}" --train.steps=4 >"$run/train.log" 2>&1
  local rc=$?
  cat "$run/train.log"
  [ -n "$smi_pid" ] && kill "$smi_pid" 2>/dev/null && wait "$smi_pid" 2>/dev/null
  if [ $rc -ne 0 ]; then
    STEP_FAIL="train: 4 steps at batch $b, exit $rc: $(grep -m1 -o 'error: .*' "$run/train.log" | cut -c1-300)"
    return 1
  fi
  "$PY_HELPER" "$HERE/kit.py" sdxl-summary --dry "$run/dry.log" --metrics "$run/out/metrics.jsonl" --smi "$run/smi.csv" \
    --smi-idle "$run/smi-idle.csv" --gpu "$GPU_NAME" --batch "$b" >"$run/summary.json" ||
    { STEP_FAIL="metrics summary"; return 1; }
  STEP_DETAILS+=(--detail-json "$run/summary.json")
  STEP_NOTE=$("$PY_HELPER" -c 'import json,sys; print(json.load(open(sys.argv[1]))["line"])' "$run/summary.json")
  # The checkpoint and export of a full-size run are gigabytes: not kept.
  rm -rf "$run/out/checkpoints" "$run/out/export"
}

# ---- 5. overlap of NCCL with compute ------------------------------------------------------------------
step_overlap_nccl() {
  local json="$WORK/overlap_nccl.json"
  rm -f "$json"
  # At world 1 NCCL's all_gather is a local copy (out of place): this measures whether the
  # communication stream runs beside the matmuls on the current stream, not a network's overlap.
  tb "${MPIEXEC[@]}" -n 1 "$BUILD/bench/bench_overlap" --backend nccl --op all_gather --bytes 1G --reps 5 \
    --json "$json" || return 1
  [ -f "$json" ] || { STEP_FAIL="bench_overlap wrote no $json"; return 1; }
  STEP_DETAILS+=(--detail-json "$json")
  STEP_NOTE="world of 1, all_gather of 1 GiB (a device copy at world 1) beside float32 matmuls: $("$PY_HELPER" -c '
import json, sys
d = json.load(open(sys.argv[1])); m = d["median"]
print("comm %.2f ms, compute %.2f ms, both %.2f ms, hidden %.3f" % (m["comm_s"] * 1e3, m["compute_s"] * 1e3, m["both_s"] * 1e3, d["hidden"]))' "$json")"
}

# ---- the order -----------------------------------------------------------------------------------------
run_steps() {
  mkdir -p "$WORK"
  # The INI files name their prompt lists relative to the source tree.
  cd "$ROOT" || return 1
  if [ ! -x "$LA" ]; then
    echo "the lookahead executable was not built: every step is skipped"
  fi
  can_run libraries cpu "$LA" && step libraries 60 step_libraries
  # 1
  can_run env cpu "$LA" && step env 60 step_env
  can_run collectives_nccl gpu "$DIST_TESTS/dist_collectives_test" && step collectives_nccl 180 step_collectives_nccl
  can_run nccl_faults gpu "$DIST_TESTS/dist_nccl_fault_test" && step nccl_faults 120 step_nccl_faults
  can_run collectives_mpi cpu "$DIST_TESTS/dist_collectives_test" && step collectives_mpi 240 step_collectives_mpi
  can_run bench_collectives_nccl gpu "$BUILD/bench/bench_collectives" && step bench_collectives_nccl 120 step_bench_collectives_nccl
  # 2
  can_run engine_fp32 gpu "$DIST_TESTS/dist_engine_test" && step engine_fp32 180 step_engine_fp32
  can_run train_state_fp32 gpu "$BUILD/tests/trainer/trainer_train_state_test" && step train_state_fp32 180 step_train_state_fp32
  can_run bf16 gpu "$BUILD/tests/trainer/trainer_bf16_test" && step bf16 240 step_bf16
  skip engine_multirank_one_gpu "not supported: the MPI communicator takes CPU tensors only (dist/mpi_communicator.cpp, MpiCommunicator::check_device), and NCCL runs one rank per GPU (dist/world.cpp, World::check_own_gpu refuses ranks that share one)"
  # 3
  can_run tiny_e2e gpu "$LA" && step tiny_e2e 240 step_tiny_e2e
  # 4
  can_run sdxl_setup gpu "$LA" && step sdxl_setup 300 step_sdxl_setup
  for b in 1 2 4; do
    can_run "sdxl_b$b" gpu "$LA" && step "sdxl_b$b" 300 step_sdxl_batch "$b"
  done
  # 5
  can_run overlap_nccl gpu "$BUILD/bench/bench_overlap" && step overlap_nccl 180 step_overlap_nccl
  return 0
}
