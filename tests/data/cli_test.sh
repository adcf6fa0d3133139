#!/usr/bin/env bash
# `lookahead data synth|pack|info` end to end: a synthetic set with precomputed tensors, packing a
# few PNGs + JSONL, verifying both, and bad input ending with a clear message and exit code.
# Usage: cli_test.sh MPIEXEC LOOKAHEAD
set -uo pipefail
MPIEXEC=$1 BIN=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out="$work/out.txt"
source "$(dirname "${BASH_SOURCE[0]}")/../check.sh"
check synth 0 "data synth: .*/s.h5: 12 records, 4 identities, 32x32" -- \
  "$BIN" data synth --out "$work/s.h5" --identities 4 --per-identity 3 --size 32 --latent-size 4 \
  --prompt-embeds 3x24 --pooled 16 --clip-features 5x12 --seed 1
check synth-info 0 "latents \[N,4,4,4\] Float" -- "$BIN" data info "$work/s.h5" --check-records
check synth-info-clip 0 "clip_features \[N,5,12\]" -- "$BIN" data info "$work/s.h5"
check synth-verified 0 "verified +12/12 records" -- "$BIN" data info "$work/s.h5" --check-records
# Under mpirun only rank 0 writes; the file is complete for everyone afterwards.
check synth-np2 0 "data synth: .*: 6 records" -- \
  "$MPIEXEC" -np 2 --oversubscribe "$BIN" data synth --out "$work/m.h5" --identities 2 --per-identity 3 --size 16
check synth-np2-info 0 "records +6 " -- "$BIN" data info "$work/m.h5"

# A few PNGs (a minimal valid 1x1 PNG, so the test needs no image tool) and a JSONL file that mixes
# integer and string identities, optional fields and a blank line.
mkdir -p "$work/img"
png_1x1() {  # a valid 1x1 RGB PNG
  printf '\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef\x00\x00\x00\x00IEND\xaeB`\x82' >"$1"
}
for f in a b c d; do png_1x1 "$work/img/$f.png"; done
cat >"$work/meta.jsonl" <<'JSONL'
{"file": "a.png", "identity": 3, "prompt": "a photo of a face", "photo": true, "landmarks": [[0,0],[1,0],[0.5,0.5],[0,1],[1,1]]}
{"file": "b.png", "identity": 3, "prompt": "an oil painting of a face", "photo": false}

{"file": "c.png", "identity": "alice", "prompt": "a photo of alice"}
{"file": "d.png", "identity": "alice"}
JSONL
check pack 0 "data pack: .*/p.h5: 4 records, 2 identities, 3 photos, 1 with landmarks" -- \
  "$BIN" data pack --images "$work/img" --meta "$work/meta.jsonl" --out "$work/p.h5"
check pack-info 0 "pairs +3" -- "$BIN" data info "$work/p.h5" --check-records

# A sharded set: two synth files as shards of a manifest (sizes as the manifest states them).
mkdir -p "$work/shards"
"$BIN" data synth --out "$work/shards/a.h5" --identities 2 --per-identity 3 --size 16 --seed 2 >/dev/null
"$BIN" data synth --out "$work/shards/b.h5" --identities 2 --per-identity 3 --size 16 --seed 3 >/dev/null
cat >"$work/set.json" <<JSON
{"format": "lookahead-trainingset-manifest", "version": 1, "generator": "cli_test",
 "shards": [{"path": "shards/a.h5", "records": 6, "bytes": $(stat -c %s "$work/shards/a.h5")},
            {"path": "shards/b.h5", "records": 6, "bytes": $(stat -c %s "$work/shards/b.h5")}]}
JSON
check manifest-info 0 "manifest +2 shards" -- "$BIN" data info "$work/set.json" --check-records
check manifest-verified 0 "verified +12/12 records" -- "$BIN" data info "$work/set.json" --check-records
sed -i 's/"records": 6, "bytes"/"records": 7, "bytes"/' "$work/set.json"
check manifest-wrong-count 1 "set.json: shard 0 \('shards/a.h5'\): .* has 6 records, the manifest says 7" -- \
  "$BIN" data info "$work/set.json"

# Bad input.
echo '{"file": "missing.png", "identity": 1}' >"$work/bad.jsonl"
check pack-missing-image 1 "missing.png: cannot read" -- \
  "$BIN" data pack --images "$work/img" --meta "$work/bad.jsonl" --out "$work/bad.h5"
echo '{"file": "a.png"}' >"$work/noid.jsonl"
check pack-no-identity 1 "line 1: needs an \"identity\"" -- \
  "$BIN" data pack --images "$work/img" --meta "$work/noid.jsonl" --out "$work/bad.h5"
printf 'not an image' >"$work/img/junk.png"
echo '{"file": "junk.png", "identity": 1}' >"$work/junk.jsonl"
check pack-junk-image 1 "junk.png: .*neither JPEG nor PNG" -- \
  "$BIN" data pack --images "$work/img" --meta "$work/junk.jsonl" --out "$work/bad.h5"
check info-missing 1 "nope.h5: no such file" -- "$BIN" data info "$work/nope.h5"
head -c 3000 "$work/s.h5" >"$work/cut.h5"
check info-truncated 1 "cut.h5" -- "$BIN" data info "$work/cut.h5"
check bad-shape 2 "--prompt-embeds must be 2 sizes" -- "$BIN" data synth --out "$work/x.h5" --prompt-embeds 3x
check no-subcommand 2 "expected a subcommand pack, synth or info" -- "$BIN" data
check missing-out 2 "out" -- "$BIN" data synth
[ ! -e "$work/bad.h5" ] || { echo "FAIL a failed pack left $work/bad.h5 behind"; fails=$((fails + 1)); }
check_summary
