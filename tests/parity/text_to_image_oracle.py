#!/usr/bin/env python3
"""Oracle for the SDXL text-to-image parity test (model/pipeline): diffusers'
StableDiffusionXLPipeline itself, on a small random SDXL-family pipeline that this script builds and
saves with save_pretrained. Both tokenizers are the real CLIP vocabulary (open_clip's
bpe_simple_vocab_16e6.txt.gz; tokenizer_2 pads with "!" as SDXL's does).

  text_to_image_oracle.py OUTDIR

OUTDIR/turbo is an sdxl-turbo-like folder (EulerAncestralDiscreteScheduler, trailing spacing),
OUTDIR/base the same networks with SDXL base's EulerDiscreteScheduler (leading, steps_offset 1).
OUTDIR/cases.json lists the cases (folder, prompts, seeds, steps, guidance); each case's
<name>.safetensors holds diffusers' initial latents, the inputs and output of its first UNet call,
its final latents and the uint8 images.
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clip_oracle import bpe_gz_path, perturb, write_hf_tokenizer  # noqa: E402


def build_pipeline(out_dir, sample_size=16):
    """Writes out_dir/turbo and out_dir/base; images are sample_size x 2 pixels square."""
    from diffusers import (AutoencoderKL, EulerAncestralDiscreteScheduler, StableDiffusionXLPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    gen = torch.Generator().manual_seed(20261205)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=sample_size, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=32)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4, sample_size=32, scaling_factor=0.13025, force_upcast=True)
    tok_dir = os.path.join(out_dir, "_tokenizer")
    write_hf_tokenizer(bpe_gz_path(), tok_dir)
    tok1 = CLIPTokenizer(os.path.join(tok_dir, "vocab.json"), os.path.join(tok_dir, "merges.txt"),
                         model_max_length=77)
    tok2 = CLIPTokenizer(os.path.join(tok_dir, "vocab.json"), os.path.join(tok_dir, "merges.txt"), pad_token="!",
                         model_max_length=77)
    common = dict(bos_token_id=49406, eos_token_id=2, vocab_size=49408, layer_norm_eps=1e-5, num_attention_heads=4,
                  num_hidden_layers=3, max_position_embeddings=77)
    te1 = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, hidden_act="quick_gelu", **common))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=32, intermediate_size=37, hidden_act="gelu",
                                                     projection_dim=32, **common))
    for m in (unet, vae, te1, te2):
        perturb(m, gen)
    scheduler = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                num_train_timesteps=1000, prediction_type="epsilon",
                                                timestep_spacing="trailing", steps_offset=1)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1,
                                     tokenizer_2=tok2, unet=unet, scheduler=scheduler, add_watermarker=False)
    turbo = os.path.join(out_dir, "turbo")
    pipe.save_pretrained(turbo, safe_serialization=True)
    # Our reader takes the pad token from special_tokens_map.json (as the SDXL downloads ship it).
    # transformers 5 saves only tokenizer.json; the published SDXL folders carry vocab.json and merges.txt.
    for name, pad in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):
        for file in ("vocab.json", "merges.txt"):
            shutil.copy(os.path.join(tok_dir, file), os.path.join(turbo, name, file))
        with open(os.path.join(turbo, name, "special_tokens_map.json"), "w") as f:
            json.dump({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": pad,
                       "unk_token": "<|endoftext|>"}, f)
    shutil.rmtree(tok_dir)
    base = os.path.join(out_dir, "base")
    shutil.copytree(turbo, base)
    base_sched = {"_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
                  "timestep_spacing": "leading", "steps_offset": 1, "interpolation_type": "linear",
                  "use_karras_sigmas": False}
    with open(os.path.join(base, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(base_sched, f)
    # diffusers takes the scheduler's class from model_index.json, not from scheduler_config.json.
    with open(os.path.join(base, "model_index.json")) as f:
        index = json.load(f)
    index["scheduler"] = ["diffusers", "EulerDiscreteScheduler"]
    with open(os.path.join(base, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
    return turbo, base


def run_case(folder, name, prompts, seeds, steps, guidance, out_dir):
    from diffusers import StableDiffusionXLPipeline
    pipe = StableDiffusionXLPipeline.from_pretrained(folder, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    calls = []

    def hook(module, args, kwargs, output):
        if not calls:
            calls.append(dict(sample=kwargs.get("sample", args[0] if args else None).clone(),
                              timestep=torch.as_tensor(args[1] if len(args) > 1 else kwargs["timestep"]).float()
                              .reshape(-1).clone(),
                              encoder_hidden_states=kwargs["encoder_hidden_states"].clone(),
                              text_embeds=kwargs["added_cond_kwargs"]["text_embeds"].clone(),
                              time_ids=kwargs["added_cond_kwargs"]["time_ids"].clone(),
                              unet_out=output[0].clone()))

    handle = pipe.unet.register_forward_hook(hook, with_kwargs=True)
    gens = lambda: [torch.Generator("cpu").manual_seed(s) for s in seeds]  # noqa: E731
    images = pipe(prompt=prompts, generator=gens(), num_inference_steps=steps, guidance_scale=guidance,
                  output_type="pil").images
    handle.remove()
    latents = pipe(prompt=prompts, generator=gens(), num_inference_steps=steps, guidance_scale=guidance,
                   output_type="latent").images
    h = w = pipe.default_sample_size * pipe.vae_scale_factor
    pipe.scheduler.set_timesteps(steps)
    init = torch.cat([torch.randn((1, 4, h // pipe.vae_scale_factor, w // pipe.vae_scale_factor), generator=g)
                      for g in gens()]) * pipe.scheduler.init_noise_sigma
    tensors = dict(initial_latents=init, final_latents=latents.float(),
                   images=torch.from_numpy(np.stack([np.array(im) for im in images])).contiguous(),
                   sigmas=pipe.scheduler.sigmas.float().contiguous(),
                   **{k: v.float().contiguous() for k, v in calls[0].items()})
    save_file(tensors, os.path.join(out_dir, name + ".safetensors"))
    return dict(name=name, folder=os.path.basename(folder), prompts=prompts, seeds=seeds, steps=steps,
                guidance=guidance)


def main():
    out_dir = sys.argv[1]
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    torch.manual_seed(0)
    turbo, base = build_pipeline(out_dir)
    three = ["A photo of a 34-year-old woman with short curly black hair, smiling",
             "a pencil drawing of a bearded man with round glasses",
             "A photo of face"]
    seeds3 = [0, 42, 2**40 + 7]
    cases = [run_case(turbo, "turbo_1step_b1", three[:1], [1234], 1, 0.0, out_dir),
             run_case(turbo, "turbo_1step_b3", three, seeds3, 1, 0.0, out_dir),
             run_case(turbo, "turbo_4step_b1", three[1:2], [7], 4, 0.0, out_dir),
             run_case(turbo, "turbo_4step_b3", three, seeds3, 4, 0.0, out_dir),
             run_case(base, "base_3step_cfg_b3", three, seeds3, 3, 5.0, out_dir)]
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump({"cases": cases}, f, indent=1)
    print(f"text_to_image_oracle: wrote {len(cases)} cases to {out_dir}")


if __name__ == "__main__":
    main()
