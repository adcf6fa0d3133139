#!/usr/bin/env python3
"""Oracle for model/text and model/vision (CLIP tokenizer, encoders, preprocessing), a ctest fixture.

Usage: clip_oracle.py OUTDIR SEED   (SEED: an integer, or "random" for a fresh one, printed)

Writes OUTDIR/tokenizer/{vocab.json,merges.txt} (converted from open_clip's
bpe_simple_vocab_16e6.txt.gz), OUTDIR/tokens.json (prompts and transformers' CLIPTokenizer ids
with both SDXL paddings), and OUTDIR/models/<case>/{config.json,model.safetensors,io.safetensors}
for fixed and random CLIPTextModel / CLIPTextModelWithProjection configs, with perturbed weights,
input ids, every hidden state, pooled output and projection; the same for
CLIPVisionModelWithProjection (models/vision_*), CLIPModel logits (models/clip_model_fixed) and
CLIPImageProcessor outputs (preprocess.safetensors). LA_PARITY_SEED overrides SEED.
"""
import gzip
import importlib.util
import json
import os
import random
import sys
import unicodedata

import numpy as np
import torch
from safetensors.torch import save_file
import transformers
from transformers import (CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection,
                          CLIPTokenizer, CLIPVisionConfig, CLIPVisionModelWithProjection)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def bpe_gz_path():
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("open_clip is not installed (pip install --no-deps open-clip-torch)")
    return os.path.join(list(spec.submodule_search_locations)[0], "bpe_simple_vocab_16e6.txt.gz")


