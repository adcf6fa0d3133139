// DPM-Solver++ sampler: a port of diffusers' DPMSolverMultistepScheduler for the data-prediction
// algorithms (dpmsolver++ and its SDE variant), solver orders 1-3. The default is "DPM++ 2M": a
// second-order multistep update in λ = log(α/σ) that reuses the previous step's x0 estimate, with
// first-order steps at the start and, as diffusers does, at the end.
#pragma once

#include <string_view>
#include <vector>

#include "model/sched/sampler.h"

namespace lookahead::model::sched {

/// diffusers `algorithm_type`.
enum class DpmAlgorithm {
  kDpmSolverPlusPlus,     ///< "dpmsolver++": deterministic
  kSdeDpmSolverPlusPlus,  ///< "sde-dpmsolver++": adds noise every step
};
DpmAlgorithm parse_dpm_algorithm(std::string_view name);
const char* to_string(DpmAlgorithm algorithm);

/// diffusers `solver_type` (the second-order correction).
enum class DpmSolverType { kMidpoint, kHeun };
DpmSolverType parse_dpm_solver_type(std::string_view name);
const char* to_string(DpmSolverType type);

/// DPMSolverMultistepScheduler settings. Defaults are what
/// `DPMSolverMultistepScheduler.from_config(SDXL)` gives: leading spacing, steps_offset 1, order 2,
/// dpmsolver++, midpoint, lower_order_final, final σ zero.
struct DpmSolverOptions {
  NoiseScheduleConfig schedule;
  TimestepSpacing timestep_spacing = TimestepSpacing::kLeading;
  int64_t steps_offset = 1;
  int64_t solver_order = 2;  ///< 1, 2 or 3
  DpmAlgorithm algorithm_type = DpmAlgorithm::kDpmSolverPlusPlus;
  DpmSolverType solver_type = DpmSolverType::kMidpoint;
  /// First-order final step (second-to-last: at most second order) when fewer than 15 steps.
  bool lower_order_final = true;
  bool euler_at_final = false;  ///< always a first-order final step
  FinalSigma final_sigmas_type = FinalSigma::kZero;

  /// How every key of diffusers' DPMSolverMultistepScheduler config is treated (see io::KeyUse).
  static io::ConfigKeyTable keys();
  /// diffusers from_config semantics (absent keys: class defaults, e.g. linspace spacing).
  /// Karras/exponential/beta/Lu/flow sigmas, thresholding, learned variance, lambda clipping and
  /// the noise-prediction algorithms (dpmsolver, sde-dpmsolver) are rejected.
  static DpmSolverOptions from_config(const nlohmann::json& config);
  void validate() const;
};

/// Stateful: the multistep update needs the x0 estimates of the previous steps, so steps must be
/// taken in order (the first step after set_timesteps may be any i, e.g. img2img).
class DpmSolverSampler : public Sampler {
 public:
  explicit DpmSolverSampler(DpmSolverOptions options = {});

  const char* name() const override { return "dpm_solver"; }
  const DpmSolverOptions& options() const { return options_; }
  void set_timesteps(int64_t num_inference_steps) override;
  bool needs_noise(int64_t i) const override;
  at::ScalarType noise_dtype(const at::Tensor&, const at::Tensor&) const override { return at::kFloat; }
  /// σ_0 … σ_{n−1} then the final σ: [n+1] float32.
  const at::Tensor& sigmas() const { return sigmas_tensor_; }

 protected:
  StepOutput step_impl(const at::Tensor& model_output, int64_t i, const at::Tensor& sample,
                       const at::Tensor& noise) override;

 private:
  at::Tensor convert_model_output(const at::Tensor& model_output, int64_t i, const at::Tensor& sample) const;
  at::Tensor first_order(const at::Tensor& x0, int64_t i, const at::Tensor& sample, const at::Tensor& noise) const;
  at::Tensor second_order(int64_t i, const at::Tensor& sample, const at::Tensor& noise) const;
  at::Tensor third_order(int64_t i, const at::Tensor& sample, const at::Tensor& noise) const;

  DpmSolverOptions options_;
  std::vector<float> sigmas_;           // [n+1]
  at::Tensor sigmas_tensor_;            // [n+1] float32
  std::vector<at::Tensor> x0_history_;  // [solver_order] x0 estimates, newest last
  int64_t lower_order_nums_ = 0;
  int64_t next_step_ = -1;              // -1: no step taken since set_timesteps
};

}  // namespace lookahead::model::sched
