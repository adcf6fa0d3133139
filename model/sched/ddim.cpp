// DdimSampler: diffusers' DDIM timesteps and step in its float32 op order.
#include "model/sched/ddim.h"

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

// Every key of diffusers' DDIMScheduler.__init__ (0.42).
constexpr auto kDdimKeys = io::join_keys(
    detail::kScheduleKeys,
    std::to_array<io::ConfigKey>({
        {"clip_sample", io::KeyUse::kHonoured, nullptr, "clip x0 to [-clip_sample_range, clip_sample_range]"},
        {"clip_sample_range", io::KeyUse::kHonoured, nullptr, "x0 clipping bound"},
        {"set_alpha_to_one", io::KeyUse::kHonoured, nullptr, "final alpha_cumprod: 1 or alphas_cumprod[0]"},
        {"steps_offset", io::KeyUse::kHonoured, nullptr, "added to leading timesteps"},
    }),
    detail::kThresholdingKeys,
    std::to_array<io::ConfigKey>({
        {"timestep_spacing", io::KeyUse::kHonoured, nullptr, "leading | trailing | linspace"},
    }));

}  // namespace

io::ConfigKeyTable DdimOptions::keys() { return kDdimKeys; }

DdimOptions DdimOptions::from_config(const nlohmann::json& config) {
  DdimOptions o;
  o.schedule = NoiseScheduleConfig::from_config(config);
  o.steps_offset = 0;
  o.set_alpha_to_one = true;
  o.clip_sample = true;
  detail::read_enum(config, "timestep_spacing", o.timestep_spacing, parse_timestep_spacing);
  detail::read_key(config, "steps_offset", o.steps_offset);
  detail::read_key(config, "set_alpha_to_one", o.set_alpha_to_one);
  detail::read_key(config, "clip_sample", o.clip_sample);
  detail::read_key(config, "clip_sample_range", o.clip_sample_range);
  io::refuse_unsupported(config, kDdimKeys, detail::kSchedulerConfig);
  o.validate();
  return o;
}

void DdimOptions::validate() const {
  schedule.validate();
  TORCH_CHECK(steps_offset >= 0, "DDIM: steps_offset must be >= 0, got ", steps_offset);
  TORCH_CHECK(clip_sample_range > 0, "DDIM: clip_sample_range must be > 0, got ", clip_sample_range);
  TORCH_CHECK(eta >= 0 && std::isfinite(eta), "DDIM: eta must be finite and >= 0, got ", eta);
}

DdimSampler::DdimSampler(DdimOptions options) : Sampler(NoiseSchedule(options.schedule)), options_(options) {
  options_.validate();
}

void DdimSampler::set_timesteps(int64_t n) {
  check_num_steps(n);
  const int64_t T = schedule_.num_train_timesteps();
  std::vector<double> ts;
  switch (options_.timestep_spacing) {
    case TimestepSpacing::kLinspace:
      for (double v : detail::np_linspace(0, static_cast<double>(T - 1), n)) {
        ts.push_back(detail::np_round(v));
      }
      std::reverse(ts.begin(), ts.end());
      break;
    case TimestepSpacing::kLeading: {
      const int64_t ratio = T / n;
      for (int64_t i = n - 1; i >= 0; --i) {
        ts.push_back(static_cast<double>(i * ratio + options_.steps_offset));
      }
      break;
    }
    case TimestepSpacing::kTrailing:
      ts = trailing_timesteps(n);
      break;
  }
  check_schedule(ts);
  ts_.assign(ts.begin(), ts.end());
  step_ratio_ = T / n;
  timesteps_ = at::tensor(ts_, at::kLong);  // [n]
}

bool DdimSampler::needs_noise(int64_t i) const {
  check_index(i);
  return options_.eta > 0;
}

StepOutput DdimSampler::step_impl(const at::Tensor& model_output, int64_t i, const at::Tensor& sample,
                                  const at::Tensor& noise) {
  const int64_t t = ts_[static_cast<size_t>(i)];
  const int64_t prev_t = t - step_ratio_;
  const float a_t = schedule_.alpha_cumprod(t);
  const float a_prev =
      prev_t >= 0 ? schedule_.alpha_cumprod(prev_t) : (options_.set_alpha_to_one ? 1.0f : schedule_.alpha_cumprod(0));
  const float beta_t = 1.0f - a_t;
  const auto sqrt_a = static_cast<double>(detail::f32_sqrt(a_t));
  const auto sqrt_b = static_cast<double>(detail::f32_sqrt(beta_t));

  at::Tensor pred_x0;   // [B, C, H, W]
  at::Tensor pred_eps;  // [B, C, H, W]
  switch (schedule_.prediction_type()) {
    case PredictionType::kEpsilon:
      pred_x0 = (sample - model_output * sqrt_b) / sqrt_a;
      pred_eps = model_output;
      break;
    case PredictionType::kSample:
      pred_x0 = model_output;
      pred_eps = (sample - pred_x0 * sqrt_a) / sqrt_b;
      break;
    case PredictionType::kVPrediction:
      pred_x0 = sample * sqrt_a - model_output * sqrt_b;
      pred_eps = model_output * sqrt_a + sample * sqrt_b;
      break;
  }
  if (options_.clip_sample) {
    pred_x0 = pred_x0.clamp(-options_.clip_sample_range, options_.clip_sample_range);
  }
  const float beta_prev = 1.0f - a_prev;
  const float variance = (beta_prev / beta_t) * (1.0f - a_t / a_prev);
  const float std_dev = static_cast<float>(options_.eta) * detail::f32_sqrt(variance);
  const float dir_coeff = detail::f32_sqrt(1.0f - a_prev - std_dev * std_dev);
  at::Tensor prev = pred_x0 * static_cast<double>(detail::f32_sqrt(a_prev)) + pred_eps * static_cast<double>(dir_coeff);
  if (options_.eta > 0) {
    prev = prev + noise * static_cast<double>(std_dev);
  }
  return StepOutput{prev, pred_x0};
}

}  // namespace lookahead::model::sched
