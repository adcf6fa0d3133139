// Unit tests of model/sched: the spec's reference values (ᾱ table, LCM/Euler/Euler-ancestral/DDIM/DPM
// timesteps, Euler init_noise_sigma, LCM boundary coefficients), forward/inverse identities, the
// ancestral step's noise split and generator use, gradients of the one-step preview, the importance
// timestep sampler's distribution, sampler construction from a config, and config validation.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "model/sched/ddim.h"
#include "model/sched/dpm_solver.h"
#include "model/sched/euler.h"
#include "model/sched/euler_ancestral.h"
#include "model/sched/lcm_preview.h"
#include "model/sched/lcm_sampler.h"
#include "model/sched/make_sampler.h"
#include "model/sched/noise_schedule.h"
#include "model/sched/timestep_distribution.h"

namespace lookahead::model::sched {
namespace {

// SDXL base scheduler/scheduler_config.json.
nlohmann::json sdxl_config() {
  return nlohmann::json::parse(R"({
    "_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.19.0.dev0",
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": false, "interpolation_type": "linear", "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": false,
    "skip_prk_steps": true, "steps_offset": 1, "timestep_spacing": "leading",
    "trained_betas": null, "use_karras_sigmas": false})");
}

// sdxl-turbo scheduler/scheduler_config.json (written by diffusers 0.24.0.dev0).
nlohmann::json sdxl_turbo_config() {
  return nlohmann::json::parse(R"({
    "_class_name": "EulerAncestralDiscreteScheduler", "_diffusers_version": "0.24.0.dev0",
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": false, "interpolation_type": "linear", "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": false,
    "skip_prk_steps": true, "steps_offset": 1, "timestep_spacing": "trailing", "trained_betas": null})");
}

// The message of the c10::Error `f` throws ("" when it does not throw).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

std::vector<int64_t> as_ints(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kLong).contiguous();
  return std::vector<int64_t>(c.const_data_ptr<int64_t>(), c.const_data_ptr<int64_t>() + c.numel());
}

