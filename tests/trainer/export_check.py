#!/usr/bin/env python3
"""Loads the trainer's exported IP-Adapter (DIR/export/ip_adapter.safetensors, original checkpoint
layout: `image_proj.*` Resampler keys, `ip_adapter.{2j+1}.to_k_ip/to_v_ip`) with diffusers' own
IP-Adapter loader (`UNet2DConditionModel._load_ip_adapter_weights`, which converts the Resampler
with `_convert_ip_adapter_image_proj_to_diffusers` and the attention layers with
`_convert_ip_adapter_attn_to_diffusers`) into a UNet built from the tiny config of
LookaheadModelConfig::tiny(), then checks that every tensor of the file landed in the model with
its exact values and that every IP-Adapter parameter of the model came from the file.

diffusers infers the Resampler's embed/output/hidden dims, heads (to_q rows // 64) and num_queries
from the weights, but not its depth: `IPAdapterPlusImageProjection` is built with its default
depth=4 (and ffn_ratio=4). The tiny Resampler has depth 1, so the unmodified loader fails in
`load_state_dict(strict=True)` with missing `layers.1..3.*` keys. The script checks that exact
failure, then reruns the same loader with the depth taken from the file (the only change).

  export_check.py IP_ADAPTER_SAFETENSORS LOOKAHEAD_MODEL_CPP
  export_check.py IP_ADAPTER_SAFETENSORS --unet-folder DIFFUSERS_UNET_FOLDER

The second form is the full-size check: the UNet is `from_pretrained` of a diffusers folder (the
SDXL base that `lookahead model init` writes) in bf16, so the file's values are compared in bf16,
and the Resampler must be IP-Adapter Plus Face SDXL's (depth 4, which diffusers assumes).
"""
import functools
import json
import re
import sys

import torch
from safetensors.torch import load_file


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def tiny_unet_config(cpp_path):
    src = open(cpp_path).read()
    m = re.search(r'LookaheadModelConfig::tiny\(\).*?from_json\(R"\((\{.*?\})\)"', src, re.S)
    if not m:
        fail(f"no tiny UNet config JSON found in {cpp_path}")
    return json.loads(m.group(1))


def to_diffusers_name(key, value):
    """Our independent mapping of one `image_proj.*` key to the diffusers parameter name(s)."""
    k = key[len("image_proj."):]
    m = re.fullmatch(r"layers\.(\d+)\.(.*)", k)
    if not m:
        return {k: value}  # latents, proj_in, proj_out, norm_out keep their names
    i, rest = m.groups()
    p = f"layers.{i}."
    table = {"0.norm1.weight": "ln0.weight", "0.norm1.bias": "ln0.bias", "0.norm2.weight": "ln1.weight",
             "0.norm2.bias": "ln1.bias", "0.to_q.weight": "attn.to_q.weight", "0.to_out.weight": "attn.to_out.0.weight",
             "1.0.weight": "ff.0.weight", "1.0.bias": "ff.0.bias", "1.1.weight": "ff.1.net.0.proj.weight",
             "1.3.weight": "ff.1.net.2.weight"}
    if rest == "0.to_kv.weight":
        kk, vv = value.chunk(2, dim=0)
        return {p + "attn.to_k.weight": kk, p + "attn.to_v.weight": vv}
    if rest not in table:
        fail(f"unexpected Resampler key {key}")
    return {p + table[rest]: value}


SDXL_RESAMPLER = dict(dim=1280, inner=1280, depth=4, num_queries=16, embedding_dim=1280, output_dim=2048)


