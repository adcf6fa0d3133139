"""Third-party checks of the files `lookahead model init` wrote.

Usage: model_init_check.py tiny|sdxl DIR BPE_GZ

tiny: every file loads with its library (diffusers from_pretrained of the UNet, both VAEs and
TAESDXL, the whole StableDiffusionXLPipeline with the LCM-LoRA and a one-step generation;
transformers CLIPTextModel / CLIPTextModelWithProjection / CLIPVisionModelWithProjection with no
missing or unexpected keys; torch.load(weights_only=True) of the .bin / .pth files), and the
tokenizer folders equal open_clip's vocabulary converted as transformers' CLIP files are and
tokenize as the reference folder does.

sdxl: the full-size files, read by their headers only: each network built by diffusers /
transformers from the written config on the meta device has exactly the file's keys and shapes;
LoRA, IP-Adapter and face files have the published key counts.
"""
import gzip
import json
import os
import sys
import tempfile

import numpy as np
import torch
from safetensors import safe_open

MODE, DIR, BPE = sys.argv[1], sys.argv[2], sys.argv[3]
SD = os.path.join(DIR, "sdxl-turbo" if os.path.isdir(os.path.join(DIR, "sdxl-turbo")) else
                  "stable-diffusion-xl-base-1.0")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def header(path):
    """name -> (dtype, shape) from a safetensors header, no data read."""
    with safe_open(path, "pt") as f:
        return {k: (f.get_slice(k).get_dtype(), list(f.get_slice(k).get_shape())) for k in f.keys()}


def same_keys_and_shapes(module_sd, path, what, drop=()):
    file = {k: v for k, v in header(path).items() if not any(k.endswith(d) for d in drop)}
    want = {k: list(v.shape) for k, v in module_sd.items() if not any(k.endswith(d) for d in drop)}
    missing = sorted(set(want) - set(file))
    extra = sorted(set(file) - set(want))
    shapes = [k for k in want if k in file and file[k][1] != want[k]]
    check(not missing and not extra and not shapes,
          f"{what}: {len(file)} tensors, keys and shapes as the library's network"
          + (f" (missing {missing[:3]}, unexpected {extra[:3]}, shapes {shapes[:3]})" if missing or extra or shapes
             else ""))


