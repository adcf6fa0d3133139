#!/usr/bin/env python3
"""Oracle for ClipTokenizer::byte_level (the tiny conditioner's tokenizer), a ctest fixture.

Usage: byte_tokenizer_oracle.py OUTDIR

Writes OUTDIR/tokenizer/{vocab.json,merges.txt}: the 256 byte-unicode symbols (GPT-2 order), the
same 256 with "</w>", then <|startoftext|> and <|endoftext|> (ids 512, 513), and a merges file
with only its header (no merges). OUTDIR/tokens.json lists prompts with the ids transformers'
CLIPTokenizer gives them from those files, padded with <|endoftext|> ("eos") and with "!" ("bang",
SDXL's tokenizer_2 convention), max_length 77 and 8 (truncation).
"""
import json
import os
import sys

from transformers import CLIPTokenizer


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


PROMPTS = [
    "a photo of a face",
    "A Photo   of  a FACE, smiling!",
    "watercolor painting; (portrait) -- 'style' it's 42% done?",
    "Ünïcødé café — naïve 東京 😀 emoji",
    "tabs\tand\nnewlines   collapse",
    "",
    "!!! wow !!!",
    "<|startoftext|>literal specials<|endoftext|> inside",
    "a very long prompt that will certainly be truncated because it keeps going and going " * 3,
]


def main():
    out = sys.argv[1]
    tok_dir = os.path.join(out, "tokenizer")
    os.makedirs(tok_dir, exist_ok=True)
    symbols = bytes_to_unicode()
    vocab = {}
    for s in symbols:
        vocab[s] = len(vocab)
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    assert vocab["<|startoftext|>"] == 512 and vocab["<|endoftext|>"] == 513
    with open(os.path.join(tok_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(tok_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
    vocab_file, merges_file = os.path.join(tok_dir, "vocab.json"), os.path.join(tok_dir, "merges.txt")
    tokenizers = {
        "eos": CLIPTokenizer(vocab_file, merges_file),
        "bang": CLIPTokenizer(vocab_file, merges_file, pad_token="!"),
    }
    cases = []
    for text in PROMPTS:
        for pad, tok in tokenizers.items():
            for length in (77, 8):
                ids = tok(text, padding="max_length", max_length=length, truncation=True)["input_ids"]
                cases.append({"text": text, "pad": pad, "max_length": length, "ids": list(ids)})
    with open(os.path.join(out, "tokens.json"), "w", encoding="utf-8") as f:
        json.dump({"cases": cases}, f, ensure_ascii=False, indent=1)
    print(f"byte tokenizer oracle: {len(cases)} cases -> {out}")


if __name__ == "__main__":
    main()
