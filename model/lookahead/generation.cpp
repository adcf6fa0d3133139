// Sampling loop with the KV encoder and lookahead / classifier-free guidance.
#include "model/lookahead/generation.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>

namespace lookahead::model {

namespace {

void check_one(const at::Tensor& t, int64_t dim, const char* name) {
  TORCH_CHECK(t.defined() && t.dim() == dim && t.size(0) == 1, "generate: inputs.", name, " must be a ", dim,
              "-d tensor of batch 1, got ", t.defined() ? t.sizes() : at::IntArrayRef{});
}

void check_inputs(const LookaheadModel& model, const GenerationInputs& in) {
  check_one(in.ref_latents, 4, "ref_latents");
  TORCH_CHECK(in.ref_latents.size(1) == model.config().unet.in_channels, "generate: ref_latents has ",
              in.ref_latents.size(1), " channels, the UNet takes ", model.config().unet.in_channels);
  check_one(in.clip_ref, 3, "clip_ref");
  check_one(in.clip_uncond, 3, "clip_uncond");
  TORCH_CHECK(in.clip_uncond.sizes() == in.clip_ref.sizes(), "generate: clip_uncond ", in.clip_uncond.sizes(),
              " must match clip_ref ", in.clip_ref.sizes());
  check_one(in.prompt, 3, "prompt");
  check_one(in.pooled, 2, "pooled");
  check_one(in.encoder_prompt, 3, "encoder_prompt");
  check_one(in.encoder_pooled, 2, "encoder_pooled");
  check_one(in.time_ids, 2, "time_ids");
}

/// `t` [1, ...] repeated to batch n.
at::Tensor rows(const at::Tensor& t, int64_t n) {
  std::vector<int64_t> reps(static_cast<size_t>(t.dim()), 1);
  reps[0] = n;
  return t.repeat(reps);
}

/// The reference K/V of every block repeated `times` along the batch (sample-major blocks:
/// [kv; kv; ...]), for a decoder call that stacks several guidance terms.
std::shared_ptr<const nn::ReferenceKv> tile(const nn::ReferenceKv& kv, int64_t times) {
  auto out = std::make_shared<nn::ReferenceKv>(kv);
  if (times == 1) return out;
  for (nn::BlockKv& b : out->blocks)
    for (at::Tensor* t : {&b.k, &b.v, &b.ip_k, &b.ip_v})
      if (t->defined()) *t = at::cat(std::vector<at::Tensor>(static_cast<size_t>(times), *t));
  return out;
}

/// One decoder call's conditioning (already batched, model dtype and device).
struct Conditioning {
  at::Tensor prompt, pooled, time_ids, ip_tokens;
};

}  // namespace

at::Tensor combine_guidance(const GuidanceTerms& eps, const GuidanceOptions& options) {
  auto f32 = [](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.defined(), "combine_guidance: the ", name, " term is required");
    return t.to(at::kFloat);
  };
  const at::Tensor u = f32(eps.nokv_u, "nokv_u");
  if (options.mode == GuidanceMode::kCfg) return u + options.cfg_scale * (f32(eps.full_c, "full_c") - u);
  return u + options.scale_nokv * (f32(eps.nokv_c, "nokv_c") - u) +
         options.scale_full * (f32(eps.full_c, "full_c") - u) + options.scale_kv * (f32(eps.full_u, "full_u") - u);
}

nlohmann::json sdxl_scheduler_config() {
  return nlohmann::json{{"_class_name", "EulerDiscreteScheduler"},
                        {"beta_end", 0.012},
                        {"beta_schedule", "scaled_linear"},
                        {"beta_start", 0.00085},
                        {"clip_sample", false},
                        {"interpolation_type", "linear"},
                        {"num_train_timesteps", 1000},
                        {"prediction_type", "epsilon"},
                        {"sample_max_value", 1.0},
                        {"set_alpha_to_one", false},
                        {"skip_prk_steps", true},
                        {"steps_offset", 1},
                        {"timestep_spacing", "leading"},
                        {"trained_betas", nullptr},
                        {"use_karras_sigmas", false}};
}

