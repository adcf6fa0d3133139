#!/usr/bin/env bash
# The sdxl_weights ctest fixture: `lookahead model init --preset sdxl` into DIR (≈ 13 GB, about 80 s),
# shared by the tests labelled sdxl that need the full-size files, and its removal.
# Usage: sdxl_weights.sh init LOOKAHEAD DIR | sdxl_weights.sh remove DIR
set -uo pipefail
case ${1:-} in
  init)
    BIN=$2 DIR=$3
    rm -rf "$DIR"
    mkdir -p "$(dirname "$DIR")"
    # model init writes 11.3 GiB; refuse up front rather than fill the disk half way.
    free_kb=$(df -Pk "$(dirname "$DIR")" | awk 'NR == 2 { print $4 }')
    if [ "$free_kb" -lt $((13 * 1024 * 1024)) ]; then
      echo "FAIL $(dirname "$DIR"): $((free_kb / 1024 / 1024)) GiB free, the full-size set needs 13"
      exit 1
    fi
    /usr/bin/time -f "%e %M" -o "$DIR.time" "$BIN" model init --preset sdxl --out "$DIR" >"$DIR.log" 2>&1 || {
      tail -20 "$DIR.log"
      echo "FAIL lookahead model init --preset sdxl --out $DIR"
      exit 1
    }
    echo "$(grep "^wrote" "$DIR.log" || tail -1 "$DIR.log") ($(awk '{ printf "%.0f s, peak RSS %d MiB", $1, $2 / 1024 }' "$DIR.time"))"
    rm -f "$DIR.log" "$DIR.time"
    ;;
  remove)
    rm -rf "$2"
    echo "removed $2"
    ;;
  *)
    echo "usage: sdxl_weights.sh init LOOKAHEAD DIR | remove DIR" >&2
    exit 2
    ;;
esac
