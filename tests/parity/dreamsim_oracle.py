#!/usr/bin/env python3
"""Oracle for model/vision/dreamsim (tests/model/dreamsim_parity_test.cpp), a ctest fixture.

Usage: dreamsim_oracle.py OUTDIR SEED   (SEED: an integer, or "random" for a fresh one, printed;
LA_PARITY_SEED overrides it)

Writes OUTDIR/cache/, a cache folder of the `dreamsim` package (0.2.1) in the real "ensemble"
layout at full size with random weights: torch hub's DINO ViT-B/16 state dict
(checkpoints/dino_vitbase16_pretrain.pth), the DINO head file, the two CLIP files
({"state_dict": {..., "proj"}}) written with torch.save, and ensemble_lora/ written by PEFT's own
save_pretrained (adapter_config.json + adapter_model.safetensors; LoRA r 16, alpha 0.5 on `qkv` as
released, with random A and B so that the LoRA matters). OUTDIR/cache_bin/ is the same folder with
the adapter saved as adapter_model.bin (the base files are symbolic links).

The package then builds its model from OUTDIR/cache exactly as `dreamsim(pretrained=True,
dreamsim_type="ensemble", normalize_embeds=True)` does, and OUTDIR/io.safetensors receives, for two
[2, 3, 224, 224] images a and b in [0, 1]: each extractor's features (recorded inside the package's
own forward), both embeddings, the distance model(a, b), its gradient with respect to a, the
embedding of a with the LoRA disabled, and a [-1, 1] 64x64 batch with its F.interpolate bicubic
resize to 224 after (x + 1) / 2. OUTDIR/manifest.json lists every file's tensors (names flattened
as our readers flatten them), the merged model's state-dict keys (PEFT merge_and_unload), the
extractors' plain-tensor `proj` attributes, and PEFT's LoraConfig fields.
"""
import dataclasses
import enum
import json
import os
import random
import shutil
import sys
import types
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

warnings.filterwarnings("ignore")


def install_import_shims():
    """torchvision cannot be installed beside this torch (its wheels pin their own torch), and
    open_clip cannot be imported without it. dreamsim imports both at module level but uses, of
    torchvision, only transforms.Normalize on tensors in every forward and Compose / Resize /
    ToTensor / InterpolationMode for the PIL preprocessing function dreamsim() returns (never
    called here), and of open_clip nothing outside its _sanity_check. These stand-ins implement
    exactly those with torch ops, as torchvision documents them. transformers (whose ViTMAEModel
    the package imports) is imported first: it probes for torchvision, and must find none."""
    from transformers import ViTMAEModel  # noqa: F401
    try:
        import torchvision.transforms  # noqa: F401
    except ImportError:
        tv = types.ModuleType("torchvision")
        transforms = types.ModuleType("torchvision.transforms")

        class InterpolationMode(enum.Enum):
            NEAREST = "nearest"
            BILINEAR = "bilinear"
            BICUBIC = "bicubic"

        class Normalize:
            """torchvision's Normalize on a tensor: (x - mean) / std per channel, mean and std
            made in the input's dtype, out of place."""

            def __init__(self, mean, std, inplace=False):
                self.mean, self.std = mean, std

            def __call__(self, x):
                mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
                std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
                return x.clone().sub_(mean).div_(std)

        class Resize:
            """torchvision's Resize of a tensor to a fixed size (antialiased for bilinear / bicubic)."""

            def __init__(self, size, interpolation=InterpolationMode.BILINEAR, antialias=True):
                self.size, self.mode, self.antialias = size, interpolation.value, antialias

            def __call__(self, x):
                if not torch.is_tensor(x):
                    raise NotImplementedError("this torchvision stand-in resizes tensors only")
                batched = x.unsqueeze(0) if x.dim() == 3 else x
                aa = self.antialias and self.mode in ("bilinear", "bicubic")
                out = F.interpolate(batched, size=self.size, mode=self.mode, antialias=aa,
                                    align_corners=None if self.mode == "nearest" else False)
                return out[0] if x.dim() == 3 else out

        class ToTensor:
            """torchvision's ToTensor of an HWC uint8 image (PIL or array): CHW float in [0, 1]."""

            def __call__(self, pic):
                arr = np.asarray(pic)
                if arr.ndim == 2:
                    arr = arr[:, :, None]
                t = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
                return t.float().div(255) if t.dtype == torch.uint8 else t.float()

        class Compose:
            def __init__(self, steps):
                self.steps = steps

            def __call__(self, x):
                for step in self.steps:
                    x = step(x)
                return x

        for cls in (InterpolationMode, Normalize, Resize, ToTensor, Compose):
            setattr(transforms, cls.__name__, cls)
        tv.transforms = transforms
        sys.modules.update({"torchvision": tv, "torchvision.transforms": transforms})
    try:
        import open_clip  # noqa: F401
    except ImportError:
        sys.modules["open_clip"] = types.ModuleType("open_clip")