double max_abs(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

TEST(NoiseSchedule, ReferenceTable) {
  const NoiseSchedule s;
  // the SDXL scaled-linear schedule (float64 recomputation; float32 agrees to ~1e-6).
  struct Row {
    int64_t t;
    double beta, abar, sigma;
  };
  const Row rows[] = {{0, 0.00085000, 0.99915000, 0.02917},
                      {259, 0.00249965, 0.65897553, 0.71938},
                      {499, 0.00480379, 0.27766965, 1.61289},
                      {759, 0.00814175, 0.05221293, 4.26056},
                      {999, 0.01200000, 0.00466010, 14.61464}};
  for (const Row& r : rows) {
    EXPECT_NEAR(s.betas()[r.t].item<double>(), r.beta, 1e-8) << "t=" << r.t;
    EXPECT_NEAR(s.alphas_cumprod()[r.t].item<double>(), r.abar, 2e-6) << "t=" << r.t;
    EXPECT_NEAR(s.alpha_cumprod(r.t), r.abar, 2e-6) << "t=" << r.t;
    EXPECT_NEAR(s.train_sigmas_f32()[r.t].item<double>(), r.sigma, 2e-5 * std::max(1.0, r.sigma)) << "t=" << r.t;
  }
  EXPECT_EQ(s.alphas_cumprod().scalar_type(), at::kDouble);
  EXPECT_EQ(s.alphas_cumprod().size(0), 1000);
  // The float64 table holds the float32 values exactly.
  EXPECT_EQ(max_abs(s.alphas_cumprod(), s.alphas_cumprod_f32()), 0.0);
}

TEST(NoiseSchedule, OtherBetaSchedules) {
  NoiseScheduleConfig c = NoiseScheduleConfig::ddpm_class_defaults();
  const NoiseSchedule linear(c);
  EXPECT_NEAR(linear.betas()[0].item<double>(), 1e-4, 1e-9);
  EXPECT_NEAR(linear.betas()[999].item<double>(), 0.02, 1e-9);
  c.beta_schedule = BetaSchedule::kSquaredCosCapV2;
  const NoiseSchedule cosine(c);
  EXPECT_LE(cosine.betas().max().item<double>(), 0.999 + 1e-7);
  EXPECT_GT(cosine.alphas_cumprod()[0].item<double>(), 0.9999);
}

TEST(NoiseSchedule, AddNoisePerSampleAndInverse) {
  const NoiseSchedule s;
  const at::Tensor x0 = at::randn({3, 4, 5, 5}, at::kDouble).to(at::kFloat);
  const at::Tensor eps = at::randn({3, 4, 5, 5});
  const at::Tensor t = at::tensor(std::vector<int64_t>{0, 499, 999});
  const at::Tensor xt = s.add_noise(x0, eps, t);  // [3, 4, 5, 5]
  for (int64_t b = 0; b < 3; ++b) {
    const double a = s.alpha_cumprod(t[b].item<int64_t>());
    const at::Tensor expect = std::sqrt(a) * x0[b] + std::sqrt(1 - a) * eps[b];
    EXPECT_LT(max_abs(xt[b], expect), 1e-5) << "b=" << b;
  }
  // predict_x0 inverts add_noise for ε- and v-prediction.
  EXPECT_LT(max_abs(s.predict_x0(xt, eps, t), x0), 2e-4);
  NoiseScheduleConfig vc;
  vc.prediction_type = PredictionType::kVPrediction;
  const NoiseSchedule vs(vc);
  const at::Tensor v = vs.velocity(x0, eps, t);
  EXPECT_LT(max_abs(vs.predict_x0(xt, v, t), x0), 1e-5);
  // Half inputs stay half in add_noise (diffusers casts the table to the sample dtype).
  EXPECT_EQ(s.add_noise(x0.to(at::kHalf), eps.to(at::kHalf), t).scalar_type(), at::kHalf);
}

TEST(NoiseSchedule, RejectsBadTimesteps) {
  const NoiseSchedule s;
  const at::Tensor x = at::zeros({2, 4});
  EXPECT_THROW(s.add_noise(x, x, at::tensor(std::vector<int64_t>{0, 1000})), c10::Error);
  EXPECT_THROW(s.add_noise(x, x, at::tensor(std::vector<int64_t>{-1, 3})), c10::Error);
  EXPECT_THROW(s.add_noise(x, x, at::tensor(std::vector<int64_t>{1, 2, 3})), c10::Error);
  EXPECT_THROW(s.add_noise(x, x, at::tensor(std::vector<double>{1, 2})), c10::Error);
  EXPECT_THROW(s.alpha_cumprod(1000), c10::Error);
}

TEST(LcmPreview, CoefficientsAt999AndZero) {
  const LcmBoundary b = lcm_boundary_scalings(at::tensor(std::vector<int64_t>{999, 0, 1}));
  EXPECT_NEAR(b.c_skip[0].item<double>(), 2.505e-9, 1e-12);
  EXPECT_NEAR(b.c_out[0].item<double>(), 1.0, 2e-9);
  EXPECT_EQ(b.c_skip[1].item<double>(), 1.0);  // t = 0: the identity
  EXPECT_EQ(b.c_out[1].item<double>(), 0.0);
  EXPECT_NEAR(b.c_skip[2].item<double>(), 0.25 / 100.25, 1e-8);
  EXPECT_NEAR(b.c_out[2].item<double>(), 10.0 / std::sqrt(100.25), 1e-7);
}

TEST(LcmPreview, OneStepFromNoiseAndGradient) {
  const NoiseSchedule s;
  const at::Tensor zt = at::randn({2, 4, 8, 8});
  const at::Tensor eps = at::randn({2, 4, 8, 8}).requires_grad_(true);
  const at::Tensor t = at::tensor(std::vector<int64_t>{999, 259});
  const at::Tensor z0 = lcm_preview(s, zt, eps, t);  // [2, 4, 8, 8]
  // t = 999: ẑ0 ≈ (x_T − 0.997667·ε̂)/0.068265 (docs/models.md, "Schedules and samplers").
  const at::Tensor approx = (zt[0] - 0.9976672530174255 * eps[0].detach()) / 0.06826488673686981;
  EXPECT_LT(max_abs(z0[0].detach(), approx), 1e-3);
  // dẑ0/dε̂ = −c_out·√(1−ᾱ)/√ᾱ per sample.
  z0.sum().backward();
  for (int64_t b = 0; b < 2; ++b) {
    const int64_t tb = t[b].item<int64_t>();
    const double a = s.alpha_cumprod(tb);
    const double c_out = lcm_boundary_scalings(t).c_out[b].item<double>();
    const double g = -c_out * std::sqrt(1 - a) / std::sqrt(a);
    EXPECT_NEAR(eps.grad()[b].mean().item<double>(), g, 1e-4 * std::abs(g)) << "t=" << tb;
  }
  // A one-step LCM sampler at t = 999 is the same preview.
  LcmSampler lcm;
  lcm.set_timesteps(1);
  const at::Tensor one = lcm.step(eps.detach(), 0, zt).prev_sample;
  const at::Tensor t999 = at::full({2}, 999, at::kLong);
  EXPECT_LT(max_abs(one, lcm_preview(s, zt, eps.detach(), t999)), 1e-5);
}

TEST(LcmSampler, Timesteps) {
  LcmSampler lcm;
  const std::vector<std::vector<int64_t>> expect = {
      {999}, {999, 499}, {999, 759, 499, 259}, {999, 879, 759, 639, 499, 379, 259, 139}};
  const int64_t ns[] = {1, 2, 4, 8};
  for (size_t k = 0; k < 4; ++k) {
    lcm.set_timesteps(ns[k]);
    EXPECT_EQ(as_ints(lcm.timesteps()), expect[k]) << "n=" << ns[k];
    EXPECT_EQ(lcm.init_noise_sigma(), 1.0);
  }
  EXPECT_THROW(lcm.set_timesteps(0), c10::Error);
  EXPECT_THROW(lcm.set_timesteps(51), c10::Error);
  EXPECT_THROW(lcm.set_timesteps(1001), c10::Error);
}

TEST(EulerSampler, SdxlTimestepsAndInitSigma) {
  EulerDiscreteSampler euler;
  euler.set_timesteps(4);
  EXPECT_EQ(as_ints(euler.timesteps()), (std::vector<int64_t>{751, 501, 251, 1}));
  EXPECT_EQ(euler.timesteps().scalar_type(), at::kFloat);
  EXPECT_NEAR(euler.init_noise_sigma(), 4.2364, 1e-4);
  EXPECT_NEAR(euler.sigmas()[0].item<double>(), 4.1167, 1e-4);
  EXPECT_EQ(euler.sigmas()[4].item<double>(), 0.0);
  euler.set_timesteps(30);
  EXPECT_EQ(euler.timestep(0), 958.0);
  EXPECT_EQ(euler.timestep(29), 1.0);
  EXPECT_NEAR(euler.init_noise_sigma(), 11.5203, 1e-4);
  // scale_model_input divides by √(σ²+1).
  const at::Tensor x = at::ones({1, 4, 2, 2});
  const double sigma = euler.sigmas()[3].item<double>();
  EXPECT_NEAR(euler.scale_model_input(x, 3)[0][0][0][0].item<double>(), 1 / std::sqrt(sigma * sigma + 1), 1e-6);
}

TEST(EulerSampler, ExactModelLandsOnX0) {
  // A model that returns the true noise of x = x0 + σ·ε makes every Euler step exact.
  EulerDiscreteSampler euler;
  euler.set_timesteps(10);
  const at::Tensor x0 = at::randn({2, 4, 4, 4});
  at::Tensor x = at::randn({2, 4, 4, 4}) * euler.init_noise_sigma();
  for (int64_t i = 0; i < euler.num_steps(); ++i) {
    const double sigma = euler.sigmas()[i].item<double>();
    x = euler.step((x - x0) / sigma, i, x).prev_sample;
  }
  EXPECT_LT(max_abs(x, x0), 1e-4);
}

TEST(EulerAncestralSampler, SdxlTurboTimestepsAndInitSigma) {
  EulerAncestralSampler sampler(EulerAncestralOptions::from_config(sdxl_turbo_config()));
  EXPECT_EQ(sampler.options().timestep_spacing, TimestepSpacing::kTrailing);
  sampler.set_timesteps(1);
  EXPECT_EQ(sampler.timesteps().scalar_type(), at::kFloat);
  EXPECT_EQ(sampler.timestep(0), 999.0);
  // diffusers 0.42: sigmas = [14.614646911621094, 0.0] (float32), init_noise_sigma = σ_max for trailing.
  EXPECT_EQ(sampler.sigmas()[0].item<double>(), 14.614646911621094);
  EXPECT_EQ(sampler.sigmas()[1].item<double>(), 0.0);
  EXPECT_EQ(sampler.init_noise_sigma(), 14.614646911621094);
  const at::Tensor x = at::ones({1, 4, 2, 2});
  EXPECT_NEAR(sampler.scale_model_input(x, 0)[0][0][0][0].item<double>(),
              1 / std::sqrt(14.614646911621094 * 14.614646911621094 + 1), 1e-7);
  sampler.set_timesteps(4);
  EXPECT_EQ(as_ints(sampler.timesteps()), (std::vector<int64_t>{999, 749, 499, 249}));
  EXPECT_EQ(sampler.sigmas()[1].item<double>(), 4.081730842590332);
  EXPECT_EQ(sampler.init_noise_sigma(), 14.614646911621094);

  EulerAncestralOptions o = EulerAncestralOptions::from_config(sdxl_turbo_config());
  o.timestep_spacing = TimestepSpacing::kLeading;  // steps_offset 1 applies; init σ = √(σ_max²+1)
  EulerAncestralSampler leading(o);
  leading.set_timesteps(4);
  EXPECT_EQ(as_ints(leading.timesteps()), (std::vector<int64_t>{751, 501, 251, 1}));
  EXPECT_EQ(leading.init_noise_sigma(), static_cast<double>(4.236413955688477f));
  o.timestep_spacing = TimestepSpacing::kLinspace;
  EulerAncestralSampler linspace(o);
  linspace.set_timesteps(4);
  EXPECT_EQ(as_ints(linspace.timesteps()), (std::vector<int64_t>{999, 666, 333, 0}));
  EXPECT_EQ(linspace.sigmas()[3].item<double>(), static_cast<double>(0.02916753478348255f));
}

TEST(EulerAncestralSampler, OneTrailingStepIsXMinusSigmaEps) {
  EulerAncestralSampler sampler;
  sampler.set_timesteps(1);
  const double sigma = sampler.init_noise_sigma();
  const at::Tensor x = at::randn({2, 4, 3, 3}) * sigma;
  const at::Tensor eps = at::randn({2, 4, 3, 3});
  EXPECT_TRUE(sampler.needs_noise(0));
  const StepOutput out = sampler.step(eps, 0, x, at::randn({2, 4, 3, 3}));
  const at::Tensor expected = x.to(at::kDouble) - sigma * eps.to(at::kDouble);
  EXPECT_LT(max_abs(out.prev_sample, expected), 1e-5 * std::max(1.0, expected.abs().max().item<double>()));
  EXPECT_LT(max_abs(out.pred_x0, expected), 1e-5 * std::max(1.0, expected.abs().max().item<double>()));
  EXPECT_EQ(out.prev_sample.scalar_type(), at::kFloat);
}

TEST(EulerAncestralSampler, NoiseScaleIsSigmaUpAndZeroAtTheLastStep) {
  EulerAncestralSampler sampler;
  sampler.set_timesteps(4);
  const at::Tensor x = at::randn({1, 4, 3, 3}) * sampler.init_noise_sigma();
  const at::Tensor eps = at::randn({1, 4, 3, 3});
  const at::Tensor noise_a = at::randn({1, 4, 3, 3});
  const at::Tensor noise_b = at::randn({1, 4, 3, 3});
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(sampler.needs_noise(i));
    const double from = sampler.sigmas()[i].item<double>();
    const double to = sampler.sigmas()[i + 1].item<double>();
    const double up = std::sqrt(to * to * (from * from - to * to) / (from * from));
    const at::Tensor a = sampler.step(eps, i, x, noise_a).prev_sample;
    const at::Tensor b = sampler.step(eps, i, x, noise_b).prev_sample;
    if (i == 3) {
      // σ_to = 0: σ_up = 0, the noise is drawn but does not move the sample.
      EXPECT_TRUE(at::equal(a, b));
    } else {
      EXPECT_GT(up, 0.1) << "step " << i;
      // a − b = (noise_a − noise_b)·σ_up up to the rounding of a and b (|x| ≤ ~60).
      EXPECT_LT(max_abs(a - b, (noise_a - noise_b) * up), 1e-4) << "step " << i;
    }
  }
}

