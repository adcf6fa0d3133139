#!/usr/bin/env bash
# launch/gpu-kit without a GPU and without a build (a few minutes on 2 cores):
#   - fetch: the kit is downloaded (or the packages already in WORK/kit are kept), at most 48 MiB,
#     with a manifest of package, version, architecture, size and sha256 for every .deb;
#   - verify: the kit matches; a changed, a missing and an extra .deb are each refused with a message
#     naming the file, and `check` refuses the changed kit before unpacking anything (its JSON says so);
#   - check --configure-only inside launch/gpu_kit/bare_node.sh (a mount namespace whose /usr and
#     /etc hide every file of the kit's packages on this machine): unpack into a private prefix, and
#     every find_package / find_library of the build (MPI, HDF5, Boost, GoogleTest, Benchmark,
#     nlohmann-json, xxhash, utf8proc, JPEG, PNG, zlib) resolves into the prefix;
#   - in the same namespace, an MPI + HDF5 program built with the kit's mpicc against the prefix runs
#     on 2 ranks under the kit's mpirun (OpenMPI and PMIx relocated, no ssh needed, no warnings).
# A fetch that fails (no network, no Debian mirror) fails the test: it never passes silently.
# Usage: gpu_kit_test.sh SOURCE_ROOT WORK_DIR [PYTHON]
# Needs root for the namespace part (exit 77, ctest: skipped, otherwise; the rest has run by then).
set -uo pipefail
ROOT=$1 WORK=$2
PY=${3:-python3}
KIT_TOOL="$ROOT/launch/gpu-kit"
BARE="$ROOT/launch/gpu_kit/bare_node.sh"
T=$WORK/gpu_kit_test
KIT=$T/kit  # kept between runs: a second fetch downloads only what changed
mkdir -p "$T" || exit 1
rm -rf "$T/tmp" && mkdir -p "$T/tmp"
fails=0
ok() { echo "ok   $1"; }
fail() {
  echo "FAIL $1"
  fails=$((fails + 1))
}
finish() {
  echo "$fails failure(s)"
  [ $fails -eq 0 ] || exit 1
  exit "${1:-0}"
}
t0=$(date +%s)

# ---- fetch ----------------------------------------------------------------------------------------
if "$KIT_TOOL" fetch --kit "$KIT" >"$T/fetch.log" 2>&1; then
  ok "fetch: $(tail -2 "$T/fetch.log" | head -1 | sed 's/^gpu-kit fetch: //') ($(($(date +%s) - t0)) s)"
else
  cat "$T/fetch.log"
  echo "FAIL fetch: the Debian packages could not be downloaded (no network or no Debian mirror?); this test"
  echo "     needs the machine's apt sources to be reachable, as ./launch/setup does"
  exit 1
fi
"$PY" - "$KIT/manifest.json" <<'EOF' && ok "manifest: every package with version, architecture, size and sha256; at most 48 MiB" || fail "manifest"
import json, os, re, sys
m = json.load(open(sys.argv[1]))
assert m["format"] == "lookahead-gpu-kit 1", m["format"]
pkgs = m["packages"]
names = {p["package"] for p in pkgs}
for want in ("libopenmpi3", "libopenmpi-dev", "openmpi-bin", "libhdf5-dev", "libhdf5-103-1", "libboost-program-options1.74-dev",
             "libgtest-dev", "libbenchmark-dev", "nlohmann-json3-dev", "libxxhash-dev", "libutf8proc-dev", "libpmix2"):
    assert want in names, "%s is not in the kit" % want
for never in ("libc6", "libstdc++6", "zlib1g", "gfortran-12", "libhwloc-plugins"):
    assert never not in names, "%s is in the kit (assumed on the node, or pruned)" % never
for p in pkgs:
    assert re.fullmatch(r"[0-9a-f]{64}", p["sha256"]), p
    assert p["version"] and p["architecture"] in ("amd64", "all") and p["size"] > 0, p
