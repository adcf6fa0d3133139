#!/usr/bin/env bash
# `lookahead model tokenize` on an SDXL-style folder (tokenizer/ with the real CLIP vocabulary,
# tokenizer_2/ the same with SDXL's "!" padding) that the CLIP parity oracle wrote: the ids it
# prints are transformers' CLIPTokenizer ids for both tokenizers, the truncation point and dropped
# text are right, and the table names both tokenizers.
# Usage: tokenize_test.sh LOOKAHEAD CLIP_DIR PYTHON
set -uo pipefail
BIN=$1 CLIP=$2 PY=$3
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/sdxl"
cp -r "$CLIP/tokenizer" "$T/sdxl/tokenizer"
cp -r "$CLIP/tokenizer" "$T/sdxl/tokenizer_2"
echo '{"pad_token": "!"}' >"$T/sdxl/tokenizer_2/special_tokens_map.json"
LONG=$(for i in $(seq 1 40); do printf 'word%d token ' "$i"; done)
PROMPTS=("a photo of sks person, smiling!" "İstanbul'da Ελληνικά ΟΔΟΣ नमस्ते 👨‍👩‍👧‍👦 e$(printf '\u0301')te" "$LONG")
args=()
for p in "${PROMPTS[@]}"; do args+=(--prompt "$p"); done
fails=0
if ! "$BIN" model tokenize --sdxl-folder "$T/sdxl" "${args[@]}" --json >"$T/out.jsonl"; then
  echo "FAIL: model tokenize --json exited non-zero"
  exit 1
fi
"$PY" - "$T/out.jsonl" "$T/sdxl" <<'PYEOF' || fails=$((fails + 1))
import json, sys
from transformers import CLIPTokenizer
rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
sdxl = sys.argv[2]
assert len(rows) == 6, f"expected 3 prompts x 2 tokenizers, got {len(rows)} lines"
ref = {"tokenizer/": CLIPTokenizer.from_pretrained(f"{sdxl}/tokenizer"),
       "tokenizer_2/": CLIPTokenizer.from_pretrained(f"{sdxl}/tokenizer_2")}
assert ref["tokenizer_2/"].pad_token_id == 0
for r in rows:
    tok = ref[r["tokenizer"]]
    want = tok(r["prompt"], padding="max_length", max_length=77, truncation=True)["input_ids"]
    assert r["ids"] == want, f"{r['tokenizer']} {r['prompt']!r}: ids {r['ids']} != transformers {want}"
    full = tok(r["prompt"], add_special_tokens=False)["input_ids"]
    assert r["n_tokens"] == len(full) and r["kept"] == min(len(full), 75), (r["n_tokens"], r["kept"], len(full))
    assert r["truncated"] == (len(full) > 75)
    assert r["tokens"] == tok.convert_ids_to_tokens(want), r["tokens"]
    if r["truncated"]:
        assert r["dropped_text"].replace(" ", "") == tok.decode(full[75:]).replace(" ", ""), r["dropped_text"]
truncated = [r for r in rows if r["truncated"]]
assert len(truncated) == 2, "the long prompt must be truncated under both tokenizers"
print(f"ok   ids, tokens and truncation of {len(rows)} prompt/tokenizer pairs equal transformers'")
PYEOF
out=$("$BIN" model tokenize --sdxl-folder "$T/sdxl" "${args[@]}")
for regex in "^== tokenizer/ \(max_length 77, pad 49407" "^== tokenizer_2/ \(max_length 77, pad 0 = '!'" \
  "TRUNCATED to 75: [0-9]+ dropped from position 76: \"word 2 2 token word 2 3" "kept text: \"a photo of sks person , smiling !\""; do
  if grep -Eq "$regex" <<<"$out"; then echo "ok   /$regex/"; else echo "FAIL: table lacks /$regex/"; fails=$((fails + 1)); fi
done
# Bad input: a folder that is not a tokenizer, no tokenizer at all.
if "$BIN" model tokenize --tokenizer "$T" --prompt x >"$T/err" 2>&1 || ! grep -q "has no vocab.json and merges.txt" "$T/err"; then
  echo "FAIL: a folder without vocab.json is not refused by name:"; cat "$T/err"; fails=$((fails + 1))
fi
"$BIN" model tokenize --prompt x >"$T/err" 2>&1
rc=$?
if [ $rc -ne 2 ] || ! grep -q "give --sdxl-folder or at least one --tokenizer" "$T/err"; then
  echo "FAIL: no tokenizer: exit $rc (want 2)"; cat "$T/err"; fails=$((fails + 1))
fi
[ $fails -eq 0 ] && echo "tokenize: all checks passed"
exit $fails
