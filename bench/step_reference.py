#!/usr/bin/env python3
"""PyTorch side of bench/run_step_vs_pytorch.sh: the official LCM-Lookahead training iteration
(docs/training.md, "One step"), re-created in plain PyTorch + diffusers at the sizes of bench_step's `tiny` and
`mid` setups, so that our step (bench_step) can be timed against it on the same machine, batch and
thread count. Everything is random (no weights are loaded) and fp32 on the CPU, as in bench_step.

What one step does, as train_encoder.py does it:
- draw: importance-sampled timesteps (a = 0.5 diffusion, 0.2 LCM), ε, adapter drop 0.1, K/V token
  drop 0.05; every `alpha_every` (5) steps a new LCM-LoRA scale α (1 with probability 0.5, else
  U(0.1, 1)), fused into the LCM UNet's weights (W = W_base + α·up@down, then copied into the LCM
  UNet as the official code's unfuse_lora / fuse_lora(lora_scale) / load_state_dict does);
- reference identity: ArcFace of the aligned reference photo, no gradient;
- branch 1: the KV encoder (a separate UNet copy, truncated after up_blocks[n-2], encoder LoRA rank 4
  on attn1/attn2 q/k/v/out, KV-copy LoRA rank 4, IP K/V from the Resampler tokens) on the noised
  reference latent; the frozen decoder UNet on the noised target with the shared K/V appended to
  self-attention and the IP-Adapter branch in cross-attention; MSE to ε;
- branch 2: new timesteps, the same ε; the encoder again; the LCM UNet (LoRA fused at α); the
  one-step LCM preview; TAESD decoder; differentiable 5-point alignment (affine grid sample) to
  112x112; ArcFace (iresnet, tiny layers); loss α·λ·(1 - cos) averaged over the batch;
- gradient checkpointing on all three UNets (diffusers' enable_gradient_checkpointing: every resnet
  and transformer block), as --gradient_checkpointing sets it;
- torch.optim.AdamW, two lr groups (adapter 1e-5: Resampler + to_k_ip/to_v_ip; LoRAs 5e-6), weight
  decay 0.01, gradient-norm clip 1.0. Loss mode `sum`: both branches backward, one optimizer step;
  `alternate`: an optimizer step after each branch (branch 1 clips the LoRAs only, as the official).

The attention processors are tests/parity/kv_encoder_oracle.py's (the same KV encoder / decoder
semantics the C++ parity test checks), one State per UNet so that a checkpointed block recomputed
in backward sees the same mode and tensors as in forward.

  step_reference.py --config tiny|mid --loss-mode sum|alternate --steps N --warmup W --threads T
Prints one JSON object: per-step ms (warm-up excluded), mean_ms, median_ms.
"""
import argparse
import copy
import json
import math
import os
import random
import statistics
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "parity"))
from kv_encoder_oracle import State, install, transformer_blocks, up_block_of  # noqa: E402
from face_oracle import ARCFACE_DST, IResNet, umeyama  # noqa: E402

# bench_step's make_setup (bench/bench_step.cpp) and LookaheadModelConfig::tiny().
UNETS = {
    "tiny": dict(block_out_channels=[16, 32, 32], layers_per_block=1, transformer_layers_per_block=[1, 1, 1],
                 attention_head_dim=2, norm_num_groups=4),
    "mid": dict(block_out_channels=[64, 128, 128], layers_per_block=2, transformer_layers_per_block=[1, 2, 2],
                attention_head_dim=[2, 4, 4], norm_num_groups=32),
}
TAESD_CHANNELS = {"tiny": 8, "mid": 16}
LATENT = {"tiny": 8, "mid": 32}
REF_PIXELS = {"tiny": 64, "mid": 256}
CLIP_TOKENS, CLIP_DIM, PROMPT_TOKENS, CROSS_DIM, POOLED, TIME_DIM = 5, 12, 3, 24, 16, 4
RANK, KV_RANK, LCM_RANK, LCM_INIT_STD = 4, 4, 4, 0.3
LR_ADAPTER, LR_LORA, WEIGHT_DECAY, CLIP = 1e-5, 5e-6, 0.01, 1.0
LAMBDA_ID, ADAPTER_DROP, KV_DROP, ALPHA_EVERY, FULL_LCM_PROB, MIN_ALPHA = 1e-3, 0.1, 0.05, 5, 0.5, 0.1


