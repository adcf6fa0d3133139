// EulerAncestralSampler: diffusers' timestep spacing, σ interpolation and ancestral step, in its
// float32 op order.
#include "model/sched/euler_ancestral.h"

#include <nlohmann/json.hpp>

#include <ATen/ATen.h>

#include <algorithm>
#include <string_view>

#include "model/io/config_keys.h"
#include "model/sched/numpy_compat.h"
#include "model/sched/scheduler_config.h"

namespace lookahead::model::sched {

namespace {

// Every key of diffusers' EulerAncestralDiscreteScheduler.__init__ (0.42). The shared schedule
// rows already refuse trained_betas and rescale_betas_zero_snr (default-only); prediction_type
// "sample" is refused by validate(), so its row says so.
constexpr auto kEulerAncestralKeys = [] {
  auto keys = io::join_keys(detail::kScheduleKeys,
                            std::to_array<io::ConfigKey>({
                                {"timestep_spacing", io::KeyUse::kHonoured, nullptr, "leading | trailing | linspace"},
                                {"steps_offset", io::KeyUse::kHonoured, nullptr, "added to leading timesteps"},
                            }));
  for (io::ConfigKey& key : keys) {
    if (std::string_view(key.name) == "prediction_type") {
      key.why = "epsilon | v_prediction; sample is refused (diffusers' step raises NotImplementedError)";
    }
  }
  return keys;
}();

}  // namespace

io::ConfigKeyTable EulerAncestralOptions::keys() { return kEulerAncestralKeys; }

EulerAncestralOptions EulerAncestralOptions::from_config(const nlohmann::json& config) {
  EulerAncestralOptions o;
  o.schedule = NoiseScheduleConfig::from_config(config);
  o.timestep_spacing = TimestepSpacing::kLinspace;
  o.steps_offset = 0;
  detail::read_enum(config, "timestep_spacing", o.timestep_spacing, parse_timestep_spacing);
  detail::read_key(config, "steps_offset", o.steps_offset);
  io::refuse_unsupported(config, kEulerAncestralKeys, detail::kSchedulerConfig);
  o.validate();
  return o;
}

void EulerAncestralOptions::validate() const {
  schedule.validate();
  TORCH_CHECK(schedule.prediction_type != PredictionType::kSample,
              "EulerAncestral: prediction_type = \"sample\" is not supported (diffusers' "
              "EulerAncestralDiscreteScheduler.step raises NotImplementedError); use epsilon or v_prediction");
  TORCH_CHECK(steps_offset >= 0, "EulerAncestral: steps_offset must be >= 0, got ", steps_offset);
}

EulerAncestralSampler::EulerAncestralSampler(EulerAncestralOptions options)
    : Sampler(NoiseSchedule(options.schedule)), options_(options) {
  options_.validate();
}

void EulerAncestralSampler::set_timesteps(int64_t n) {
  // The spacings and σ of EulerDiscreteScheduler, ending at σ = 0.
  const std::vector<double> ts = euler_timesteps(n, options_.timestep_spacing, options_.steps_offset);
  sigmas_ = interpolated_sigmas(ts);
  sigmas_.push_back(0.0f);
  timesteps_ = at::tensor(ts, at::kDouble).to(at::kFloat);  // [n]
  sigmas_tensor_ =
      at::tensor(std::vector<double>(sigmas_.begin(), sigmas_.end()), at::kDouble).to(at::kFloat);  // [n+1]
}

double EulerAncestralSampler::init_noise_sigma() const {
  TORCH_CHECK(!sigmas_.empty(), "euler_ancestral: call set_timesteps before init_noise_sigma");
  const float max_sigma = *std::max_element(sigmas_.begin(), sigmas_.end());
  if (options_.timestep_spacing != TimestepSpacing::kLeading) {
    return max_sigma;
  }
  return detail::f32_sqrt(max_sigma * max_sigma + 1.0f);
}

at::Tensor EulerAncestralSampler::scale_model_input(const at::Tensor& sample, int64_t i) const {
  check_index(i);
  const float sigma = sigmas_[static_cast<size_t>(i)];
  return sample / at::scalar_tensor(detail::f32_sqrt(sigma * sigma + 1.0f), at::kFloat);
}

bool EulerAncestralSampler::needs_noise(int64_t i) const {
  check_index(i);
  return true;
}

StepOutput EulerAncestralSampler::step_impl(const at::Tensor& model_output, int64_t i, const at::Tensor& sample,
                                            const at::Tensor& noise) {
  const float sigma = sigmas_[static_cast<size_t>(i)];
  const float sigma_to = sigmas_[static_cast<size_t>(i) + 1];
  // diffusers multiplies by 0-d float32 CPU tensors, and with an fp16 model output the operand
  // order decides the rounding: σ·ε̂ (σ first) rounds σ to fp16, ε̂·c keeps c in float32. Using the
  // same tensors in the same order makes every dtype and device round as diffusers does.
  const at::Tensor sigma_t = at::scalar_tensor(sigma, at::kFloat);
  const at::Tensor x = sample.to(at::kFloat);  // [B, C, H, W]
  at::Tensor pred_x0;                          // [B, C, H, W] float32
  switch (schedule_.prediction_type()) {
    case PredictionType::kEpsilon: pred_x0 = x - sigma_t * model_output; break;
    case PredictionType::kVPrediction: {
      const float s2p1 = sigma * sigma + 1.0f;
      pred_x0 = model_output * at::scalar_tensor(-sigma / detail::f32_sqrt(s2p1), at::kFloat) +
                x / at::scalar_tensor(s2p1, at::kFloat);
      break;
    }
    case PredictionType::kSample: TORCH_CHECK(false, "euler_ancestral: prediction_type sample is not supported");
  }
  // diffusers evaluates these as 0-d float32 tensors, left to right: each product and difference
  // is rounded to float32 as here.
  const float to2 = sigma_to * sigma_to;
  const float from2 = sigma * sigma;
  const float sigma_up = detail::f32_sqrt(to2 * (from2 - to2) / from2);
  const float sigma_down = detail::f32_sqrt(to2 - sigma_up * sigma_up);
  const at::Tensor derivative = (x - pred_x0) / sigma_t;
  const at::Tensor prev = x + derivative * at::scalar_tensor(sigma_down - sigma, at::kFloat);
  // The noise has the model output's dtype (diffusers draws it so), so noise·σ_up is rounded there.
  const at::Tensor noised = prev + noise * at::scalar_tensor(sigma_up, at::kFloat);
  return StepOutput{noised.to(model_output.scalar_type()), pred_x0};
}

}  // namespace lookahead::model::sched
