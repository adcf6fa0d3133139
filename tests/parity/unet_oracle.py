#!/usr/bin/env python3
"""Oracle for the UNet and LoRA parity tests: diffusers builds a UNet2DConditionModel of a small
SDXL-family config with random weights, saves it in the diffusers layout, writes random inputs,
a kohya-format LoRA (`lora_unet_...` keys, lora_down/lora_up/alpha, conv LoRA included) and the
outputs diffusers computes: without LoRA, and with the LoRA loaded by diffusers' own loader at
two scales. `compare` checks our outputs against them.

  unet_oracle.py make OUTDIR SEED [--fixed]    writes OUTDIR/{unet/,inputs,lora,expected_*}.safetensors
  unet_oracle.py compare EXPECTED OURS TOL      exits 1 when max |a - b| > TOL
"""
import json
import random
import sys

import torch
from safetensors.torch import load_file, save_file


def random_config(rng, fixed):
    """A small config of the SDXL family; `fixed` gives one config that never changes."""
    if fixed:
        return dict(block_out_channels=[32, 64], down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                    up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], layers_per_block=2,
                    transformer_layers_per_block=[1, 2], attention_head_dim=[2, 4], cross_attention_dim=48,
                    norm_num_groups=8, text_embeds_dim=16, addition_time_embed_dim=8, size=(16, 16), batch=2)
    n = rng.choice([2, 3])
    groups = rng.choice([4, 8])
    channels = [groups * rng.choice([2, 4]) * (2 ** i) for i in range(n)]
    heads = [rng.choice([1, 2, 4]) for _ in range(n)]
    channels = [c if c % h == 0 else c * h for c, h in zip(channels, heads)]
    down = ["DownBlock2D"] + ["CrossAttnDownBlock2D"] * (n - 1)
    if rng.random() < 0.3:
        down[0] = "CrossAttnDownBlock2D"
    up = ["CrossAttnUpBlock2D" if t.startswith("CrossAttn") else "UpBlock2D" for t in reversed(down)]
    factor = 2 ** (n - 1)
    h = factor * rng.choice([2, 3]) + (rng.choice([0, 1]) if rng.random() < 0.3 else 0)
    w = factor * rng.choice([2, 3])
    return dict(block_out_channels=channels, down_block_types=down, up_block_types=up,
                layers_per_block=rng.choice([1, 2]),
                transformer_layers_per_block=[rng.choice([1, 2]) for _ in range(n)],
                attention_head_dim=heads, cross_attention_dim=rng.choice([24, 48]), norm_num_groups=groups,
                text_embeds_dim=rng.choice([8, 16]), addition_time_embed_dim=rng.choice([4, 8]), size=(h, w),
                batch=rng.choice([1, 2]))


def build_unet(cfg):
    from diffusers import UNet2DConditionModel
    te, td = cfg["text_embeds_dim"], cfg["addition_time_embed_dim"]
    unet = UNet2DConditionModel(
        sample_size=cfg["size"][0], in_channels=4, out_channels=4,
        block_out_channels=cfg["block_out_channels"], down_block_types=cfg["down_block_types"],
        up_block_types=cfg["up_block_types"], layers_per_block=cfg["layers_per_block"],
        transformer_layers_per_block=cfg["transformer_layers_per_block"],
        attention_head_dim=cfg["attention_head_dim"], cross_attention_dim=cfg["cross_attention_dim"],
        norm_num_groups=cfg["norm_num_groups"], use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=td, projection_class_embeddings_input_dim=te + 6 * td)
    with torch.no_grad():  # exercise every weight: no identity norms, no zero biases
        for name, p in unet.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p) / max(1.0, p[0].numel() ** 0.5 / 4) if p.dim() > 1 else
                        0.1 * torch.randn_like(p))
    return unet.eval()


def lora_targets(unet):
    """Module paths LCM-LoRA targets (PEFT suffix match), Linear and Conv2d."""
    suffixes = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
                "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")
    return [(n, m) for n, m in unet.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and n.endswith(suffixes)]


def make_kohya_lora(unet, rank, alpha):
    sd = {}
    for name, m in lora_targets(unet):
        key = "lora_unet_" + name.replace(".", "_")
        if isinstance(m, torch.nn.Linear):
            down = torch.randn(rank, m.in_features) * 0.1
            up = torch.randn(m.out_features, rank) * 0.1
        else:
            k = m.kernel_size[0]
            down = torch.randn(rank, m.in_channels, k, k) * 0.1
            up = torch.randn(m.out_channels, rank, 1, 1) * 0.1
        sd[key + ".lora_down.weight"] = down
        sd[key + ".lora_up.weight"] = up
        sd[key + ".alpha"] = torch.tensor(float(alpha))
    return sd


def run(unet, inputs):
    with torch.no_grad():
        return unet(inputs["sample"], inputs["timestep"], encoder_hidden_states=inputs["encoder_hidden_states"],
                    added_cond_kwargs={"text_embeds": inputs["text_embeds"], "time_ids": inputs["time_ids"]}).sample


