// DpmSolverSampler: diffusers' DPMSolverMultistepScheduler (dpmsolver++ / sde-dpmsolver++) with its
// timestep spacing, lower-order warm-up/final steps and float32 coefficient arithmetic.
#include "model/sched/dpm_solver.h"

#include <nlohmann/json.hpp>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "model/io/config_keys.h"
#include "model/sched/numpy_compat.h"
#include "model/sched/scheduler_config.h"

namespace lookahead::model::sched {

namespace {

// Every key of diffusers' DPMSolverMultistepScheduler.__init__ (0.42).
constexpr auto kDpmKeys = io::join_keys(
    detail::kScheduleKeys,
    std::to_array<io::ConfigKey>({
        {"solver_order", io::KeyUse::kHonoured, nullptr, "1, 2 or 3"},
    }),
    detail::kThresholdingKeys,
    std::to_array<io::ConfigKey>({
        {"algorithm_type", io::KeyUse::kHonoured, nullptr, "dpmsolver++ | sde-dpmsolver++ (deis reads as dpmsolver++, as diffusers does); dpmsolver and sde-dpmsolver are refused"},
        {"solver_type", io::KeyUse::kHonoured, nullptr, "midpoint | heun"},
        {"lower_order_final", io::KeyUse::kHonoured, nullptr, "lower-order final steps"},
        {"euler_at_final", io::KeyUse::kHonoured, nullptr, "first-order final step"},
    }),
    detail::kExtraSigmaKeys,
    std::to_array<io::ConfigKey>({
        {"use_lu_lambdas", io::KeyUse::kDefaultOnly, "false", "Lu lambdas"},
        {"use_flow_sigmas", io::KeyUse::kDefaultOnly, "false", "flow-matching sigmas"},
        {"flow_shift", io::KeyUse::kInert, nullptr, "read only with flow sigmas or dynamic shifting (refused)"},
        {"final_sigmas_type", io::KeyUse::kHonoured, nullptr, "zero | sigma_min"},
        {"lambda_min_clipped", io::KeyUse::kDefaultOnly, "null",
         "lambda clipping (only diffusers' -inf, which JSON writes as null or leaves out, is implemented)"},
        {"variance_type", io::KeyUse::kDefaultOnly, "null", "learned variance"},
        {"timestep_spacing", io::KeyUse::kHonoured, nullptr, "leading | trailing | linspace"},
        {"steps_offset", io::KeyUse::kHonoured, nullptr, "added to leading timesteps"},
        {"use_dynamic_shifting", io::KeyUse::kDefaultOnly, "false", "dynamic shifting"},
        {"time_shift_type", io::KeyUse::kInert, nullptr, "read only with dynamic shifting (refused)"},
    }));

}  // namespace

io::ConfigKeyTable DpmSolverOptions::keys() { return kDpmKeys; }

DpmAlgorithm parse_dpm_algorithm(std::string_view name) {
  // diffusers maps the retired "deis" setting onto dpmsolver++.
  if (name == "dpmsolver++" || name == "deis") return DpmAlgorithm::kDpmSolverPlusPlus;
  if (name == "sde-dpmsolver++") return DpmAlgorithm::kSdeDpmSolverPlusPlus;
  TORCH_CHECK(false, "DPM-Solver algorithm_type '", std::string(name),
              "' is not supported (expected dpmsolver++ or sde-dpmsolver++; the noise-prediction "
              "variants dpmsolver/sde-dpmsolver are deprecated in diffusers and not ported)");
}

const char* to_string(DpmAlgorithm algorithm) {
  switch (algorithm) {
    case DpmAlgorithm::kDpmSolverPlusPlus: return "dpmsolver++";
    case DpmAlgorithm::kSdeDpmSolverPlusPlus: return "sde-dpmsolver++";
  }
  return "?";
}

DpmSolverType parse_dpm_solver_type(std::string_view name) {
  // diffusers maps the UniPC/DEIS names onto midpoint.
  if (name == "midpoint" || name == "logrho" || name == "bh1" || name == "bh2") return DpmSolverType::kMidpoint;
  if (name == "heun") return DpmSolverType::kHeun;
  TORCH_CHECK(false, "unknown DPM-Solver solver_type '", std::string(name), "' (expected midpoint or heun)");
}

const char* to_string(DpmSolverType type) {
  switch (type) {
    case DpmSolverType::kMidpoint: return "midpoint";
    case DpmSolverType::kHeun: return "heun";
  }
  return "?";
}

DpmSolverOptions DpmSolverOptions::from_config(const nlohmann::json& config) {
  DpmSolverOptions o;
  o.schedule = NoiseScheduleConfig::from_config(config);
  o.timestep_spacing = TimestepSpacing::kLinspace;
  o.steps_offset = 0;
  detail::read_enum(config, "timestep_spacing", o.timestep_spacing, parse_timestep_spacing);
  detail::read_key(config, "steps_offset", o.steps_offset);
  detail::read_key(config, "solver_order", o.solver_order);
  detail::read_enum(config, "algorithm_type", o.algorithm_type, parse_dpm_algorithm);
  detail::read_enum(config, "solver_type", o.solver_type, parse_dpm_solver_type);
  detail::read_key(config, "lower_order_final", o.lower_order_final);
  detail::read_key(config, "euler_at_final", o.euler_at_final);
  detail::read_enum(config, "final_sigmas_type", o.final_sigmas_type, parse_final_sigma);
  io::refuse_unsupported(config, kDpmKeys, detail::kSchedulerConfig);
  o.validate();
  return o;
}

void DpmSolverOptions::validate() const {
  schedule.validate();
  TORCH_CHECK(steps_offset >= 0, "DPM-Solver: steps_offset must be >= 0, got ", steps_offset);
  TORCH_CHECK(solver_order >= 1 && solver_order <= 3, "DPM-Solver: solver_order must be 1, 2 or 3, got ",
              solver_order);
}

DpmSolverSampler::DpmSolverSampler(DpmSolverOptions options)
    : Sampler(NoiseSchedule(options.schedule)), options_(options) {
  options_.validate();
}

void DpmSolverSampler::set_timesteps(int64_t n) {
  check_num_steps(n);
  const int64_t T = schedule_.num_train_timesteps();
  // With lambda_min_clipped = -inf nothing is clipped: the schedule ends at T.
  const int64_t last = T;
  std::vector<double> ts;
  switch (options_.timestep_spacing) {
    case TimestepSpacing::kLinspace: {
      const std::vector<double> v = detail::np_linspace(0, static_cast<double>(last - 1), n + 1);
      for (int64_t k = n; k >= 1; --k) {
        ts.push_back(detail::np_round(v[static_cast<size_t>(k)]));
      }
      break;
    }
    case TimestepSpacing::kLeading: {
      const int64_t ratio = last / (n + 1);
      for (int64_t k = n; k >= 1; --k) {
        ts.push_back(static_cast<double>(k * ratio + options_.steps_offset));
      }
      break;
    }
    case TimestepSpacing::kTrailing:
      ts = trailing_timesteps(n);  // from last = T
      break;
  }
  check_schedule(ts);

  const std::vector<double> train = detail::train_sigmas(schedule_);
  sigmas_.clear();
  for (double t : ts) {
    sigmas_.push_back(static_cast<float>(train[static_cast<size_t>(t)]));
  }
  sigmas_.push_back(options_.final_sigmas_type == FinalSigma::kZero ? 0.0f : static_cast<float>(train[0]));
  timesteps_ = at::tensor(std::vector<int64_t>(ts.begin(), ts.end()), at::kLong);  // [n]
  sigmas_tensor_ = at::tensor(std::vector<double>(sigmas_.begin(), sigmas_.end()), at::kDouble)
                       .to(at::kFloat);  // [n+1]
  x0_history_.assign(static_cast<size_t>(options_.solver_order), at::Tensor());
  lower_order_nums_ = 0;
  next_step_ = -1;
}

bool DpmSolverSampler::needs_noise(int64_t i) const {
  check_index(i);
  return options_.algorithm_type == DpmAlgorithm::kSdeDpmSolverPlusPlus;
}

namespace {

// α, σ and λ = log α − log σ of one σ of the Karras parameterization (α = 1/√(σ²+1)).
struct Point {
  float alpha;
  float sigma;
  float lambda;
};

Point point(float s) {
  const float alpha = 1.0f / detail::f32_sqrt(s * s + 1.0f);
  const float sigma = s * alpha;
  return Point{alpha, sigma, detail::f32_log(alpha) - detail::f32_log(sigma)};
}

double d(float x) { return static_cast<double>(x); }

}  // namespace

at::Tensor DpmSolverSampler::convert_model_output(const at::Tensor& model_output, int64_t i,
                                                  const at::Tensor& sample) const {
  const Point p = point(sigmas_[static_cast<size_t>(i)]);
  switch (schedule_.prediction_type()) {
    case PredictionType::kEpsilon:
      return (sample - model_output * d(p.sigma)) / d(p.alpha);
    case PredictionType::kSample:
      return model_output;
    case PredictionType::kVPrediction:
      return sample * d(p.alpha) - model_output * d(p.sigma);
  }
  return model_output;
}

at::Tensor DpmSolverSampler::first_order(const at::Tensor& x0, int64_t i, const at::Tensor& sample,
                                         const at::Tensor& noise) const {
  const Point t = point(sigmas_[static_cast<size_t>(i) + 1]);
  const Point s = point(sigmas_[static_cast<size_t>(i)]);
  const float h = t.lambda - s.lambda;
  const float e = detail::f32_exp(-h);
  if (options_.algorithm_type == DpmAlgorithm::kDpmSolverPlusPlus) {
    return sample * d(t.sigma / s.sigma) - x0 * d(t.alpha * (e - 1.0f));
  }
  const float e2 = detail::f32_exp(-2.0f * h);
  return sample * d(t.sigma / s.sigma * e) + x0 * d(t.alpha * (1.0f - e2)) +
         noise * d(t.sigma * detail::f32_sqrt(1.0f - e2));
}

at::Tensor DpmSolverSampler::second_order(int64_t i, const at::Tensor& sample, const at::Tensor& noise) const {
  const auto k = static_cast<size_t>(i);
  const Point t = point(sigmas_[k + 1]);
  const Point s0 = point(sigmas_[k]);
  const Point s1 = point(sigmas_[k - 1]);
  const at::Tensor& m0 = x0_history_[x0_history_.size() - 1];
  const at::Tensor& m1 = x0_history_[x0_history_.size() - 2];
  const float h = t.lambda - s0.lambda;
  const float h0 = s0.lambda - s1.lambda;
  const float r0 = h0 / h;
  const at::Tensor& D0 = m0;
  const at::Tensor D1 = (m0 - m1) * d(1.0f / r0);
  const bool midpoint = options_.solver_type == DpmSolverType::kMidpoint;
  const float e = detail::f32_exp(-h);
  if (options_.algorithm_type == DpmAlgorithm::kDpmSolverPlusPlus) {
    const at::Tensor x = sample * d(t.sigma / s0.sigma) - D0 * d(t.alpha * (e - 1.0f));
    return midpoint ? x - D1 * d(0.5f * (t.alpha * (e - 1.0f))) : x + D1 * d(t.alpha * ((e - 1.0f) / h + 1.0f));
  }
  const float e2 = detail::f32_exp(-2.0f * h);
  const at::Tensor x = sample * d(t.sigma / s0.sigma * e) + D0 * d(t.alpha * (1.0f - e2));
  const at::Tensor corr = midpoint ? D1 * d(0.5f * (t.alpha * (1.0f - e2)))
                                   : D1 * d(t.alpha * ((1.0f - e2) / (-2.0f * h) + 1.0f));
  return x + corr + noise * d(t.sigma * detail::f32_sqrt(1.0f - e2));
}

at::Tensor DpmSolverSampler::third_order(int64_t i, const at::Tensor& sample, const at::Tensor& noise) const {
  const auto k = static_cast<size_t>(i);
  const Point t = point(sigmas_[k + 1]);
  const Point s0 = point(sigmas_[k]);
  const Point s1 = point(sigmas_[k - 1]);
  const Point s2 = point(sigmas_[k - 2]);
  const size_t n = x0_history_.size();
  const at::Tensor& m0 = x0_history_[n - 1];
  const at::Tensor& m1 = x0_history_[n - 2];
  const at::Tensor& m2 = x0_history_[n - 3];
  const float h = t.lambda - s0.lambda;
  const float h0 = s0.lambda - s1.lambda;
  const float h1 = s1.lambda - s2.lambda;
  const float r0 = h0 / h;
  const float r1 = h1 / h;
  const at::Tensor& D0 = m0;
  const at::Tensor D1_0 = (m0 - m1) * d(1.0f / r0);
  const at::Tensor D1_1 = (m1 - m2) * d(1.0f / r1);
  const at::Tensor D1 = D1_0 + (D1_0 - D1_1) * d(r0 / (r0 + r1));
  const at::Tensor D2 = (D1_0 - D1_1) * d(1.0f / (r0 + r1));
  const float e = detail::f32_exp(-h);
  if (options_.algorithm_type == DpmAlgorithm::kDpmSolverPlusPlus) {
    return sample * d(t.sigma / s0.sigma) - D0 * d(t.alpha * (e - 1.0f)) + D1 * d(t.alpha * ((e - 1.0f) / h + 1.0f)) -
           D2 * d(t.alpha * ((e - 1.0f + h) / (h * h) - 0.5f));
  }
  const float e2 = detail::f32_exp(-2.0f * h);
  const float two_h = 2.0f * h;
  return sample * d(t.sigma / s0.sigma * e) + D0 * d(t.alpha * (1.0f - e2)) +
         D1 * d(t.alpha * ((1.0f - e2) / (-2.0f * h) + 1.0f)) +
         D2 * d(t.alpha * ((1.0f - e2 - two_h) / (two_h * two_h) - 0.5f)) +
         noise * d(t.sigma * detail::f32_sqrt(1.0f - e2));
}

StepOutput DpmSolverSampler::step_impl(const at::Tensor& model_output, int64_t i, const at::Tensor& sample,
                                       const at::Tensor& noise) {
  TORCH_CHECK(next_step_ < 0 || i == next_step_, "dpm_solver: steps must be taken in order (expected step ",
              next_step_, ", got ", i, "); call set_timesteps to start a new run");
  const int64_t n = num_steps();
  const bool lower_order_final =
      i == n - 1 && (options_.euler_at_final || (options_.lower_order_final && n < 15) ||
                     options_.final_sigmas_type == FinalSigma::kZero);
  const bool lower_order_second = i == n - 2 && options_.lower_order_final && n < 15;

  const at::Tensor x0 = convert_model_output(model_output, i, sample);  // [B, C, H, W]
  std::rotate(x0_history_.begin(), x0_history_.begin() + 1, x0_history_.end());
  x0_history_.back() = x0;

  const at::Tensor x = sample.to(at::kFloat);
  const at::Tensor z = noise.defined() ? noise.to(at::kFloat) : noise;
  at::Tensor prev;
  const int64_t order = options_.solver_order;
  if (order == 1 || lower_order_nums_ < 1 || lower_order_final) {
    prev = first_order(x0, i, x, z);
  } else if (order == 2 || lower_order_nums_ < 2 || lower_order_second) {
    prev = second_order(i, x, z);
  } else {
    prev = third_order(i, x, z);
  }
  lower_order_nums_ = std::min(lower_order_nums_ + 1, order);
  next_step_ = i + 1;
  return StepOutput{prev.to(x0.scalar_type()), x0};
}

}  // namespace lookahead::model::sched
