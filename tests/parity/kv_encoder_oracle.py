#!/usr/bin/env python3
"""Oracle for the KV-encoder parity test (LCM-Lookahead §4, written from the paper and docs/models.md, not from
the original repository). diffusers builds a small random UNet2DConditionModel of the SDXL family (three
stages, last up block without attention) and an IP-Adapter Plus; the KV encoder and the decoder are
expressed as custom attention processors on that same diffusers UNet:

- encoder pass (reference stream): attn1 of every transformer block up to up_blocks[n_up - 2]
  records K = W_k(attn1)·n1 + up(down(n1)), V likewise (the extract_kv1 LoRAs, not the encoder
  LoRA), n1 = norm1(x) = the processor's input, and the IP K/V to_k_ip/to_v_ip(Resampler tokens);
  attention of attn1/attn2 (no IP branch) runs with the encoder LoRAs on to_q/to_k/to_v/to_out.0
  of every block in range but the last one;
- decoder pass (target stream): attn1 attends over cat([K_x, K_ref]) / cat([V_x, V_ref]) along the
  tokens; attn2 adds ip_scale·SDPA(q, K_ip, V_ip) before to_out;
- `sample_no_reference`: the decoder without the concatenation (IP kept); `sample_lcm`: the decoder
  on a copy of the UNet whose weights have the kohya LoRA merged (W += scale·alpha/r·up@down).

  kv_encoder_oracle.py make OUTDIR SEED [--fixed]   writes OUTDIR/{unet/,ip_adapter,encoder,lora,inputs,expected}.safetensors
  kv_encoder_oracle.py compare EXPECTED OURS TOL     exits 1 when an output is missing or max |a - b| > TOL
"""
import copy
import json
import os
import random
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unet_oracle import build_unet, make_kohya_lora, lora_targets  # noqa: E402


def sdxl_like_config(rng, fixed):
    """Three stages like SDXL: DownBlock2D + two CrossAttn down blocks, mirrored up blocks whose
    last one has no attention."""
    if fixed:
        return dict(block_out_channels=[16, 32, 64],
                    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], layers_per_block=1,
                    transformer_layers_per_block=[1, 1, 2], attention_head_dim=[1, 2, 4], cross_attention_dim=24,
                    norm_num_groups=8, text_embeds_dim=16, addition_time_embed_dim=8, size=(12, 8), batch=2)
    groups = rng.choice([4, 8])
    channels = [groups * rng.choice([2, 4]) * (2 ** i) for i in range(3)]
    heads = [rng.choice([1, 2, 4]) for _ in range(3)]
    channels = [c if c % h == 0 else c * h for c, h in zip(channels, heads)]
    h = 4 * rng.choice([2, 3]) + (rng.choice([0, 1]) if rng.random() < 0.3 else 0)
    return dict(block_out_channels=channels,
                down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                layers_per_block=rng.choice([1, 2]), transformer_layers_per_block=[1] + [rng.choice([1, 2])
                                                                                       for _ in range(2)],
                attention_head_dim=heads, cross_attention_dim=rng.choice([24, 48]), norm_num_groups=groups,
                text_embeds_dim=rng.choice([8, 16]), addition_time_embed_dim=rng.choice([4, 8]),
                size=(h, 4 * rng.choice([2, 3])), batch=rng.choice([1, 2]))


def transformer_blocks(unet):
    """BasicTransformerBlock paths in module order down blocks, mid block, up blocks (our block
    index; diffusers registers up_blocks before mid_block)."""
    from diffusers.models.attention import BasicTransformerBlock
    names = [n for n, m in unet.named_modules() if isinstance(m, BasicTransformerBlock)]
    group = lambda n: 0 if n.startswith("down_blocks.") else 1 if n.startswith("mid_block.") else 2
    return sorted(names, key=lambda n: (group(n), names.index(n)))


def up_block_of(path):
    return int(path.split(".")[1]) if path.startswith("up_blocks.") else -1


