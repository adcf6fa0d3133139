# `launch/gpu-kit check` and `launch/gpu-kit env` (sourced by launch/gpu-kit, which has set ROOT,
# HERE, KIT, PREFIX, BUILD, OUTDIR, CONFIGURE_ONLY, JOBS, ONLY, BUDGET). The steps after the build
# are in steps.sh, read once the build is done.

# ---- the kit's environment ----------------------------------------------------------------------
# What runs the kit's OpenMPI, PMIx and libraries from PREFIX: Debian's OpenMPI relocates by
# OPAL_PREFIX (every install path is derived from it, ompi_info --path all), PMIx by
# PMIX_INSTALL_PREFIX plus its component path (its own mca-params file names /usr).
kit_lib_path() {
  local m=$PREFIX/usr/lib/x86_64-linux-gnu
  echo "$m:$PREFIX/lib/x86_64-linux-gnu:$m/openmpi/lib:$m/hdf5/serial:$m/pmix2/lib"
}
kit_env_lines() {
  local m=$PREFIX/usr/lib/x86_64-linux-gnu
  echo "export PATH=\"$PREFIX/usr/bin:\$PATH\""
  echo "export LD_LIBRARY_PATH=\"$(kit_lib_path)\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
  # For the linker too: h5cc's link line names -lcurl, -lcrypto, -lsz without a -L of the prefix.
  echo "export LIBRARY_PATH=\"$m:$PREFIX/lib/x86_64-linux-gnu\${LIBRARY_PATH:+:\$LIBRARY_PATH}\""
  # Debian's multiarch headers (jconfig.h, opensslconf.h, curlbuild.h) sit in include/<triplet>,
  # which the compiler searches under /usr only.
  echo "export CPATH=\"$PREFIX/usr/include/x86_64-linux-gnu\${CPATH:+:\$CPATH}\""
  echo "export OPAL_PREFIX=\"$PREFIX/usr\""
  echo "export PMIX_INSTALL_PREFIX=\"$m/pmix2\" PMIX_MCA_mca_base_component_path=\"$m/pmix2/lib/pmix\""
  # mpirun's rsh launcher refuses to start without ssh even for local ranks; without ssh (and
  # outside SLURM, whose launcher mpirun picks itself) launch on this node only.
  if ! command -v ssh >/dev/null 2>&1 && [ -z "${SLURM_JOB_ID:-}" ]; then
    echo "export OMPI_MCA_plm=isolated"
  fi
}
kit_env_exports() {
  [ -x "$PREFIX/usr/bin/mpirun" ] || die "no unpacked kit in $PREFIX (run launch/gpu-kit check first, or give --prefix)"
  kit_env_lines
  echo "source \"$ROOT/launch/mpi_env.sh\""
}