def build_unet(name):
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel(
        in_channels=4, out_channels=4, down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], cross_attention_dim=CROSS_DIM,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=TIME_DIM,
        projection_class_embeddings_input_dim=POOLED + 6 * TIME_DIM, **UNETS[name])


def lcm_lora_targets(unet):
    """LookaheadModelConfig::tiny()'s lcm_lora_select: to_q, to_out.0, proj_in, conv1."""
    return [(n, m) for n, m in unet.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and n.endswith(("to_q", "to_out.0", "proj_in", "conv1"))]


def encoder_forward(unet, sample, t, ctx, added, last_up):
    """UNet2DConditionModel.forward up to and including up_blocks[last_up] (the KV encoder stops
    there; its outputs are the K/V its processors record)."""
    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=t))
    emb = emb + unet.get_aug_embed(emb=emb, encoder_hidden_states=ctx, added_cond_kwargs=added)
    h = unet.conv_in(sample)
    res = (h,)
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            h, r = block(hidden_states=h, temb=emb, encoder_hidden_states=ctx)
        else:
            h, r = block(hidden_states=h, temb=emb)
        res += r
    h = unet.mid_block(h, emb, encoder_hidden_states=ctx)
    for block in unet.up_blocks[:last_up + 1]:
        r, res = res[-len(block.resnets):], res[:-len(block.resnets)]
        h = block(hidden_states=h, temb=emb, res_hidden_states_tuple=r, encoder_hidden_states=ctx)
    return h


