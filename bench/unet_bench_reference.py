#!/usr/bin/env python3
"""diffusers (PyTorch eager) side of bench/run_unet_bench.sh: one forward + backward of the same
UNet config, inputs and thread count as bench/unet_bench.cpp. Prints the mean and median ms."""
import json
import statistics
import sys
import time

import torch
from diffusers import UNet2DConditionModel

config_path, threads, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
torch.manual_seed(0)
cfg = {k: v for k, v in json.load(open(config_path)).items() if not k.startswith("_")}
unet = UNet2DConditionModel(**cfg)
b, side = 2, 32
td = cfg["addition_time_embed_dim"]
sample = torch.randn(b, cfg["in_channels"], side, side)
t = torch.tensor([500, 20])
ctx = torch.randn(b, 77, cfg["cross_attention_dim"])
text = torch.randn(b, cfg["projection_class_embeddings_input_dim"] - 6 * td)
ids = torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]]).repeat(b, 1)
times = []
for i in range(iters + 2):
    unet.zero_grad()
    t0 = time.perf_counter()
    out = unet(sample, t, encoder_hidden_states=ctx, added_cond_kwargs={"text_embeds": text, "time_ids": ids}).sample
    out.square().mean().backward()
    dt = time.perf_counter() - t0
    if i >= 2:  # warm-up
        times.append(dt * 1e3)
print(json.dumps({"threads": threads, "iters": iters, "mean_ms": statistics.mean(times),
                  "median_ms": statistics.median(times)}))