class State:
    """What the processors of one UNet share: the pass being run and its tensors."""

    def __init__(self):
        self.mode = None          # "encoder" | "decoder"
        self.encoder_lora = {}    # layer path -> (down [r, in], up [out, r])
        self.kv_heads = {}        # block index -> (k_down, k_up, v_down, v_up)
        self.ip_weights = {}      # attn2 path -> (W_k_ip, W_v_ip)
        self.ip_tokens = None     # [B, T, D_ip] (encoder pass)
        self.recorded = {}        # block index -> dict(k, v, ip_k, ip_v)
        self.reference = None     # block index -> dict(k, v, ip_k, ip_v) for the decoder (k/v may be None)
        self.ip_scale = 1.0


def attend(attn, q, k, v):
    b, n, c = q.shape
    h = attn.heads
    d = c // h
    split = lambda t: t.view(b, t.shape[1], h, d).transpose(1, 2)
    o = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return o.transpose(1, 2).reshape(b, n, c)


class Processor:
    def __init__(self, state, path, block_index, in_range):
        self.state, self.path, self.block, self.in_range = state, path, block_index, in_range
        self.self_attention = path.endswith("attn1")

    def linear(self, layer, name, x):
        y = layer(x)
        if self.state.mode == "encoder":
            lora = self.state.encoder_lora.get(f"{self.path}.{name}")
            if lora is not None:
                down, up = lora
                y = y + F.linear(F.linear(x, down), up)  # alpha = rank: factor 1
        return y

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        st = self.state
        x = hidden_states
        ctx = x if encoder_hidden_states is None else encoder_hidden_states
        if st.mode == "encoder" and self.in_range and self.self_attention:
            kd, ku, vd, vu = st.kv_heads[self.block]
            rec = st.recorded.setdefault(self.block, {})
            rec["k"] = F.linear(x, attn.to_k.weight) + F.linear(F.linear(x, kd), ku)
            rec["v"] = F.linear(x, attn.to_v.weight) + F.linear(F.linear(x, vd), vu)
        if st.mode == "encoder" and self.in_range and not self.self_attention:
            wk, wv = st.ip_weights[self.path]
            rec = st.recorded.setdefault(self.block, {})
            rec["ip_k"] = F.linear(st.ip_tokens, wk)
            rec["ip_v"] = F.linear(st.ip_tokens, wv)
        q = self.linear(attn.to_q, "to_q", x)
        k = self.linear(attn.to_k, "to_k", ctx)
        v = self.linear(attn.to_v, "to_v", ctx)
        shared = st.reference.get(self.block) if st.mode == "decoder" and st.reference is not None else None
        if shared is not None and self.self_attention and shared.get("k") is not None:
            k = torch.cat([k, shared["k"]], 1)
            v = torch.cat([v, shared["v"]], 1)
        o = attend(attn, q, k, v)
        if shared is not None and not self.self_attention:
            o = o + st.ip_scale * attend(attn, q, shared["ip_k"], shared["ip_v"])
        return self.linear(attn.to_out[0], "to_out.0", o)


def install(unet, state, blocks, last_up):
    procs = {}
    for name in unet.attn_processors:
        path = name[:-len(".processor")]
        block_path = path.rsplit(".", 1)[0]
        index = blocks.index(block_path)
        procs[name] = Processor(state, path, index, up_block_of(block_path) <= last_up)
    unet.set_attn_processor(procs)


def run(unet, x):
    with torch.no_grad():
        return unet(x["sample"], x["timestep"], encoder_hidden_states=x["encoder_hidden_states"],
                    added_cond_kwargs={"text_embeds": x["text_embeds"], "time_ids": x["time_ids"]}).sample