class Reference:
    """The networks and trainables of one official iteration."""

    def __init__(self, name, gen):
        torch.manual_seed(2024)
        self.name = name
        self.decoder = build_unet(name)                       # frozen base (branch 1)
        self.encoder = copy.deepcopy(self.decoder)            # ExtractKVUNet: a separate copy
        self.lcm = copy.deepcopy(self.decoder)                # lcm_unet: LCM-LoRA fused
        for u in (self.decoder, self.encoder, self.lcm):
            u.requires_grad_(False)
            u.enable_gradient_checkpointing()
            u.train()
        self.blocks = transformer_blocks(self.decoder)
        self.last_up = len(self.decoder.up_blocks) - 2
        in_range = [p for p in self.blocks if up_block_of(p) <= self.last_up]

        # IP-Adapter Plus: diffusers' Resampler at ResamplerOptions of LookaheadModelConfig::tiny().
        from diffusers.models.embeddings import IPAdapterPlusImageProjection
        self.resampler = IPAdapterPlusImageProjection(embed_dims=CLIP_DIM, output_dims=CROSS_DIM, hidden_dims=16,
                                                      depth=1, dim_head=64, heads=1, num_queries=4, ffn_ratio=4)
        self.adapter_params = list(self.resampler.parameters())
        ip_weights = {}
        for bp in self.blocks:
            attn2 = self.decoder.get_submodule(bp + ".attn2")
            c = attn2.to_q.out_features
            wk = torch.nn.Parameter(torch.randn(c, CROSS_DIM) * CROSS_DIM ** -0.5)
            wv = torch.nn.Parameter(torch.randn(c, CROSS_DIM) * CROSS_DIM ** -0.5)
            ip_weights[bp + ".attn2"] = (wk, wv)
            self.adapter_params += [wk, wv]

        # Encoder LoRA (all blocks in range but the last) and KV-copy LoRA: down N(0, 1/r), up 0.
        self.enc_state, self.lora_params, self.kv_params = State(), [], []
        self.enc_state.mode, self.enc_state.ip_weights = "encoder", ip_weights
        lora = lambda out_f, in_f, r: (torch.nn.Parameter(torch.randn(r, in_f) / r),
                                       torch.nn.Parameter(torch.zeros(out_f, r)))
        for i, bp in enumerate(in_range):
            c = self.encoder.get_submodule(bp + ".attn1").to_k.out_features
            kd, ku = lora(c, c, KV_RANK)
            vd, vu = lora(c, c, KV_RANK)
            self.enc_state.kv_heads[i] = (kd, ku, vd, vu)
            self.kv_params += [kd, ku, vd, vu]
            if bp == in_range[-1]:
                continue
            for attn in ("attn1", "attn2"):
                for proj in ("to_q", "to_k", "to_v", "to_out.0"):
                    layer = self.encoder.get_submodule(f"{bp}.{attn}.{proj}")
                    d, u = lora(layer.out_features, layer.in_features, RANK)
                    self.enc_state.encoder_lora[f"{bp}.{attn}.{proj}"] = (d, u)
                    self.lora_params += [d, u]
        install(self.encoder, self.enc_state, self.blocks, self.last_up)
        self.dec_state, self.lcm_state = State(), State()
        self.dec_state.mode = self.lcm_state.mode = "decoder"
        install(self.decoder, self.dec_state, self.blocks, self.last_up)
        install(self.lcm, self.lcm_state, self.blocks, self.last_up)

        # Random LCM-LoRA (alpha = rank: factor α), fused into self.lcm by refuse(α).
        self.lcm_lora = []
        for n, m in lcm_lora_targets(self.decoder):
            fan = m.weight[0].numel()
            down = torch.randn(LCM_RANK, fan) * LCM_INIT_STD
            up = torch.randn(m.weight.shape[0], LCM_RANK) * LCM_INIT_STD
            self.lcm_lora.append((n, m.weight.detach(), (up @ down).view(m.weight.shape)))

        c = TAESD_CHANNELS[name]
        from diffusers import AutoencoderTiny
        self.taesd = AutoencoderTiny(encoder_block_out_channels=(c,) * 4, decoder_block_out_channels=(c,) * 4).decoder
        self.arcface = IResNet([1, 1, 1, 1]).eval()
        for m in (self.taesd, self.arcface):
            m.requires_grad_(False)

        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        self.alphas_cumprod = torch.cumprod(1 - betas, 0).float()
        grid = torch.arange(1000, dtype=torch.float64)
        self.p_diff = (1 - 0.5 * torch.cos(math.pi * grid / 1000)).float()
        self.p_lcm = (1 - 0.2 * torch.cos(math.pi * grid / 1000)).float()
        self.alpha = 1.0
        self.gen = gen

        params = self.adapter_params + self.lora_params + self.kv_params
        self.all_params = params
        self.branch1_clip = self.lora_params + self.kv_params  # the official clips the encoder LoRAs in branch 1
        self.optimizer = torch.optim.AdamW([{"params": self.adapter_params, "lr": LR_ADAPTER},
                                            {"params": self.lora_params + self.kv_params, "lr": LR_LORA}],
                                           weight_decay=WEIGHT_DECAY)

    # ------------------------------------------------------------------ pieces of the iteration
    def refuse(self, alpha):
        """unfuse_lora + fuse_lora(lora_scale=α) + lcm_unet.load_state_dict, by plain arithmetic."""
        fused = {n + ".weight": base + alpha * delta for n, base, delta in self.lcm_lora}
        self.lcm.load_state_dict(fused, strict=False)
        self.alpha = alpha

    def add_noise(self, z0, eps, t):
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return a.sqrt() * z0 + (1 - a).sqrt() * eps

    def image_tokens(self, clip_ref, clip_uncond, drop):
        tokens = self.resampler(torch.cat([clip_ref, clip_uncond]))
        n = clip_ref.shape[0]
        cond = tokens[:n]
        if drop is None:
            return cond
        return torch.where(drop.view(n, 1, 1), tokens[n:].expand_as(cond), cond)

    def shared_kv(self, b, t, eps, ip):
        """The KV encoder on the noised reference: per-block reference K/V (token-dropped) and IP K/V."""
        st = self.enc_state
        st.recorded, st.ip_tokens = {}, ip
        added = {"text_embeds": b["ref_pooled"], "time_ids": b["time_ids"]}
        encoder_forward(self.encoder, self.add_noise(b["z_ref"], eps, t), t, b["ref_prompt"], added, self.last_up)
        reference = {}
        for i, rec in st.recorded.items():
            keep = (torch.rand(rec["k"].shape[1], generator=self.gen) >= KV_DROP).nonzero().flatten()
            reference[i] = dict(rec, k=rec["k"].index_select(1, keep), v=rec["v"].index_select(1, keep))
        return reference

    def unet_out(self, unet, state, reference, b, z_t, t):
        state.reference = reference
        return unet(z_t, t, encoder_hidden_states=b["tgt_prompt"],
                    added_cond_kwargs={"text_embeds": b["tgt_pooled"], "time_ids": b["time_ids"]}).sample

    def align(self, images, landmarks):
        """kornia warp_affine of each image by the similarity that maps its landmarks onto the ArcFace
        template (bilinear, zero padding): a constant sampling grid, differentiable in the pixels."""
        n, _, h, w = images.shape
        dst = torch.tensor(ARCFACE_DST, dtype=torch.float64)
        ys, xs = torch.meshgrid(torch.arange(112, dtype=torch.float64), torch.arange(112, dtype=torch.float64),
                                indexing="ij")
        out_pts = torch.stack([xs, ys, torch.ones_like(xs)], -1)  # [112, 112, 3]
        grids = []
        for i in range(n):
            m = torch.cat([umeyama(landmarks[i], dst), torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)])
            src = out_pts @ torch.linalg.inv(m)[:2].T  # [112, 112, 2] source pixels
            grids.append(torch.stack([src[..., 0] * 2 / (w - 1) - 1, src[..., 1] * 2 / (h - 1) - 1], -1))
        return F.grid_sample(images, torch.stack(grids).float(), mode="bilinear", padding_mode="zeros",
                             align_corners=True)

    def embed(self, faces):
        return F.normalize(self.arcface(faces), dim=1)

    def draw_timesteps(self, p, n):
        return torch.multinomial(p, n, replacement=True, generator=self.gen)

    # ------------------------------------------------------------------ one iteration
    def step(self, b, step, mode):
        n = b["z_tgt"].shape[0]
        if step % ALPHA_EVERY == 0:
            u = torch.rand(2, generator=self.gen).tolist()
            self.refuse(1.0 if u[0] < FULL_LCM_PROB else MIN_ALPHA + (1 - MIN_ALPHA) * u[1])
        eps = torch.randn(b["z_tgt"].shape, generator=self.gen)
        with torch.no_grad():
            ref_id = self.embed(self.align(b["ref_pixels"], b["ref_pixel_landmarks"]))

        def optimizer_step(params):
            torch.nn.utils.clip_grad_norm_(params, CLIP)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

        # Branch 1: diffusion.
        t = self.draw_timesteps(self.p_diff, n)
        drop = torch.rand(n, generator=self.gen) < ADAPTER_DROP
        ip = self.image_tokens(b["clip_ref"], b["clip_uncond"], drop)
        reference = self.shared_kv(b, t, eps, ip)
        eps_hat = self.unet_out(self.decoder, self.dec_state, reference, b, self.add_noise(b["z_tgt"], eps, t), t)
        l1 = F.mse_loss(eps_hat.float(), eps.float())
        l1.backward()
        if mode == "alternate":
            optimizer_step(self.branch1_clip)

        # Branch 2: lookahead through the one-step LCM preview.
        t = self.draw_timesteps(self.p_lcm, n)
        ip = self.image_tokens(b["clip_ref"], b["clip_uncond"], None)  # no adapter drop in this branch
        reference = self.shared_kv(b, t, eps, ip)
        z_t = self.add_noise(b["z_tgt"], eps, t)
        eps_hat = self.unet_out(self.lcm, self.lcm_state, reference, b, z_t, t)
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        x0 = (z_t - (1 - a).sqrt() * eps_hat) / a.sqrt()
        ts = (10.0 * t.float()).view(-1, 1, 1, 1)
        c_skip, c_out = 0.25 / (ts ** 2 + 0.25), ts / (ts ** 2 + 0.25).sqrt()
        image = self.taesd(c_out * x0 + c_skip * z_t)  # [B, 3, H, W] in [-1, 1]
        e = self.embed(self.align(image, b["ref_landmarks"]))
        l2 = ((1 - (e * ref_id).sum(1)) * (self.alpha * LAMBDA_ID)).mean()
        l2.backward()
        optimizer_step(self.all_params)
        return l1.item(), l2.item()


