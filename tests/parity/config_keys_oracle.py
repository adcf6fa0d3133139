#!/usr/bin/env python3
"""Oracle for the config key walk (tests/model/config_keys_test.cpp), a ctest fixture.

Usage: config_keys_oracle.py OUTDIR

For every config class our C++ readers take (diffusers UNet2DConditionModel, AutoencoderKL,
AutoencoderTiny, the DDPM / DDIM / Euler / Euler-ancestral / DPM-Solver / LCM schedulers; transformers
CLIPTextConfig, CLIPVisionConfig, CLIPConfig), enumerates every key the reference knows (the __init__
signature / the config's to_dict(), plus the metadata the writer adds) and writes:

  OUTDIR/manifest.json   {"readers": {reader: [keys]}, "cases": [case, ...]}
  OUTDIR/<reader>/<case>/config.json (+ model.safetensors, io.safetensors for model readers)

one case per (key, non-default value) on top of a tiny base config, and the base itself (key
null). Schedulers: io.safetensors holds a 4-step sampling chain (every step's model output, drawn
noise and prev_sample), or for DDPM (the training noise) add_noise. Each case records whether the reference accepts it (`accepted`: the model / scheduler
builds and, for models, runs) and `ours`: "load" (must load), "refuse" (a value outside what
a honoured key supports: must be refused naming the key) or "any"; the C++ test takes the
treatment of every key from our tables. For accepted model cases the weights are random, the
config.json holds only the base keys plus the case's (absent keys keep the reference defaults),
and io.safetensors holds the inputs and the reference outputs.

A key the reference has and this script has no test value for fails the script, so a new
diffusers / transformers key cannot go unwalked.
"""
import inspect
import json
import math
import os
import sys
import warnings

import torch
from safetensors.torch import save_file

warnings.filterwarnings("ignore")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

DIFFUSERS_META = {"_class_name": None, "_diffusers_version": "0.1.0", "_name_or_path": "somewhere/else"}


