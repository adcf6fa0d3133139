#!/usr/bin/env bash
# Runs a command on this machine as if it were a bare GPU node: in a private mount namespace whose
# /usr and /etc are overlays (the real ones untouched) from which every file of the kit's Debian
# packages, and of the ones the kit prunes, is deleted, together with the alternatives links
# (mpicc, mpirun, ...) that lead to them. What the host's own build tools load (cmake, the compiler,
# the linker, ccache, Python: e.g. libcurl, libssl, libgmp) stays (runtime packages only; their
# -dev packages go); the list is printed. So a build inside can only find MPI, HDF5, Boost, GoogleTest, Google Benchmark,
# nlohmann-json, xxhash, utf8proc, libjpeg, libpng and the zlib headers in the kit's prefix.
#
# Usage: bare_node.sh KIT_DIR [--python PY] -- COMMAND [ARG...]
# Needs root (unshare --mount and overlayfs); exits 77 where either is impossible.
set -uo pipefail
KIT=$1
shift
PYTHON=""
if [ "${1:-}" = --python ]; then PYTHON=$2; shift 2; fi
[ "${1:-}" = -- ] || { echo "usage: bare_node.sh KIT_DIR [--python PY] -- COMMAND [ARG...]" >&2; exit 2; }
shift

if [ -z "${LA_BARE_NODE_INSIDE:-}" ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v unshare >/dev/null; then
    echo "bare_node: needs root and unshare (a mount namespace with overlays of /usr and /etc)" >&2
    exit 77
  fi
  if ! unshare --mount --propagation private true 2>/dev/null; then
    echo "bare_node: unshare --mount is not permitted here" >&2
    exit 77
  fi
  # The overlays' upper layers live here; removed once the namespace (and its mounts) is gone.
  LA_BARE_NODE_SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/bare-node.XXXXXX")
  export LA_BARE_NODE_INSIDE=1 LA_BARE_NODE_SCRATCH
  unshare --mount --propagation private "$0" "$KIT" ${PYTHON:+--python "$PYTHON"} -- "$@"
  rc=$?
  rm -rf "$LA_BARE_NODE_SCRATCH"
  exit $rc
fi

# ---- inside the namespace ----------------------------------------------------------------------
[ -f "$KIT/manifest.json" ] || { echo "bare_node: no $KIT/manifest.json" >&2; exit 2; }
PY=$(command -v python3)
SCRATCH=$LA_BARE_NODE_SCRATCH
# Package names: the kit's and the pruned ones.
"$PY" - "$KIT/manifest.json" >"$SCRATCH/packages" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
names = [p["package"] for p in m["packages"]]
for group in m["pruned"].values():
    names += group
print("\n".join(dict.fromkeys(names)))
EOF
# And whatever else of these libraries this machine has installed (other Boost libraries, GoogleMock,
# HDF5's tools, ...): nothing of them may be found.
dpkg-query -W -f='${Package} ${Status}\n' | awk '$NF == "installed" { print $1 }' |
  grep -E '^(lib)?(openmpi|mpi-default|pmix|hwloc|hdf5|boost|gtest|gmock|googletest|benchmark|nlohmann|xxhash|utf8proc|jpeg|png|aec|sz2|ucx|fabric|psm|ibverbs|rdmacm|munge|event-)' \
  >>"$SCRATCH/packages"
sort -u -o "$SCRATCH/packages" "$SCRATCH/packages"

# Packages whose libraries the host's tools load: their runtime files stay.
tools=()
for t in cmake ninja ccache c++ cc g++ gcc ld as "$PYTHON" python3; do
  [ -n "$t" ] && command -v "$t" >/dev/null && tools+=("$(readlink -f "$(command -v "$t")")")
done
for t in cc1plus cc1 collect2; do
  p=$(c++ -print-prog-name="$t" 2>/dev/null) && [ -x "$p" ] && tools+=("$(readlink -f "$p")")
done
ldd "${tools[@]}" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u | while read -r lib; do
  dpkg -S "$(readlink -f "$lib")" 2>/dev/null | cut -d: -f1
  dpkg -S "$lib" 2>/dev/null | cut -d: -f1
done | sort -u >"$SCRATCH/tool-packages"

: >"$SCRATCH/hidden-packages"
: >"$SCRATCH/kept-packages"
# Names may be patterns (gfortran*): the installed packages they match.
while read -r pat; do
  dpkg-query -W -f='${Package} ${Status}\n' "$pat" 2>/dev/null | awk '$NF == "installed" { print $1 }'
done <"$SCRATCH/packages" | sed 's/:.*//' | sort -u >"$SCRATCH/installed"
while read -r pkg; do
  if grep -qx "$pkg" "$SCRATCH/tool-packages"; then
    echo "$pkg" >>"$SCRATCH/kept-packages"
  else
    echo "$pkg" >>"$SCRATCH/hidden-packages"
  fi
done <"$SCRATCH/installed"
for layer in usr etc; do
  mkdir -p "$SCRATCH/$layer/upper" "$SCRATCH/$layer/work"
  mount -t overlay "bare-$layer" -o "lowerdir=/$layer,upperdir=$SCRATCH/$layer/upper,workdir=$SCRATCH/$layer/work" "/$layer" ||
    { echo "bare_node: cannot mount an overlay on /$layer" >&2; exit 77; }
done
# Every file of a hidden package, then its directories that are left empty; a kept one stays whole.
while read -r pkg; do dpkg -L "$pkg" 2>/dev/null; done <"$SCRATCH/hidden-packages" |
  sed 's,^/lib/,/usr/lib/,; s,^/bin/,/usr/bin/,; s,^/sbin/,/usr/sbin/,' | grep -E '^/(usr|etc)/' | sort -u >"$SCRATCH/paths"
while read -r f; do [ -d "$f" ] && [ ! -L "$f" ] || echo "$f"; done <"$SCRATCH/paths" >"$SCRATCH/files"
n=$(wc -l <"$SCRATCH/files")
xargs -d '\n' rm -f <"$SCRATCH/files" 2>/dev/null
sort -r "$SCRATCH/paths" | while read -r d; do [ -d "$d" ] && [ ! -L "$d" ] && rmdir "$d" 2>/dev/null; done
# Alternatives (mpicc, mpirun, libmpi.so, h5cc, ...) now lead nowhere: remove the dangling links.
for d in /usr/bin /usr/lib/x86_64-linux-gnu /usr/include /etc/alternatives; do
  find "$d" -maxdepth 1 -xtype l -delete 2>/dev/null
done
rm -rf /etc/openmpi /usr/lib/x86_64-linux-gnu/openmpi /usr/include/hdf5 /usr/lib/x86_64-linux-gnu/hdf5 2>/dev/null
# ld.so.cache still names the deleted libraries; rebuild it over the overlay.
ldconfig 2>/dev/null

echo "bare_node: hid $(wc -l <"$SCRATCH/hidden-packages") installed packages of the kit and the pruned list ($n files); kept the runtime libraries of $(wc -l <"$SCRATCH/kept-packages") that this machine's build tools load: $(tr '\n' ' ' <"$SCRATCH/kept-packages")"
# Proof: none of these is visible any more.
for f in /usr/include/mpi.h /usr/lib/x86_64-linux-gnu/openmpi /usr/include/hdf5 /usr/include/boost \
  /usr/include/gtest /usr/include/benchmark /usr/include/nlohmann /usr/include/xxhash.h /usr/include/utf8proc.h \
  /usr/include/jpeglib.h /usr/include/png.h /usr/include/zlib.h /usr/lib/x86_64-linux-gnu/libhdf5_serial.so.103 \
  /usr/lib/x86_64-linux-gnu/libboost_program_options.so.1.74.0 /usr/lib/x86_64-linux-gnu/cmake/GTest; do
  if [ -e "$f" ]; then echo "bare_node: $f is still visible" >&2; exit 1; fi
done
for c in mpicc mpirun mpiexec h5cc; do
  if command -v "$c" >/dev/null; then echo "bare_node: $c is still on PATH ($(command -v "$c"))" >&2; exit 1; fi
done
if ldconfig -p | grep -qE 'libmpi\.so|libhdf5_serial|libboost_program_options|libxxhash|libutf8proc'; then
  echo "bare_node: the loader cache still lists a hidden library" >&2
  exit 1
fi
echo "bare_node: not visible: mpi.h, HDF5, Boost, GoogleTest, Benchmark, nlohmann, xxhash, utf8proc, jpeglib.h, png.h, zlib.h, mpicc/mpirun/h5cc, libmpi/libhdf5/libboost_program_options in the loader cache"
exec "$@"
