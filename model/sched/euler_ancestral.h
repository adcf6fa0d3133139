// Euler-ancestral sampler: a port of diffusers' EulerAncestralDiscreteScheduler, the sdxl-turbo
// scheduler. It walks the same σ schedule as Euler (euler.h) but splits each move from σ to σ_next
// into a deterministic Euler step down to σ_down and fresh noise of scale σ_up, with
// σ_down² + σ_up² = σ_next²: an SDE sampler, so every step consumes noise.
#pragma once

#include <vector>

#include "model/sched/sampler.h"

namespace lookahead::model::sched {

/// EulerAncestralDiscreteScheduler settings. Defaults are what
/// `EulerAncestralDiscreteScheduler.from_config(sdxl-turbo)` gives (scaled_linear 0.00085 .. 0.012,
/// epsilon, trailing spacing, steps_offset 1).
struct EulerAncestralOptions {
  NoiseScheduleConfig schedule;
  TimestepSpacing timestep_spacing = TimestepSpacing::kTrailing;
  /// Added to leading timesteps only (no effect with trailing or linspace).
  int64_t steps_offset = 1;

  /// How every key of diffusers' EulerAncestralDiscreteScheduler config is treated (see io::KeyUse).
  static io::ConfigKeyTable keys();
  /// diffusers from_config semantics (absent keys: the class defaults, linear 1e-4 .. 0.02 betas,
  /// linspace spacing, steps_offset 0). rescale_betas_zero_snr and trained_betas are refused naming
  /// the key; prediction_type "sample" is refused (diffusers raises NotImplementedError in step).
  static EulerAncestralOptions from_config(const nlohmann::json& config);
  void validate() const;
};

class EulerAncestralSampler : public Sampler {
 public:
  explicit EulerAncestralSampler(EulerAncestralOptions options = {});

  const char* name() const override { return "euler_ancestral"; }
  const EulerAncestralOptions& options() const { return options_; }
  /// Timesteps as diffusers computes them ([n] float32, numpy-interpolated σ at each), then σ = 0.
  void set_timesteps(int64_t num_inference_steps) override;
  /// √(σ_max²+1) for leading spacing, σ_max for linspace/trailing (diffusers' rule).
  double init_noise_sigma() const override;
  /// sample / √(σ_i²+1).
  at::Tensor scale_model_input(const at::Tensor& sample, int64_t i) const override;
  /// True for every step: diffusers draws the ancestral noise in each step, even the last one,
  /// where it is multiplied by σ_up = 0; drawing it keeps a reused generator in step with diffusers.
  bool needs_noise(int64_t i) const override;
  /// σ_0 … σ_{n−1} then 0: [n+1] float32.
  const at::Tensor& sigmas() const { return sigmas_tensor_; }

 protected:
  /// x0 from the model output, then x + ((x − x0)/σ)·(σ_down − σ) + noise·σ_up in float32 (the
  /// sample is upcast, the result cast back to the model output's dtype), in diffusers' op order.
  StepOutput step_impl(const at::Tensor& model_output, int64_t i, const at::Tensor& sample,
                       const at::Tensor& noise) override;

 private:
  EulerAncestralOptions options_;
  std::vector<float> sigmas_;  // [n+1]
  at::Tensor sigmas_tensor_;   // [n+1] float32
};

}  // namespace lookahead::model::sched