def make(outdir, seed, fixed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    cfg = random_config(rng, fixed)
    unet = build_unet(cfg)
    unet.save_pretrained(f"{outdir}/unet", safe_serialization=True)
    b, (h, w) = cfg["batch"], cfg["size"]
    inputs = {
        "sample": torch.randn(b, 4, h, w),
        "timestep": torch.tensor([rng.choice([0, 1, 259, 500.5, 999]) for _ in range(b)], dtype=torch.float32),
        "encoder_hidden_states": torch.randn(b, rng.choice([5, 7]), cfg["cross_attention_dim"]),
        "text_embeds": torch.randn(b, cfg["text_embeds_dim"]),
        "time_ids": torch.tensor([[1024, 1024, 0, 0, 1024, 1024]] * b, dtype=torch.float32) *
                    torch.rand(b, 1).add(0.5),
    }
    save_file(inputs, f"{outdir}/inputs.safetensors")
    save_file({"out": run(unet, inputs).contiguous()}, f"{outdir}/expected.safetensors")

    rank, alpha = rng.choice([2, 4]), rng.choice([1.0, 2.0, 4.0])
    kohya = make_kohya_lora(unet, rank, alpha)
    save_file({k: v.contiguous() for k, v in kohya.items()}, f"{outdir}/lora.safetensors")
    from diffusers import StableDiffusionXLPipeline
    n_targets = len(lora_targets(unet))
    state, alphas = StableDiffusionXLPipeline.lora_state_dict(dict(kohya))
    StableDiffusionXLPipeline.load_lora_into_unet(state, network_alphas=alphas, unet=unet, adapter_name="lcm")
    loaded = sum(1 for n, _ in unet.named_modules() if n.endswith("lora_A.lcm"))
    assert loaded == n_targets, f"diffusers loaded {loaded} LoRA modules, the file has {n_targets}"
    for scale in (0.35, 1.0):
        unet.set_adapters(["lcm"], weights=[scale])
        save_file({"out": run(unet, inputs).contiguous()}, f"{outdir}/expected_lora_{scale}.safetensors")
    make_ip_adapter(outdir, cfg, inputs, rng)
    json.dump({"seed": seed, "config": cfg, "lora_rank": rank, "lora_alpha": alpha}, open(f"{outdir}/case.json", "w"))
    print(f"unet_oracle: seed {seed} config {json.dumps(cfg)} lora rank {rank} alpha {alpha}")


def make_ip_adapter(outdir, cfg, inputs, rng):
    """IP-Adapter Plus in the original checkpoint layout (`image_proj.*` Resampler keys,
    `ip_adapter.{2j+1}.to_k_ip/to_v_ip`), loaded into a fresh copy of the UNet by diffusers' own
    loader; expected outputs at two image-branch scales. Written as .safetensors and as the .bin
    pickle the original repository publishes."""
    from diffusers import UNet2DConditionModel
    unet = UNet2DConditionModel.from_pretrained(f"{outdir}/unet").eval()
    dim = 64 * rng.choice([1, 2])          # dim_head is 64 in IP-Adapter checkpoints
    emb, queries, depth, mult = rng.choice([32, 40]), rng.choice([4, 16]), 4, 4  # diffusers assumes depth 4, ff_mult 4
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
    ip_layers = {}
    attn2 = [m for n, m in unet.attn_processors.items() if n.endswith("attn2.processor")]
    key = 0
    for name in unet.attn_processors:  # index among every attention (attn1 included), diffusers' order
        if name.endswith("attn2.processor"):
            channels = unet.get_submodule(name[:-len(".processor")]).to_q.out_features
            ip_layers[f"{key}.to_k_ip.weight"] = r(channels, out_dim)
            ip_layers[f"{key}.to_v_ip.weight"] = r(channels, out_dim)
        key += 1
    assert len(ip_layers) == 2 * len(attn2)
    flat = {f"image_proj.{k}": v.contiguous() for k, v in image_proj.items()}
    flat.update({f"ip_adapter.{k}": v.contiguous() for k, v in ip_layers.items()})
    save_file(flat, f"{outdir}/ip_adapter.safetensors")
    torch.save({"image_proj": image_proj, "ip_adapter": ip_layers}, f"{outdir}/ip_adapter.bin")
    unet._load_ip_adapter_weights([{"image_proj": image_proj, "ip_adapter": ip_layers}], low_cpu_mem_usage=False)
    feats = torch.randn(inputs["sample"].shape[0], rng.choice([5, 9]), emb)
    save_file(dict(inputs, image_embeds=feats), f"{outdir}/inputs_ip.safetensors")
    for scale in (0.5, 1.0):
        for proc in unet.attn_processors.values():
            if hasattr(proc, "scale"):
                proc.scale = [scale]
        with torch.no_grad():
            out = unet(inputs["sample"], inputs["timestep"], encoder_hidden_states=inputs["encoder_hidden_states"],
                       added_cond_kwargs={"text_embeds": inputs["text_embeds"], "time_ids": inputs["time_ids"],
                                          "image_embeds": [feats.unsqueeze(1)]}).sample
        save_file({"out": out.contiguous()}, f"{outdir}/expected_ip_{scale}.safetensors")


def compare(expected, ours, tol):
    a, b = load_file(expected)["out"], load_file(ours)["out"]
    if a.shape != b.shape:
        print(f"shape mismatch: expected {tuple(a.shape)}, ours {tuple(b.shape)}")
        return 1
    err = (a.double() - b.double()).abs().max().item()
    scale = a.abs().max().item()
    print(f"max |diffusers - ours| = {err:.3e} (output max |x| = {scale:.3f}, tolerance {tol:g}) {ours}")
    return 0 if err <= tol else 1


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]), "--fixed" in sys.argv)
    elif sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3], float(sys.argv[4])))
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