def synthetic_batch(name, n, gen):
    """Tensors of bench_step's shapes (model/lookahead/synthetic_batch.h)."""
    h = LATENT[name]
    s = REF_PIXELS[name]
    preview = 8 * h
    r = lambda *shape: torch.randn(*shape, generator=gen)
    template = torch.tensor(ARCFACE_DST, dtype=torch.float64) * (s / 112.0)
    lm = template.unsqueeze(0).repeat(n, 1, 1) + torch.randn(n, 5, 2, generator=gen, dtype=torch.float64)
    return {"z_tgt": r(n, 4, h, h), "z_ref": r(n, 4, h, h), "clip_ref": r(n, CLIP_TOKENS, CLIP_DIM),
            "clip_uncond": r(1, CLIP_TOKENS, CLIP_DIM), "ref_prompt": r(n, PROMPT_TOKENS, CROSS_DIM),
            "tgt_prompt": r(n, PROMPT_TOKENS, CROSS_DIM), "ref_pooled": r(n, POOLED), "tgt_pooled": r(n, POOLED),
            "time_ids": torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]]).repeat(n, 1),
            "ref_pixels": torch.rand(n, 3, s, s, generator=gen) * 2 - 1, "ref_pixel_landmarks": lm,
            "ref_landmarks": lm * (preview / s)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=sorted(UNETS), default="tiny")
    ap.add_argument("--loss-mode", choices=["sum", "alternate"], default="sum")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=2, help="global batch (bench_step: 2 per rank)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(2024)
    t_build = time.perf_counter()
    ref = Reference(args.config, gen)
    build_s = time.perf_counter() - t_build
    times, cpu_times = [], []
    for step in range(args.warmup + args.steps):
        b = synthetic_batch(args.config, args.batch, gen)
        t0, c0 = time.perf_counter(), time.process_time()
        l1, l2 = ref.step(b, step, args.loss_mode)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if not (math.isfinite(l1) and math.isfinite(l2)):
            sys.exit(f"step_reference: non-finite loss in step {step}")
        if step >= args.warmup:
            times.append(dt * 1e3)
            cpu_times.append(dc * 1e3)
    print(json.dumps({"benchmark": "step_reference", "config": args.config, "loss_mode": args.loss_mode,
                      "threads": args.threads, "global_batch": args.batch, "warmup": args.warmup,
                      "torch": torch.__version__, "build_s": build_s, "step_ms": times,
                      "mean_ms": statistics.mean(times), "median_ms": statistics.median(times),
                      # CPU time of the process (all its threads) per step: with one intra-op thread
                      # it is the step's work, and much less disturbed by outside load than wall time.
                      "cpu_ms": cpu_times, "median_cpu_ms": statistics.median(cpu_times),
                      "loadavg_1m_end": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