def make_ip_adapter(outdir, unet, cfg, rng):
    """Random IP-Adapter Plus in the flat checkpoint layout; returns (Resampler module, attn2 path ->
    (W_k_ip, W_v_ip), feature dim)."""
    from diffusers import UNet2DConditionModel
    dim = 64 * rng.choice([1, 2])
    emb, queries, depth, mult = rng.choice([32, 40]), rng.choice([4, 16]), 4, 4
    out_dim = cfg["cross_attention_dim"]
    r = lambda *shape: torch.randn(*shape) * 0.2
    image_proj = {"latents": torch.randn(1, queries, dim) / dim ** 0.5,
                  "proj_in.weight": r(dim, emb), "proj_in.bias": r(dim),
                  "proj_out.weight": r(out_dim, dim), "proj_out.bias": r(out_dim),
                  "norm_out.weight": 1 + r(out_dim), "norm_out.bias": r(out_dim)}
    for i in range(depth):
        p = f"layers.{i}."
        image_proj.update({p + "0.norm1.weight": 1 + r(dim), p + "0.norm1.bias": r(dim),
                           p + "0.norm2.weight": 1 + r(dim), p + "0.norm2.bias": r(dim),
                           p + "0.to_q.weight": r(dim, dim), p + "0.to_kv.weight": r(2 * dim, dim),
                           p + "0.to_out.weight": r(dim, dim),
                           p + "1.0.weight": 1 + r(dim), p + "1.0.bias": r(dim),
                           p + "1.1.weight": r(dim * mult, dim), p + "1.3.weight": r(dim, dim * mult)})
    ip_layers, by_path = {}, {}
    for key, name in enumerate(unet.attn_processors):  # numbered among all attentions, diffusers' order
        if name.endswith("attn2.processor"):
            path = name[:-len(".processor")]
            channels = unet.get_submodule(path).to_q.out_features
            wk, wv = r(channels, out_dim), r(channels, out_dim)
            ip_layers[f"{key}.to_k_ip.weight"], ip_layers[f"{key}.to_v_ip.weight"] = wk, wv
            by_path[path] = (wk, wv)
    flat = {f"image_proj.{k}": v.contiguous() for k, v in image_proj.items()}
    flat.update({f"ip_adapter.{k}": v.contiguous() for k, v in ip_layers.items()})
    save_file(flat, f"{outdir}/ip_adapter.safetensors")
    # diffusers' own Resampler (IPAdapterPlusImageProjection), loaded into a separate UNet copy.
    holder = UNet2DConditionModel.from_pretrained(f"{outdir}/unet").eval()
    holder._load_ip_adapter_weights([{"image_proj": image_proj, "ip_adapter": ip_layers}], low_cpu_mem_usage=False)
    return holder.encoder_hid_proj.image_projection_layers[0], by_path, emb


