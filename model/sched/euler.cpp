// EulerDiscreteSampler: diffusers' timestep spacing, σ interpolation and step, in its float32
// op order.
#include "model/sched/euler.h"

#include <nlohmann/json.hpp>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "model/io/config_keys.h"
#include "model/sched/numpy_compat.h"
#include "model/sched/scheduler_config.h"

namespace lookahead::model::sched {

namespace {

// Every key of diffusers' EulerDiscreteScheduler.__init__ (0.42).
constexpr auto kEulerKeys = io::join_keys(
    detail::kScheduleKeys,
    std::to_array<io::ConfigKey>({
        {"interpolation_type", io::KeyUse::kDefaultOnly, "\"linear\"", "sigma interpolation"},
    }),
    detail::kExtraSigmaKeys,
    std::to_array<io::ConfigKey>({
        {"sigma_min", io::KeyUse::kInert, nullptr, "read only by Karras / exponential / beta sigmas (refused)"},
        {"sigma_max", io::KeyUse::kInert, nullptr, "read only by Karras / exponential / beta sigmas (refused)"},
        {"timestep_spacing", io::KeyUse::kHonoured, nullptr, "leading | trailing | linspace"},
        {"timestep_type", io::KeyUse::kDefaultOnly, "\"discrete\"", "continuous timesteps"},
        {"steps_offset", io::KeyUse::kHonoured, nullptr, "added to leading timesteps"},
        {"final_sigmas_type", io::KeyUse::kHonoured, nullptr, "zero | sigma_min"},
    }));

}  // namespace

io::ConfigKeyTable EulerDiscreteOptions::keys() { return kEulerKeys; }

EulerDiscreteOptions EulerDiscreteOptions::from_config(const nlohmann::json& config) {
  EulerDiscreteOptions o;
  o.schedule = NoiseScheduleConfig::from_config(config);
  o.timestep_spacing = TimestepSpacing::kLinspace;
  o.steps_offset = 0;
  detail::read_enum(config, "timestep_spacing", o.timestep_spacing, parse_timestep_spacing);
  detail::read_key(config, "steps_offset", o.steps_offset);
  detail::read_enum(config, "final_sigmas_type", o.final_sigmas_type, parse_final_sigma);
  io::refuse_unsupported(config, kEulerKeys, detail::kSchedulerConfig);
  o.validate();
  return o;
}

void EulerDiscreteOptions::validate() const {
  schedule.validate();
  TORCH_CHECK(steps_offset >= 0, "Euler: steps_offset must be >= 0, got ", steps_offset);
  TORCH_CHECK(s_churn >= 0 && std::isfinite(s_churn), "Euler: s_churn must be finite and >= 0, got ", s_churn);
  TORCH_CHECK(s_noise >= 0 && std::isfinite(s_noise), "Euler: s_noise must be finite and >= 0, got ", s_noise);
  TORCH_CHECK(!std::isnan(s_tmin) && !std::isnan(s_tmax), "Euler: s_tmin/s_tmax must not be NaN");
}

EulerDiscreteSampler::EulerDiscreteSampler(EulerDiscreteOptions options)
    : Sampler(NoiseSchedule(options.schedule)), options_(options) {
  options_.validate();
}

void EulerDiscreteSampler::set_timesteps(int64_t n) {
  const std::vector<double> ts = euler_timesteps(n, options_.timestep_spacing, options_.steps_offset);
  sigmas_ = interpolated_sigmas(ts);
  // The last σ: 0, or the training schedule's smallest (final_sigmas_type = sigma_min).
  sigmas_.push_back(options_.final_sigmas_type == FinalSigma::kZero
                        ? 0.0f
                        : static_cast<float>(detail::train_sigmas(schedule_).front()));
  timesteps_ = at::tensor(ts, at::kDouble).to(at::kFloat);  // [n]
  sigmas_tensor_ =
      at::tensor(std::vector<double>(sigmas_.begin(), sigmas_.end()), at::kDouble).to(at::kFloat);  // [n+1]
}

double EulerDiscreteSampler::init_noise_sigma() const {
  TORCH_CHECK(!sigmas_.empty(), "euler: call set_timesteps before init_noise_sigma");
  const float max_sigma = *std::max_element(sigmas_.begin(), sigmas_.end());
  if (options_.timestep_spacing != TimestepSpacing::kLeading) {
    return max_sigma;
  }
  return detail::f32_sqrt(max_sigma * max_sigma + 1.0f);
}

at::Tensor EulerDiscreteSampler::scale_model_input(const at::Tensor& sample, int64_t i) const {
  check_index(i);
  const float sigma = sigmas_[static_cast<size_t>(i)];
  return sample / static_cast<double>(detail::f32_sqrt(sigma * sigma + 1.0f));
}

double EulerDiscreteSampler::gamma(int64_t i) const {
  const float sigma = sigmas_[static_cast<size_t>(i)];
  // torch compares the float32 σ with the thresholds rounded to float32.
  if (options_.s_churn == 0 || !(static_cast<float>(options_.s_tmin) <= sigma &&
                                 sigma <= static_cast<float>(options_.s_tmax))) {
    return 0.0;
  }
  return std::min(options_.s_churn / static_cast<double>(sigmas_.size() - 1), std::sqrt(2.0) - 1);
}

bool EulerDiscreteSampler::needs_noise(int64_t i) const {
  check_index(i);
  return gamma(i) > 0;
}

StepOutput EulerDiscreteSampler::step_impl(const at::Tensor& model_output, int64_t i, const at::Tensor& sample,
                                           const at::Tensor& noise) {
  const float sigma = sigmas_[static_cast<size_t>(i)];
  const double g = gamma(i);
  const float sigma_hat = sigma * static_cast<float>(g + 1);
  at::Tensor x = sample.to(at::kFloat);  // [B, C, H, W]
  if (g > 0) {
    const float lift = detail::f32_sqrt(sigma_hat * sigma_hat - sigma * sigma);
    x = x + (noise * options_.s_noise) * static_cast<double>(lift);
  }
  at::Tensor pred_x0;
  switch (schedule_.prediction_type()) {
    case PredictionType::kEpsilon:
      pred_x0 = x - model_output * static_cast<double>(sigma_hat);
      break;
    case PredictionType::kVPrediction: {
      const float s2p1 = sigma * sigma + 1.0f;
      pred_x0 = model_output * static_cast<double>(-sigma / detail::f32_sqrt(s2p1)) + x / static_cast<double>(s2p1);
      break;
    }
    case PredictionType::kSample:
      pred_x0 = model_output;
      break;
  }
  const at::Tensor derivative = (x - pred_x0) / static_cast<double>(sigma_hat);
  const float dt = sigmas_[static_cast<size_t>(i) + 1] - sigma_hat;
  const at::Tensor prev = x + derivative * static_cast<double>(dt);
  return StepOutput{prev.to(model_output.scalar_type()), pred_x0};
}

}  // namespace lookahead::model::sched