# ---- records ----------------------------------------------------------------------------------------
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# record NAME STATUS SECONDS REASON [--command C] [--detail K=V]... [--detail-json FILE]...
record() {
  local name=$1 status=$2 secs=$3 reason=$4
  shift 4
  "$PY_HELPER" "$HERE/kit.py" step --steps "$STEPS" --name "$name" --status "$status" --seconds "$secs" \
    --reason "$reason" "$@" || echo "gpu-kit: could not record step $name" >&2
  write_report false
  printf '[gpu-check] %-24s %-7s %6ss  %s\n' "$name" "$status" "$secs" "$reason"
}
write_report() {
  "$PY_HELPER" "$HERE/kit.py" report --steps "$STEPS" --info "$INFO" --out "$OUT/gpu-check.json" \
    --total "$(since "$T_START")" --finished "$1" || echo "gpu-kit: could not write $OUT/gpu-check.json" >&2
}
info() { echo "$1=$2" >>"$INFO"; }
# The step's time box: its own limit, cut to what is left of --budget (0 = no budget).
limit_for() {
  local want=$1
  if [ "${BUDGET:-0}" = 0 ]; then echo "$want"; return; fi
  local left
  left=$(awk -v b="$BUDGET" -v s="$T_START" -v n="$(now)" 'BEGIN { printf "%d", b - (n - s) }')
  if [ "$left" -lt "$want" ]; then echo "$left"; else echo "$want"; fi
}
# --only names measuring steps; the setup phases and the library census always run.
wanted() {
  case "$1" in preflight | unpack | configure | build | libraries) return 0 ;; esac
  [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]
}
# step NAME LIMIT_S CMD...: runs CMD time-boxed; passed on exit 0, failed otherwise (timeout named).
# CMD may be a shell function: then the commands inside it are time-boxed by tb, against the step's
# deadline. STEP_DETAILS (array) adds --detail/--detail-json arguments to the record; STEP_NOTE is the
# reason text of a pass, STEP_FAIL of a failure.
step() {
  local name=$1 want=$2
  shift 2
  wanted "$name" || return 0
  local lim t rc secs
  lim=$(limit_for "$want")
  if [ "$lim" -lt 5 ]; then
    record "$name" skipped 0 "the check's time budget (${BUDGET} s) is spent" --command "$*"
    STEP_DETAILS=() STEP_NOTE="" STEP_FAIL=""
    return 0
  fi
  echo "==== [$name] $* (time box ${lim} s)"
  t=$(now)
  STEP_DEADLINE=$(awk -v t="$t" -v l="$lim" 'BEGIN { printf "%d", t + l }')
  TB_TIMED_OUT=0
  if declare -F "$1" >/dev/null; then
    "$@"
    rc=$?
  else
    tb "$@"
    rc=$?
  fi
  secs=$(since "$t")
  if [ $rc -eq 0 ]; then
    record "$name" passed "$secs" "${STEP_NOTE:-}" --command "$*" "${STEP_DETAILS[@]}"
  elif [ "$TB_TIMED_OUT" = 1 ]; then
    record "$name" failed "$secs" "timed out (time box ${lim} s)${STEP_FAIL:+; $STEP_FAIL}" --command "$*" "${STEP_DETAILS[@]}"
  else
    record "$name" failed "$secs" "${STEP_FAIL:-exit code $rc}" --command "$*" "${STEP_DETAILS[@]}"
  fi
  STEP_DETAILS=() STEP_NOTE="" STEP_FAIL=""
  return $rc
}
# tb CMD...: CMD under timeout, with what is left of the current step's time box.
tb() {
  local left
  left=$(awk -v d="$STEP_DEADLINE" -v n="$(now)" 'BEGIN { printf "%d", d - n }')
  if [ "$left" -lt 1 ]; then TB_TIMED_OUT=1; return 124; fi
  timeout -k 10 "$left" "$@"
  local rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then TB_TIMED_OUT=1; fi
  return $rc
}
STEP_DETAILS=()
STEP_NOTE=""
STEP_FAIL=""
skip() { wanted "$1" && record "$1" skipped 0 "$2" "${@:3}"; return 0; }

# ---- preflight --------------------------------------------------------------------------------------
find_torch_python() {
  local p
  for p in "${LOOKAHEAD_PYTHON:-}" python3 "$ROOT/.venv/bin/python"; do
    [ -n "$p" ] || continue
    command -v "$p" >/dev/null 2>&1 || continue
    "$p" -c "import torch" >/dev/null 2>&1 && { command -v "$p"; return 0; }
    [ -n "${LOOKAHEAD_PYTHON:-}" ] && return 1  # an explicit choice that cannot import torch
  done
  return 1
}