def reference_tokenizer_files(out_dir):
    """open_clip's vocabulary construction (simple_tokenizer.py), written as transformers' files."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_chars = [chr(c) for c in cs]
    lines = gzip.open(BPE).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
    vocab = byte_chars + [v + "</w>" for v in byte_chars] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({v: i for i, v in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return {v: i for i, v in enumerate(vocab)}, [f"{a} {b}" for a, b in merges]


def check_tokenizers():
    from transformers import CLIPTokenizer
    ref_dir = tempfile.mkdtemp()
    vocab, merges = reference_tokenizer_files(ref_dir)
    prompts = ["a photo of a face", "A Photo of sks person, 4K!!  HDR; café — naïve", "", "x" * 400,
               "portrait of a woman wearing a red hat, studio lighting, 85mm"]
    for name, pad, pad_token in (("tokenizer", 49407, "<|endoftext|>"), ("tokenizer_2", 0, "!")):
        # SDXL's tokenizer_2 pads with "!", which transformers then also splits off as a special token.
        ref = CLIPTokenizer(os.path.join(ref_dir, "vocab.json"), os.path.join(ref_dir, "merges.txt"),
                            pad_token=pad_token)
        d = os.path.join(SD, name)
        with open(os.path.join(d, "vocab.json"), encoding="utf-8") as f:
            check(json.load(f) == vocab, f"{name}/vocab.json equals open_clip's vocabulary (49408 tokens)")
        with open(os.path.join(d, "merges.txt"), encoding="utf-8") as f:
            check(f.read().split("\n")[1:-1] == merges, f"{name}/merges.txt: open_clip's 48894 merges in rank order")
        tok = CLIPTokenizer.from_pretrained(d)
        check(tok.pad_token_id == pad and tok.model_max_length == 77, f"{name}: pad id {pad}, model_max_length 77")
        ids = [tok(p, truncation=True, max_length=77).input_ids for p in prompts]
        ref_ids = [ref(p, truncation=True, max_length=77).input_ids for p in prompts]
        padded = tok(prompts[0], padding="max_length", max_length=77).input_ids
        check(ids == ref_ids, f"{name}: CLIPTokenizer ids equal the reference files' on {len(prompts)} prompts")
        check(padded[7:] == [pad] * 70, f"{name}: pads with id {pad}")
    check(ids[0] == [49406, 320, 1125, 539, 320, 1710, 49407], "'a photo of a face' -> CLIP's ids 320 1125 539 320 1710")


def check_tiny():
    from diffusers import AutoencoderKL, AutoencoderTiny, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    unet, info = UNet2DConditionModel.from_pretrained(os.path.join(SD, "unet"), output_loading_info=True)
    check(not info["missing_keys"] and not info["unexpected_keys"], "diffusers UNet2DConditionModel.from_pretrained")
    for path, what in ((os.path.join(SD, "vae"), "vae"), (os.path.join(DIR, "sdxl-vae-fp16-fix"), "sdxl-vae-fp16-fix")):
        _, info = AutoencoderKL.from_pretrained(path, output_loading_info=True)
        check(not info["missing_keys"] and not info["unexpected_keys"], f"diffusers AutoencoderKL.from_pretrained({what})")
    taesd, info = AutoencoderTiny.from_pretrained(os.path.join(DIR, "taesdxl"), output_loading_info=True)
    check(not info["missing_keys"] and not info["unexpected_keys"], "diffusers AutoencoderTiny.from_pretrained(taesdxl)")
    for cls, sub in ((CLIPTextModel, "text_encoder"), (CLIPTextModelWithProjection, "text_encoder_2")):
        _, info = cls.from_pretrained(os.path.join(SD, sub), output_loading_info=True)
        check(not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"],
              f"transformers {cls.__name__}.from_pretrained({sub})")
    vision, info = CLIPVisionModelWithProjection.from_pretrained(os.path.join(DIR, "IP-Adapter/models/image_encoder"),
                                                                output_loading_info=True)
    check(not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"],
          "transformers CLIPVisionModelWithProjection.from_pretrained(image_encoder)")
    size = vision.config.image_size
    out = vision(torch.randn(1, 3, size, size), output_hidden_states=True)
    check(bool(torch.isfinite(out.hidden_states[-2]).all()), "image encoder forward is finite")
    # The CLIP score's model, as the evaluation loads it (CLIPModel + its tokenizer and processor).
    from transformers import CLIPModel, CLIPProcessor
    clip_dir = os.path.join(DIR, "clip-vit-large-patch14")
    clip, info = CLIPModel.from_pretrained(clip_dir, output_loading_info=True)
    check(not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"],
          "transformers CLIPModel.from_pretrained(clip-vit-large-patch14)")
    proc = CLIPProcessor.from_pretrained(clip_dir)
    inputs = proc(text=["a photo of a face"], images=[np.zeros((40, 40, 3), np.uint8)], return_tensors="pt")
    check(inputs["input_ids"][0].tolist() == [49406, 320, 1125, 539, 320, 1710, 49407] and
          tuple(inputs["pixel_values"].shape) == (1, 3, 32, 32), "CLIPProcessor: CLIP ids, 32² pixels (tiny tower)")
    check(bool(torch.isfinite(clip(**inputs).logits_per_image).all()), "CLIPModel forward is finite")
    check_tokenizers()

    # The whole pipeline folder, with the LCM-LoRA, generates one finite step.
    pipe = StableDiffusionXLPipeline.from_pretrained(SD, torch_dtype=torch.float32)
    pipe.load_lora_weights(os.path.join(DIR, "lcm-lora-sdxl"), weight_name="pytorch_lora_weights.safetensors")
    check(len(pipe.get_list_adapters().get("unet", [])) == 1, "diffusers took the LCM-LoRA file as a UNet LoRA")
    img = pipe("a photo of a face", num_inference_steps=1, height=64, width=64, guidance_scale=1.0,
               output_type="pt", generator=torch.Generator().manual_seed(0)).images
    check(img.shape == (1, 3, 64, 64) and bool(torch.isfinite(img).all()),
          "StableDiffusionXLPipeline.from_pretrained + load_lora_weights(lcm-lora) + one step: finite image")
    check(bool(torch.isfinite(taesd.decode(torch.randn(1, 4, 8, 8)).sample).all()), "TAESDXL decode is finite")

    # torch.save files: the library reads them; the .bin holds the .safetensors' tensors.
    ipdir = os.path.join(DIR, "IP-Adapter/sdxl_models")
    b = torch.load(os.path.join(ipdir, "ip-adapter-plus-face_sdxl_vit-h.bin"), weights_only=True, map_location="cpu")
    check(sorted(b) == ["image_proj", "ip_adapter"], "ip-adapter .bin: torch.load -> {image_proj, ip_adapter}")
    st = {}
    with safe_open(os.path.join(ipdir, "ip-adapter-plus-face_sdxl_vit-h.safetensors"), "pt") as f:
        for k in f.keys():
            st[k] = f.get_tensor(k)
    flat = {f"{g}.{k}": v for g, sd in b.items() for k, v in sd.items()}
    check(flat.keys() == st.keys() and all(torch.equal(flat[k], st[k]) for k in st),
          f"ip-adapter .bin and .safetensors hold the same {len(st)} tensors")
    for rel in ("arcface/model_ir_se50.pth", "arcface/iresnet50/backbone.pth"):
        sd = torch.load(os.path.join(DIR, rel), weights_only=True)
        check(len(sd) > 0 and all(torch.isfinite(v.float()).all() for v in sd.values()),
              f"{rel}: torch.load(weights_only=True), {len(sd)} tensors")
    # facenet-pytorch's own files (its package needs torchvision to import, so only located here).
    import importlib.util
    data = os.path.join(list(importlib.util.find_spec("facenet_pytorch").submodule_search_locations)[0], "data")
    for net in ("pnet.pt", "rnet.pt", "onet.pt"):
        with open(os.path.join(DIR, "facenet-pytorch/data", net), "rb") as a, open(os.path.join(data, net), "rb") as r:
            check(a.read() == r.read(), f"facenet-pytorch/data/{net} is facenet-pytorch's file")


def check_sdxl():
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from transformers import (CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection,
                              CLIPVisionConfig, CLIPVisionModelWithProjection)

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(os.path.join(SD, "unet")))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(os.path.join(SD, "vae")))
        fix = AutoencoderKL.from_config(AutoencoderKL.load_config(os.path.join(DIR, "sdxl-vae-fp16-fix")))
        taesd = AutoencoderTiny.from_config(AutoencoderTiny.load_config(os.path.join(DIR, "taesdxl")))
        te1 = CLIPTextModel(CLIPTextConfig.from_pretrained(os.path.join(SD, "text_encoder")))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(os.path.join(SD, "text_encoder_2")))
        vision = CLIPVisionModelWithProjection(
            CLIPVisionConfig.from_pretrained(os.path.join(DIR, "IP-Adapter/models/image_encoder")))
        clip = CLIPModel(CLIPConfig.from_pretrained(os.path.join(DIR, "clip-vit-large-patch14")))
    import diffusers
    turbo = SD.endswith("sdxl-turbo")
    with open(os.path.join(SD, "scheduler/scheduler_config.json")) as f:
        cls = json.load(f)["_class_name"]
    sched = getattr(diffusers, cls).from_pretrained(SD, subfolder="scheduler")
    want = ("EulerAncestralDiscreteScheduler", "trailing") if turbo else ("EulerDiscreteScheduler", "leading")
    check((type(sched).__name__, sched.config.timestep_spacing) == want, f"scheduler: diffusers loads a {want}")
    with open(os.path.join(SD, "model_index.json")) as f:
        check(json.load(f)["scheduler"] == ["diffusers", want[0]], "model_index.json names the scheduler class")
    n = sum(v.numel() for v in unet.state_dict().values())
    check(n == 2_567_463_684, f"UNet from the written config: {n} parameters (SDXL base: 2,567,463,684)")
    same_keys_and_shapes(unet.state_dict(), os.path.join(SD, "unet/diffusion_pytorch_model.safetensors"), "unet")
    same_keys_and_shapes(vae.state_dict(), os.path.join(SD, "vae/diffusion_pytorch_model.safetensors"), "vae")
    same_keys_and_shapes(fix.state_dict(), os.path.join(DIR, "sdxl-vae-fp16-fix/diffusion_pytorch_model.safetensors"),
                         "sdxl-vae-fp16-fix")
    same_keys_and_shapes(taesd.state_dict(), os.path.join(DIR, "taesdxl/diffusion_pytorch_model.safetensors"), "taesdxl")
    # transformers >= 5 leaves position_ids out of the state dict; the files may carry them.
    for model, path in ((te1, "text_encoder"), (te2, "text_encoder_2")):
        sd = {k if k.startswith("text_") else "text_model." + k: v for k, v in model.state_dict().items()}
        same_keys_and_shapes(sd, os.path.join(SD, path, "model.safetensors"), path, drop=("position_ids",))
    same_keys_and_shapes(vision.state_dict(), os.path.join(DIR, "IP-Adapter/models/image_encoder/model.safetensors"),
                         "image_encoder", drop=("position_ids",))
    same_keys_and_shapes(clip.state_dict(), os.path.join(DIR, "clip-vit-large-patch14/model.safetensors"),
                         "clip-vit-large-patch14", drop=("position_ids",))
    n = sum(v.numel() for k, v in clip.state_dict().items() if "position_ids" not in k)
    check(n == 427_616_513, f"CLIPModel from the written config: {n} parameters (clip-vit-large-patch14: 427,616,513)")
    check(len(header(os.path.join(SD, "text_encoder/model.safetensors"))) == 196, "text_encoder: 196 tensors")
    check(len(header(os.path.join(SD, "text_encoder_2/model.safetensors"))) == 517, "text_encoder_2: 517 tensors")
    vh = header(os.path.join(DIR, "IP-Adapter/models/image_encoder/model.safetensors"))
    check(len(vh) == 521 and vh["vision_model.embeddings.position_ids"] == ("I64", [1, 257]),
          "image_encoder: 520 tensors + position_ids I64 [1, 257]")
    lcm = os.path.join(DIR, "lcm-lora-sdxl/pytorch_lora_weights.safetensors")
    lh = header(lcm)
    check(len(lh) == 2364 and all(v[0] == "F16" for v in lh.values()), "lcm-lora: 788 x 3 = 2364 F16 tensors")
    check(os.path.getsize(lcm) == 393_854_592, f"lcm-lora: {os.path.getsize(lcm)} bytes (published: 393,854,592)")
    with safe_open(lcm, "pt") as f:
        check(float(f.get_tensor("lora_unet_mid_block_attentions_0_transformer_blocks_9_ff_net_0_proj.alpha")) == 8.0,
              "lcm-lora: alpha 8 (scale 8 / 64)")
    check(lh["lora_unet_down_blocks_0_downsamplers_0_conv.lora_down.weight"][1] == [64, 320, 3, 3],
          "lcm-lora: conv down [64, 320, 3, 3]")
    b = torch.load(os.path.join(DIR, "IP-Adapter/sdxl_models/ip-adapter-plus-face_sdxl_vit-h.bin"), weights_only=True,
                   mmap=True)
    ip_layers = {k.split(".")[0] for k in b["ip_adapter"]}
    check(len(ip_layers) == 70 and len(b["ip_adapter"]) == 140,
          f"ip-adapter .bin: {len(b['ip_adapter'])} to_k_ip/to_v_ip weights in {len(ip_layers)} attn2 layers")
    check(list(b["image_proj"]["latents"].shape) == [1, 16, 1280], "ip-adapter: Resampler latents [1, 16, 1280]")
    for rel in ("arcface/model_ir_se50.pth", "arcface/iresnet100/backbone.pth"):
        sd = torch.load(os.path.join(DIR, rel), weights_only=True, mmap=True)
        check(len(sd) > 0, f"{rel}: torch.load(weights_only=True), {len(sd)} tensors")


if MODE == "tiny":
    check_tiny()
else:
    check_sdxl()
print(f"{len(failures)} failure(s)")
sys.exit(1 if failures else 0)