def write_hf_tokenizer(gz_path, out_dir):
    """open_clip's vocabulary construction, written as vocab.json + merges.txt."""
    lines = gzip.open(gz_path).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({v: i for i, v in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")


FIXED_PROMPTS = [
    "",
    "a photo of a cat",
    "A Photo Of A CAT, wearing SUNGLASSES!!!",
    "portrait of a man, 35mm, f/1.8, 4k, ultra-detailed, trending on artstation",
    "it's a dog's life; they're here, we've seen, I'm sure you'll see, he'd go",
    "don't   stop\tme\nnow",
    "numbers 1234567890 and 3.14159 and 1,000,000",
    "emoji 😀🎉 and symbols @#$%^&*()_+-=[]{}|;:\"<>?/~`",
    "café naïve résumé Ärger Straße ÉCOLE",
    "日本語のテキスト 中文 한국어 русский текст Ελληνικά",
    "superscripts x² y³ ½ ¼ Ⅻ ①",
    "''quoted'' ''s 's 'S 'RE 'll've",
    "a <|endoftext|> inside and <|startoftext|> too",
    "trailing spaces    ",
    "   leading spaces",
    "hyphen-ated words and under_scores and CamelCaseWords",
    "a very long prompt " + " ".join(f"word{i} token" for i in range(80)),
    "sks person, professional headshot, studio lighting, bokeh, highly detailed skin texture, "
    "sharp focus, 85mm lens, by greg rutkowski and alphonse mucha, masterpiece, best quality",
]

# Text outside Latin-1, each script the tokenizer must treat as the reference does (Unicode letter /
# number classes, NFC, full lowercase mapping): issue #13's list.
_LATIN = "Crème brûlée à São Paulo, Ångström, Dvořák, Łódź, Ærøskøbing, ǅungla, ﬁnance, ẞ, ſ 'ſ"
MULTISCRIPT_PROMPTS = [
    _LATIN,
    unicodedata.normalize("NFD", _LATIN),                      # decomposed accents: NFC first
    "e\u0301te\u0301 A\u030angstro\u0308m n\u0303 q\u0307\u0323 x\u0338",  # some compose, some cannot
    "Ελληνικά ΟΔΟΣ σοφίας Ὀδυσσεύς ΆΈΉ",                       # final sigma stays σ (per-char lowercase)
    "Привет, МИР! Ёжик в тумане, Ґанок, Її",
    "İstanbul'da IĞDIR ılık ŞÖYLE İİ i̇",                       # İ lowers to i + U+0307
    "مرحبا بالعالم ١٢٣ ۴۵۶ الشَّمْس، ؟",
    "שָׁלוֹם עוֹלָם בְּרֵאשִׁית בָּרָא",
    "नमस्ते दुनिया हिन्दी १२३ क़ ॐ",
    "สวัสดีชาวโลก ๑๒๓ ภาษาไทย",
    "東京タワー 北京 서울특별시 ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ ㈱ ﾊﾝｶｸ",
    "👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇯🇵 #️⃣ 🧑🏾‍🚀 ☺︎",
    "٣ ۳ ३ ৩ ੩ ૩ ୩ ௩ ౩ ೩ ൩ ๓ ໓ ༣ ၃ ៣ ᠓ ３ 𝟑 Ⅲ ⅲ ③ ¾ 〸 ᛯ 𐄇 ߃",
    "a\u200bb c\u200dd e\u200cf\ufeffg \x00\x01\x1f\x7f soft\u00adhyphen \u2028line\u2029para \u0085nel "
    "\u00a0nbsp \u3000ideo \u180emongol \u2060wj \u202eRTL\u202c \ufffd",
    "Kelvin \u212a Ohm \u2126 Angstrom \u212b ǈ ǋ ǲ ᾈ ᾼ ῌ ﬀ ﬃ ŉ",
]


def combining_mark_probes():
    """Every combining mark (Mn / Mc / Me) that Python's tables or the system's utf8proc (the
    product's Unicode tables) know, each twice: after a class-240 mark ("x\u0345" + m) and before a
    class-1 mark ("x" + m + "\u0334"). The reference's NFC reorders a pair only when it knows the
    mark's combining class, so these ids pin down which marks it treats as starters. 24 probes per
    prompt, separated by spaces (a space is a starter: the probes cannot interact)."""
    import ctypes
    import ctypes.util
    lib = ctypes.CDLL(ctypes.util.find_library("utf8proc") or "libutf8proc.so")
    lib.utf8proc_category.restype = ctypes.c_int
    utf8proc_marks = (6, 7, 8)  # UTF8PROC_CATEGORY_MN, MC, ME
    marks = [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF and
             (unicodedata.category(chr(cp)) in ("Mn", "Mc", "Me") or lib.utf8proc_category(cp) in utf8proc_marks)]
    probes = []
    for cp in marks:
        probes += ["x\u0345" + chr(cp), "x" + chr(cp) + "\u0334"]
    return [" ".join(probes[k:k + 24]) for k in range(0, len(probes), 24)], len(marks)


def unicode_sweep():
    """Every code point assigned in Python's Unicode tables (a stride through the largest ideograph
    and syllable blocks), in prompts of 48 consecutive characters: piece boundaries check the
    letter / number / other classes, ids check lowercase mapping and NFC. Surrogates, private use
    and unassigned code points are left out (their classes depend on the library's Unicode version)."""
    chars = []
    for cp in range(0x110000):
        c = chr(cp)
        cat = unicodedata.category(c)
        if cat in ("Cs", "Co", "Cn"):
            continue
        name = unicodedata.name(c, "")
        if (name.startswith("CJK UNIFIED IDEOGRAPH") or name.startswith("HANGUL SYLLABLE") or
                name.startswith("TANGUT") or name.startswith("CJK COMPATIBILITY IDEOGRAPH")) and cp % 37:
            continue
        chars.append(c)
    return ["".join(chars[k:k + 48]) for k in range(0, len(chars), 48)]


ALPHABET = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") + list(" \t\n',.!?-\"()") + \
    list("éüßøñçÅΩжя中文字😀²½") + list("İıΣςЁश्िं١٢٣שָׁ\u0301\u200d\u00a0ﬁ") + ["e\u0301", "👍🏽"]


def random_prompt(rng):
    n = rng.randint(0, 120)
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def tokenizer_cases(out_dir, rng):
    gz = bpe_gz_path()
    tok_dir = os.path.join(out_dir, "tokenizer")
    write_hf_tokenizer(gz, tok_dir)
    tok_l = CLIPTokenizer.from_pretrained(tok_dir)
    tok_g = CLIPTokenizer.from_pretrained(tok_dir, pad_token="!")
    prompts = FIXED_PROMPTS + MULTISCRIPT_PROMPTS + [random_prompt(rng) for _ in range(40)]
    cases = []
    for p in prompts:
        kw = dict(padding="max_length", max_length=77, truncation=True)
        cases.append({
            "text": p,
            "tokens": tok_l(p, add_special_tokens=False)["input_ids"],
            "ids_l": tok_l(p, **kw)["input_ids"],
            "ids_g": tok_g(p, **kw)["input_ids"],
        })
    mark_prompts, n_marks = combining_mark_probes()
    sweep = [{"text": p, "tokens": tok_l(p, add_special_tokens=False)["input_ids"]}
             for p in unicode_sweep() + mark_prompts]
    with open(os.path.join(out_dir, "tokens.json"), "w", encoding="utf-8") as f:
        json.dump({"bpe_gz": gz, "tokenizer_dir": tok_dir, "transformers": transformers.__version__,
                   "unicode": unicodedata.unidata_version, "marks": n_marks, "pad_g": tok_g.pad_token_id, "cases": cases,
                   "sweep": sweep}, f, ensure_ascii=False)
    return tok_l, tok_g


def perturb(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))


def model_case(out_dir, name, cfg, with_projection, gen, batch, seq, ids=None):
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    model = (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg).eval()
    perturb(model, gen)
    if ids is None:
        ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=gen)
        ids[ids == cfg.eos_token_id] = 0
        for b in range(batch):
            pos = int(torch.randint(1, seq, (1,), generator=gen))
            ids[b, pos] = cfg.eos_token_id
            ids[b, pos + 1:] = cfg.pad_token_id if b % 2 == 0 else cfg.eos_token_id
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    d = os.path.join(out_dir, "models", name)
    model.save_pretrained(d, safe_serialization=True)
    tensors = {"input_ids": ids.contiguous(), "last_hidden_state": out.last_hidden_state.contiguous()}
    for i, h in enumerate(out.hidden_states):
        tensors[f"hidden_states.{i}"] = h.contiguous()
    if with_projection:
        tensors["text_embeds"] = out.text_embeds.contiguous()
        inner = model.text_model(input_ids=ids)
        tensors["pooler_output"] = inner.pooler_output.contiguous()
    else:
        tensors["pooler_output"] = out.pooler_output.contiguous()
    save_file(tensors, os.path.join(d, "io.safetensors"))
    return {"name": name, "dir": d, "projection": with_projection, "layers": cfg.num_hidden_layers}, tensors


