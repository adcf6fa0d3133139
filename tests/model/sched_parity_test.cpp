// Parity of model/sched with diffusers: reads the JSON fixture written by
// tests/parity/sched_oracle.py (argv[1]) and replays every case: schedule tables, add_noise /
// velocity, the one-step LCM preview, timestep/σ schedules for many step counts (including the
// ones diffusers builds degenerate, which we must reject), and full sampling chains of Euler,
// Euler-ancestral, DDIM, DPM-Solver++ and LCM with explicit noise and with generator-drawn noise
// (after which the generator must draw what diffusers' draws next).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/sched/ddim.h"
#include "model/sched/dpm_solver.h"
#include "model/sched/euler.h"
#include "model/sched/euler_ancestral.h"
#include "model/sched/lcm_preview.h"
#include "model/sched/lcm_sampler.h"
#include "model/sched/noise_schedule.h"

namespace lookahead::model::sched {
namespace {

nlohmann::json g_fixture;                 // the oracle's output
std::map<std::string, double> g_max_err;  // worst error per category, printed at the end

// The bound every comparison meets: 1e-5 absolute, relative for values above 1 in magnitude
// (Euler samples reach |x| ≈ 60, where one float32 ulp is already 4e-6).
constexpr double kTol = 1e-5;

at::Tensor tensor_of(const nlohmann::json& values, const std::vector<int64_t>& shape) {
  return at::tensor(values.get<std::vector<double>>(), at::kDouble).reshape(shape);
}

at::Tensor tensor_of(const nlohmann::json& values) {
  const auto v = values.get<std::vector<double>>();
  return at::tensor(v, at::kDouble);
}

// Records and checks max |ours − ref| / max(1, max |ref|).
void expect_close(const std::string& category, const at::Tensor& ours, const at::Tensor& ref,
                  const std::string& what, double tol = kTol) {
  ASSERT_EQ(ours.sizes(), ref.sizes()) << what;
  const at::Tensor a = ours.to(at::kDouble);
  const at::Tensor b = ref.to(at::kDouble);
  const double scale = std::max(1.0, b.abs().max().item<double>());
  const double err = (a - b).abs().max().item<double>() / scale;
  double& worst = g_max_err[category];
  worst = std::max(worst, err);
  EXPECT_LE(err, tol) << what << ": max |ours - diffusers| / max(1, |diffusers|) = " << err;
}

NoiseScheduleConfig schedule_config(const nlohmann::json& c) {
  return c.at("class") == "lcm"
             ? NoiseScheduleConfig::from_config(c.at("config"), NoiseScheduleConfig::lcm_class_defaults())
             : NoiseScheduleConfig::from_config(c.at("config"));
}

// A sampler for a fixture case: from_config on the diffusers config, then the step keyword
// arguments diffusers takes per call (eta, churn), which live in our options.
std::unique_ptr<Sampler> sampler_for(const nlohmann::json& c) {
  const std::string kind = c.at("sampler");
  const nlohmann::json& cfg = c.at("config");
  const nlohmann::json opts = c.value("options", nlohmann::json::object());
  if (kind == "euler") {
    EulerDiscreteOptions o = EulerDiscreteOptions::from_config(cfg);
    o.s_churn = opts.value("s_churn", o.s_churn);
    o.s_tmin = opts.value("s_tmin", o.s_tmin);
    o.s_tmax = opts.value("s_tmax", o.s_tmax);
    o.s_noise = opts.value("s_noise", o.s_noise);
    return std::make_unique<EulerDiscreteSampler>(o);
  }
  if (kind == "ddim") {
    DdimOptions o = DdimOptions::from_config(cfg);
    o.eta = opts.value("eta", o.eta);
    return std::make_unique<DdimSampler>(o);
  }
  if (kind == "dpm_solver") {
    return std::make_unique<DpmSolverSampler>(DpmSolverOptions::from_config(cfg));
  }
  if (kind == "euler_ancestral") {
    return std::make_unique<EulerAncestralSampler>(EulerAncestralOptions::from_config(cfg));
  }
  return std::make_unique<LcmSampler>(LcmOptions::from_config(cfg));
}

const at::Tensor* sigmas_of(const Sampler& s) {
  if (const auto* e = dynamic_cast<const EulerDiscreteSampler*>(&s)) return &e->sigmas();
  if (const auto* d = dynamic_cast<const DpmSolverSampler*>(&s)) return &d->sigmas();
  if (const auto* a = dynamic_cast<const EulerAncestralSampler*>(&s)) return &a->sigmas();
  return nullptr;
}

TEST(SchedParity, ScheduleTables) {
  for (const auto& c : g_fixture.at("schedules")) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    const NoiseSchedule s(schedule_config(c));
    expect_close("schedule tables", s.betas(), tensor_of(c.at("betas")), "betas", 0.0);
    expect_close("schedule tables", s.alphas_cumprod(), tensor_of(c.at("alphas_cumprod")), "alphas_cumprod", 0.0);
  }
}

TEST(SchedParity, AddNoiseAndVelocity) {
  for (const auto& c : g_fixture.at("add_noise")) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    const NoiseSchedule s(schedule_config(c));
    const auto shape = c.at("shape").get<std::vector<int64_t>>();
    const at::ScalarType dtype = c.at("dtype") == "float16" ? at::kHalf : at::kFloat;
    const at::Tensor x0 = tensor_of(c.at("x0"), shape).to(dtype);
    const at::Tensor noise = tensor_of(c.at("noise"), shape).to(dtype);
    const at::Tensor t = tensor_of(c.at("timesteps")).to(at::kLong);
    const at::Tensor noisy = s.add_noise(x0, noise, t);
    const at::Tensor velocity = s.velocity(x0, noise, t);
    EXPECT_EQ(noisy.scalar_type(), dtype);
    expect_close("add_noise", noisy, tensor_of(c.at("noisy"), shape), "add_noise");
    expect_close("add_noise", velocity, tensor_of(c.at("velocity"), shape), "velocity");
  }
}

