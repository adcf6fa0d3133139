// Euler sampler: a port of diffusers' EulerDiscreteScheduler, the SDXL default. It integrates the
// probability-flow ODE in σ = √((1−ᾱ)/ᾱ): the sample lives at scale √(σ²+1), the UNet sees it
// divided by that (scale_model_input) with a fractional timestep interpolated from σ, and each
// step is x ← x + ε̂·(σ_next − σ) for ε-prediction.
#pragma once

#include <limits>
#include <vector>

#include "model/sched/sampler.h"

namespace lookahead::model::sched {

/// EulerDiscreteScheduler settings. Defaults are what `EulerDiscreteScheduler.from_config(SDXL)`
/// gives (leading spacing, steps_offset 1, linear interpolation, final σ zero, no churn).
struct EulerDiscreteOptions {
  NoiseScheduleConfig schedule;
  TimestepSpacing timestep_spacing = TimestepSpacing::kLeading;
  int64_t steps_offset = 1;
  FinalSigma final_sigmas_type = FinalSigma::kZero;
  // Karras "churn" (diffusers step() keyword arguments): steps with s_tmin ≤ σ ≤ s_tmax first
  // raise σ to σ·(1+γ), γ = min(s_churn/n, √2−1), adding noise·s_noise. 0 = deterministic.
  double s_churn = 0.0;
  double s_tmin = 0.0;
  double s_tmax = std::numeric_limits<double>::infinity();
  double s_noise = 1.0;

  /// How every key of diffusers' EulerDiscreteScheduler config is treated (see io::KeyUse).
  static io::ConfigKeyTable keys();
  /// diffusers from_config semantics (absent keys: EulerDiscreteScheduler class defaults, e.g.
  /// linspace spacing). Karras/exponential/beta sigmas, log_linear interpolation and continuous
  /// timesteps are outside what we support and are rejected with an error naming the key.
  static EulerDiscreteOptions from_config(const nlohmann::json& config);
  void validate() const;
};

class EulerDiscreteSampler : public Sampler {
 public:
  explicit EulerDiscreteSampler(EulerDiscreteOptions options = {});

  const char* name() const override { return "euler"; }
  const EulerDiscreteOptions& options() const { return options_; }
  void set_timesteps(int64_t num_inference_steps) override;
  /// √(σ_max²+1) for leading spacing, σ_max for linspace/trailing (diffusers' rule).
  double init_noise_sigma() const override;
  at::Tensor scale_model_input(const at::Tensor& sample, int64_t i) const override;
  bool needs_noise(int64_t i) const override;
  /// σ_0 … σ_{n−1} then the final σ: [n+1] float32.
  const at::Tensor& sigmas() const { return sigmas_tensor_; }

 protected:
  StepOutput step_impl(const at::Tensor& model_output, int64_t i, const at::Tensor& sample,
                       const at::Tensor& noise) override;

 private:
  double gamma(int64_t i) const;

  EulerDiscreteOptions options_;
  std::vector<float> sigmas_;  // [n+1]
  at::Tensor sigmas_tensor_;   // [n+1] float32
};

}  // namespace lookahead::model::sched