total = sum(p["size"] for p in pkgs)
assert total == m["total_bytes"] and total <= 48 << 20, total
assert m["min_glibc"] and m["assumed_on_node"] and m["pruned"]
print("     %d packages, %.1f MiB, glibc >= %s" % (len(pkgs), total / 1048576, m["min_glibc"]))
EOF
"$KIT_TOOL" verify --kit "$KIT" >"$T/verify.log" 2>&1 && ok "verify: $(cat "$T/verify.log")" || { cat "$T/verify.log"; fail "verify of the fetched kit"; }

# ---- a kit that does not match its manifest is refused -----------------------------------------------
bad=$T/tmp/badkit
mkdir -p "$bad/debs" && cp "$KIT/manifest.json" "$bad/" && for f in "$KIT"/debs/*.deb; do ln -s "$f" "$bad/debs/"; done
victim=$(ls "$bad/debs" | grep '^libopenmpi3_' | head -1)
rm "$bad/debs/$victim" && cp "$KIT/debs/$victim" "$bad/debs/$victim" && printf 'x' >>"$bad/debs/$victim"
"$KIT_TOOL" verify --kit "$bad" >"$T/tmp/err" 2>&1
rc=$?
[ $rc -ne 0 ] && grep -q "$victim" "$T/tmp/err" && ok "a changed .deb is refused: $(head -1 "$T/tmp/err")" ||
  fail "a changed .deb was not refused by name (rc $rc): $(cat "$T/tmp/err")"
# The same size, other bytes: only the sha256 can tell.
cp "$KIT/debs/$victim" "$bad/debs/$victim" && printf 'x' | dd of="$bad/debs/$victim" bs=1 seek=100 conv=notrunc status=none
"$KIT_TOOL" verify --kit "$bad" >"$T/tmp/err" 2>&1
[ $? -ne 0 ] && grep -q "sha256" "$T/tmp/err" && grep -q "$victim" "$T/tmp/err" && ok "a .deb of the right size with other bytes is refused by its sha256" ||
  fail "a same-size changed .deb was not refused: $(cat "$T/tmp/err")"
"$KIT_TOOL" check "$T/tmp/check-bad" --kit "$bad" --build "$T/tmp/build-bad" --configure-only >"$T/tmp/check-bad.log" 2>&1
rc=$?
"$PY" - "$T/tmp/check-bad/gpu-check.json" "$victim" "$T/tmp/build-bad" <<'EOF' && [ $rc -ne 0 ] &&
import json, os, sys
r = json.load(open(sys.argv[1]))
steps = {s["name"]: s for s in r["steps"]}
assert steps["preflight"]["status"] == "failed", steps["preflight"]
assert "unpack" not in steps and not os.path.exists(os.path.join(sys.argv[3], "prefix")), "unpacked a bad kit"
EOF
  grep -q "$victim" "$T/tmp/check-bad.log" && ok "check refuses the changed kit before unpacking (preflight failed in gpu-check.json)" ||
  { tail -20 "$T/tmp/check-bad.log"; fail "check did not refuse the changed kit (rc $rc)"; }
rm "$bad/debs/$victim"
"$KIT_TOOL" verify --kit "$bad" >"$T/tmp/err" 2>&1
[ $? -ne 0 ] && grep -q "missing" "$T/tmp/err" && ok "a missing .deb is refused" || fail "a missing .deb was not refused: $(cat "$T/tmp/err")"
cp "$KIT/debs/$victim" "$bad/debs/$victim" && cp "$KIT/debs/$victim" "$bad/debs/extra_1.0_amd64.deb"
"$KIT_TOOL" verify --kit "$bad" >"$T/tmp/err" 2>&1
[ $? -ne 0 ] && grep -q "extra_1.0_amd64.deb" "$T/tmp/err" && ok "an extra .deb is refused" || fail "an extra .deb was not refused: $(cat "$T/tmp/err")"

# ---- a bare node: configure against the prefix only ---------------------------------------------------
if [ "$(id -u)" -ne 0 ] || ! unshare --mount --propagation private true 2>/dev/null; then
  echo "SKIP the bare-node part: it needs root for a mount namespace (unshare --mount) with overlays"
  [ $fails -eq 0 ] || finish
  exit 77
fi
build=$T/tmp/build
out=$T/tmp/check
LOOKAHEAD_PYTHON=$PY "$BARE" "$KIT" --python "$PY" -- \
  "$KIT_TOOL" check "$out" --kit "$KIT" --build "$build" --configure-only --budget 0 >"$T/check.log" 2>&1
rc=$?
grep "^bare_node:" "$T/check.log" | sed 's/^/     /'
if [ $rc -eq 0 ] && "$PY" - "$out/gpu-check.json" "$build/prefix" <<'EOF'; then
import json, os, sys
r = json.load(open(sys.argv[1]))
steps = {s["name"]: s for s in r["steps"]}
assert [s["name"] for s in r["steps"]] == ["preflight", "unpack", "configure"], list(steps)
assert all(s["status"] == "passed" for s in r["steps"]), r["steps"]
d = steps["configure"]["details"]
assert d["outside_prefix"] == [], d["outside_prefix"]
prefix = os.path.realpath(sys.argv[2])
for k, v in d["resolved"].items():
    assert os.path.abspath(v).startswith(prefix + "/"), (k, v)
print("     resolved into the prefix: %s" % ", ".join(sorted(d["resolved"])))
print("     phases: " + ", ".join("%s %.0f s" % (s["name"], s["seconds"]) for s in r["steps"]))
EOF
  ok "check --configure-only on a bare node: every dependency from the kit's prefix"
else
  tail -40 "$T/check.log"
  fail "check --configure-only on a bare node (rc $rc)"
fi

# ---- the kit's MPI and HDF5 at run time, relocated, on the same bare node ---------------------------
cat >"$T/tmp/probe.c" <<'EOF'
#include <hdf5.h>
#include <mpi.h>
#include <stdio.h>
int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank, size, sum;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  unsigned maj, min, rel;
  H5get_libversion(&maj, &min, &rel);
  printf("probe rank %d/%d sum %d hdf5 %u.%u.%u\n", rank, size, sum, maj, min, rel);
  MPI_Finalize();
  return sum == size * (size - 1) / 2 ? 0 : 1;
}
EOF
"$BARE" "$KIT" --python "$PY" -- bash -c '
  set -e
  eval "$("$1" env --prefix "$2/prefix")"
  inc=$(h5cc -show | tr " " "\n" | sed -n "s/^-I//p" | head -1)
  mpicc -I"$inc" "$3/probe.c" -o "$3/probe" -L"$2/prefix/usr/lib/x86_64-linux-gnu/hdf5/serial" -lhdf5
  ldd "$3/probe" | grep -E "libmpi|libhdf5"
  timeout 60 mpirun -np 2 "$3/probe"' _ "$KIT_TOOL" "$build" "$T/tmp" >"$T/probe.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && [ "$(grep -c "^probe rank [01]/2 sum 1 hdf5 1\." "$T/probe.log")" -eq 2 ] &&
  ! grep -v "^bare_node:" "$T/probe.log" | grep -qiE "warning|help file|unable to open|not found" &&
  [ "$(grep -E "(libmpi|libhdf5).* => " "$T/probe.log" | grep -vc "$build/prefix")" -eq 0 ]; then
  ok "an MPI + HDF5 program built with the kit's mpicc runs on 2 ranks under its mpirun (libraries from the prefix, no warnings)"
else
  cat "$T/probe.log"
  fail "the kit's MPI and HDF5 at run time (rc $rc)"
fi
rm -rf "$T/tmp"
echo "     ($(($(date +%s) - t0)) s)"
finish