TEST(EulerAncestralSampler, GeneratorIsConsumedEveryStep) {
  EulerAncestralSampler sampler;
  sampler.set_timesteps(1);
  const at::Tensor x = at::randn({1, 4, 4, 4});
  at::Generator g1 = at::make_generator<at::CPUGeneratorImpl>(11);
  at::Generator g2 = at::make_generator<at::CPUGeneratorImpl>(11);
  const at::Tensor drawn = at::randn({1, 4, 4, 4}, g2);
  // The last (only) step multiplies its noise by 0, yet draws it as diffusers does.
  EXPECT_TRUE(at::equal(sampler.step(x, 0, x, g1).prev_sample, sampler.step(x, 0, x, drawn).prev_sample));
  EXPECT_TRUE(at::equal(at::randn({3}, g1), at::randn({3}, g2)));
  // fp16 model output: the noise is drawn in fp16 and prev_sample cast back to it.
  const at::Tensor half = x.to(at::kHalf);
  EXPECT_EQ(sampler.noise_dtype(half, half), at::kHalf);
  EXPECT_EQ(sampler.step(half, 0, half, g1).prev_sample.scalar_type(), at::kHalf);
}

TEST(DdimSampler, SdxlTimesteps) {
  DdimSampler ddim;
  ddim.set_timesteps(4);
  EXPECT_EQ(as_ints(ddim.timesteps()), (std::vector<int64_t>{751, 501, 251, 1}));
  ddim.set_timesteps(1);
  EXPECT_EQ(as_ints(ddim.timesteps()), (std::vector<int64_t>{1}));
  EXPECT_FALSE(ddim.needs_noise(0));
  DdimOptions o;
  o.eta = 0.5;
  DdimSampler stochastic(o);
  stochastic.set_timesteps(3);
  EXPECT_TRUE(stochastic.needs_noise(2));
  const at::Tensor x = at::randn({1, 4, 4, 4});
  EXPECT_THROW(stochastic.step(x, 0, x), c10::Error);  // noise required
}