def perturb(model, gen):
    """Random weights of a scale that keeps activations O(1) (norm weights around 1)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ("norm" in name or "layrnorm" in name) and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * (0.9 / p[0].numel() ** 0.5))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


# ---- UNet2DConditionModel ------------------------------------------------------------------------

UNET_BASE = dict(_class_name="UNet2DConditionModel", block_out_channels=[8, 16],
                 down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                 up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], layers_per_block=1,
                 attention_head_dim=[1, 2], cross_attention_dim=8, norm_num_groups=4,
                 addition_embed_type="text_time", addition_time_embed_dim=4,
                 projection_class_embeddings_input_dim=8 + 6 * 4)

# key -> [(value, extra keys, ours)]; ours: "load" | "refuse" | "any" (see the module doc).
UNET_VALUES = {
    "_class_name": [("UNet2DModel", {}, "refuse")],
    "_diffusers_version": [("0.1.0", {}, "load")],
    "_name_or_path": [("somewhere/else", {}, "load")],
    "sample_size": [(16, {}, "load")],
    "in_channels": [(3, {}, "load")],
    "out_channels": [(5, {}, "load")],
    "center_input_sample": [(True, {}, "load")],
    "flip_sin_to_cos": [(False, {}, "load")],
    "freq_shift": [(1, {}, "load")],
    "down_block_types": [(["CrossAttnDownBlock2D", "UNetResDownBlock2D"], {}, "load"),
                         (["DownBlock2D", "SimpleCrossAttnDownBlock2D"], {}, "refuse")],
    "mid_block_type": [(None, {}, "refuse"), ("UNetMidBlock2D", {}, "refuse")],
    "up_block_types": [(["UNetResCrossAttnUpBlock2D", "CrossAttnUpBlock2D"], {}, "load"),
                       (["AttnUpBlock2D", "UpBlock2D"], {}, "refuse")],
    "only_cross_attention": [(True, {}, "load")],
    "block_out_channels": [([12, 16], {}, "load")],
    "layers_per_block": [([2, 1], {}, "load")],
    "downsample_padding": [(0, {}, "load")],
    "mid_block_scale_factor": [(2.0, {}, "load")],
    "dropout": [(0.1, {}, "load")],
    "act_fn": [("mish", {}, "load")],
    "norm_num_groups": [(2, {}, "load"), (None, {}, "refuse")],
    "norm_eps": [(1e-2, {}, "load")],
    "cross_attention_dim": [(12, {}, "load"), ([12, 8], {}, "load")],
    "transformer_layers_per_block": [(2, {}, "load")],
    "reverse_transformer_layers_per_block": [([3, 1], {}, "load")],
    "encoder_hid_dim": [(8, {}, "load")],
    "encoder_hid_dim_type": [("text_proj", {"encoder_hid_dim": 6}, "load")],
    "attention_head_dim": [([2, 4], {}, "load")],
    "num_attention_heads": [([2, 4], {}, "any")],
    "dual_cross_attention": [(True, {}, "load")],
    "use_linear_projection": [(True, {}, "load")],
    "class_embed_type": [("timestep", {}, "load")],
    "addition_embed_type": [(None, {}, "load"), ("text", {}, "refuse")],
    "addition_time_embed_dim": [(8, {"projection_class_embeddings_input_dim": 8 + 6 * 8}, "load"),
                                (None, {}, "refuse")],  # diffusers' default; text_time cannot run with it
    "num_class_embeds": [(10, {}, "load")],
    "upcast_attention": [(True, {}, "load")],
    "resnet_time_scale_shift": [("scale_shift", {}, "load")],
    "resnet_skip_time_act": [(True, {}, "load")],
    "resnet_out_scale_factor": [(2.0, {}, "load")],
    "time_embedding_type": [("fourier", {}, "load")],
    "time_embedding_dim": [(48, {}, "load")],
    "time_embedding_act_fn": [("silu", {}, "load")],
    "timestep_post_act": [("silu", {}, "load")],
    "time_cond_proj_dim": [(8, {}, "load")],
    "conv_in_kernel": [(5, {}, "load")],
    "conv_out_kernel": [(1, {}, "load")],
    "projection_class_embeddings_input_dim": [(16 + 6 * 4, {}, "load")],
    "attention_type": [("gated", {}, "load")],
    "class_embeddings_concat": [(True, {}, "load")],
    "mid_block_only_cross_attention": [(True, {}, "load")],
    "cross_attention_norm": [("group_norm", {}, "load")],
    "addition_embed_type_num_heads": [(32, {}, "load")],
}


def unet_run(cfg, gen):
    from diffusers import UNet2DConditionModel
    kwargs = {k: v for k, v in cfg.items() if not k.startswith("_")}
    model = perturb(UNet2DConditionModel(**kwargs), gen)
    cross = cfg["cross_attention_dim"]
    cross = cross[-1] if isinstance(cross, list) else cross  # the width every attention block of the base reads
    inputs = {"sample": torch.randn(1, cfg.get("in_channels", 4), 8, 8, generator=gen),
              "timestep": torch.tensor([37]),
              "encoder_hidden_states": torch.randn(1, 3, cross, generator=gen)}
    added = None
    if cfg.get("addition_embed_type") == "text_time":
        td = cfg["addition_time_embed_dim"]
        inputs["text_embeds"] = torch.randn(1, cfg["projection_class_embeddings_input_dim"] - 6 * td, generator=gen)
        inputs["time_ids"] = torch.tensor([[16.0, 16.0, 0.0, 0.0, 16.0, 16.0]])
        added = {"text_embeds": inputs["text_embeds"], "time_ids": inputs["time_ids"]}
    with torch.no_grad():
        out = model(inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"],
                    added_cond_kwargs=added).sample
    return model, {**inputs, "expected": out}


# ---- AutoencoderKL / AutoencoderTiny -------------------------------------------------------------

KL_BASE = dict(_class_name="AutoencoderKL", block_out_channels=[8, 16],
               down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
               layers_per_block=1, latent_channels=4, norm_num_groups=4)
KL_VALUES = {
    "_class_name": [("AutoencoderTiny", {}, "refuse")],
    "_diffusers_version": [("0.1.0", {}, "load")],
    "_name_or_path": [("somewhere/else", {}, "load")],
    "in_channels": [(4, {}, "load")],
    "out_channels": [(1, {}, "load")],
    "down_block_types": [(["DownEncoderBlock2D", "AttnDownEncoderBlock2D"], {}, "refuse")],
    "up_block_types": [(["UpDecoderBlock2D", "AttnUpDecoderBlock2D"], {}, "refuse")],
    "block_out_channels": [([8, 8], {}, "load")],
    "layers_per_block": [(2, {}, "load")],
    "act_fn": [("gelu", {}, "load"), ("mish", {}, "load")],
    "latent_channels": [(3, {}, "load")],
    "norm_num_groups": [(2, {}, "load")],
    "sample_size": [(64, {}, "load")],
    "scaling_factor": [(0.5, {}, "load")],
    "shift_factor": [(0.1, {}, "load")],
    "latents_mean": [([0.1, 0.2, 0.3, 0.4], {}, "load")],
    "latents_std": [([1.1, 1.2, 1.3, 1.4], {}, "load")],
    "force_upcast": [(False, {}, "load")],
    "use_quant_conv": [(False, {}, "load")],
    "use_post_quant_conv": [(False, {}, "load")],
    "mid_block_add_attention": [(False, {}, "load")],
}

TINY_BASE = dict(_class_name="AutoencoderTiny", encoder_block_out_channels=[8, 8], decoder_block_out_channels=[8, 8],
                 num_encoder_blocks=[1, 1], num_decoder_blocks=[1, 1], latent_channels=4)
TINY_VALUES = {
    "_class_name": [("AutoencoderKL", {}, "refuse")],
    "_diffusers_version": [("0.1.0", {}, "load")],
    "_name_or_path": [("somewhere/else", {}, "load")],
    "in_channels": [(4, {}, "load")],
    "out_channels": [(1, {}, "load")],
    "encoder_block_out_channels": [([12, 12], {}, "load")],
    "decoder_block_out_channels": [([12, 12], {}, "load")],
    "act_fn": [("gelu", {}, "load")],
    "upsample_fn": [("bilinear", {}, "refuse")],
    "latent_channels": [(3, {}, "load")],
    "upsampling_scaling_factor": [(1, {}, "load")],
    "num_encoder_blocks": [([2, 1], {}, "load")],
    "num_decoder_blocks": [([1, 2], {}, "load")],
    "latent_magnitude": [(2.0, {}, "load")],
    "latent_shift": [(0.4, {}, "load")],
    "force_upcast": [(True, {}, "load")],
    "scaling_factor": [(0.5, {}, "load")],
    "shift_factor": [(0.1, {}, "load")],
}


def kl_run(cfg, gen):
    from diffusers import AutoencoderKL
    model = perturb(AutoencoderKL(**{k: v for k, v in cfg.items() if not k.startswith("_")}), gen)
    n = len(cfg["block_out_channels"])
    image = torch.rand(1, cfg.get("in_channels", 3), 16, 16, generator=gen) * 2 - 1
    latents = torch.randn(1, cfg.get("latent_channels", 4), 16 >> (n - 1), 16 >> (n - 1), generator=gen)
    with torch.no_grad():
        mean = model.encode(image).latent_dist.mean
        out = {"image": image, "latents": latents, "mean": mean,
               "unet_latents": mean * model.config.scaling_factor, "decoded": model.decode(latents).sample}
    return model, out


def tiny_run(cfg, gen):
    from diffusers import AutoencoderTiny
    model = perturb(AutoencoderTiny(**{k: v for k, v in cfg.items() if not k.startswith("_")}), gen)
    n = len(cfg["encoder_block_out_channels"])
    image = torch.rand(1, cfg.get("in_channels", 3), 16, 16, generator=gen) * 2 - 1
    latents = torch.randn(1, cfg.get("latent_channels", 4), 16 >> (n - 1), 16 >> (n - 1), generator=gen)
    with torch.no_grad():
        out = {"image": image, "latents": latents, "encoded": model.encode(image).latents,
               "decoded": model.decode(latents).sample, "scaled": model.scale_latents(latents)}
    return model, out


# ---- CLIP text / vision (transformers) ------------------------------------------------------------

TRANSFORMERS_COMMON = {
    "_name_or_path": [("somewhere/else", {}, "load")],
    "transformers_version": [("4.0.0", {}, "load")],
    "model_type": [("clip", {}, "load")],
    "dtype": [("float16", {}, "load")],
    "torch_dtype": [("float16", {}, "load")],
    "output_hidden_states": [(True, {}, "load")],
    "output_attentions": [(True, {}, "load")],
    "return_dict": [(False, {}, "load")],
    "chunk_size_feed_forward": [(4, {}, "load")],
    "is_encoder_decoder": [(True, {}, "load")],
    "id2label": [({"0": "a", "1": "b", "2": "c"}, {}, "load")],
    "label2id": [({"a": 0, "b": 1, "c": 2}, {}, "load")],
    "problem_type": [("regression", {}, "load")],
    "initializer_range": [(0.5, {}, "load")],
    "initializer_factor": [(2.0, {}, "load")],
    "attention_dropout": [(0.1, {}, "load")],
    "hidden_act": [("gelu", {}, "load"), ("relu", {}, "refuse")],
    "layer_norm_eps": [(1e-2, {}, "load")],
    "hidden_size": [(24, {}, "load")],
    "intermediate_size": [(40, {}, "load")],
    "num_hidden_layers": [(3, {}, "load")],
    "num_attention_heads": [(4, {}, "load")],
    "projection_dim": [(8, {}, "load")],
}

TEXT_BASE = dict(architectures=["CLIPTextModelWithProjection"], vocab_size=64, hidden_size=16, intermediate_size=32,
                 num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=8, projection_dim=12)
TEXT_VALUES = {
    **TRANSFORMERS_COMMON,
    "architectures": [(["CLIPTextModel"], {}, "load")],
    "vocab_size": [(80, {}, "load")],
    "max_position_embeddings": [(10, {}, "load")],
    "eos_token_id": [(59, {}, "load"), (2, {}, "load")],  # 59: first match; 2: legacy largest id
    "bos_token_id": [(0, {}, "load")],
    "pad_token_id": [(0, {}, "load")],
}

VISION_BASE = dict(architectures=["CLIPVisionModelWithProjection"], hidden_size=16, intermediate_size=32,
                   num_hidden_layers=2, num_attention_heads=2, image_size=8, patch_size=4, projection_dim=12)
VISION_VALUES = {
    **TRANSFORMERS_COMMON,
    "architectures": [(["CLIPVisionModel"], {}, "load")],
    "num_channels": [(1, {}, "load")],
    "image_size": [(12, {}, "load")],
    "patch_size": [(2, {}, "load")],
}


def as_float32(model):
    """`dtype` / `torch_dtype` pick the reference's storage dtype (ours is the caller's choice) and
    `return_dict` the output container: neither changes the values compared here."""
    model.config.return_dict = True
    return model.float()


def text_run(cfg, gen):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    config = CLIPTextConfig(**cfg)
    projected = "WithProjection" in cfg["architectures"][0]
    model = perturb(as_float32((CLIPTextModelWithProjection if projected else CLIPTextModel)(config)), gen)
    ids = torch.randint(0, 56, (2, 6), generator=gen)
    ids[0, 3] = 60  # row 0: the largest id mid-sequence
    ids[1, 1] = 59  # row 1: eos 59 picks position 1, the legacy rule (largest id) position 5
    ids[1, 5] = 60
    with torch.no_grad():
        o = model(input_ids=ids, output_hidden_states=True, return_dict=True)
    out = {"input_ids": ids, "last_hidden_state": o.last_hidden_state, "penultimate": o.hidden_states[-2]}
    if projected:
        out["text_embeds"] = o.text_embeds
    else:
        out["pooler_output"] = o.pooler_output
    return model, out


def vision_run(cfg, gen):
    from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection
    config = CLIPVisionConfig(**cfg)
    projected = "WithProjection" in cfg["architectures"][0]
    model = perturb(as_float32((CLIPVisionModelWithProjection if projected else CLIPVisionModel)(config)), gen)
    pixels = torch.randn(2, config.num_channels, config.image_size, config.image_size, generator=gen)
    with torch.no_grad():
        o = model(pixel_values=pixels, output_hidden_states=True, return_dict=True)
    out = {"pixel_values": pixels, "last_hidden_state": o.last_hidden_state, "penultimate": o.hidden_states[-2]}
    if projected:
        out["image_embeds"] = o.image_embeds
    else:
        out["pooler_output"] = o.pooler_output
    return model, out


def tower(base):
    return {k: v for k, v in base.items() if k != "architectures"}


CLIP_MODEL_BASE = dict(architectures=["CLIPModel"], text_config=tower(TEXT_BASE), vision_config=tower(VISION_BASE),
                       projection_dim=12)
CLIP_MODEL_VALUES = {
    **TRANSFORMERS_COMMON,
    "architectures": [(["CLIPModelSomething"], {}, "load")],
    "logit_scale_init_value": [(1.0, {}, "load")],
    "text_config": [({**tower(TEXT_BASE), "hidden_size": 24, "hidden_act": "gelu"}, {}, "load")],
    "vision_config": [({**tower(VISION_BASE), "image_size": 12, "layer_norm_eps": 1e-2}, {}, "load")],
    # transformers completes a legacy *_config_dict with the class defaults and lets it replace *_config.
    "text_config_dict": [({**tower(TEXT_BASE), "num_hidden_layers": 3, "eos_token_id": 59}, {}, "load")],
    "vision_config_dict": [({**tower(VISION_BASE), "hidden_act": "gelu"}, {}, "load")],
}


def clip_model_run(cfg, gen):
    from transformers import CLIPConfig, CLIPModel
    model = perturb(as_float32(CLIPModel(CLIPConfig(**cfg))), gen)
    text, vision = model.config.text_config, model.config.vision_config
    ids = torch.randint(0, 56, (2, 6), generator=gen)
    ids[:, 4] = 59
    pixels = torch.randn(3, vision.num_channels, vision.image_size, vision.image_size, generator=gen)
    with torch.no_grad():
        o = model(input_ids=ids, pixel_values=pixels, return_dict=True)
    return model, {"input_ids": ids, "pixel_values": pixels, "logits_per_image": o.logits_per_image,
                   "text_embeds": o.text_embeds, "image_embeds": o.image_embeds}


# ---- schedulers ---------------------------------------------------------------------------------

SCHED_VALUES = {
    "_class_name": [("PNDMScheduler", {}, "load")],
    "_diffusers_version": [("0.1.0", {}, "load")],
    "num_train_timesteps": [(500, {}, "load")],
    "beta_start": [(0.001, {}, "load")],
    "beta_end": [(0.01, {}, "load")],
    "beta_schedule": [("squaredcos_cap_v2", {}, "load"), ("sigmoid", {}, "refuse")],
    "trained_betas": [([0.001 + 0.00001 * i for i in range(1000)], {}, "load")],
    "variance_type": [("learned_range", {}, "load")],
    "clip_sample": [(None, {}, "load")],  # replaced by the negation of the class default below
    "prediction_type": [("v_prediction", {}, "load")],
    "thresholding": [(True, {}, "load")],
    "dynamic_thresholding_ratio": [(0.9, {}, "load")],
    "clip_sample_range": [(2.0, {}, "load")],
    "sample_max_value": [(2.0, {}, "load")],
    "timestep_spacing": [("trailing", {}, "load")],
    "steps_offset": [(1, {}, "load")],
    "rescale_betas_zero_snr": [(True, {}, "load")],
    "set_alpha_to_one": [(False, {}, "load")],
    "interpolation_type": [("log_linear", {}, "load")],
    "use_karras_sigmas": [(True, {}, "load")],
    "use_exponential_sigmas": [(True, {}, "load")],
    "use_beta_sigmas": [(True, {}, "load")],
    "sigma_min": [(0.1, {}, "load")],
    "sigma_max": [(10.0, {}, "load")],
    "timestep_type": [("continuous", {}, "load")],
    "final_sigmas_type": [("sigma_min", {}, "load")],
    "solver_order": [(3, {}, "load")],
    "algorithm_type": [("sde-dpmsolver++", {}, "load"), ("dpmsolver", {}, "refuse")],
    "solver_type": [("heun", {}, "load")],
    "lower_order_final": [(False, {}, "load")],
    "euler_at_final": [(True, {}, "load")],
    "use_lu_lambdas": [(True, {}, "load")],
    "use_flow_sigmas": [(True, {}, "load")],
    "flow_shift": [(3.0, {}, "load")],
    "lambda_min_clipped": [(-5.1, {}, "load")],
    "use_dynamic_shifting": [(True, {}, "load")],
    "time_shift_type": [("linear", {}, "load")],
    "original_inference_steps": [(40, {}, "load")],
    "timestep_scaling": [(5.0, {}, "load")],
}


def scheduler_classes():
    from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler,
                           EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, LCMScheduler)
    return {"sched_ddpm": DDPMScheduler, "sched_ddim": DDIMScheduler, "sched_euler": EulerDiscreteScheduler,
            "sched_euler_ancestral": EulerAncestralDiscreteScheduler, "sched_dpm": DPMSolverMultistepScheduler,
            "sched_lcm": LCMScheduler}


def sched_run(cls, cfg, gen):
    """The training noise (DDPM: add_noise) or a 4-step sampling chain with the noise each step
    draws recorded, so the C++ sampler can replay it."""
    sched = cls.from_config(cfg)
    if cls.__name__ == "DDPMScheduler":
        x0, noise = torch.randn(3, 2, 4, 4, generator=gen), torch.randn(3, 2, 4, 4, generator=gen)
        t = torch.tensor([0, 250, sched.config.num_train_timesteps - 1])
        return None, {"x0": x0, "noise": noise, "t": t, "noisy": sched.add_noise(x0, noise, t)}
    sched.set_timesteps(4)
    ts = sched.timesteps
    if len(ts) != 4 or not all(0 <= float(t) < sched.config.num_train_timesteps for t in ts):
        raise ValueError(f"degenerate schedule {ts.tolist()}")
    module = sys.modules[cls.__module__]
    original, drawn = module.randn_tensor, []

    def recording(*args, **kwargs):
        drawn.append(original(*args, **kwargs).clone())
        return drawn[-1]

    x = torch.randn(1, 2, 4, 4, generator=gen) * sched.init_noise_sigma
    out = {"timesteps": ts.double(), "init_noise_sigma": torch.tensor(float(sched.init_noise_sigma)), "sample0": x}
    module.randn_tensor = recording
    try:
        for i, t in enumerate(ts):
            model_output = torch.randn(1, 2, 4, 4, generator=gen)
            drawn.clear()
            x = sched.step(model_output, t, x, generator=gen).prev_sample
            out[f"model_output{i}"] = model_output
            if drawn:
                out[f"noise{i}"] = drawn[0]
            out[f"prev_sample{i}"] = x
    finally:
        module.randn_tensor = original
    return None, out


# ---- the walk -----------------------------------------------------------------------------------

def json_safe(value):
    if isinstance(value, float) and math.isinf(value):
        return None  # diffusers' -inf (lambda_min_clipped): JSON has no infinity
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def diffusers_keys(cls):
    keys = [k for k in inspect.signature(cls.__init__).parameters if k not in ("self", "kwargs")]
    return ["_class_name", "_diffusers_version"] + keys


def transformers_keys(config_cls):
    return sorted(set(config_cls().to_dict()) | {"torch_dtype"})


def walk(outdir, reader, keys, base, values, run, save):
    """Writes the base case and one case per (key, value); returns the manifest cases."""
    missing = [k for k in keys if k not in values]
    if missing:
        sys.exit(f"config_keys_oracle: {reader}: no test value for reference key(s) {missing}")
    variants = [("base", None, None, {}, "load")]
    for key in keys:
        for i, (value, extra, ours) in enumerate(values[key]):
            variants.append((f"{key}_{i}", key, value, extra, ours))
    cases = []
    for name, key, value, extra, ours in variants:
        cfg = dict(base)
        if key is not None:
            cfg[key] = value
        cfg.update(extra)
        folder = os.path.join(outdir, reader, name)
        os.makedirs(folder, exist_ok=True)
        gen = torch.Generator().manual_seed(1234)
        accepted, error = True, ""
        try:
            model, tensors = run(cfg, gen)
            if save:
                if model is not None:
                    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                              os.path.join(folder, save))
                save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(folder, "io.safetensors"))
        except Exception as e:  # the reference refuses this config (at construction or in forward)
            accepted, error = False, f"{type(e).__name__}: {e}"[:200]
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump({k: json_safe(v) for k, v in cfg.items()}, f, indent=1)
        cases.append({"reader": reader, "name": name, "key": key, "value": json_safe(value), "dir": folder,
                      "accepted": accepted, "error": error, "ours": ours, "parity": bool(save) and accepted})
    return cases


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPVisionConfig

    readers, cases = {}, []

    def add(reader, keys, base, values, run, save):
        readers[reader] = keys
        cases.extend(walk(outdir, reader, keys, base, values, run, save))

    add("unet", diffusers_keys(UNet2DConditionModel) + ["_name_or_path"], UNET_BASE, UNET_VALUES, unet_run,
        "diffusion_pytorch_model.safetensors")
    add("vae_kl", diffusers_keys(AutoencoderKL) + ["_name_or_path"], KL_BASE, KL_VALUES, kl_run,
        "diffusion_pytorch_model.safetensors")
    add("vae_tiny", diffusers_keys(AutoencoderTiny) + ["_name_or_path"], TINY_BASE, TINY_VALUES, tiny_run,
        "diffusion_pytorch_model.safetensors")
    add("clip_text", transformers_keys(CLIPTextConfig), TEXT_BASE, TEXT_VALUES, text_run, "model.safetensors")
    add("clip_vision", transformers_keys(CLIPVisionConfig), VISION_BASE, VISION_VALUES, vision_run,
        "model.safetensors")
    from transformers import CLIPConfig
    add("clip_model", transformers_keys(CLIPConfig) + ["text_config_dict", "vision_config_dict"], CLIP_MODEL_BASE,
        CLIP_MODEL_VALUES, clip_model_run, "model.safetensors")
    for reader, cls in scheduler_classes().items():
        keys = diffusers_keys(cls)
        defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()}
        values = dict(SCHED_VALUES)
        values["clip_sample"] = [(not defaults.get("clip_sample", False), {}, "load")]

        add(reader, keys, {"_class_name": cls.__name__}, values, lambda cfg, gen, cls=cls: sched_run(cls, cfg, gen),
            "schedule")

    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        json.dump({"readers": readers, "cases": cases}, f, indent=1)
    refused = sum(not c["accepted"] for c in cases)
    print(f"config_keys_oracle: {len(cases)} cases over {len(readers)} readers "
          f"({refused} refused by the reference) in {outdir}")


if __name__ == "__main__":
    main()