TEST(SchedParity, LcmPreview) {
  for (const auto& c : g_fixture.at("lcm_preview")) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    const NoiseSchedule s(schedule_config(c));
    const auto shape = c.at("shape").get<std::vector<int64_t>>();
    const at::Tensor z = tensor_of(c.at("z_t"), shape).to(at::kFloat);
    const at::Tensor eps = tensor_of(c.at("model_output"), shape).to(at::kFloat);
    const at::Tensor t = tensor_of(c.at("timesteps")).to(at::kLong);
    const LcmBoundary b = lcm_boundary_scalings(t);
    expect_close("lcm_preview", b.c_skip, tensor_of(c.at("c_skip")), "c_skip");
    expect_close("lcm_preview", b.c_out, tensor_of(c.at("c_out")), "c_out");
    expect_close("lcm_preview", lcm_preview(s, z, eps, t), tensor_of(c.at("denoised"), shape), "denoised");
  }
}

TEST(SchedParity, TimestepSchedules) {
  int64_t valid = 0, rejected = 0;
  for (const auto& c : g_fixture.at("timesteps")) {
    const int64_t n = c.at("n");
    SCOPED_TRACE(c.at("name").get<std::string>() + " n=" + std::to_string(n));
    auto sampler = sampler_for(c);
    if (!c.at("valid").get<bool>()) {
      // diffusers builds a schedule with a timestep outside [0, T), a repeat, or a length other
      // than n (or raises); we refuse it.
      EXPECT_THROW(sampler->set_timesteps(n), c10::Error);
      ++rejected;
      continue;
    }
    ++valid;
    sampler->set_timesteps(n);
    expect_close("timesteps", sampler->timesteps(), tensor_of(c.at("timesteps")), "timesteps", 0.0);
    if (c.contains("sigmas") && !c.at("sigmas").is_null()) {
      const at::Tensor* sig = sigmas_of(*sampler);
      ASSERT_NE(sig, nullptr);
      expect_close("sigmas", *sig, tensor_of(c.at("sigmas")), "sigmas", 0.0);
    }
    expect_close("sigmas", at::scalar_tensor(sampler->init_noise_sigma(), at::kDouble),
                 at::scalar_tensor(c.at("init_noise_sigma").get<double>(), at::kDouble), "init_noise_sigma", 0.0);
  }
  std::printf("timestep schedules: %lld match diffusers, %lld degenerate ones rejected\n",
              static_cast<long long>(valid), static_cast<long long>(rejected));
}