TEST(DpmSolverSampler, SdxlTimestepsAndExactModel) {
  DpmSolverSampler dpm;
  dpm.set_timesteps(4);
  EXPECT_EQ(as_ints(dpm.timesteps()), (std::vector<int64_t>{801, 601, 401, 201}));
  dpm.set_timesteps(1);
  EXPECT_EQ(as_ints(dpm.timesteps()), (std::vector<int64_t>{501}));
  // With the exact x0 every data-prediction update returns x0 at the final σ = 0.
  dpm.set_timesteps(12);
  const NoiseSchedule& s = dpm.schedule();
  const at::Tensor x0 = at::randn({2, 4, 4, 4});
  const at::Tensor eps = at::randn({2, 4, 4, 4});
  at::Tensor x = eps;
  for (int64_t i = 0; i < dpm.num_steps(); ++i) {
    const auto t = static_cast<int64_t>(dpm.timestep(i));
    const double a = s.alpha_cumprod(t);
    // x is at scale 1 here; the ε that maps it to x0 exactly:
    const at::Tensor eps_hat = (x - std::sqrt(a) * x0) / std::sqrt(1 - a);
    x = dpm.step(eps_hat, i, x).prev_sample;
  }
  EXPECT_LT(max_abs(x, x0), 1e-4);
  // Steps must be taken in order.
  dpm.set_timesteps(4);
  dpm.step(eps, 0, eps);
  EXPECT_THROW(dpm.step(eps, 2, eps), c10::Error);
}

