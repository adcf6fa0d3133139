// NoiseSchedule: diffusers' beta/ᾱ tables reproduced op for op in float32 (the same libtorch
// kernels diffusers runs), plus the per-sample forward process and x0 estimate.
#include "model/sched/noise_schedule.h"

#include <nlohmann/json.hpp>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

#include "model/io/config_keys.h"
#include "model/sched/scheduler_config.h"

namespace lookahead::model::sched {

namespace {

// Every key of diffusers' DDPMScheduler.__init__ (0.42), the class diffusers' training scripts
// draw noise with. Only the betas and prediction_type reach add_noise and the loss targets; the
// rest configure DDPM sampling, which training never runs.
constexpr auto kNoiseKeys = io::join_keys(
    detail::kScheduleKeys,
    std::to_array<io::ConfigKey>({
        {"variance_type", io::KeyUse::kMetadata, nullptr, "DDPM sampling only; training never reads it"},
        {"clip_sample", io::KeyUse::kMetadata, nullptr, "DDPM sampling only; training never reads it"},
        {"thresholding", io::KeyUse::kMetadata, nullptr, "DDPM sampling only; training never reads it"},
        {"dynamic_thresholding_ratio", io::KeyUse::kMetadata, nullptr, "DDPM sampling only; training never reads it"},
        {"clip_sample_range", io::KeyUse::kMetadata, nullptr, "DDPM sampling only; training never reads it"},
        {"sample_max_value", io::KeyUse::kMetadata, nullptr, "DDPM sampling only; training never reads it"},
        {"timestep_spacing", io::KeyUse::kMetadata, nullptr, "DDPM sampling only; training never reads it"},
        {"steps_offset", io::KeyUse::kMetadata, nullptr, "DDPM sampling only; training never reads it"},
    }));

}  // namespace

io::ConfigKeyTable NoiseScheduleConfig::keys() { return kNoiseKeys; }

BetaSchedule parse_beta_schedule(std::string_view name) {
  if (name == "linear") return BetaSchedule::kLinear;
  if (name == "scaled_linear") return BetaSchedule::kScaledLinear;
  if (name == "squaredcos_cap_v2") return BetaSchedule::kSquaredCosCapV2;
  TORCH_CHECK(false, "unknown beta_schedule '", std::string(name),
              "' (expected linear, scaled_linear or squaredcos_cap_v2)");
}

const char* to_string(BetaSchedule schedule) {
  switch (schedule) {
    case BetaSchedule::kLinear: return "linear";
    case BetaSchedule::kScaledLinear: return "scaled_linear";
    case BetaSchedule::kSquaredCosCapV2: return "squaredcos_cap_v2";
  }
  return "?";
}

PredictionType parse_prediction_type(std::string_view name) {
  if (name == "epsilon") return PredictionType::kEpsilon;
  if (name == "v_prediction") return PredictionType::kVPrediction;
  if (name == "sample") return PredictionType::kSample;
  TORCH_CHECK(false, "unknown prediction_type '", std::string(name),
              "' (expected epsilon, v_prediction or sample)");
}

const char* to_string(PredictionType type) {
  switch (type) {
    case PredictionType::kEpsilon: return "epsilon";
    case PredictionType::kVPrediction: return "v_prediction";
    case PredictionType::kSample: return "sample";
  }
  return "?";
}

NoiseScheduleConfig NoiseScheduleConfig::ddpm_class_defaults() {
  NoiseScheduleConfig c;
  c.beta_start = 0.0001;
  c.beta_end = 0.02;
  c.beta_schedule = BetaSchedule::kLinear;
  return c;
}

NoiseScheduleConfig NoiseScheduleConfig::lcm_class_defaults() { return NoiseScheduleConfig{}; }

NoiseScheduleConfig NoiseScheduleConfig::from_config(const nlohmann::json& config,
                                                     const NoiseScheduleConfig& defaults) {
  NoiseScheduleConfig c = defaults;
  detail::read_key(config, "num_train_timesteps", c.num_train_timesteps);
  detail::read_key(config, "beta_start", c.beta_start);
  detail::read_key(config, "beta_end", c.beta_end);
  detail::read_enum(config, "beta_schedule", c.beta_schedule, parse_beta_schedule);
  detail::read_enum(config, "prediction_type", c.prediction_type, parse_prediction_type);
  io::refuse_unsupported(config, kNoiseKeys, detail::kSchedulerConfig);
  c.validate();
  return c;
}

void NoiseScheduleConfig::validate() const {
  TORCH_CHECK(num_train_timesteps >= 1, "num_train_timesteps must be >= 1, got ", num_train_timesteps);
  TORCH_CHECK(std::isfinite(beta_start) && std::isfinite(beta_end), "beta_start/beta_end must be finite");
  TORCH_CHECK(beta_start >= 0 && beta_end >= 0, "beta_start and beta_end must be >= 0, got ", beta_start,
              " and ", beta_end);
  TORCH_CHECK(beta_start < 1 && beta_end < 1, "beta_start and beta_end must be < 1, got ", beta_start,
              " and ", beta_end);
}

namespace {

// diffusers `betas_for_alpha_bar` (cosine): computed in double, then rounded to float32.
at::Tensor cosine_betas(int64_t T) {
  auto alpha_bar = [](double t) {
    const double c = std::cos((t + 0.008) / 1.008 * std::numbers::pi / 2);
    return c * c;
  };
  std::vector<double> betas(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) {
    const double t1 = static_cast<double>(i) / static_cast<double>(T);
    const double t2 = static_cast<double>(i + 1) / static_cast<double>(T);
    betas[static_cast<size_t>(i)] = std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999);
  }
  return at::tensor(betas, at::kDouble).to(at::kFloat);
}

}  // namespace

