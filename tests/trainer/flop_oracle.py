"""FLOP oracle for trainer/flop_counter: PyTorch's own counter (torch.utils.flop_counter.FlopCounterMode)
on diffusers' UNet2DConditionModel with SDXL base's configuration, on the meta device.

Usage: flop_oracle.py BATCH LATENT
Prints "forward backward": the forward's FLOPs, and the backward's of a loss on the output with
every weight trainable and the sample not (the FLOPs of the gradients autograd computes).
"""
import sys

import torch
from diffusers import UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode

batch, latent = int(sys.argv[1]), int(sys.argv[2])
with torch.device("meta"):
    unet = UNet2DConditionModel(  # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json
        sample_size=128, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(320, 640, 1280), layers_per_block=2, transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20), cross_attention_dim=2048, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
        norm_num_groups=32)
    sample = torch.empty(batch, 4, latent, latent)
    timestep = torch.full((batch,), 10)
    prompt = torch.empty(batch, 77, 2048)
    added = {"text_embeds": torch.empty(batch, 1280), "time_ids": torch.empty(batch, 6)}
    with FlopCounterMode(display=False) as forward:
        out = unet(sample, timestep, encoder_hidden_states=prompt, added_cond_kwargs=added).sample
    with FlopCounterMode(display=False) as backward:
        out.sum().backward()
print(forward.get_total_flops(), backward.get_total_flops())
