// Sampling images with the trained LCM-Lookahead encoder (docs/evaluation.md, "Sampling and
// guidance"): at every sampler step the KV encoder runs on the reference latents noised to the step's
// timestep with the sample's own initial noise, and the frozen base UNet (the decoder, no LoRA
// adapter active) predicts ε for up to four conditionings that are combined by lookahead guidance
// or plain classifier-free guidance.
//
// The four guidance terms (c: the target prompt and the reference photo's IP tokens; u: zero
// prompt and pooled embeddings (SDXL's force_zeros_for_empty_prompt) and the IP tokens of the
// all-zero image, Resampler(clip_uncond)):
//   nokv_u  u, no reference self-attention tokens
//   nokv_c  c, no reference self-attention tokens
//   full_c  c, with the reference self-attention K/V
//   full_u  u, with the reference self-attention K/V
//
// IP K/V and the u terms. A KvEncoder run can also carry IP K/V (to_k_ip / to_v_ip of the tokens
// it is given), and a decoder that receives them uses them instead of its own IP tokens. The
// encoder has no IP attention of its own (its self-attention K/V do not depend on the tokens), and
// its IP K/V are the same to_k_ip / to_v_ip the decoder applies to UNetInputs::ip_tokens. So the
// encoder runs here WITHOUT tokens (reference = self-attention K/V only), and every decoder call
// gets its tokens explicitly: cond tokens for c terms, uncond tokens for u terms, with or without
// the reference. This is what the paper's guidance prescribes ("u" = zeroed prompt plus the uncond IP tokens,
// "nokv" = reference self-attention tokens dropped, IP tokens kept), it is equal to the training
// composition (encoder-carried IP K/V) for the c terms, and it lets c and u share one UNet call.
//
// CFG mode (the no-KV checkpoint variant of the method, or an ablation) uses c = full_c (the
// conditional prediction with everything the model has) and u = nokv_u (the fully unconditional
// one: no prompt, uncond IP tokens, no reference).
//
// Deviations from the official pipeline, both deliberate: the reference latents are the caller's
// fixed VAE latents (the official pipeline re-draws VAE.encode().sample() every step), and the
// sampler state stays float32 whatever the model's dtype (cast where it enters the UNet).
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <vector>

#include "model/lookahead/lookahead_model.h"
#include "model/lookahead/guidance_mode.h"
#include "model/sched/make_sampler.h"
#include "model/sched/sampler.h"

namespace lookahead::model {

/// Guidance mode and scales (defaults 3 / 2 / 2; CFG 5 for the no-KV variant; docs/evaluation.md).
struct GuidanceOptions {
  GuidanceMode mode = GuidanceMode::kLookahead;
  double cfg_scale = 5.0;
  double scale_nokv = 3.0, scale_full = 2.0, scale_kv = 2.0;
};

struct GenerationOptions {
  sched::SamplerKind sampler = sched::SamplerKind::kDpmSolver;
  /// diffusers scheduler_config.json values (from_config semantics); null: SDXL base's
  /// scheduler/scheduler_config.json (sdxl_scheduler_config()).
  nlohmann::json scheduler_config;
  int64_t steps = 50;
  GuidanceOptions guidance;
};

/// One identity x one prompt. Every tensor has batch 1; it is expanded to the samples.
struct GenerationInputs {
  at::Tensor ref_latents;                     ///< [1, 4, h, w] scaled VAE latents of the reference photo
  at::Tensor clip_ref, clip_uncond;           ///< [1, T, D] CLIP-H penultimate features: reference / all-zero image
  at::Tensor prompt, pooled;                  ///< [1, M, C], [1, P] the target prompt
  at::Tensor encoder_prompt, encoder_pooled;  ///< [1, M, C], [1, P] the KV encoder's prompt
  at::Tensor time_ids;                        ///< [1, 6]
};

/// ε predictions of the guidance terms (same shape each). In CFG mode only nokv_u and full_c are
/// read (the others may be undefined).
struct GuidanceTerms {
  at::Tensor nokv_u, nokv_c, full_c, full_u;
};

/// The guidance combination (docs/evaluation.md, "Sampling and guidance"):
///   lookahead: ε = ε_nokv_u + s_nokv·(ε_nokv_c − ε_nokv_u) + s_full·(ε_full_c − ε_nokv_u)
///                          + s_kv·(ε_full_u − ε_nokv_u)
///   cfg:       ε = ε_nokv_u + s·(ε_full_c − ε_nokv_u)
/// Computed in float32; returns float32.
at::Tensor combine_guidance(const GuidanceTerms& eps, const GuidanceOptions& options);

/// SDXL base's scheduler/scheduler_config.json (EulerDiscreteScheduler: scaled_linear 0.00085 ..
/// 0.012 over 1000 steps, epsilon, leading spacing, steps_offset 1, ...).
nlohmann::json sdxl_scheduler_config();

/// Latents [N, 4, h, w] (float32, on the model's device) of N = seeds.size() samples. Sample i
/// starts from randn [1, 4, h, w] float32 drawn by a CPU generator seeded seeds[i] (times the
/// sampler's init_noise_sigma); a stochastic sampler draws sample i's step noise from that same
/// generator, so a sample never depends on the other seeds. The encoder input of sample i at
/// timestep t is add_noise(ref_latents, its initial randn, round(t)) on the training schedule.
/// UNet calls per step depend only on (options, N): lookahead: the encoder (batch N), the
/// decoder without reference ([nokv_u; nokv_c], batch 2N), the decoder with the reference
/// ([full_c; full_u], batch 2N); cfg: encoder (N), nokv_u (N), full_c (N); the Resampler runs
/// once before the loop. A model without a KV encoder (model.kv_encoder = off) runs no encoder and
/// no reference terms: lookahead guidance then equals CFG at scale s_nokv + s_full (decoder batch
/// 2N), cfg mode runs nokv_u and c (N each). Runs under no-grad through the model's unit runner, so a sharded engine
/// works when every rank calls with the same options and N (call its end_step() afterwards).
at::Tensor generate(LookaheadModel& model, const GenerationInputs& inputs, const std::vector<uint64_t>& seeds,
                    const GenerationOptions& options);

}  // namespace lookahead::model