def patch_torch_hub(vit_base):
    """No network here: torch.hub.load('facebookresearch/dino:main', 'dino_vitb16') is answered as
    DINO's hubconf does it (vision_transformer.vit_base(patch_size=16, num_classes=0), the hub
    checkpoint loaded strictly from <hub dir>/checkpoints, where load_state_dict_from_url caches
    it), with the package's copy of DINO's vision_transformer.py."""

    def hub_load(repo, model, *args, **kwargs):
        if (repo, model) != ("facebookresearch/dino:main", "dino_vitb16"):
            raise RuntimeError(f"dreamsim_oracle: no offline stand-in for torch.hub.load({repo!r}, {model!r})")
        net = vit_base(patch_size=16, num_classes=0)
        path = os.path.join(torch.hub.get_dir(), "checkpoints", "dino_vitbase16_pretrain.pth")
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        return net

    torch.hub.load = hub_load


def randomize(module, gen):
    """Random weights of a scale that keeps every activation O(1): fan-in scaled matrices, norm
    scales near 1, small biases, O(1) class token and position table."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            r = torch.randn(p.shape, generator=gen)
            if name in ("cls_token", "pos_embed"):
                p.copy_(0.5 * r)
            elif p.dim() == 1 and name.endswith("weight"):
                p.copy_(1 + 0.1 * r)
            elif p.dim() == 1:
                p.copy_(0.05 * r)
            else:
                p.copy_(r / p[0].numel() ** 0.5)


def flatten(obj, prefix=""):
    """name -> tensor as io::load_torch_file flattens a torch.load result ('.'-joined dict keys)."""
    out = {}
    if torch.is_tensor(obj):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def describe(tensors):
    return {k: [str(v.dtype).replace("torch.", ""), list(v.shape)] for k, v in sorted(tensors.items())}


def smooth_images(gen, n):
    """Images in [0, 1] with structure at several scales (iid noise would look alike to any ViT)."""
    low = torch.rand(n, 3, 7, 7, generator=gen)
    mid = torch.rand(n, 3, 28, 28, generator=gen)
    img = 0.7 * F.interpolate(low, size=224, mode="bilinear", align_corners=False)
    img = img + 0.3 * F.interpolate(mid, size=224, mode="nearest")
    return img.clamp(0, 1).contiguous()


def main():
    outdir = sys.argv[1]
    seed_arg = os.environ.get("LA_PARITY_SEED") or (sys.argv[2] if len(sys.argv) > 2 else "1234")
    seed = random.randrange(1 << 31) if seed_arg == "random" else int(seed_arg)
    print(f"dreamsim_oracle: seed {seed} (LA_PARITY_SEED={seed} reproduces)")
    gen = torch.Generator().manual_seed(seed)
    cache, cache_bin = os.path.join(outdir, "cache"), os.path.join(outdir, "cache_bin")
    for d in (cache, cache_bin):
        shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(cache, "checkpoints"))

    install_import_shims()
    import dreamsim
    from dreamsim.config import dreamsim_args
    from dreamsim.feature_extraction.vision_transformer import vit_base
    from dreamsim.model import PerceptualModel
    import peft
    from peft import LoraConfig, get_peft_model
    patch_torch_hub(vit_base)

    # The base networks, as the package's loaders expect them.
    dino = vit_base(patch_size=16, num_classes=0)
    randomize(dino, gen)
    torch.save(dino.state_dict(), os.path.join(cache, "checkpoints", "dino_vitbase16_pretrain.pth"))
    # DINOHead(768, 2048): read by the package, unused by the 'cls' feature.
    head = {"mlp.0.weight": (2048, 768), "mlp.0.bias": (2048,), "mlp.2.weight": (2048, 2048), "mlp.2.bias": (2048,),
            "mlp.4.weight": (256, 2048), "mlp.4.bias": (256,), "last_layer.weight": (2048, 256)}
    torch.save({"student": {f"module.head.{k}": 0.02 * torch.randn(s, generator=gen) for k, s in head.items()}},
               os.path.join(cache, "dino_vitb16_pretrain.pth"))
    for name in ("clip_vitb16", "open_clip_vitb16"):
        vit = vit_base(patch_size=16)
        vit.pos_drop = torch.nn.LayerNorm(vit.embed_dim)
        randomize(vit, gen)
        sd = dict(vit.state_dict())
        sd["proj"] = torch.randn(768, 512, generator=gen) / 768 ** 0.5
        torch.save({"state_dict": sd}, os.path.join(cache, f"{name}_pretrain.pth.tar"))

    # The adapter, saved by PEFT itself on the package's PerceptualModel.
    config = dreamsim_args["model_config"]["ensemble"]
    base = PerceptualModel(**config, device="cpu", load_dir=cache, normalize_embeds=True)
    lora = get_peft_model(base, LoraConfig(r=16, lora_alpha=0.5, lora_dropout=0.3, bias="none",
                                           target_modules=["qkv"]))
    saved = {}
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_A" in name:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
            elif "lora_B" in name:
                p.copy_(2.0 * torch.randn(p.shape, generator=gen))
            else:
                continue
            saved[name] = p.detach().clone()
    lora.save_pretrained(os.path.join(cache, "ensemble_lora"))
    os.makedirs(os.path.join(cache_bin, "checkpoints"))
    lora.save_pretrained(os.path.join(cache_bin, "ensemble_lora"), safe_serialization=False)
    del lora, base
    for rel in ("checkpoints/dino_vitbase16_pretrain.pth", "dino_vitb16_pretrain.pth", "clip_vitb16_pretrain.pth.tar",
                "open_clip_vitb16_pretrain.pth.tar"):
        os.symlink(os.path.abspath(os.path.join(cache, rel)), os.path.join(cache_bin, rel))

    # The package's model from the folder, as LCM-Lookahead's DreamSIMLoss builds it.
    model, _ = dreamsim.dreamsim(pretrained=True, device="cpu", cache_dir=cache, normalize_embeds=True,
                                 dreamsim_type="ensemble")
    loaded = dict(model.named_parameters())
    assert len(saved) == 2 * 36 and all(torch.equal(loaded[k], v) for k, v in saved.items()), \
        "PEFT did not load the saved LoRA"
    inner = model.base_model.model  # the PerceptualModel, LoRA layers injected

    # Record every extractor's features and both embeddings inside the package's own forward.
    recorded = {"features": [], "embeds": []}
    for i, fn in enumerate(list(inner.extract_feats_list)):
        def recording(img, extractor_index, fn=fn):
            out = fn(img, extractor_index=extractor_index)
            recorded["features"].append(out.squeeze())
            return out
        inner.extract_feats_list[i] = recording
    package_embed = inner.embed

    def recording_embed(img):
        out = package_embed(img)
        recorded["embeds"].append(out)
        return out
    inner.embed = recording_embed

    a, b = smooth_images(gen, 2), smooth_images(gen, 2)
    a_in = a.clone().requires_grad_(True)
    distance = model(a_in, b)
    distance.sum().backward()
    with torch.no_grad(), model.disable_adapter():
        embed_a_base = package_embed(a)
    feats = recorded["features"]
    io = {"a": a, "b": b, "distance": distance.detach(), "grad_a": a_in.grad,
          "embed_a": recorded["embeds"][0].detach(), "embed_b": recorded["embeds"][1].detach(),
          "embed_a_base": embed_a_base}
    for i in range(3):
        io[f"features_a_{i}"] = feats[i].detach()
        io[f"features_b_{i}"] = feats[3 + i].detach()

    # LCM-Lookahead's input mapping: [-1, 1] -> (x + 1) / 2 -> bicubic 224 (slightly out of range).
    x64 = (torch.rand(2, 3, 64, 64, generator=gen) * 2.2 - 1.1).contiguous()
    io["input_pm1"] = x64
    io["input_224"] = F.interpolate((x64 + 1) / 2, size=(224, 224), mode="bicubic")
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(outdir, "io.safetensors"))

    files = {}
    for dirpath, _, names in os.walk(cache):
        for n in sorted(names):
            path = os.path.join(dirpath, n)
            rel = os.path.relpath(path, cache)
            if n.endswith(".safetensors"):
                with safe_open(path, "pt") as f:
                    files[rel] = describe({k: f.get_tensor(k) for k in f.keys()})
            elif n.endswith((".pth", ".tar", ".bin")):
                files[rel] = describe(flatten(torch.load(path, map_location="cpu", weights_only=True)))
    proj_attributes = {f"extractor_list.{i}.proj": list(e.proj.shape) for i, e in enumerate(inner.extractor_list)
                       if torch.is_tensor(e.proj)}
    merged = model.merge_and_unload()
    manifest = {
        "seed": seed,
        "dreamsim_version": getattr(dreamsim, "__version__", "0.2.1"),
        "peft_version": peft.__version__,
        "torch_version": torch.__version__,
        "files": files,
        "merged_state_dict": {k: list(v.shape) for k, v in merged.state_dict().items()},
        "proj_attributes": proj_attributes,
        "lora_config_fields": [f.name for f in dataclasses.fields(LoraConfig)],
        "distance": distance.detach().tolist(),
    }
    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"dreamsim_oracle: distances {[round(x, 6) for x in manifest['distance']]}, "
          f"|grad| max {a_in.grad.abs().max().item():.3e}, LoRA changes embed_a by "
          f"{(io['embed_a'] - embed_a_base).abs().max().item():.3e}")


if __name__ == "__main__":
    main()
