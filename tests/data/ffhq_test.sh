#!/usr/bin/env bash
# `lookahead data ffhq` end to end on a tiny FFHQ-like tree (1x1 PNGs in FFHQ's folder layout and a
# metadata JSON with every field the real file has): selection flags, --resize, --verify-md5,
# --skip-missing, the summary line, the file `data info` reads back, a run under mpiexec -n 2, and
# bad input ending with a message naming the FFHQ index and exit code 1 (2 for a bad flag). The
# landmark values themselves are checked by data_ffhq_test.
# Usage: ffhq_test.sh MPIEXEC LOOKAHEAD
set -uo pipefail
MPIEXEC=$1 BIN=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out="$work/out.txt"
source "$(dirname "${BASH_SOURCE[0]}")/../check.sh"

png_1x1() {  # a valid 1x1 RGB PNG
  printf '\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef\x00\x00\x00\x00IEND\xaeB`\x82' >"$1"
}
landmarks() {  # 68 [x, y] points
  local s="" i
  for i in $(seq 0 67); do s+="${s:+, }[0.$((i % 10)), 0.$(((i * 7) % 10))]"; done
  echo "[$s]"
}
root="$work/ffhq"
mkdir -p "$root"
lm=$(landmarks)
entry() {  # entry INDEX CATEGORY [LANDMARKS]
  local idx=$1 cat=$2 pts=${3:-$lm}
  local dir rel md5
  dir=$(printf '%05d' $((idx / 1000 * 1000)))
  rel=$(printf 'images1024x1024/%s/%05d.png' "$dir" "$idx")
  mkdir -p "$root/images1024x1024/$dir"
  png_1x1 "$root/$rel"
  md5=$(md5sum "$root/$rel" | cut -d' ' -f1)
  printf '"%d": {"category": "%s", "metadata": {"photo_url": "https://www.flickr.com/x", "author": "a", "license": "CC"},
  "image": {"file_url": "https://drive.google.com/x", "file_path": "%s", "file_size": 69, "file_md5": "%s",
            "pixel_size": [1, 1], "pixel_md5": "0", "face_landmarks": %s},
  "thumbnail": {"file_path": "thumbnails128x128/x.png", "pixel_size": [128, 128]},
  "in_the_wild": {"file_path": "in-the-wild-images/x.png", "face_rect": [1, 2, 3, 4]}}' \
    "$idx" "$cat" "$rel" "$md5" "$pts"
}
{
  echo "{"
  entry 0 training && echo ","
  entry 1 training && echo ","
  entry 59999 training && echo ","
  entry 60000 validation && echo ","
  entry 60001 validation && echo ","
  entry 60002 validation
  echo "}"
} >"$root/ffhq-dataset-v2.json"
json="$root/ffhq-dataset-v2.json"

check default-validation 0 "data ffhq: .*/v.h5: 3 records \(FFHQ 60000..60002, validation\), 1x1, 3 selected of 6 entries, 0 missing skipped$" -- \
  "$BIN" data ffhq --root "$root" --json "$json" --out "$work/v.h5"
check info 0 "records +3 \(3 photos, 3 with landmarks\)" -- "$BIN" data info "$work/v.h5" --check-records
check info-identities 0 "identities +3 \(3 with a single record" -- "$BIN" data info "$work/v.h5"
check training-first-count 0 "data ffhq: .*: 2 records \(FFHQ 1..59999, training\)" -- \
  "$BIN" data ffhq --root "$root" --json "$json" --out "$work/t.h5" --category training --first 1 --count 2
check all-count 0 "data ffhq: .*: 2 records \(FFHQ 59999..60000, all\)" -- \
  "$BIN" data ffhq --root "$root" --json "$json" --out "$work/a.h5" --category all --first 59999 --count 2
check resize 0 "data ffhq: .*: 3 records .*, 16x16," -- \
  "$BIN" data ffhq --root "$root" --json "$json" --out "$work/r.h5" --resize 16 --prompt "a photo of a person"
check resize-info 0 "image size +16..16 x 16..16" -- "$BIN" data info "$work/r.h5" --check-records
check md5 0 "3 MD5 verified" -- "$BIN" data ffhq --root "$root" --json "$json" --out "$work/m.h5" --verify-md5
# Under mpirun only rank 0 writes; the file is complete for everyone afterwards.
check np2 0 "data ffhq: .*/n.h5: 3 records" -- \
  "$MPIEXEC" -np 2 --oversubscribe "$BIN" data ffhq --root "$root" --json "$json" --out "$work/n.h5"
check np2-info 0 "verified +3/3 records" -- "$BIN" data info "$work/n.h5" --check-records

# Bad input.
rm "$root/images1024x1024/60000/60001.png"
check missing-image 1 "images1024x1024/60000/60001.png: record 60001: image file not found" -- \
  "$BIN" data ffhq --root "$root" --json "$json" --out "$work/bad.h5"
check skip-missing 0 "data ffhq: .*: 2 records \(FFHQ 60000..60002, validation\), .*, 1 missing skipped" -- \
  "$BIN" data ffhq --root "$root" --json "$json" --out "$work/s.h5" --skip-missing
sed -i 's/"file_md5": "[0-9a-f]*"/"file_md5": "0123456789abcdef0123456789abcdef"/' "$json"
check md5-mismatch 1 "60000.png: record 60000: MD5 [0-9a-f]+ differs from image.file_md5" -- \
  "$BIN" data ffhq --root "$root" --json "$json" --out "$work/bad.h5" --verify-md5
sed -i 's/"pixel_size": \[1, 1\], "pixel_md5": "0", "face_landmarks": \[\[0.0, 0.0\], /"pixel_size": [1, 1], "pixel_md5": "0", "face_landmarks": [/' "$json"
check malformed 1 "ffhq-dataset-v2.json: record 0: \"image.face_landmarks\" must be 68" -- \
  "$BIN" data ffhq --root "$root" --json "$json" --out "$work/bad.h5" --category all
echo '[1, 2]' >"$work/array.json"
check not-an-object 1 "array.json: expected a JSON object keyed by image index" -- \
  "$BIN" data ffhq --root "$root" --json "$work/array.json" --out "$work/bad.h5"
check no-json 1 "nope.json: cannot read" -- "$BIN" data ffhq --root "$root" --json "$work/nope.json" --out "$work/bad.h5"
check bad-category 2 "category must be all, training or validation, got 'test'" -- \
  "$BIN" data ffhq --root "$root" --json "$json" --out "$work/bad.h5" --category test
check bad-count 2 "--count must be >= 1" -- "$BIN" data ffhq --root "$root" --json "$json" --out "$work/bad.h5" --count 0
check missing-root 2 "root" -- "$BIN" data ffhq --json "$json" --out "$work/bad.h5"
[ ! -e "$work/bad.h5" ] || { echo "FAIL a failed conversion left $work/bad.h5 behind"; fails=$((fails + 1)); }
check_summary
