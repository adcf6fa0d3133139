// LcmSampler: diffusers' LCMScheduler timesteps and step in its float32 op order.
#include "model/sched/lcm_sampler.h"

#include <nlohmann/json.hpp>

#include <ATen/ATen.h>

#include <cmath>

#include "model/io/config_keys.h"
#include "model/sched/numpy_compat.h"
#include "model/sched/scheduler_config.h"

namespace lookahead::model::sched {

namespace {

// Every key of diffusers' LCMScheduler.__init__ (0.42).
constexpr auto kLcmKeys = io::join_keys(
    detail::kScheduleKeys,
    std::to_array<io::ConfigKey>({
        {"original_inference_steps", io::KeyUse::kHonoured, nullptr, "the LCM skipping grid"},
        {"clip_sample", io::KeyUse::kHonoured, nullptr, "clip x0 to [-clip_sample_range, clip_sample_range]"},
        {"clip_sample_range", io::KeyUse::kHonoured, nullptr, "x0 clipping bound"},
        {"set_alpha_to_one", io::KeyUse::kHonoured, nullptr, "final alpha_cumprod: 1 or alphas_cumprod[0]"},
        {"steps_offset", io::KeyUse::kInert, nullptr, "LCMScheduler stores it but set_timesteps never reads it"},
    }),
    detail::kThresholdingKeys,
    std::to_array<io::ConfigKey>({
        {"timestep_spacing", io::KeyUse::kInert, nullptr, "LCMScheduler stores it but set_timesteps never reads it"},
        {"timestep_scaling", io::KeyUse::kHonoured, nullptr, "boundary-condition time scaling"},
    }));

}  // namespace

io::ConfigKeyTable LcmOptions::keys() { return kLcmKeys; }

LcmOptions LcmOptions::from_config(const nlohmann::json& config) {
  LcmOptions o;
  o.schedule = NoiseScheduleConfig::from_config(config, NoiseScheduleConfig::lcm_class_defaults());
  o.set_alpha_to_one = true;
  detail::read_key(config, "original_inference_steps", o.original_inference_steps);
  detail::read_key(config, "timestep_scaling", o.timestep_scaling);
  detail::read_key(config, "set_alpha_to_one", o.set_alpha_to_one);
  detail::read_key(config, "clip_sample", o.clip_sample);
  detail::read_key(config, "clip_sample_range", o.clip_sample_range);
  io::refuse_unsupported(config, kLcmKeys, detail::kSchedulerConfig);
  o.validate();
  return o;
}

void LcmOptions::validate() const {
  schedule.validate();
  TORCH_CHECK(original_inference_steps >= 1 && original_inference_steps <= schedule.num_train_timesteps,
              "LCM: original_inference_steps must lie in [1, num_train_timesteps = ", schedule.num_train_timesteps,
              "], got ", original_inference_steps);
  TORCH_CHECK(timestep_scaling > 0 && std::isfinite(timestep_scaling), "LCM: timestep_scaling must be > 0, got ",
              timestep_scaling);
  TORCH_CHECK(clip_sample_range > 0, "LCM: clip_sample_range must be > 0, got ", clip_sample_range);
}

LcmSampler::LcmSampler(LcmOptions options) : Sampler(NoiseSchedule(options.schedule)), options_(options) {
  options_.validate();
}

void LcmSampler::set_timesteps(int64_t n) {
  check_num_steps(n);
  const int64_t original = options_.original_inference_steps;
  TORCH_CHECK(n <= original, "lcm: num_inference_steps (", n, ") cannot exceed original_inference_steps (",
              original, "): the schedule is a subset of the distillation schedule");
  // Distillation schedule k·j − 1 (j = 1..original), read from the noisy end.
  const int64_t k = schedule_.num_train_timesteps() / original;
  ts_.clear();
  for (double idx : detail::np_linspace(0, static_cast<double>(original), n, /*endpoint=*/false)) {
    const auto j = static_cast<int64_t>(std::floor(idx));  // index into the reversed schedule
    ts_.push_back((original - j) * k - 1);
  }
  check_schedule(std::vector<double>(ts_.begin(), ts_.end()));
  timesteps_ = at::tensor(ts_, at::kLong);  // [n]
}

bool LcmSampler::needs_noise(int64_t i) const {
  check_index(i);
  return i != num_steps() - 1;
}

StepOutput LcmSampler::step_impl(const at::Tensor& model_output, int64_t i, const at::Tensor& sample,
                                 const at::Tensor& noise) {
  const int64_t t = ts_[static_cast<size_t>(i)];
  // The sample is re-noised to the next timestep; the last step returns the clean estimate.
  const int64_t prev_t = i + 1 < num_steps() ? ts_[static_cast<size_t>(i) + 1] : t;
  const float a_t = schedule_.alpha_cumprod(t);
  const float a_prev = prev_t >= 0 ? schedule_.alpha_cumprod(prev_t)
                                   : (options_.set_alpha_to_one ? 1.0f : schedule_.alpha_cumprod(0));
  const float beta_t = 1.0f - a_t;
  const float beta_prev = 1.0f - a_prev;

  // Boundary condition with σ_data = 0.5, in diffusers' float32 op order (for a tensor timestep,
  // `0.25 / x` is reciprocal(x) * 0.25).
  const float s = static_cast<float>(t) * static_cast<float>(options_.timestep_scaling);
  const float denom = s * s + 0.25f;
  const float c_skip = (1.0f / denom) * 0.25f;
  const float c_out = s / detail::f32_sqrt(denom);

  const auto sqrt_a = static_cast<double>(detail::f32_sqrt(a_t));
  const auto sqrt_b = static_cast<double>(detail::f32_sqrt(beta_t));
  at::Tensor x0;  // [B, C, H, W]
  switch (schedule_.prediction_type()) {
    case PredictionType::kEpsilon:
      x0 = (sample - model_output * sqrt_b) / sqrt_a;
      break;
    case PredictionType::kSample:
      x0 = model_output;
      break;
    case PredictionType::kVPrediction:
      x0 = sample * sqrt_a - model_output * sqrt_b;
      break;
  }
  if (options_.clip_sample) {
    x0 = x0.clamp(-options_.clip_sample_range, options_.clip_sample_range);
  }
  const at::Tensor denoised = x0 * static_cast<double>(c_out) + sample * static_cast<double>(c_skip);
  if (i == num_steps() - 1) {
    return StepOutput{denoised, denoised};
  }
  const at::Tensor prev = denoised * static_cast<double>(detail::f32_sqrt(a_prev)) +
                          noise * static_cast<double>(detail::f32_sqrt(beta_prev));
  return StepOutput{prev, denoised};
}

}  // namespace lookahead::model::sched
