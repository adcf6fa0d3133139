// DDIM sampler: a port of diffusers' DDIMScheduler. Each step predicts x0, then re-noises it to the
// previous timestep t − T/n along the predicted ε; eta > 0 mixes in fresh noise (eta = 1 is
// ancestral DDPM sampling).
#pragma once

#include "model/sched/sampler.h"

namespace lookahead::model::sched {

/// DDIMScheduler settings. Defaults are what `DDIMScheduler.from_config(SDXL)` gives (leading
/// spacing, steps_offset 1, set_alpha_to_one false, no clipping) with eta 0.
struct DdimOptions {
  NoiseScheduleConfig schedule;
  TimestepSpacing timestep_spacing = TimestepSpacing::kLeading;
  int64_t steps_offset = 1;
  /// ᾱ used past the last step: 1 when true, ᾱ_0 when false.
  bool set_alpha_to_one = false;
  bool clip_sample = false;          ///< clamp the x0 estimate to ±clip_sample_range
  double clip_sample_range = 1.0;
  /// Stochasticity (diffusers step() keyword): 0 deterministic DDIM, 1 DDPM-like.
  double eta = 0.0;

  /// How every key of diffusers' DDIMScheduler config is treated (see io::KeyUse).
  static io::ConfigKeyTable keys();
  /// diffusers from_config semantics (absent keys: DDIMScheduler class defaults, e.g.
  /// clip_sample true, set_alpha_to_one true). Thresholding is rejected.
  static DdimOptions from_config(const nlohmann::json& config);
  void validate() const;
};

class DdimSampler : public Sampler {
 public:
  explicit DdimSampler(DdimOptions options = {});

  const char* name() const override { return "ddim"; }
  const DdimOptions& options() const { return options_; }
  void set_timesteps(int64_t num_inference_steps) override;
  bool needs_noise(int64_t i) const override;

 protected:
  StepOutput step_impl(const at::Tensor& model_output, int64_t i, const at::Tensor& sample,
                       const at::Tensor& noise) override;

 private:
  DdimOptions options_;
  std::vector<int64_t> ts_;
  int64_t step_ratio_ = 0;  // T / n: DDIM's previous timestep is t − step_ratio for every spacing
};

}  // namespace lookahead::model::sched
