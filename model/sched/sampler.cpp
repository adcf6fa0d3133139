// Sampler base: index/noise checks, generator-driven noise, the sampler factory, and the numpy
// routines (linspace, arange, interp, round) whose exact float64 behaviour the diffusers timestep
// schedules depend on.
#include "model/sched/sampler.h"

#include <nlohmann/json.hpp>

#include <ATen/ATen.h>

#include <cmath>
#include <string>

#include "model/sched/ddim.h"
#include "model/sched/dpm_solver.h"
#include "model/sched/euler.h"
#include "model/sched/lcm_sampler.h"

namespace lookahead::model::sched {

TimestepSpacing parse_timestep_spacing(std::string_view name) {
  if (name == "leading") return TimestepSpacing::kLeading;
  if (name == "trailing") return TimestepSpacing::kTrailing;
  if (name == "linspace") return TimestepSpacing::kLinspace;
  TORCH_CHECK(false, "unknown timestep_spacing '", std::string(name), "' (expected leading, trailing or linspace)");
}

const char* to_string(TimestepSpacing spacing) {
  switch (spacing) {
    case TimestepSpacing::kLeading: return "leading";
    case TimestepSpacing::kTrailing: return "trailing";
    case TimestepSpacing::kLinspace: return "linspace";
  }
  return "?";
}

FinalSigma parse_final_sigma(std::string_view name) {
  if (name == "zero") return FinalSigma::kZero;
  if (name == "sigma_min") return FinalSigma::kSigmaMin;
  TORCH_CHECK(false, "unknown final_sigmas_type '", std::string(name), "' (expected zero or sigma_min)");
}

const char* to_string(FinalSigma type) {
  switch (type) {
    case FinalSigma::kZero: return "zero";
    case FinalSigma::kSigmaMin: return "sigma_min";
  }
  return "?";
}

double Sampler::timestep(int64_t i) const {
  check_index(i);
  return timesteps_[i].item<double>();
}

at::Tensor Sampler::scale_model_input(const at::Tensor& sample, int64_t i) const {
  check_index(i);
  return sample;
}

void Sampler::check_index(int64_t i) const {
  TORCH_CHECK(num_steps() > 0, name(), ": call set_timesteps before sampling");
  TORCH_CHECK(i >= 0 && i < num_steps(), name(), ": step index ", i, " is outside [0, ", num_steps(), ")");
}

void Sampler::check_num_steps(int64_t n) const {
  const int64_t T = schedule_.num_train_timesteps();
  TORCH_CHECK(n >= 1, name(), ": num_inference_steps must be >= 1, got ", n);
  TORCH_CHECK(n <= T, name(), ": num_inference_steps (", n, ") cannot exceed num_train_timesteps (", T, ")");
}

void Sampler::check_schedule(const std::vector<double>& ts) const {
  const auto T = static_cast<double>(schedule_.num_train_timesteps());
  for (size_t k = 0; k < ts.size(); ++k) {
    TORCH_CHECK(ts[k] >= 0 && ts[k] <= T - 1, name(), ": this spacing/steps_offset/num_inference_steps gives timestep ",
                ts[k], " outside [0, ", T - 1, "] (diffusers would index out of its table); choose another "
                "number of steps or steps_offset");
    TORCH_CHECK(k == 0 || ts[k] < ts[k - 1], name(), ": this spacing/num_inference_steps gives repeated or "
                "increasing timesteps (", ts[k - 1], " then ", ts[k], "); choose fewer steps");
  }
}

StepOutput Sampler::step(const at::Tensor& model_output, int64_t i, const at::Tensor& sample,
                         const at::Tensor& noise) {
  check_index(i);
  TORCH_CHECK(model_output.defined() && sample.defined(), name(), "::step: undefined model_output or sample");
  TORCH_CHECK(model_output.sizes() == sample.sizes(), name(), "::step: model_output ", model_output.sizes(),
              " and sample ", sample.sizes(), " differ in shape");
  if (needs_noise(i)) {
    TORCH_CHECK(noise.defined(), name(), "::step: step ", i,
                " is stochastic; pass a noise tensor or a generator");
    TORCH_CHECK(noise.sizes() == sample.sizes(), name(), "::step: noise ", noise.sizes(), " and sample ",
                sample.sizes(), " differ in shape");
  }
  return step_impl(model_output, i, sample, needs_noise(i) ? noise : at::Tensor());
}

StepOutput Sampler::step(const at::Tensor& model_output, int64_t i, const at::Tensor& sample,
                         at::Generator& generator) {
  check_index(i);
  at::Tensor noise;
  if (needs_noise(i)) {
    TORCH_CHECK(generator.defined(), name(), "::step: undefined generator");
    // diffusers' randn_tensor draws on the generator's device and then moves the noise.
    noise = at::randn(model_output.sizes(), generator,
                      at::TensorOptions().dtype(noise_dtype(model_output, sample)).device(generator.device()))
                .to(model_output.device());
  }
  return step(model_output, i, sample, noise);
}

SamplerKind parse_sampler_kind(std::string_view name) {
  if (name == "euler") return SamplerKind::kEuler;
  if (name == "ddim") return SamplerKind::kDdim;
  if (name == "dpm_solver" || name == "dpm++" || name == "dpmsolver++") return SamplerKind::kDpmSolver;
  if (name == "lcm") return SamplerKind::kLcm;
  TORCH_CHECK(false, "unknown sampler '", std::string(name), "' (expected euler, ddim, dpm_solver or lcm)");
}

std::unique_ptr<Sampler> make_sampler(SamplerKind kind, const nlohmann::json& scheduler_config) {
  switch (kind) {
    case SamplerKind::kEuler:
      return std::make_unique<EulerDiscreteSampler>(EulerDiscreteOptions::from_config(scheduler_config));
    case SamplerKind::kDdim:
      return std::make_unique<DdimSampler>(DdimOptions::from_config(scheduler_config));
    case SamplerKind::kDpmSolver:
      return std::make_unique<DpmSolverSampler>(DpmSolverOptions::from_config(scheduler_config));
    case SamplerKind::kLcm:
      return std::make_unique<LcmSampler>(LcmOptions::from_config(scheduler_config));
  }
  TORCH_CHECK(false, "make_sampler: unknown sampler kind");
}

namespace detail {

std::vector<double> np_linspace(double start, double stop, int64_t num, bool endpoint) {
  TORCH_CHECK(num >= 0, "np_linspace: num must be >= 0");
  const int64_t div = endpoint ? num - 1 : num;
  const double delta = stop - start;
  std::vector<double> y(static_cast<size_t>(num));
  if (div > 0) {
    const double step = delta / static_cast<double>(div);
    for (int64_t i = 0; i < num; ++i) {
      // numpy divides first when the step underflows to zero.
      y[static_cast<size_t>(i)] = step == 0 ? static_cast<double>(i) / static_cast<double>(div) * delta
                                            : static_cast<double>(i) * step;
    }
  } else {
    for (int64_t i = 0; i < num; ++i) {
      y[static_cast<size_t>(i)] = static_cast<double>(i) * delta;
    }
  }
  for (double& v : y) {
    v += start;
  }
  if (endpoint && num > 1) {
    y.back() = stop;
  }
  return y;
}

std::vector<double> np_arange(double start, double stop, double step) {
  TORCH_CHECK(step != 0 && std::isfinite(step), "np_arange: step must be finite and non-zero");
  const double len_f = std::ceil((stop - start) / step);
  const int64_t len = len_f > 0 ? static_cast<int64_t>(len_f) : 0;
  std::vector<double> y(static_cast<size_t>(len));
  if (len == 0) {
    return y;
  }
  // numpy fills buffer[i] = start + i * (buffer[1] - buffer[0]), not start + i * step.
  y[0] = start;
  if (len > 1) {
    y[1] = start + step;
    const double delta = y[1] - start;
    for (int64_t i = 2; i < len; ++i) {
      y[static_cast<size_t>(i)] = start + static_cast<double>(i) * delta;
    }
  }
  return y;
}

double np_interp_index(double x, const std::vector<double>& fp) {
  TORCH_CHECK(!fp.empty(), "np_interp_index: empty table");
  const auto last = static_cast<int64_t>(fp.size()) - 1;
  if (x <= 0) {
    return fp.front();
  }
  if (x >= static_cast<double>(last)) {
    return fp.back();
  }
  const auto j = static_cast<int64_t>(std::floor(x));
  const double fj = fp[static_cast<size_t>(j)];
  if (static_cast<double>(j) == x) {
    return fj;
  }
  const double slope = (fp[static_cast<size_t>(j + 1)] - fj) / 1.0;
  return slope * (x - static_cast<double>(j)) + fj;
}

double np_round(double x) { return std::nearbyint(x); }

std::vector<double> train_sigmas(const NoiseSchedule& schedule) {
  const at::Tensor s = schedule.train_sigmas_f32().to(at::kDouble).contiguous();
  const double* p = s.const_data_ptr<double>();
  return std::vector<double>(p, p + s.numel());
}

namespace {

template <typename Op>
float f32_unary(float x, Op op) {
  return op(at::scalar_tensor(x, at::TensorOptions().dtype(at::kFloat))).template item<float>();
}

}  // namespace

float f32_sqrt(float x) {
  return f32_unary(x, [](const at::Tensor& t) { return t.sqrt(); });
}

float f32_log(float x) {
  return f32_unary(x, [](const at::Tensor& t) { return t.log(); });
}

float f32_exp(float x) {
  return f32_unary(x, [](const at::Tensor& t) { return t.exp(); });
}

}  // namespace detail

}  // namespace lookahead::model::sched
