// The discrete DDPM noise schedule shared by every sampler and by training: betas, ᾱ_t
// ("alphas_cumprod"), the forward process add_noise, the v-prediction target and the x0 estimate
// from a model output. Tables are computed with diffusers' exact float32 arithmetic (betas in
// float32, cumprod in float32) so that every sampler built on them matches diffusers bit for bit.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include "model/io/config_keys.h"

#include <cstdint>
#include <string_view>
#include <vector>

namespace lookahead::model::sched {

/// How betas are spaced over the training timesteps (diffusers `beta_schedule`).
enum class BetaSchedule {
  kLinear,            ///< "linear": linspace(beta_start, beta_end)
  kScaledLinear,      ///< "scaled_linear": linspace(√beta_start, √beta_end)², the SD/SDXL schedule
  kSquaredCosCapV2,   ///< "squaredcos_cap_v2": the Glide cosine ᾱ, betas capped at 0.999
};
BetaSchedule parse_beta_schedule(std::string_view name);
const char* to_string(BetaSchedule schedule);

/// What the network predicts (diffusers `prediction_type`).
enum class PredictionType {
  kEpsilon,      ///< "epsilon": the added noise ε (SDXL)
  kVPrediction,  ///< "v_prediction": v = √ᾱ·ε − √(1−ᾱ)·x0
  kSample,       ///< "sample": x0 itself
};
PredictionType parse_prediction_type(std::string_view name);
const char* to_string(PredictionType type);

/// Training noise schedule. Defaults are the SDXL base `scheduler/scheduler_config.json`.
struct NoiseScheduleConfig {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.00085;
  double beta_end = 0.012;
  BetaSchedule beta_schedule = BetaSchedule::kScaledLinear;
  PredictionType prediction_type = PredictionType::kEpsilon;

  /// How every key of diffusers' DDPMScheduler (the training noise) config is treated (see io::KeyUse).
  static io::ConfigKeyTable keys();
  /// Reads a diffusers scheduler config with `DDPMScheduler.from_config` semantics: absent keys
  /// take diffusers' class defaults (`defaults`), not the SDXL values above. `trained_betas` and
  /// `rescale_betas_zero_snr` must be unset. Pass `lcm_class_defaults()` for LCMScheduler, whose
  /// class defaults differ.
  static NoiseScheduleConfig from_config(const nlohmann::json& config,
                                         const NoiseScheduleConfig& defaults = ddpm_class_defaults());
  /// Defaults of diffusers' DDPM/DDIM/Euler/DPM-Solver classes (linear 1e-4 .. 0.02).
  static NoiseScheduleConfig ddpm_class_defaults();
  /// Defaults of diffusers' LCMScheduler class (scaled_linear 0.00085 .. 0.012).
  static NoiseScheduleConfig lcm_class_defaults();
  /// TORCH_CHECKs the values (T ≥ 1, 0 ≤ beta_start, beta_end < 1, finite).
  void validate() const;
};

/// Immutable schedule tables plus the per-sample forward/inverse maps. Cheap to copy (tensors are
/// shared). All `timesteps` arguments are integer tensors [B] with values in [0, T).
class NoiseSchedule {
 public:
  explicit NoiseSchedule(NoiseScheduleConfig config = {});

  const NoiseScheduleConfig& config() const { return config_; }
  int64_t num_train_timesteps() const { return config_.num_train_timesteps; }
  PredictionType prediction_type() const { return config_.prediction_type; }

  /// β_t, t = 0..T−1: [T] float64 holding diffusers' float32 values exactly.
  const at::Tensor& betas() const { return betas_; }
  /// ᾱ_t = Π(1−β): [T] float64 holding diffusers' float32 values exactly.
  const at::Tensor& alphas_cumprod() const { return alphas_cumprod_; }
  /// ᾱ_t as the float32 table diffusers keeps: [T] float32 on the CPU.
  const at::Tensor& alphas_cumprod_f32() const { return alphas_cumprod_f32_; }
  /// ᾱ_t for one timestep, the float32 value (host side; no device sync).
  float alpha_cumprod(int64_t t) const;
  /// σ_t = √((1−ᾱ_t)/ᾱ_t), the Karras/Euler noise level: [T] float32 computed as diffusers does.
  const at::Tensor& train_sigmas_f32() const { return train_sigmas_f32_; }

  /// Forward process x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε, per sample (DDPMScheduler.add_noise: the table is
  /// cast to x0's dtype first). x0, noise: [B, ...]; timesteps: [B]. Differentiable in x0, noise.
  at::Tensor add_noise(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& timesteps) const;
  /// v-prediction target v = √ᾱ_t·ε − √(1−ᾱ_t)·x0 (DDPMScheduler.get_velocity).
  at::Tensor velocity(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& timesteps) const;
  /// Clean-sample estimate from a model output under the configured prediction type:
  /// ε: (x_t − √(1−ᾱ)·ε̂)/√ᾱ; v: √ᾱ·x_t − √(1−ᾱ)·v̂; sample: the output itself. Coefficients are
  /// float32 [B, 1, ...] so fp16/bf16 inputs are promoted to float32. Differentiable.
  at::Tensor predict_x0(const at::Tensor& x_t, const at::Tensor& model_output,
                        const at::Tensor& timesteps) const;

  /// TORCH_CHECKs an integer [B] timestep tensor against x's batch and, for CPU tensors, the range
  /// [0, T) (a device tensor is not read back: that would synchronize the stream).
  void check_timesteps(const at::Tensor& timesteps, const at::Tensor& x, const char* who) const;

 private:
  // [B] -> [B, 1, ..., 1] with x.dim() dimensions, for per-sample broadcasting.
  static at::Tensor per_sample(const at::Tensor& coeff, const at::Tensor& x);

  NoiseScheduleConfig config_;
  at::Tensor betas_;               // [T] float64
  at::Tensor alphas_cumprod_;      // [T] float64
  at::Tensor alphas_cumprod_f32_;  // [T] float32
  at::Tensor train_sigmas_f32_;    // [T] float32
  std::vector<float> alphas_cumprod_host_;
};

}  // namespace lookahead::model::sched