preflight() {
  local ok=0 probe need have
  [ "$(uname -m)" = x86_64 ] || { echo "the kit's packages are amd64; this machine is $(uname -m)"; ok=1; }
  "$PY_HELPER" "$HERE/kit.py" verify "$KIT" || return 1
  # The node's C library must be at least the fetch machine's (the packages were built against it).
  need=$("$PY_HELPER" -c 'import json,sys; print(json.load(open(sys.argv[1]))["min_glibc"])' "$KIT/manifest.json")
  have=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{ print $2 }')
  info glibc "$have"
  info kit_min_glibc "$need"
  if [ -n "$need" ] && [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
    echo "this node's C library is glibc $have; the kit's packages need $need or newer (fetch the kit on an older release)"
    ok=1
  fi
  local tool
  for tool in cmake ninja c++ timeout; do
    command -v "$tool" >/dev/null || { echo "missing on this node: $tool"; ok=1; }
  done
  command -v dpkg-deb >/dev/null || command -v ar >/dev/null || { echo "neither dpkg-deb nor ar (binutils) to unpack .deb files"; ok=1; }
  TORCH_PY=$(find_torch_python) || { echo "no Python that imports torch (set LOOKAHEAD_PYTHON)"; return 1; }
  info python "$TORCH_PY"
  probe=$("$TORCH_PY" - <<'EOF'
import torch
n = torch.cuda.device_count() if torch.cuda.is_available() else 0
name = torch.cuda.get_device_name(0) if n else ""
cap = "%d.%d" % torch.cuda.get_device_capability(0) if n else ""
print(torch.__version__, torch.version.cuda or "none", n, cap, name.replace(" ", "_") or "none", sep="|")
EOF
) || { echo "$TORCH_PY: probing torch failed"; return 1; }
  IFS='|' read -r TORCH_VERSION TORCH_CUDA GPU_COUNT GPU_CAP GPU_NAME <<<"$probe"
  GPU_NAME=${GPU_NAME//_/ }
  info torch "$TORCH_VERSION"
  info torch_cuda "$TORCH_CUDA"
  info cuda_devices "$GPU_COUNT"
  info gpu "$GPU_NAME"
  info gpu_capability "$GPU_CAP"
  info cores "$(nproc)"
  info cmake "$(cmake --version | head -1 | awk '{ print $3 }')"
  info compiler "$(c++ --version | head -1)"
  if [ "$TORCH_CUDA" != none ]; then
    if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
      info nvcc "$({ command -v nvcc || echo /usr/local/cuda/bin/nvcc; } | head -1)"
    else
      echo "torch is a CUDA $TORCH_CUDA build and its CMake config needs nvcc, which is not on PATH or in /usr/local/cuda"
      ok=1
    fi
  fi
  command -v nvidia-smi >/dev/null && nvidia-smi -L
  echo "torch $TORCH_VERSION (CUDA $TORCH_CUDA) from $TORCH_PY; CUDA devices: $GPU_COUNT ${GPU_NAME:+($GPU_NAME, sm $GPU_CAP)}"
  return $ok
}

# ---- unpack: dpkg -x into PREFIX, then what the maintainer scripts would have done ----------------
unpack_deb() {  # FILE DIR: dpkg -x, or ar + tar where there is no dpkg
  if command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$1" "$2"
  else
    local member
    member=$(ar t "$1" | grep '^data\.tar') || return 1
    case "$member" in
      *.xz) ar p "$1" "$member" | tar -xJ -C "$2" ;;
      *.zst) ar p "$1" "$member" | tar --zstd -x -C "$2" ;;
      *.gz) ar p "$1" "$member" | tar -xz -C "$2" ;;
      *) ar p "$1" "$member" | tar -x -C "$2" ;;
    esac
  fi
}
unpack() {
  case "$PREFIX" in /|/usr|/usr/*|"") echo "refusing to unpack into '$PREFIX' (the prefix must be a private folder)"; return 1 ;; esac
  # Unpacked from this very manifest before: kept (a rerun rebuilds nothing; dpkg -x keeps the
  # packages' file times, so a fresh unpack would not either, but it takes a while).
  local stamp
  stamp=$(sha256sum "$KIT/manifest.json" | cut -d' ' -f1)
  if [ -f "$PREFIX/.lookahead-kit" ] && [ "$(cat "$PREFIX/.lookahead-kit")" = "$stamp" ]; then
    echo "$PREFIX holds this kit already (manifest sha256 $stamp)"
    return 0
  fi
  rm -rf "$PREFIX.new" && mkdir -p "$PREFIX.new" || return 1
  local f n=0
  while read -r f; do
    unpack_deb "$KIT/$f" "$PREFIX.new" || { echo "unpacking $KIT/$f failed"; return 1; }
    n=$((n + 1))
  done < <("$PY_HELPER" -c 'import json,sys; print("\n".join(p["file"] for p in json.load(open(sys.argv[1]))["packages"]))' "$KIT/manifest.json")
  local P=$PREFIX.new m=$PREFIX.new/usr/lib/x86_64-linux-gnu
  # update-alternatives (postinst): mpicc, mpirun, mpiexec, ... -> *.openmpi; libpsm_infinipath.
  for f in "$P"/usr/bin/*.openmpi; do ln -sfn "$(basename "$f")" "${f%.openmpi}"; done
  for f in "$P"/usr/lib/libpsm1/libpsm_infinipath.so.1.*; do
    [ -e "$f" ] && ln -sfn "$(realpath --relative-to="$m" "$f")" "$m/libpsm_infinipath.so.1"
  done
  # Absolute links lead out of the prefix: into it where the target is there, else to the node's
  # own library of the same soname (zlib's libz.so -> the node's libz.so.1).
  while read -r f; do
    local target sys so
    target=$(readlink "$f")
    if [ -e "$P$target" ]; then
      ln -sfn "$(realpath --relative-to="$(dirname "$f")" "$P$target")" "$f"
    else
      so=$(basename "$target" | sed -E 's/(\.so\.[0-9]+).*/\1/')
      sys=$(ls /usr/lib/x86_64-linux-gnu/"$so" /lib/x86_64-linux-gnu/"$so" /usr/lib64/"$so" 2>/dev/null | head -1)
      if [ -n "$sys" ]; then ln -sfn "$sys" "$f"; else echo "warning: $f -> $target: not in the kit nor on this node"; fi
    fi
  done < <(find "$P" -lname '/*')
  # h5cc names its install prefix: FindHDF5 asks it for the include and library paths.
  sed -i "s|^prefix=\"/usr\"|prefix=\"$PREFIX/usr\"|" "$P/usr/bin/h5cc"
  echo "$stamp" >"$P/.lookahead-kit"
  rm -rf "$PREFIX" && mv "$PREFIX.new" "$PREFIX" || return 1
  echo "unpacked $n packages into $PREFIX ($(du -sm "$PREFIX" | cut -f1) MiB)"
}

