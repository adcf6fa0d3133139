// Sampler base: index/noise checks and generator-driven noise, plus the spelling of the shared
// schedule enums (timestep_spacing, final_sigmas_type).
#include "model/sched/sampler.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <string>

#include "model/sched/numpy_compat.h"

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

std::vector<double> Sampler::trailing_timesteps(int64_t n) const {
  const int64_t T = schedule_.num_train_timesteps();
  const double ratio = static_cast<double>(T) / static_cast<double>(n);
  std::vector<double> ts;
  for (double v : detail::np_arange(static_cast<double>(T), 0, -ratio)) {
    ts.push_back(detail::np_round(v) - 1);
  }
  TORCH_CHECK(static_cast<int64_t>(ts.size()) == n, name(), ": trailing spacing gives ", ts.size(),
              " timesteps for num_inference_steps = ", n,
              " (a rounding artefact of numpy.arange that diffusers shares); choose another number of steps");
  return ts;
}

std::vector<double> Sampler::euler_timesteps(int64_t n, TimestepSpacing spacing, int64_t steps_offset) const {
  check_num_steps(n);
  const int64_t T = schedule_.num_train_timesteps();
  std::vector<double> ts;
  switch (spacing) {
    case TimestepSpacing::kLinspace: {
      for (double v : detail::np_linspace(0, static_cast<double>(T - 1), n)) ts.push_back(static_cast<float>(v));
      std::reverse(ts.begin(), ts.end());
      break;
    }
    case TimestepSpacing::kLeading: {
      const int64_t ratio = T / n;
      for (int64_t i = n - 1; i >= 0; --i) {
        const auto v = static_cast<float>(detail::np_round(static_cast<double>(i * ratio)));
        ts.push_back(v + static_cast<float>(steps_offset));
      }
      break;
    }
    case TimestepSpacing::kTrailing:
      ts = trailing_timesteps(n);  // whole numbers below T: exact in float32
      break;
  }
  check_schedule(ts);
  return ts;
}

std::vector<float> Sampler::interpolated_sigmas(const std::vector<double>& timesteps) const {
  const std::vector<double> train = detail::train_sigmas(schedule_);
  std::vector<float> out;
  out.reserve(timesteps.size());
  for (double t : timesteps) out.push_back(static_cast<float>(detail::np_interp_index(t, train)));
  return out;
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

}  // namespace lookahead::model::sched