def vision_case(out_dir, name, cfg, gen, batch):
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    model = CLIPVisionModelWithProjection(cfg).eval()
    perturb(model, gen)
    pixels = torch.randn(batch, cfg.num_channels, cfg.image_size, cfg.image_size, generator=gen)
    with torch.no_grad():
        out = model(pixel_values=pixels, output_hidden_states=True)
        pooled = model.vision_model(pixel_values=pixels).pooler_output
    d = os.path.join(out_dir, "models", name)
    model.save_pretrained(d, safe_serialization=True)
    tensors = {"pixel_values": pixels, "last_hidden_state": out.last_hidden_state.contiguous(),
               "image_embeds": out.image_embeds.contiguous(), "pooler_output": pooled.contiguous()}
    for i, h in enumerate(out.hidden_states):
        tensors[f"hidden_states.{i}"] = h.clone()
    save_file(tensors, os.path.join(d, "io.safetensors"))
    return {"name": name, "dir": d, "layers": cfg.num_hidden_layers}


def clip_model_case(out_dir, name, text_cfg, vision_cfg, gen, batch):
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    cfg = CLIPConfig(text_config=text_cfg.to_dict(), vision_config=vision_cfg.to_dict(), projection_dim=24)
    model = CLIPModel(cfg).eval()
    perturb(model, gen)
    pixels = torch.randn(batch, 3, vision_cfg.image_size, vision_cfg.image_size, generator=gen)
    ids = torch.randint(3, text_cfg.vocab_size - 2, (batch, 12), generator=gen)
    ids[:, 7] = text_cfg.eos_token_id
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels)
    d = os.path.join(out_dir, "models", name)
    model.save_pretrained(d, safe_serialization=True)
    save_file({"input_ids": ids, "pixel_values": pixels, "logits_per_image": out.logits_per_image.contiguous(),
               "text_embeds": out.text_embeds.contiguous(), "image_embeds": out.image_embeds.contiguous()},
              os.path.join(d, "io.safetensors"))
    return {"name": name, "dir": d}


def smooth_image(h, w, rng):
    """Low-frequency RGB uint8 image (PIL resizes in uint8, so only smooth content is comparable)."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    chans = []
    for _ in range(3):
        f = [rng.uniform(1, 4), rng.uniform(1, 4)]
        ph = [rng.uniform(0, 6), rng.uniform(0, 6)]
        chans.append(0.5 + 0.4 * np.sin(2 * np.pi * f[0] * xx + ph[0]) * np.cos(2 * np.pi * f[1] * yy + ph[1]))
    return (np.stack(chans, -1) * 255).round().astype(np.uint8)


def preprocess_cases(out_dir, rng):
    """transformers' CLIPImageProcessor (PIL backend: resize shortest side 224 bicubic, crop, normalize)."""
    from PIL import Image
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    proc = CLIPImageProcessorPil()
    tensors = {}
    shapes = [(150, 210), (300, 240), (224, 224), (512, 512)] + [(rng.randint(64, 600), rng.randint(64, 600))
                                                                   for _ in range(3)]
    for i, (h, w) in enumerate(shapes):
        img = smooth_image(h, w, rng)
        tensors[f"image.{i}"] = torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255).contiguous()
        tensors[f"pixel_values.{i}"] = proc(images=Image.fromarray(img), return_tensors="pt")["pixel_values"].contiguous()
    save_file(tensors, os.path.join(out_dir, "preprocess.safetensors"))
    return len(shapes)