def make(outdir, seed, fixed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    cfg = sdxl_like_config(rng, fixed)
    unet = build_unet(cfg)
    unet.save_pretrained(f"{outdir}/unet", safe_serialization=True)
    blocks = transformer_blocks(unet)
    last_up = len(unet.up_blocks) - 2
    in_range = [p for p in blocks if up_block_of(p) <= last_up]
    assert in_range == blocks[:len(in_range)] and len(in_range) > 1
    resampler, ip_by_path, emb = make_ip_adapter(outdir, unet, cfg, rng)

    # Encoder trainables in our layout, nonzero down and up.
    rank, kv_rank = rng.choice([2, 4]), rng.choice([2, 4])
    state = State()
    state.ip_weights = ip_by_path
    trainables = {}
    for i, bp in enumerate(in_range):
        block = unet.get_submodule(bp)
        c = block.attn1.to_k.out_features
        heads = tuple(torch.randn(*s) * 0.2 for s in ((kv_rank, c), (c, kv_rank), (kv_rank, c), (c, kv_rank)))
        state.kv_heads[i] = heads
        for name, t in zip(("to_k.lora_down", "to_k.lora_up", "to_v.lora_down", "to_v.lora_up"), heads):
            trainables[f"{bp}.extract_kv1.{name}.weight"] = t
        if bp == in_range[-1]:
            continue  # the last block in range has no encoder LoRA
        for attn in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v", "to_out.0"):
                layer = unet.get_submodule(f"{bp}.{attn}.{proj}")
                down = torch.randn(rank, layer.in_features) * 0.2
                up = torch.randn(layer.out_features, rank) * 0.2
                state.encoder_lora[f"{bp}.{attn}.{proj}"] = (down, up)
                trainables[f"{bp}.{attn}.{proj}.lora_down.weight"] = down
                trainables[f"{bp}.{attn}.{proj}.lora_up.weight"] = up
    save_file({k: v.contiguous() for k, v in trainables.items()}, f"{outdir}/encoder.safetensors")

    b, (h, w) = cfg["batch"], cfg["size"]
    time_ids = lambda: torch.tensor([[1024, 1024, 0, 0, 1024, 1024]] * b, dtype=torch.float32) * torch.rand(b, 1).add(.5)
    t = torch.tensor([rng.choice([1, 259, 500.5, 999]) for _ in range(b)], dtype=torch.float32)
    inputs = {
        "ref_sample": torch.randn(b, 4, h, w), "ref_timestep": t.clone(),
        "ref_encoder_hidden_states": torch.randn(b, rng.choice([3, 5]), cfg["cross_attention_dim"]),
        "ref_text_embeds": torch.randn(b, cfg["text_embeds_dim"]), "ref_time_ids": time_ids(),
        "sample": torch.randn(b, 4, h, w), "timestep": t,
        "encoder_hidden_states": torch.randn(b, rng.choice([5, 7]), cfg["cross_attention_dim"]),
        "text_embeds": torch.randn(b, cfg["text_embeds_dim"]), "time_ids": time_ids(),
        "image_embeds": torch.randn(b, rng.choice([5, 9]), emb),
    }
    drop_p = 0.3 if fixed else rng.choice([0.0, 0.3])
    drop_seed = rng.randrange(1 << 30)
    if drop_p > 0:
        inputs["drop_p"] = torch.tensor(drop_p, dtype=torch.float64)
        inputs["drop_seed"] = torch.tensor(drop_seed, dtype=torch.int64)
    save_file(inputs, f"{outdir}/inputs.safetensors")
    ip_scale = 0.75 if fixed else rng.choice([0.5, 1.0])
    lora_scale = rng.choice([0.5, 1.0])

    install(unet, state, blocks, last_up)
    with torch.no_grad():
        state.ip_tokens = resampler(inputs["image_embeds"])
    ref = {k[4:]: v for k, v in inputs.items() if k.startswith("ref_")}
    tgt = {k: inputs[k] for k in ("sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids")}
    state.mode = "encoder"
    run(unet, ref)
    expected = {}
    for i in range(len(in_range)):
        for kind in ("k", "v"):
            expected[f"ref_{kind}.{i}"] = state.recorded[i][kind]
            expected[f"ip_{kind}.{i}"] = state.recorded[i]["ip_" + kind]
    assert len(state.recorded) == len(in_range)

    # Sanity: the encoder LoRAs change the K/V of later blocks (else the test could not see them).
    plain = copy.copy(state)
    plain.encoder_lora, plain.recorded = {}, {}
    install(unet, plain, blocks, last_up)
    run(unet, ref)
    lora_effect = max((plain.recorded[i]["k"] - expected[f"ref_k.{i}"]).abs().max().item() for i in range(len(in_range)))
    assert lora_effect > 1e-2, f"the encoder LoRAs change the recorded K by only {lora_effect}"
    install(unet, state, blocks, last_up)

    # Token dropout as ReferenceKv::drop_tokens: one uniform draw per token per block, in block order,
    # from a CPU generator seeded with drop_seed; tokens with u < p are dropped (shared by the batch).
    reference = {i: dict(state.recorded[i]) for i in range(len(in_range))}
    if drop_p > 0:
        gen = torch.Generator().manual_seed(drop_seed)
        for i in range(len(in_range)):
            keep = torch.empty(reference[i]["k"].shape[1]).uniform_(0.0, 1.0, generator=gen).ge(drop_p)
            index = keep.nonzero().flatten()
            reference[i]["k"] = reference[i]["k"].index_select(1, index)
            reference[i]["v"] = reference[i]["v"].index_select(1, index)
    state.mode, state.ip_scale = "decoder", ip_scale
    state.reference = reference
    expected["sample"] = run(unet, tgt)
    if drop_p > 0:  # the dropped subset must matter, or a wrong subset would pass
        state.reference = {i: dict(state.recorded[i]) for i in range(len(in_range))}
        drop_effect = (run(unet, tgt) - expected["sample"]).abs().max().item()
        assert drop_effect > 1e-3, f"reference-token dropout changes the decoder output by only {drop_effect}"
        print(f"  effect of token dropout p {drop_p}: {drop_effect:.3g}")
    state.reference = {i: dict(r, k=None, v=None) for i, r in reference.items()}
    expected["sample_no_reference"] = run(unet, tgt)
    ref_effect = (expected["sample"] - expected["sample_no_reference"]).abs().max().item()
    assert ref_effect > 1e-2, f"the reference K/V change the decoder output by only {ref_effect}"

    # LCM branch: the kohya LoRA merged into a copy of the weights by plain arithmetic.
    lrank, alpha = rng.choice([2, 4]), rng.choice([1.0, 2.0, 4.0])
    kohya = make_kohya_lora(unet, lrank, alpha)
    save_file({k: v.contiguous() for k, v in kohya.items()}, f"{outdir}/lora.safetensors")
    lcm = copy.deepcopy(unet)
    with torch.no_grad():
        for name, m in lora_targets(lcm):
            key = "lora_unet_" + name.replace(".", "_")
            down, up = kohya[key + ".lora_down.weight"], kohya[key + ".lora_up.weight"]
            f = lora_scale * float(kohya[key + ".alpha"]) / down.shape[0]
            delta = up.flatten(1) @ down.flatten(1)
            m.weight += f * delta.view(m.weight.shape)
    install(lcm, state, blocks, last_up)
    state.reference = reference
    expected["sample_lcm"] = run(lcm, tgt)
    lcm_effect = (expected["sample_lcm"] - expected["sample"]).abs().max().item()
    assert lcm_effect > 1e-2, f"the LoRA changes the decoder output by only {lcm_effect}"

    save_file({k: v.contiguous() for k, v in expected.items()}, f"{outdir}/expected.safetensors")
    case = dict(seed=seed, config=cfg, blocks=len(in_range), encoder_lora_layers=len(state.encoder_lora),
                rank=rank, kv_rank=kv_rank, drop_p=drop_p, ip_scale=ip_scale, lora_scale=lora_scale,
                lora_rank=lrank, lora_alpha=alpha)
    json.dump(case, open(f"{outdir}/case.json", "w"))
    print(f"kv_encoder_oracle: {json.dumps(case)}")
    print(f"  effects: encoder LoRA on K {lora_effect:.3g}, reference {ref_effect:.3g}, LoRA {lcm_effect:.3g}")


def compare(expected, ours, tol):
    a, b = load_file(expected), load_file(ours)
    fails = 0
    if set(a) != set(b):
        print(f"FAIL output names differ: missing {sorted(set(a) - set(b))}, unexpected {sorted(set(b) - set(a))}")
        fails += 1
    worst = {}
    for name in sorted(set(a) & set(b)):
        if a[name].shape != b[name].shape:
            print(f"FAIL {name}: shape {tuple(b[name].shape)}, expected {tuple(a[name].shape)}")
            fails += 1
            continue
        err = (a[name].double() - b[name].double()).abs().max().item()
        group = name.split(".")[0]
        worst[group] = max(worst.get(group, 0.0), err)
        if err > tol:
            print(f"FAIL {name}: max |diffusers - ours| = {err:.3e} > {tol:g} (max |x| {a[name].abs().max():.3f})")
            fails += 1
    for group, err in sorted(worst.items()):
        print(f"max |diffusers - ours| {group:20s} {err:.3e} (tolerance {tol:g})")
    return 1 if fails else 0


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]), "--fixed" in sys.argv)
    elif sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3], float(sys.argv[4])))
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