TEST(Samplers, GeneratorNoiseIsDeterministic) {
  LcmSampler lcm;
  lcm.set_timesteps(4);
  const at::Tensor x = at::randn({1, 4, 4, 4});
  at::Generator g1 = at::make_generator<at::CPUGeneratorImpl>(7);
  at::Generator g2 = at::make_generator<at::CPUGeneratorImpl>(7);
  const at::Tensor a = lcm.step(x, 0, x, g1).prev_sample;
  const at::Tensor b = lcm.step(x, 0, x, g2).prev_sample;
  EXPECT_TRUE(at::equal(a, b));
  // The generator overload draws exactly what randn would.
  at::Generator g3 = at::make_generator<at::CPUGeneratorImpl>(7);
  const at::Tensor noise = at::randn({1, 4, 4, 4}, g3);
  EXPECT_TRUE(at::equal(a, lcm.step(x, 0, x, noise).prev_sample));
}

TEST(Samplers, MakeSamplerFromSdxlConfig) {
  const nlohmann::json cfg = sdxl_config();
  for (const char* name : {"euler", "euler_ancestral", "ddim", "dpm_solver", "lcm"}) {
    auto sampler = make_sampler(parse_sampler_kind(name), cfg);
    EXPECT_STREQ(sampler->name(), name);
    sampler->set_timesteps(4);
    EXPECT_EQ(sampler->num_steps(), 4);
  }
  const DdimOptions d = DdimOptions::from_config(cfg);
  EXPECT_FALSE(d.clip_sample);
  EXPECT_FALSE(d.set_alpha_to_one);
  EXPECT_EQ(d.steps_offset, 1);
  // Absent keys take the diffusers class defaults, not the SDXL ones.
  const DdimOptions bare = DdimOptions::from_config(nlohmann::json::object());
  EXPECT_TRUE(bare.clip_sample);
  EXPECT_EQ(bare.schedule.beta_schedule, BetaSchedule::kLinear);
  EXPECT_EQ(EulerDiscreteOptions::from_config(nlohmann::json::object()).timestep_spacing, TimestepSpacing::kLinspace);
  EXPECT_EQ(LcmOptions::from_config(nlohmann::json::object()).schedule.beta_schedule, BetaSchedule::kScaledLinear);
  const EulerAncestralOptions ea = EulerAncestralOptions::from_config(nlohmann::json::object());
  EXPECT_EQ(ea.timestep_spacing, TimestepSpacing::kLinspace);
  EXPECT_EQ(ea.steps_offset, 0);
  EXPECT_EQ(ea.schedule.beta_schedule, BetaSchedule::kLinear);
  EXPECT_EQ(parse_sampler_kind("euler_a"), SamplerKind::kEulerAncestral);
}