# ---- configure ------------------------------------------------------------------------------------
configure() {
  local args=(-G Ninja -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLA_UNITY_BUILD=ON -DLA_WERROR=OFF
    -DLA_PYTHON="$TORCH_PY" -DCMAKE_PREFIX_PATH="$PREFIX/usr"
    -DMPI_C_COMPILER="$PREFIX/usr/bin/mpicc.openmpi" -DMPIEXEC_EXECUTABLE="$PREFIX/usr/bin/mpiexec.openmpi"
    -DHDF5_C_COMPILER_EXECUTABLE="$PREFIX/usr/bin/h5cc")
  # The GPU's own architecture when there is one (torch's CMake config asks for a list).
  [ -n "$GPU_CAP" ] && args+=(-DTORCH_CUDA_ARCH_LIST="$GPU_CAP")
  mkdir -p "$BUILD"
  # A build directory configured against other paths is started afresh.
  if [ -f "$BUILD/CMakeCache.txt" ] && ! grep -q "^MPI_C_COMPILER:FILEPATH=$PREFIX/usr/bin/mpicc.openmpi$" "$BUILD/CMakeCache.txt"; then
    echo "removing $BUILD/CMakeCache.txt (configured against another MPI)"
    rm -rf "$BUILD/CMakeCache.txt" "$BUILD/CMakeFiles"
  fi
  tb cmake "${args[@]}" || return 1
  # Every dependency must have resolved into the prefix (or, for the compiler's runtime, the node).
  "$PY_HELPER" - "$BUILD/CMakeCache.txt" "$PREFIX" "$OUT/.resolved.json" <<'EOF'
import json, os, re, sys
cache, prefix, out = sys.argv[1], os.path.realpath(sys.argv[2]), sys.argv[3]
want = {
    "MPI": ["MPI_C_HEADER_DIR", "MPI_mpi_LIBRARY", "MPIEXEC_EXECUTABLE"],
    "HDF5": ["HDF5_C_LIBRARY_hdf5", "HDF5_C_LIBRARY_sz", "HDF5_C_LIBRARY_curl", "HDF5_C_LIBRARY_crypto", "HDF5_C_COMPILER_EXECUTABLE"],
    "Boost": ["Boost_DIR", "Boost_INCLUDE_DIR", "Boost_PROGRAM_OPTIONS_LIBRARY_RELEASE"],
    "GTest": ["GTest_DIR"],
    "benchmark": ["benchmark_DIR"],
    "nlohmann_json": ["nlohmann_json_DIR"],
    "xxhash": ["LA_XXHASH_INCLUDE_DIR", "LA_XXHASH_LIBRARY"],
    "utf8proc": ["LA_UTF8PROC_INCLUDE_DIR", "LA_UTF8PROC_LIBRARY"],
    "JPEG": ["JPEG_INCLUDE_DIR", "JPEG_LIBRARY_RELEASE"],
    "PNG": ["PNG_PNG_INCLUDE_DIR", "PNG_LIBRARY_RELEASE"],
    "ZLIB": ["ZLIB_INCLUDE_DIR", "ZLIB_LIBRARY_RELEASE"],
}
vals = {}
for line in open(cache):
    m = re.match(r"^([A-Za-z0-9_]+):[A-Z]+=(.*)$", line.rstrip("\n"))
    if m:
        vals[m.group(1)] = m.group(2)
res, bad = {}, []
for dep, keys in want.items():
    for k in keys:
        v = vals.get(k, "")
        inside = bool(v) and os.path.abspath(v).startswith(prefix + os.sep)
        res[k] = v
        if not inside:
            bad.append("%s (%s = %s)" % (dep, k, v or "unset"))
json.dump({"resolved": res, "outside_prefix": bad}, open(out, "w"), indent=1)
for k, v in res.items():
    print("  %-40s %s" % (k, v))
if bad:
    print("not in the prefix %s: %s" % (prefix, "; ".join(bad)))
    sys.exit(1)
print("every dependency resolved into %s" % prefix)
EOF
}

