// The common interface of the inference samplers (Euler, DDIM, DPM-Solver++, multi-step LCM),
// each a port of the diffusers scheduler of the same name with its exact timestep schedule and
// float32 step arithmetic. The factory that builds one from a scheduler_config.json is
// make_sampler.h; the numpy routines the schedules depend on are numpy_compat.h.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "model/sched/noise_schedule.h"


namespace lookahead::model::sched {

/// How inference timesteps are laid over [0, T) (diffusers `timestep_spacing`).
enum class TimestepSpacing {
  kLeading,   ///< "leading": 0, T/n, 2T/n, … + steps_offset (SDXL)
  kTrailing,  ///< "trailing": counted down from T−1
  kLinspace,  ///< "linspace": evenly from 0 to T−1
};
TimestepSpacing parse_timestep_spacing(std::string_view name);
const char* to_string(TimestepSpacing spacing);

/// Value of the last sigma of an Euler / DPM-Solver schedule (diffusers `final_sigmas_type`).
enum class FinalSigma {
  kZero,      ///< "zero": the last step lands on a clean sample
  kSigmaMin,  ///< "sigma_min": stop at σ of training timestep 0
};
FinalSigma parse_final_sigma(std::string_view name);
const char* to_string(FinalSigma type);

/// Result of one sampler step.
struct StepOutput {
  at::Tensor prev_sample;  // [B, C, H, W] the sample at the next timestep
  at::Tensor pred_x0;      // [B, C, H, W] the clean-sample estimate made at this step (LCM: denoised)
};

/// Inference sampler. A sampling loop reads
///
///   sampler.set_timesteps(n);
///   x = randn(shape) * sampler.init_noise_sigma();
///   for (i = 0; i < sampler.num_steps(); ++i) {
///     eps = unet(sampler.scale_model_input(x, i), sampler.timestep(i), ...);
///     x = sampler.step(eps, i, x, generator).prev_sample;
///   }
///
/// Unlike diffusers the step index i is explicit (no hidden counter to reset), and the noise of
/// stochastic steps is either passed in as a tensor or drawn from a generator in exactly the order
/// and dtype diffusers draws it (same seed, same noise). Not thread-safe; DPM-Solver keeps a
/// history of model outputs.
class Sampler {
 public:
  explicit Sampler(NoiseSchedule schedule) : schedule_(std::move(schedule)) {}
  virtual ~Sampler() = default;
  Sampler(const Sampler&) = default;
  Sampler& operator=(const Sampler&) = default;

  /// Sampler name ("euler", "ddim", "dpm_solver", "lcm").
  virtual const char* name() const = 0;
  /// Builds the schedule for n steps (1 ≤ n ≤ T; TORCH_CHECKs a schedule diffusers would build
  /// degenerate: a timestep outside [0, T) or repeated) and resets any per-run state.
  virtual void set_timesteps(int64_t num_inference_steps) = 0;
  /// Steps of the current schedule (0 before set_timesteps).
  int64_t num_steps() const { return timesteps_.defined() ? timesteps_.size(0) : 0; }
  /// The UNet timesteps in sampling order: [n] int64, or float32 for Euler (fractional t).
  const at::Tensor& timesteps() const { return timesteps_; }
  /// timesteps()[i] as a double, for the UNet's timestep argument.
  double timestep(int64_t i) const;
  /// Standard deviation of the initial noise x_T = ε·init_noise_sigma (1 except Euler).
  virtual double init_noise_sigma() const { return 1.0; }
  /// UNet input for step i (identity except Euler, which divides by √(σ²+1)).
  virtual at::Tensor scale_model_input(const at::Tensor& sample, int64_t i) const;
  /// Whether step i consumes noise (LCM before the last step, DDIM with eta > 0, Euler with churn,
  /// SDE DPM-Solver++).
  virtual bool needs_noise(int64_t i) const { return false; }
  /// dtype of the noise step i draws, as diffusers draws it.
  virtual at::ScalarType noise_dtype(const at::Tensor& model_output, const at::Tensor& sample) const {
    return model_output.scalar_type();
  }

  /// Advances step i (0-based) from `sample` using the model output at timestep(i). `noise` (same
  /// shape as the sample) is required when needs_noise(i) and ignored otherwise.
  StepOutput step(const at::Tensor& model_output, int64_t i, const at::Tensor& sample,
                  const at::Tensor& noise = at::Tensor());
  /// Same, drawing the noise from `generator` (when needs_noise(i)) as diffusers' randn_tensor
  /// does: on the generator's device, then moved to the sample's.
  StepOutput step(const at::Tensor& model_output, int64_t i, const at::Tensor& sample, at::Generator& generator);

  const NoiseSchedule& schedule() const { return schedule_; }

 protected:
  virtual StepOutput step_impl(const at::Tensor& model_output, int64_t i, const at::Tensor& sample,
                               const at::Tensor& noise) = 0;
  /// TORCH_CHECKs 0 ≤ i < num_steps().
  void check_index(int64_t i) const;
  /// TORCH_CHECKs that every timestep lies in [0, T) and that they strictly decrease.
  void check_schedule(const std::vector<double>& ts) const;
  /// TORCH_CHECKs 1 ≤ n ≤ T.
  void check_num_steps(int64_t n) const;
  /// diffusers' "trailing" timesteps, round(numpy.arange(T, 0, −T/n)) − 1, the same in every
  /// scheduler that offers the spacing. TORCH_CHECKs that they are n: numpy's float step can give
  /// one more, which diffusers does not catch.
  std::vector<double> trailing_timesteps(int64_t n) const;
  /// EulerDiscreteScheduler's timesteps for `spacing`, each rounded to float32 as diffusers keeps
  /// them (σ is interpolated at the rounded value), checked by check_schedule. Both Euler samplers.
  std::vector<double> euler_timesteps(int64_t n, TimestepSpacing spacing, int64_t steps_offset) const;
  /// σ of the training schedule interpolated at each timestep (numpy.interp), in float32.
  std::vector<float> interpolated_sigmas(const std::vector<double>& timesteps) const;

  NoiseSchedule schedule_;
  at::Tensor timesteps_;  // [n]
};

}  // namespace lookahead::model::sched