NoiseSchedule::NoiseSchedule(NoiseScheduleConfig config) : config_(config) {
  config_.validate();
  const int64_t T = config_.num_train_timesteps;
  at::Tensor betas;  // [T] float32, as diffusers builds it
  switch (config_.beta_schedule) {
    case BetaSchedule::kLinear:
      betas = at::linspace(config_.beta_start, config_.beta_end, T, at::kFloat);
      break;
    case BetaSchedule::kScaledLinear:
      // Python's `x ** 0.5` is C pow(), which can differ from sqrt() in the last bit.
      betas = at::linspace(std::pow(config_.beta_start, 0.5), std::pow(config_.beta_end, 0.5), T, at::kFloat)
                  .pow(2);
      break;
    case BetaSchedule::kSquaredCosCapV2:
      betas = cosine_betas(T);
      break;
  }
  const at::Tensor alphas = at::rsub(betas, 1.0);        // [T] float32
  alphas_cumprod_f32_ = at::cumprod(alphas, 0);         // [T] float32
  train_sigmas_f32_ = (at::rsub(alphas_cumprod_f32_, 1) / alphas_cumprod_f32_).pow(0.5);
  betas_ = betas.to(at::kDouble);
  alphas_cumprod_ = alphas_cumprod_f32_.to(at::kDouble);
  const float* p = alphas_cumprod_f32_.const_data_ptr<float>();
  alphas_cumprod_host_.assign(p, p + T);
}

float NoiseSchedule::alpha_cumprod(int64_t t) const {
  TORCH_CHECK(t >= 0 && t < config_.num_train_timesteps, "timestep ", t, " is outside [0, ",
              config_.num_train_timesteps, ")");
  return alphas_cumprod_host_[static_cast<size_t>(t)];
}

