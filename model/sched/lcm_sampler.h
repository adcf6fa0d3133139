// Multi-step LCM sampler: a port of diffusers' LCMScheduler (used with LCM-LoRA SDXL). Timesteps
// are taken evenly from the 50-step distillation schedule (999, 979, …, 19); each step maps the
// sample to a clean estimate with the consistency boundary condition and, except on the last
// step, re-noises it to the NEXT timestep with fresh noise.
#pragma once

#include <vector>

#include "model/sched/sampler.h"

namespace lookahead::model::sched {

/// LCMScheduler settings. Defaults are what `LCMScheduler.from_config(SDXL)` gives.
struct LcmOptions {
  NoiseScheduleConfig schedule;
  int64_t original_inference_steps = 50;  ///< size of the distillation schedule
  double timestep_scaling = 10.0;         ///< s = t·scaling in c_skip / c_out
  /// ᾱ used past the last step (never reached by LCM schedules; kept for config fidelity).
  bool set_alpha_to_one = false;
  bool clip_sample = false;
  double clip_sample_range = 1.0;

  /// How every key of diffusers' LCMScheduler config is treated (see io::KeyUse).
  static io::ConfigKeyTable keys();
  /// diffusers from_config semantics (absent keys: LCMScheduler class defaults, whose betas are
  /// already the SDXL ones). Thresholding is rejected.
  static LcmOptions from_config(const nlohmann::json& config);
  void validate() const;
};

class LcmSampler : public Sampler {
 public:
  explicit LcmSampler(LcmOptions options = {});

  const char* name() const override { return "lcm"; }
  const LcmOptions& options() const { return options_; }
  /// n ≤ original_inference_steps (n = 1: [999]; 4: [999, 759, 499, 259]).
  void set_timesteps(int64_t num_inference_steps) override;
  bool needs_noise(int64_t i) const override;
  /// The noise is drawn in the dtype of the denoised sample.
  at::ScalarType noise_dtype(const at::Tensor& model_output, const at::Tensor& sample) const override {
    return at::promote_types(model_output.scalar_type(), sample.scalar_type());
  }

 protected:
  /// pred_x0 of the result is diffusers' `denoised` (c_out·x0 + c_skip·x_t).
  StepOutput step_impl(const at::Tensor& model_output, int64_t i, const at::Tensor& sample,
                       const at::Tensor& noise) override;

 private:
  LcmOptions options_;
  std::vector<int64_t> ts_;
};

}  // namespace lookahead::model::sched