# ---- build --------------------------------------------------------------------------------------------
BUILD_TARGETS=(lookahead dist_collectives_test dist_nccl_fault_test bench_collectives bench_overlap dist_engine_test
  trainer_train_state_test trainer_bf16_test)
build() {
  tb ninja -C "$BUILD" -k 0 -j "${JOBS:-$(nproc)}" "${BUILD_TARGETS[@]}"
}

check_main() {
  OUT=${OUTDIR:-$ROOT/out/gpu-check}
  mkdir -p "$OUT" || die "cannot create $OUT"
  OUT=$(cd "$OUT" && pwd)
  WORK="${LOOKAHEAD_GPU_WORK:-$BUILD/check-work}"
  STEPS="$OUT/.steps.jsonl"
  INFO="$OUT/.info"
  : >"$STEPS"
  : >"$INFO"
  : >"$OUT/gpu-check.log"
  exec 3>&1 4>&2 > >(tee -a "$OUT/gpu-check.log") 2>&1
  local tee_pid=$!
  T_START=$(now)
  PY_HELPER=$(helper_python)
  TORCH_PY="" GPU_COUNT=0 GPU_CAP="" GPU_NAME=""
  info started "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  info host "$(hostname)"
  info kit "$KIT"
  info prefix "$PREFIX"
  info build "$BUILD"
  info budget_s "${BUDGET:-480}"
  BUDGET=${BUDGET:-480}
  echo "gpu-kit check: kit $KIT, prefix $PREFIX, build $BUILD, out $OUT, budget ${BUDGET} s (0 = none)"
  local fatal=""
  step preflight 120 preflight || fatal="preflight failed"
  if [ -z "$fatal" ]; then
    step unpack 300 unpack || fatal="unpacking the kit failed"
  fi
  if [ -z "$fatal" ]; then
    eval "$(kit_env_lines)"
    source "$ROOT/launch/mpi_env.sh"
    # As the tests run MPI (cmake/LookaheadHelpers.cmake, LA_TEST_ENV): shared memory and TCP only
    # (no InfiniBand/UCX probing on a node that may have neither), no single-copy (CMA) transfers
    # (containers such as gVisor may not allow process_vm_readv). A caller's settings win.
    export OMPI_MCA_btl=${OMPI_MCA_btl:-self,vader,tcp} OMPI_MCA_pml=${OMPI_MCA_pml:-ob1}
    export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
    STEP_DETAILS=(--detail-json "$OUT/.resolved.json")
    step configure 300 configure || fatal="configure failed"
    rm -f "$OUT/.resolved.json"
  fi
  if [ -n "$fatal" ]; then
    echo "gpu-kit check: $fatal; nothing further can run"
  elif [ "$CONFIGURE_ONLY" = 1 ]; then
    echo "gpu-kit check: --configure-only: stopping after the configure step"
  else
    info build_targets "${BUILD_TARGETS[*]}"
    info jobs "${JOBS:-$(nproc)}"
    STEP_FAIL="some targets failed to build (the steps that need them are skipped)"
    step build 3600 build
    # shellcheck source=launch/gpu_kit/steps.sh
    source "$HERE/steps.sh"
    run_steps
  fi
  write_report true
  "$PY_HELPER" - "$OUT/gpu-check.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["summary"]
print("gpu-kit check: %d passed, %d failed, %d skipped in %.0f s -> %s" % (s["passed"], s["failed"], s["skipped"], r["seconds_total"], sys.argv[1]))
EOF
  # The intermediate records are in the JSON now.
  rm -f "$STEPS" "$INFO"
  # Exit status: 0 when nothing failed (skips allowed).
  "$PY_HELPER" -c 'import json,sys; sys.exit(1 if json.load(open(sys.argv[1]))["failed"] else 0)' "$OUT/gpu-check.json"
  local rc=$?
  # The log is complete when this returns.
  exec 1>&3 2>&4 3>&- 4>&-
  wait "$tee_pid" 2>/dev/null
  return $rc
}