at::Tensor generate(LookaheadModel& model, const GenerationInputs& inputs, const std::vector<uint64_t>& seeds,
                    const GenerationOptions& options) {
  check_inputs(model, inputs);
  TORCH_CHECK(!seeds.empty(), "generate: no seeds");
  TORCH_CHECK(options.steps >= 1, "generate: steps must be >= 1, got ", options.steps);
  at::NoGradGuard no_grad;
  const int64_t n = static_cast<int64_t>(seeds.size());
  const at::TensorOptions& opts = model.tensor_options();
  const at::Device device = opts.device();
  const bool lookahead = options.guidance.mode == GuidanceMode::kLookahead;

  auto sampler = sched::make_sampler(
      options.sampler, options.scheduler_config.is_null() ? sdxl_scheduler_config() : options.scheduler_config);
  sampler->set_timesteps(options.steps);

  // Initial noise, one generator per sample (kept for the sampler's own noise draws).
  const std::vector<int64_t> shape{1, inputs.ref_latents.size(1), inputs.ref_latents.size(2),
                                   inputs.ref_latents.size(3)};
  std::vector<at::Generator> generators;
  std::vector<at::Tensor> draws;
  for (uint64_t seed : seeds) {
    generators.push_back(at::make_generator<at::CPUGeneratorImpl>(seed));
    draws.push_back(at::randn(shape, generators.back(), at::TensorOptions().dtype(at::kFloat)));
  }
  const at::Tensor noise = at::cat(draws);  // [N, 4, h, w] float32, CPU
  at::Tensor x = (noise * sampler->init_noise_sigma()).to(device);  // [N, 4, h, w] float32
  const at::Tensor eps0 = noise.to(device);
  const at::Tensor ref = rows(inputs.ref_latents.to(device, at::kFloat), n);  // [N, 4, h, w]

  // IP tokens of the reference and of the all-zero image in one Resampler run.
  const at::Tensor tokens = model.image_tokens(at::cat({inputs.clip_ref, inputs.clip_uncond}), inputs.clip_uncond,
                                               at::Tensor());  // [2, Q, D]
  const at::Tensor cond_ip = rows(tokens.narrow(0, 0, 1), n), uncond_ip = rows(tokens.narrow(0, 1, 1), n);

  const at::Tensor prompt = rows(inputs.prompt.to(opts), n), pooled = rows(inputs.pooled.to(opts), n);
  const at::Tensor zero_prompt = at::zeros_like(prompt), zero_pooled = at::zeros_like(pooled);
  const at::Tensor time_ids = rows(inputs.time_ids.to(opts), n);
  const at::Tensor enc_prompt = rows(inputs.encoder_prompt.to(opts), n);
  const at::Tensor enc_pooled = rows(inputs.encoder_pooled.to(opts), n);
  const Conditioning c{prompt, pooled, time_ids, cond_ip}, u{zero_prompt, zero_pooled, time_ids, uncond_ip};
  auto stack = [](const Conditioning& a, const Conditioning& b) {
    return Conditioning{at::cat({a.prompt, b.prompt}), at::cat({a.pooled, b.pooled}), at::cat({a.time_ids, b.time_ids}),
                        at::cat({a.ip_tokens, b.ip_tokens})};
  };
  // Lookahead: [nokv_u; nokv_c] without and [full_c; full_u] with the reference; CFG: u without
  // and c with it.
  const Conditioning without = lookahead ? stack(u, c) : u;
  const Conditioning with = lookahead ? stack(c, u) : c;
  const int64_t terms = lookahead ? 2 : 1;

  auto decode = [&](const at::Tensor& sample, const at::Tensor& t, const Conditioning& cond,
                    std::shared_ptr<const nn::ReferenceKv> reference) {
    unet::UNetInputs in;
    in.sample = rows(sample, terms).to(opts.dtype());
    in.timestep = t;
    in.encoder_hidden_states = cond.prompt;
    in.text_embeds = cond.pooled;
    in.time_ids = cond.time_ids;
    in.ip_tokens = cond.ip_tokens;
    in.ip_scale = model.config().ip_scale;
    in.reference = std::move(reference);
    in.adapters = std::vector<std::string>{};  // the frozen base: no LCM-LoRA, no encoder LoRA
    return model.unet()->forward(in).to(at::kFloat);  // [terms·N, 4, h, w]
  };

  // The KV encoder's self-attention K/V (no IP K/V) at sampler timestep t.
  auto encoder_kv = [&](const at::Tensor& t, const at::Tensor& t_rows) {
    unet::UNetInputs enc;
    enc.sample = model.schedule().add_noise(ref, eps0, t_rows).to(opts.dtype());  // [N, 4, h, w]
    enc.timestep = t;
    enc.encoder_hidden_states = enc_prompt;
    enc.text_embeds = enc_pooled;
    enc.time_ids = time_ids;
    enc.ip_scale = model.config().ip_scale;
    return model.encoder().forward(enc, at::Tensor());
  };

  const int64_t last_t = model.schedule().num_train_timesteps() - 1;
  for (int64_t i = 0; i < sampler->num_steps(); ++i) {
    const at::Tensor t = sampler->timesteps()[i].reshape({1}).to(device);  // one t for every row
    // The encoder input is noised on the training schedule it learned from; a fractional Euler
    // timestep is rounded to the nearest training step.
    const int64_t t_train = std::clamp<int64_t>(std::llround(sampler->timestep(i)), 0, last_t);
    const at::Tensor t_rows = at::full({n}, t_train, at::TensorOptions().dtype(at::kLong).device(device));

    std::shared_ptr<const nn::ReferenceKv> kv;
    if (model.has_kv_encoder()) kv = tile(encoder_kv(t, t_rows), terms);
    const at::Tensor x_in = sampler->scale_model_input(x, i);  // [N, 4, h, w] float32
    const at::Tensor e_without = decode(x_in, t, without, nullptr);
    GuidanceTerms eps;
    if (!kv) {
      // IP-Adapter Plus alone: there are no reference K/V, so the "full" terms are the "nokv"
      // ones (lookahead guidance becomes CFG at s_nokv + s_full) and the encoder never runs.
      if (lookahead) {
        eps.nokv_u = eps.full_u = e_without.narrow(0, 0, n);
        eps.nokv_c = eps.full_c = e_without.narrow(0, n, n);
      } else {
        eps.nokv_u = e_without;
        eps.full_c = decode(x_in, t, with, nullptr);
      }
    } else if (lookahead) {
      eps.nokv_u = e_without.narrow(0, 0, n);
      eps.nokv_c = e_without.narrow(0, n, n);
      const at::Tensor e_with = decode(x_in, t, with, kv);
      eps.full_c = e_with.narrow(0, 0, n);
      eps.full_u = e_with.narrow(0, n, n);
    } else {
      eps.nokv_u = e_without;
      eps.full_c = decode(x_in, t, with, kv);
    }
    const at::Tensor guided = combine_guidance(eps, options.guidance);  // [N, 4, h, w] float32

    at::Tensor step_noise;
    if (sampler->needs_noise(i)) {
      std::vector<at::Tensor> parts;
      const at::ScalarType dtype = sampler->noise_dtype(guided, x);
      for (auto& g : generators) parts.push_back(at::randn(shape, g, at::TensorOptions().dtype(dtype)));
      step_noise = at::cat(parts).to(device);
    }
    x = sampler->step(guided, i, x, step_noise).prev_sample;
  }
  return x.to(at::kFloat);
}

}  // namespace lookahead::model
