#!/usr/bin/env python3
"""Oracle for the autoencoder parity tests (model/vae): diffusers builds AutoencoderTiny (a random
small config, and the real TAESD/TAESDXL config) and AutoencoderKL (small configs of the SDXL
family), every weight is perturbed (no identity norms, no zero biases), the model is saved with
save_pretrained, and random inputs and diffusers' outputs are written as safetensors.

  vae_oracle.py OUTDIR SEED      SEED = an integer, or `random` for a fresh one (printed)

OUTDIR/cases.json lists the cases; each case folder holds model/{config.json,
diffusion_pytorch_model.safetensors}, inputs.safetensors and expected.safetensors. Names follow
`lookahead model run`: inputs `latents`, `image`, `noise`; outputs `image` (decode of `latents`),
`latents` (encode of `image`), and for AutoencoderKL `latent_mean`, `latent_std` (the posterior in
VAE space), where `latents` = sample(noise) * scaling_factor and `image` = decode(latents /
scaling_factor), and `raw_image` = diffusers' decode(latents) without the scaling.
"""
import json
import os
import random
import sys

import torch
from safetensors.torch import save_file


def perturb(model, gen):
    """Random weights of a scale that keeps activations O(1) through deep stacks."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) * (0.9 / fan_in ** 0.5))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def tiny_case(rng, real):
    from diffusers import AutoencoderTiny
    if real:
        cfg = {}
        size = (rng.choice([1, 2]), 4, rng.choice([4, 6, 8]), rng.choice([4, 8]))
    else:
        ch = rng.choice([8, 16])
        n_enc = rng.choice([2, 3, 4])
        n_dec = rng.choice([2, 3, 4])
        cfg = dict(encoder_block_out_channels=[ch] * n_enc, decoder_block_out_channels=[ch] * n_dec,
                   num_encoder_blocks=[rng.choice([0, 1, 2]) for _ in range(n_enc)],
                   num_decoder_blocks=[rng.choice([0, 1, 2]) for _ in range(n_dec)],
                   latent_channels=rng.choice([3, 4]), act_fn=rng.choice(["relu", "silu", "gelu"]),
                   upsampling_scaling_factor=rng.choice([2, 2, 3]))
        size = (rng.choice([1, 2]), cfg["latent_channels"], rng.choice([3, 4, 5]), rng.choice([2, 4]))
    model = AutoencoderTiny(**cfg)
    c = model.config
    n_enc = len(c.encoder_block_out_channels)
    down = 2 ** (n_enc - 1)
    b, lc, h, w = size
    return model, dict(latents=(b, lc, h, w), image=(b, c.in_channels, h * down, w * down)), cfg


def kl_case(rng, fixed):
    from diffusers import AutoencoderKL
    if fixed:
        cfg = dict(block_out_channels=[16, 32, 32], layers_per_block=2, norm_num_groups=8, latent_channels=4,
                   scaling_factor=0.13025, mid_block_add_attention=True)
        size = (2, 4, 4, 6)
    else:
        groups = rng.choice([4, 8])
        n = rng.choice([2, 3, 4])
        cfg = dict(block_out_channels=[groups * rng.choice([2, 4]) * min(2 ** i, 4) for i in range(n)],
                   layers_per_block=rng.choice([1, 2]), norm_num_groups=groups, latent_channels=rng.choice([4, 4, 3]),
                   scaling_factor=rng.choice([0.13025, 0.18215]), mid_block_add_attention=rng.random() < 0.8)
        size = (rng.choice([1, 2]), cfg["latent_channels"], rng.choice([3, 4, 5]), rng.choice([2, 4, 5]))
    cfg.update(down_block_types=["DownEncoderBlock2D"] * len(cfg["block_out_channels"]),
               up_block_types=["UpDecoderBlock2D"] * len(cfg["block_out_channels"]), sample_size=64,
               force_upcast=True)
    model = AutoencoderKL(**cfg)
    down = 2 ** (len(cfg["block_out_channels"]) - 1)
    b, lc, h, w = size
    return model, dict(latents=(b, lc, h, w), image=(b, 3, h * down, w * down)), cfg


def write_case(outdir, name, kind, model, shapes, gen):
    folder = os.path.join(outdir, name)
    model.save_pretrained(os.path.join(folder, "model"), safe_serialization=True)
    inputs = {"latents": torch.randn(shapes["latents"], generator=gen) * 1.5,
              "image": torch.rand(shapes["image"], generator=gen) * 2 - 1}
    expected = {}
    with torch.no_grad():
        if kind == "tiny":
            expected["image"] = model.decode(inputs["latents"]).sample
            expected["latents"] = model.encode(inputs["image"]).latents
        else:
            sf = model.config.scaling_factor
            inputs["latents"] = inputs["latents"] * sf  # UNet-space latents
            dist = model.encode(inputs["image"]).latent_dist
            inputs["noise"] = torch.randn(dist.mean.shape, generator=gen)
            expected["latent_mean"] = dist.mean
            expected["latent_std"] = dist.std
            expected["latents"] = (dist.mean + dist.std * inputs["noise"]) * sf
            expected["image"] = model.decode(inputs["latents"] / sf).sample
            expected["raw_image"] = model.decode(inputs["latents"]).sample
    save_file({k: v.contiguous() for k, v in inputs.items()}, os.path.join(folder, "inputs.safetensors"))
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(folder, "expected.safetensors"))
    mags = ", ".join(f"{k} max|x| {v.abs().max().item():.3g}" for k, v in expected.items())
    print(f"  {name}: {mags}")
    return {"name": name, "kind": kind, "dir": folder,
            "params": sum(p.numel() for p in model.parameters()), "tensors": len(model.state_dict())}


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    outdir, seed_arg = sys.argv[1], sys.argv[2]
    seed = int(os.environ.get("LA_PARITY_SEED", seed_arg if seed_arg != "random" else random.SystemRandom().randrange(2**31)))
    print(f"vae_oracle: seed {seed} (reproduce with: vae_oracle.py OUTDIR {seed})")
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)
    cases = []
    # Fixed cases (seed 1234 every run), then cases drawn from the run's seed.
    for label, s in (("fixed", 1234), ("random", seed)):
        rng = random.Random(s)
        gen = torch.Generator().manual_seed(s)
        model, shapes, _ = tiny_case(rng, real=True)
        cases.append(write_case(outdir, f"taesdxl_{label}", "tiny", perturb(model, gen), shapes, gen))
        model, shapes, _ = tiny_case(rng, real=False)
        cases.append(write_case(outdir, f"tiny_small_{label}", "tiny", perturb(model, gen), shapes, gen))
        model, shapes, _ = kl_case(rng, fixed=label == "fixed")
        cases.append(write_case(outdir, f"kl_small_{label}", "kl", perturb(model, gen), shapes, gen))
    with open(os.path.join(outdir, "cases.json"), "w") as f:
        json.dump({"seed": seed, "cases": cases}, f, indent=2)
    print(f"vae_oracle: wrote {len(cases)} cases to {outdir}")


if __name__ == "__main__":
    main()