def main():
    out_dir = sys.argv[1]
    seed_arg = os.environ.get("LA_PARITY_SEED", sys.argv[2] if len(sys.argv) > 2 else "random")
    seed = random.SystemRandom().randint(0, 2**31 - 1) if seed_arg == "random" else int(seed_arg)
    print(f"clip_oracle: seed {seed} (reproduce: LA_PARITY_SEED={seed} ctest -R clip)", flush=True)
    os.makedirs(out_dir, exist_ok=True)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    tokenizer_cases(out_dir, rng)

    fixed_gen = torch.Generator().manual_seed(1234)
    cases = []
    # Fixed: CLIP-L-like (quick_gelu, legacy eos_token_id 2 -> argmax pooling) and
    # bigG-like (gelu, projection without bias, eos id pooling) sharing the same ids.
    cfg_l = CLIPTextConfig(vocab_size=1000, hidden_size=64, intermediate_size=256, num_hidden_layers=3,
                           num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
                           layer_norm_eps=1e-5, projection_dim=32, bos_token_id=0, eos_token_id=2, pad_token_id=1)
    cfg_g = CLIPTextConfig(vocab_size=1000, hidden_size=80, intermediate_size=320, num_hidden_layers=4,
                           num_attention_heads=5, max_position_embeddings=77, hidden_act="gelu",
                           layer_norm_eps=1e-5, projection_dim=48, bos_token_id=998, eos_token_id=999, pad_token_id=1)
    ids = torch.randint(3, 998, (2, 77), generator=fixed_gen)
    ids[:, 0] = 998
    ids[0, 9] = 999
    ids[0, 10:] = 999
    ids[1, 30] = 999
    ids[1, 31:] = 0
    # te1 pools by argmax(ids): put the largest id at the same place.
    c, _ = model_case(out_dir, "fixed_l", cfg_l, False, fixed_gen, 2, 77, ids)
    cases.append(c)
    c, _ = model_case(out_dir, "fixed_g", cfg_g, True, fixed_gen, 2, 77, ids)
    cases.append(c)
    for k in range(3):
        heads = rng.randint(1, 6)
        hidden = heads * rng.choice([8, 16, 24])
        vocab = rng.randint(50, 400)
        cfg = CLIPTextConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * rng.randint(1, 4),
                             num_hidden_layers=rng.randint(1, 4), num_attention_heads=heads,
                             max_position_embeddings=rng.randint(8, 77),
                             hidden_act=rng.choice(["quick_gelu", "gelu"]),
                             layer_norm_eps=rng.choice([1e-5, 1e-6]), projection_dim=rng.randint(4, 40),
                             bos_token_id=vocab - 2, eos_token_id=rng.choice([2, vocab - 1]), pad_token_id=1)
        seq = rng.randint(2, cfg.max_position_embeddings)
        c, _ = model_case(out_dir, f"random{k}", cfg, rng.random() < 0.5, gen, rng.randint(1, 3), seq)
        cases.append(c)
    vision = []
    vcfg = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                            image_size=28, patch_size=7, projection_dim=32, hidden_act="gelu", layer_norm_eps=1e-5)
    vision.append(vision_case(out_dir, "vision_fixed", vcfg, fixed_gen, 2))
    for k in range(2):
        heads = rng.randint(1, 4)
        patch = rng.choice([4, 7, 8])
        vcfg_r = CLIPVisionConfig(hidden_size=heads * rng.choice([8, 16]), intermediate_size=rng.choice([32, 64]),
                                  num_hidden_layers=rng.randint(1, 3), num_attention_heads=heads,
                                  image_size=patch * rng.randint(1, 5), patch_size=patch,
                                  projection_dim=rng.randint(4, 20), hidden_act=rng.choice(["quick_gelu", "gelu"]),
                                  layer_norm_eps=rng.choice([1e-5, 1e-6]))
        vision.append(vision_case(out_dir, f"vision_random{k}", vcfg_r, gen, rng.randint(1, 3)))
    tcfg = CLIPTextConfig(vocab_size=200, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=16, hidden_act="quick_gelu",
                          bos_token_id=198, eos_token_id=199, pad_token_id=1)
    clip_models = [clip_model_case(out_dir, "clip_model_fixed", tcfg, vcfg, fixed_gen, 3)]
    with open(os.path.join(out_dir, "models.json"), "w") as f:
        json.dump({"seed": seed, "cases": cases, "vision": vision, "clip_models": clip_models,
                   "preprocess": preprocess_cases(out_dir, rng)}, f, indent=1)
    print(f"clip_oracle: wrote {len(cases)} model cases to {out_dir}")


if __name__ == "__main__":
    main()