// Replays one chain; `use_generator` draws the noise from a CPU generator seeded like the
// oracle's instead of reading it from the fixture, and then checks that the generator was consumed
// as diffusers consumed it (its next draw is the oracle's).
void run_chain(const nlohmann::json& c, bool use_generator) {
  auto sampler = sampler_for(c);
  const int64_t n = c.at("n");
  sampler->set_timesteps(n);
  expect_close("chain schedule", sampler->timesteps(), tensor_of(c.at("timesteps")), "timesteps", 0.0);
  expect_close("chain schedule", at::scalar_tensor(sampler->init_noise_sigma(), at::kDouble),
               at::scalar_tensor(c.at("init_noise_sigma").get<double>(), at::kDouble), "init_noise_sigma", 0.0);
  const auto shape = c.at("shape").get<std::vector<int64_t>>();
  // The sample's and model output's dtype (float32 unless the case says float16).
  const at::ScalarType dtype = c.value("dtype", "float32") == "float16" ? at::kHalf : at::kFloat;
  at::Tensor x = tensor_of(c.at("sample0"), shape).to(dtype);  // [B, C, H, W]
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(c.at("generator_seed").get<uint64_t>());
  const auto& steps = c.at("steps");
  ASSERT_EQ(static_cast<int64_t>(steps.size()), n);
  const std::string category = std::string("chain ") + sampler->name();
  // Euler-ancestral runs the very torch ops diffusers runs, in its order: it must match bit for bit.
  const double tol = category == "chain euler_ancestral" ? 0.0 : kTol;
  for (int64_t i = 0; i < n; ++i) {
    const auto& st = steps[static_cast<size_t>(i)];
    const std::string where = "step " + std::to_string(i);
    if (!st.at("scaled_input").is_null()) {
      expect_close(category, sampler->scale_model_input(x, i), tensor_of(st.at("scaled_input"), shape),
                   where + " scale_model_input", tol);
    }
    const at::Tensor mo = tensor_of(st.at("model_output"), shape).to(dtype);
    EXPECT_EQ(sampler->needs_noise(i), !st.at("noise").is_null()) << where;
    StepOutput out;
    if (use_generator) {
      out = sampler->step(mo, i, x, gen);
    } else {
      const at::Tensor noise = st.at("noise").is_null() ? at::Tensor() : tensor_of(st.at("noise"), shape).to(dtype);
      out = sampler->step(mo, i, x, noise);
    }
    expect_close(category, out.prev_sample, tensor_of(st.at("prev_sample"), shape), where + " prev_sample", tol);
    if (!st.at("pred_x0").is_null()) {
      expect_close(category, out.pred_x0, tensor_of(st.at("pred_x0"), shape), where + " pred_x0", tol);
    }
    EXPECT_EQ(out.prev_sample.scalar_type(), dtype);
    // Our own chain continues: errors would accumulate exactly as in a real sampling loop.
    x = out.prev_sample;
  }
  if (use_generator && c.contains("next_randn")) {
    const at::Tensor ref = tensor_of(c.at("next_randn"));
    expect_close("generator state", at::randn({ref.size(0)}, gen), ref, "next draw after the chain", 0.0);
  }
}

TEST(SchedParity, SamplingChainsExplicitNoise) {
  for (const auto& c : g_fixture.at("chains")) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    run_chain(c, /*use_generator=*/false);
  }
}

TEST(SchedParity, SamplingChainsGeneratorNoise) {
  for (const auto& c : g_fixture.at("chains")) {
    SCOPED_TRACE(c.at("name").get<std::string>() + " (generator)");
    run_chain(c, /*use_generator=*/true);
  }
}

}  // namespace
}  // namespace lookahead::model::sched

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s SCHED_FIXTURE.json (written by tests/parity/sched_oracle.py)\n", argv[0]);
    return 2;
  }
  std::ifstream in(argv[1]);
  if (!in) {
    std::fprintf(stderr, "cannot open fixture %s\n", argv[1]);
    return 2;
  }
  lookahead::model::sched::g_fixture = nlohmann::json::parse(in);
  const auto& f = lookahead::model::sched::g_fixture;
  std::printf("sched parity fixture %s: diffusers %s, random seed %lld (reproduce: sched_oracle.py OUTDIR %lld)\n",
              argv[1], f.at("diffusers_version").get<std::string>().c_str(),
              static_cast<long long>(f.at("seed").get<int64_t>()), static_cast<long long>(f.at("seed").get<int64_t>()));
  const int rc = RUN_ALL_TESTS();
  std::printf("max error vs diffusers (|ours - ref| / max(1, |ref|)):\n");
  for (const auto& [category, err] : lookahead::model::sched::g_max_err) {
    std::printf("  %-22s %.3g\n", category.c_str(), err);
  }
  return rc;
}