void NoiseSchedule::check_timesteps(const at::Tensor& timesteps, const at::Tensor& x, const char* who) const {
  TORCH_CHECK(timesteps.defined() && x.defined(), who, ": undefined tensor");
  TORCH_CHECK(!at::isFloatingType(timesteps.scalar_type()) && !at::isComplexType(timesteps.scalar_type()) &&
                  timesteps.scalar_type() != at::kBool,
              who, ": timesteps must be an integer tensor, got ", timesteps.scalar_type());
  TORCH_CHECK(timesteps.dim() == 1, who, ": timesteps must be [B], got shape ", timesteps.sizes());
  TORCH_CHECK(x.dim() >= 1 && x.size(0) == timesteps.size(0), who, ": timesteps [", timesteps.size(0),
              "] do not match the batch of a tensor of shape ", x.sizes());
  if (timesteps.is_cpu() && timesteps.numel() > 0) {
    const int64_t lo = timesteps.min().item<int64_t>();
    const int64_t hi = timesteps.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < config_.num_train_timesteps, who, ": timesteps must lie in [0, ",
                config_.num_train_timesteps, "), got min ", lo, " max ", hi);
  }
}

at::Tensor NoiseSchedule::per_sample(const at::Tensor& coeff, const at::Tensor& x) {
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[0] = coeff.size(0);
  return coeff.reshape(shape);
}

at::Tensor NoiseSchedule::add_noise(const at::Tensor& x0, const at::Tensor& noise,
                                    const at::Tensor& timesteps) const {
  check_timesteps(timesteps, x0, "add_noise");
  TORCH_CHECK(noise.sizes() == x0.sizes(), "add_noise: noise ", noise.sizes(), " and x0 ", x0.sizes(),
              " differ in shape");
  // DDPMScheduler casts the table to the sample dtype before the square roots; so do we.
  const at::Tensor ac = alphas_cumprod_f32_.to(x0.device(), x0.scalar_type())
                            .index_select(0, timesteps.to(x0.device(), at::kLong));  // [B]
  const at::Tensor sqrt_a = per_sample(ac.sqrt(), x0);                             // [B, 1, ...]
  const at::Tensor sqrt_1ma = per_sample(at::rsub(ac, 1).sqrt(), x0);              // [B, 1, ...]
  return sqrt_a * x0 + sqrt_1ma * noise;
}

at::Tensor NoiseSchedule::velocity(const at::Tensor& x0, const at::Tensor& noise,
                                   const at::Tensor& timesteps) const {
  check_timesteps(timesteps, x0, "velocity");
  TORCH_CHECK(noise.sizes() == x0.sizes(), "velocity: noise ", noise.sizes(), " and x0 ", x0.sizes(),
              " differ in shape");
  const at::Tensor ac = alphas_cumprod_f32_.to(x0.device(), x0.scalar_type())
                            .index_select(0, timesteps.to(x0.device(), at::kLong));  // [B]
  const at::Tensor sqrt_a = per_sample(ac.sqrt(), x0);
  const at::Tensor sqrt_1ma = per_sample(at::rsub(ac, 1).sqrt(), x0);
  return sqrt_a * noise - sqrt_1ma * x0;
}

at::Tensor NoiseSchedule::predict_x0(const at::Tensor& x_t, const at::Tensor& model_output,
                                     const at::Tensor& timesteps) const {
  check_timesteps(timesteps, x_t, "predict_x0");
  TORCH_CHECK(model_output.sizes() == x_t.sizes(), "predict_x0: model_output ", model_output.sizes(),
              " and x_t ", x_t.sizes(), " differ in shape");
  if (config_.prediction_type == PredictionType::kSample) {
    return model_output;
  }
  // float32 table on the sample's device, as the official LCMSingleStepScheduler keeps it.
  const at::Tensor ac = alphas_cumprod_f32_.to(x_t.device()).index_select(0, timesteps.to(x_t.device(), at::kLong));
  const at::Tensor sqrt_a = per_sample(ac.sqrt(), x_t);                   // [B, 1, ...] float32
  const at::Tensor sqrt_1ma = per_sample(at::rsub(ac, 1).sqrt(), x_t);    // [B, 1, ...] float32
  if (config_.prediction_type == PredictionType::kEpsilon) {
    return (x_t - sqrt_1ma * model_output) / sqrt_a;
  }
  return sqrt_a * x_t - sqrt_1ma * model_output;
}

}  // namespace lookahead::model::sched