TEST(Samplers, MakeSamplerFromClass) {
  const std::pair<const char*, const char*> classes[] = {{"EulerAncestralDiscreteScheduler", "euler_ancestral"},
                                                         {"EulerDiscreteScheduler", "euler"},
                                                         {"DDIMScheduler", "ddim"},
                                                         {"DPMSolverMultistepScheduler", "dpm_solver"},
                                                         {"LCMScheduler", "lcm"}};
  for (const auto& [class_name, name] : classes) {
    nlohmann::json cfg = sdxl_config();
    cfg["_class_name"] = class_name;
    EXPECT_STREQ(make_sampler_from_class(cfg)->name(), name) << class_name;
  }
  // sdxl-turbo: its own config is honoured (trailing: one step at t = 999).
  auto turbo = make_sampler_from_class(sdxl_turbo_config());
  EXPECT_STREQ(turbo->name(), "euler_ancestral");
  turbo->set_timesteps(1);
  EXPECT_EQ(turbo->timestep(0), 999.0);

  nlohmann::json cfg = sdxl_config();
  cfg["_class_name"] = "PNDMScheduler";
  std::string msg = error_of([&] { make_sampler_from_class(cfg); });
  EXPECT_NE(msg.find("_class_name"), std::string::npos) << msg;
  EXPECT_NE(msg.find("PNDMScheduler"), std::string::npos) << msg;
  EXPECT_NE(msg.find("EulerAncestralDiscreteScheduler"), std::string::npos) << msg;
  cfg.erase("_class_name");
  msg = error_of([&] { make_sampler_from_class(cfg); });
  EXPECT_NE(msg.find("_class_name"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
  cfg["_class_name"] = 3;
  EXPECT_NE(error_of([&] { make_sampler_from_class(cfg); }).find("_class_name"), std::string::npos);
}

TEST(Samplers, RejectsBadConfigs) {
  nlohmann::json cfg = sdxl_config();
  cfg["use_karras_sigmas"] = true;
  EXPECT_THROW(EulerDiscreteOptions::from_config(cfg), c10::Error);
  cfg = sdxl_config();
  cfg["beta_schedule"] = "quadratic";
  EXPECT_THROW(NoiseScheduleConfig::from_config(cfg), c10::Error);
  cfg = sdxl_config();
  cfg["timestep_spacing"] = "uniform";
  EXPECT_THROW(DdimOptions::from_config(cfg), c10::Error);
  cfg = sdxl_config();
  cfg["steps_offset"] = "1";
  EXPECT_THROW(DdimOptions::from_config(cfg), c10::Error);
  cfg = sdxl_config();
  cfg["algorithm_type"] = "dpmsolver";
  EXPECT_THROW(DpmSolverOptions::from_config(cfg), c10::Error);
  cfg = sdxl_config();
  cfg["solver_order"] = 4;
  EXPECT_THROW(DpmSolverOptions::from_config(cfg), c10::Error);
  cfg = sdxl_turbo_config();
  cfg["rescale_betas_zero_snr"] = true;
  const std::string rescale = error_of([&] { EulerAncestralOptions::from_config(cfg); });
  EXPECT_NE(rescale.find("rescale_betas_zero_snr"), std::string::npos) << rescale;
  cfg = sdxl_turbo_config();
  cfg["prediction_type"] = "sample";
  const std::string sample = error_of([&] { EulerAncestralOptions::from_config(cfg); });
  EXPECT_NE(sample.find("prediction_type"), std::string::npos) << sample;
  NoiseScheduleConfig bad;
  bad.num_train_timesteps = 0;
  EXPECT_THROW(NoiseSchedule{bad}, c10::Error);
  bad = NoiseScheduleConfig{};
  bad.beta_end = 1.5;
  EXPECT_THROW(NoiseSchedule{bad}, c10::Error);
  EXPECT_THROW(parse_prediction_type("flow"), c10::Error);
  EXPECT_THROW(parse_sampler_kind("heun"), c10::Error);

  EulerDiscreteSampler euler;
  EXPECT_THROW(euler.set_timesteps(0), c10::Error);
  EXPECT_THROW(euler.set_timesteps(1001), c10::Error);
  EXPECT_THROW(euler.set_timesteps(1000), c10::Error);  // leading + offset 1 reaches t = 1000
  EXPECT_THROW(euler.step(at::zeros({1}), 0, at::zeros({1})), c10::Error);  // before set_timesteps
  euler.set_timesteps(4);
  EXPECT_THROW(euler.step(at::zeros({1}), 4, at::zeros({1})), c10::Error);
  EXPECT_THROW(euler.step(at::zeros({1}), 0, at::zeros({2})), c10::Error);
  // numpy.arange gives 62 trailing timesteps (the last one −1) for n = 61.
  DdimOptions trailing;
  trailing.timestep_spacing = TimestepSpacing::kTrailing;
  DdimSampler ddim(trailing);
  EXPECT_THROW(ddim.set_timesteps(61), c10::Error);
  ddim.set_timesteps(60);
  EXPECT_EQ(ddim.timestep(0), 999.0);
  EXPECT_THROW(TimestepDistribution(1.5), c10::Error);
}

TEST(TimestepDistribution, Probabilities) {
  for (double a : {kDiffusionImportanceA, kLcmImportanceA}) {
    const TimestepDistribution s(a);
    const at::Tensor& p = s.probabilities();  // [1000]
    EXPECT_EQ(p.size(0), 1000);
    EXPECT_NEAR(p.sum().item<double>(), 1.0, 1e-12);
    const double ratio = p[999].item<double>() / p[0].item<double>();
    EXPECT_NEAR(ratio, (1 + a * std::cos(M_PI / 1000.0)) / (1 - a), 1e-9);
    // Monotone increasing: favours noisier timesteps.
    EXPECT_TRUE((p.slice(0, 1) >= p.slice(0, 0, 999)).all().item<bool>());
  }
  EXPECT_TRUE(at::allclose(TimestepDistribution(0.0).probabilities(), at::full({1000}, 1e-3, at::kDouble)));
}

TEST(TimestepDistribution, DeterministicAndDistributed) {
  const TimestepDistribution s(kDiffusionImportanceA);
  const at::Tensor a = s.sample(1000, uint64_t{42});
  EXPECT_TRUE(at::equal(a, s.sample(1000, uint64_t{42})));
  EXPECT_FALSE(at::equal(a, s.sample(1000, uint64_t{43})));
  EXPECT_EQ(a.scalar_type(), at::kLong);
  EXPECT_GE(a.min().item<int64_t>(), 0);
  EXPECT_LE(a.max().item<int64_t>(), 999);
  // A generator advances: consecutive batches differ, and two generators with one seed agree.
  at::Generator g1 = at::make_generator<at::CPUGeneratorImpl>(5);
  at::Generator g2 = at::make_generator<at::CPUGeneratorImpl>(5);
  const at::Tensor b1 = s.sample(64, g1);
  EXPECT_TRUE(at::equal(b1, s.sample(64, g2)));
  EXPECT_FALSE(at::equal(b1, s.sample(64, g1)));

  // Chi-square of a 200k-draw histogram over 20 bins of 50 timesteps against p. 19 degrees of
  // freedom: P(χ² > 45) ≈ 7e-4 under the null; the seed is fixed, so this is deterministic.
  const int64_t n = 200000;
  const at::Tensor draws = s.sample(n, uint64_t{2024});
  const at::Tensor counts = at::bincount(draws, {}, 1000).to(at::kDouble).view({20, 50}).sum(1);  // [20]
  const at::Tensor expected = s.probabilities().view({20, 50}).sum(1) * static_cast<double>(n);    // [20]
  const double chi2 = ((counts - expected).pow(2) / expected).sum().item<double>();
  EXPECT_LT(chi2, 45.0) << "chi2 = " << chi2;
  // And the mean matches Σ t·p(t) to within 5 standard errors.
  const at::Tensor tt = at::arange(1000, at::kDouble);
  const double mean = (tt * s.probabilities()).sum().item<double>();
  const double sd = std::sqrt(((tt - mean).pow(2) * s.probabilities()).sum().item<double>());
  EXPECT_NEAR(draws.to(at::kDouble).mean().item<double>(), mean, 5 * sd / std::sqrt(static_cast<double>(n)));
}

}  // namespace
}  // namespace lookahead::model::sched