def main(path, cpp_path=None, unet_folder=None):
    from diffusers import UNet2DConditionModel
    import diffusers.loaders.unet as unet_loader

    flat = load_file(path)
    image_proj = {k[len("image_proj."):]: v for k, v in flat.items() if k.startswith("image_proj.")}
    ip_layers = {k[len("ip_adapter."):]: v for k, v in flat.items() if k.startswith("ip_adapter.")}
    other = [k for k in flat if not k.startswith(("image_proj.", "ip_adapter."))]
    if other:
        fail(f"keys outside image_proj./ip_adapter.: {other}")

    # The Resampler hyper-parameters, as the file says them (expected: the tiny model's).
    depth = 1 + max(int(k.split(".")[1]) for k in image_proj if k.startswith("layers."))
    hp = dict(dim=image_proj["latents"].shape[2], inner=image_proj["layers.0.0.to_q.weight"].shape[0],
              depth=depth, num_queries=image_proj["latents"].shape[1], embedding_dim=image_proj["proj_in.weight"].shape[1],
              output_dim=image_proj["proj_out.weight"].shape[0])
    want = SDXL_RESAMPLER if unet_folder else dict(dim=16, inner=64, depth=1, num_queries=4, embedding_dim=12,
                                                   output_dim=24)
    if hp != want:
        fail(f"Resampler hyper-parameters {hp}, expected the {'SDXL' if unet_folder else 'tiny'} model's {want}")
    print(f"export_check: {len(flat)} tensors, Resampler {hp}, {len(ip_layers)} ip_adapter tensors")

    if unet_folder:
        def build():
            return UNet2DConditionModel.from_pretrained(unet_folder, torch_dtype=torch.bfloat16).eval()
    else:
        cfg = tiny_unet_config(cpp_path)

        def build():
            torch.manual_seed(0)
            return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, **cfg).eval()
    unet = build()
    dtype = unet.dtype
    state = {"image_proj": dict(image_proj), "ip_adapter": dict(ip_layers)}

    # 1. The unmodified loader: diffusers builds the Resampler with depth 4.
    try:
        unet._load_ip_adapter_weights([state], low_cpu_mem_usage=False)
        unmodified = "loaded"
    except RuntimeError as e:
        msg = str(e)
        if "Missing key(s)" not in msg or "layers.1." not in msg:
            fail(f"diffusers' loader failed for another reason than the assumed depth 4: {msg[:500]}")
        unmodified = "missing layers.1-3 (depth 4 assumed)"
        unet = build()
    print(f"export_check: diffusers' unmodified loader: {unmodified}")

    # 2. The same loader with the depth from the file.
    if unmodified != "loaded":
        orig = unet_loader.IPAdapterPlusImageProjection
        unet_loader.IPAdapterPlusImageProjection = functools.partial(orig, depth=depth)
        try:
            unet._load_ip_adapter_weights([state], low_cpu_mem_usage=False)
        finally:
            unet_loader.IPAdapterPlusImageProjection = orig

    # Resampler: every file tensor is in the model with its values; every model parameter is from the file.
    proj = unet.encoder_hid_proj.image_projection_layers[0]
    model_sd = proj.state_dict()
    expected = {}
    for k, v in flat.items():
        if k.startswith("image_proj."):
            expected.update(to_diffusers_name(k, v))
    missing = sorted(set(expected) - set(model_sd))
    extra = sorted(set(model_sd) - set(expected))
    if missing or extra:
        fail(f"Resampler: file tensors not in the model {missing}, model tensors not from the file {extra}")
    for name, v in expected.items():
        if model_sd[name].shape != v.shape or not torch.equal(model_sd[name], v.to(dtype)):
            fail(f"Resampler {name} differs from the file")
    print(f"export_check: Resampler: {len(model_sd)} diffusers tensors equal the file's {len(image_proj)}")

    # Attention layers: the attn2 processors in diffusers' order carry ip_adapter.{2j+1}.
    procs = [(n, p) for n, p in unet.attn_processors.items() if hasattr(p, "to_k_ip")]
    file_ids = sorted({int(k.split(".")[0]) for k in ip_layers})
    if len(procs) != len(file_ids) or file_ids != list(range(1, 2 * len(procs), 2)):
        fail(f"{len(procs)} IP-Adapter processors in the UNet, file ids {file_ids}")
    used = 0
    for (name, proc), key in zip(procs, file_ids):
        if not name.endswith("attn2.processor"):
            fail(f"processor {name} is not a cross-attention")
        for kind in ("to_k_ip", "to_v_ip"):
            got = getattr(proc, kind)[0].weight
            ref = ip_layers[f"{key}.{kind}.weight"]
            if got.shape != ref.shape or not torch.equal(got, ref.to(dtype)):
                fail(f"{name}.{kind} differs from ip_adapter.{key}.{kind}.weight")
            used += 1
        if len(proc.to_k_ip) != 1 or list(proc.num_tokens) != [hp["num_queries"]]:
            fail(f"{name}: {len(proc.to_k_ip)} adapters, num_tokens {proc.num_tokens}")
    if used != len(ip_layers):
        fail(f"{used} of {len(ip_layers)} ip_adapter tensors consumed")
    print(f"export_check: attention: {used} to_k_ip/to_v_ip tensors in {len(procs)} processors equal the file's")

    # And the loaded model runs with an image embedding.
    cross = unet.config.cross_attention_dim
    pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
    with torch.no_grad():
        out = unet(torch.randn(1, 4, 8, 8, dtype=dtype), torch.tensor([500.0]),
                   encoder_hidden_states=torch.randn(1, 3, cross, dtype=dtype),
                   added_cond_kwargs={"text_embeds": torch.randn(1, pooled, dtype=dtype),
                                      "time_ids": torch.ones(1, 6, dtype=dtype) * 64,
                                      "image_embeds": [torch.randn(1, 1, 5, hp["embedding_dim"], dtype=dtype)]}).sample
    if not torch.isfinite(out).all():
        fail("the UNet with the loaded IP-Adapter gives non-finite output")
    print(f"PASS: export_check: every tensor of {path} loaded into diffusers with its values")


if __name__ == "__main__":
    if len(sys.argv) == 3:
        main(sys.argv[1], cpp_path=sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[2] == "--unet-folder":
        main(sys.argv[1], unet_folder=sys.argv[3])
    else:
        sys.exit(__doc__)
