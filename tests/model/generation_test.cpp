// Sampling with the KV encoder (model/lookahead/generation): the guidance formula on known values,
// bit-identical repeats, samples that do not depend on the other seeds of the batch (deterministic
// and stochastic samplers), a reference and IP tokens that reach exactly the terms they should,
// the three samplers, and generate() against a hand-written Euler + CFG loop that calls the UNet
// directly with the training composition (IP K/V carried by the encoder's reference).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <memory>

#include "model/lookahead/generation.h"
#include "model/lookahead/lookahead_model.h"
#include "model/sched/make_sampler.h"
#include "model/sched/sampler.h"

namespace lookahead::model {
namespace {

constexpr int64_t kSteps = 4;

double max_abs(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

/// The tiny model (one intra-op thread: its tensors are too small for workers) with random
/// trainables, so that the encoder LoRAs, KV heads and IP projections all change outputs.
std::unique_ptr<LookaheadModel> tiny_model() {
  at::set_num_threads(1);
  at::manual_seed(11);
  auto m = std::make_unique<LookaheadModel>(LookaheadModelConfig::tiny());
  at::NoGradGuard no_grad;
  for (auto& [k, t] : m->adapter_parameters()) t.normal_(0.0, 0.2);
  for (auto& [k, t] : m->lora_parameters()) t.normal_(0.0, 0.2);
  return m;
}

GenerationInputs tiny_inputs(uint64_t seed) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(seed);
  GenerationInputs in;
  in.ref_latents = at::randn({1, 4, 8, 8}, g);
  in.clip_ref = at::randn({1, 5, 12}, g);
  in.clip_uncond = at::randn({1, 5, 12}, g);
  in.prompt = at::randn({1, 3, 24}, g);
  in.pooled = at::randn({1, 16}, g);
  in.encoder_prompt = at::randn({1, 3, 24}, g);
  in.encoder_pooled = at::randn({1, 16}, g);
  in.time_ids = at::tensor({64.0f, 64.0f, 0.0f, 0.0f, 64.0f, 64.0f}).view({1, 6});
  return in;
}

GenerationOptions options(sched::SamplerKind kind, GuidanceMode mode = GuidanceMode::kLookahead) {
  GenerationOptions o;
  o.sampler = kind;
  o.steps = kSteps;
  o.guidance.mode = mode;
  return o;
}

class Generation : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { model_ = tiny_model().release(); }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  static LookaheadModel* model_;
};
LookaheadModel* Generation::model_ = nullptr;

TEST(CombineGuidance, MatchesTheFormula) {
  const GuidanceTerms ones{at::full({2}, 1.0), at::full({2}, 2.0), at::full({2}, 4.0), at::full({2}, 3.0)};
  GuidanceOptions o;  // lookahead 3 / 2 / 2: 1 + 3·1 + 2·3 + 2·2
  EXPECT_TRUE(at::equal(combine_guidance(ones, o), at::full({2}, 14.0f)));
  o.scale_nokv = 0.5, o.scale_full = -1.0, o.scale_kv = 0.25;  // 1 + 0.5 − 3 + 0.5
  EXPECT_TRUE(at::equal(combine_guidance(ones, o), at::full({2}, -1.0f)));
  o.mode = GuidanceMode::kCfg;  // 1 + 5·(4 − 1): c = full_c, u = nokv_u
  EXPECT_TRUE(at::equal(combine_guidance(ones, o), at::full({2}, 16.0f)));
  o.cfg_scale = 1.0;  // scale 1: the conditional prediction itself
  EXPECT_TRUE(at::equal(combine_guidance(ones, o), at::full({2}, 4.0f)));

  // Random terms (bf16 inputs come back float32), against the formula in float64.
  auto g = at::make_generator<at::CPUGeneratorImpl>(3);
  GuidanceTerms r{at::randn({2, 4, 3, 3}, g), at::randn({2, 4, 3, 3}, g), at::randn({2, 4, 3, 3}, g),
                  at::randn({2, 4, 3, 3}, g).to(at::kBFloat16)};
  GuidanceOptions l;
  const at::Tensor want = [&] {
    auto d = [](const at::Tensor& t) { return t.to(at::kDouble); };
    const at::Tensor u = d(r.nokv_u);
    return u + 3.0 * (d(r.nokv_c) - u) + 2.0 * (d(r.full_c) - u) + 2.0 * (d(r.full_u) - u);
  }();
  const at::Tensor got = combine_guidance(r, l);
  EXPECT_EQ(got.scalar_type(), at::kFloat);
  EXPECT_LT(max_abs(got, want), 1e-5);

  // Scales (s, 0, 0) reduce lookahead guidance to CFG between the two no-KV terms.
  l.scale_nokv = 4.5, l.scale_full = 0.0, l.scale_kv = 0.0;
  GuidanceOptions cfg;
  cfg.mode = GuidanceMode::kCfg;
  cfg.cfg_scale = 4.5;
  EXPECT_TRUE(at::equal(combine_guidance(r, l), combine_guidance({r.nokv_u, {}, r.nokv_c, {}}, cfg)));
  EXPECT_THROW(combine_guidance({r.nokv_u, {}, r.full_c, {}}, GuidanceOptions()), c10::Error);
}

TEST_F(Generation, RepeatsBitForBit) {
  const auto in = tiny_inputs(1);
  const at::Tensor a = generate(*model_, in, {5, 9}, options(sched::SamplerKind::kDpmSolver));
  const at::Tensor b = generate(*model_, in, {5, 9}, options(sched::SamplerKind::kDpmSolver));
  ASSERT_EQ(a.sizes(), (at::IntArrayRef{2, 4, 8, 8}));
  EXPECT_EQ(a.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::isfinite(a).all().item<bool>());
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_GT(max_abs(a[0], a[1]), 0.1) << "two seeds must give two samples";
}

TEST_F(Generation, SampleDoesNotDependOnTheOtherSeeds) {
  const auto in = tiny_inputs(2);
  // LCM draws fresh noise at every step but the last: from the sample's own generator.
  for (auto kind : {sched::SamplerKind::kDpmSolver, sched::SamplerKind::kLcm}) {
    const at::Tensor pair = generate(*model_, in, {5, 9}, options(kind));
    const at::Tensor alone = generate(*model_, in, {9}, options(kind));
    const at::Tensor first = generate(*model_, in, {5}, options(kind));
    // Batch 2 and batch 1 run different float32 kernels (~1e-7 relative per UNet call), which the
    // random tiny network with guidance amplifies over the steps; another sample leaking in would
    // be O(1).
    const double tol = 1e-5 * (1.0 + pair.abs().max().item<double>());
    const char* name = sched::make_sampler(kind, sdxl_scheduler_config())->name();
    EXPECT_LT(max_abs(pair[1], alone[0]), tol) << name;
    EXPECT_LT(max_abs(pair[0], first[0]), tol) << name;
    EXPECT_GT(max_abs(pair[0], pair[1]), 0.1) << name;
  }
}

TEST_F(Generation, ReferenceAndImageTokensReachTheirTerms) {
  const auto in = tiny_inputs(3);
  auto other_ref = in;
  other_ref.ref_latents = at::randn({1, 4, 8, 8}, at::make_generator<at::CPUGeneratorImpl>(99));
  auto other_clip = in;
  other_clip.clip_ref = at::randn({1, 5, 12}, at::make_generator<at::CPUGeneratorImpl>(98));
  const std::vector<uint64_t> seeds{4};

  const auto look = options(sched::SamplerKind::kDdim);
  const at::Tensor base = generate(*model_, in, seeds, look);
  EXPECT_GT(max_abs(generate(*model_, other_ref, seeds, look), base), 1e-3) << "the reference must matter";
  EXPECT_GT(max_abs(generate(*model_, other_clip, seeds, look), base), 1e-3) << "the IP tokens must matter";

  // Without the full terms the reference K/V enter nothing; the IP tokens still enter nokv_c.
  auto nokv = look;
  nokv.guidance.scale_full = nokv.guidance.scale_kv = 0.0;
  const at::Tensor nokv_base = generate(*model_, in, seeds, nokv);
  EXPECT_TRUE(at::equal(generate(*model_, other_ref, seeds, nokv), nokv_base));
  EXPECT_GT(max_abs(generate(*model_, other_clip, seeds, nokv), nokv_base), 1e-3);
  EXPECT_GT(max_abs(nokv_base, base), 1e-3);
}

TEST_F(Generation, SamplersRunAndDiffer) {
  const auto in = tiny_inputs(4);
  std::vector<at::Tensor> out;
  for (auto kind : {sched::SamplerKind::kEuler, sched::SamplerKind::kDdim, sched::SamplerKind::kDpmSolver}) {
    out.push_back(generate(*model_, in, {6}, options(kind)));
    EXPECT_TRUE(at::isfinite(out.back()).all().item<bool>());
  }
  EXPECT_GT(max_abs(out[0], out[1]), 1e-3);
  EXPECT_GT(max_abs(out[0], out[2]), 1e-3);
  EXPECT_GT(max_abs(out[1], out[2]), 1e-3);
}

TEST_F(Generation, RejectsBadInputs) {
  auto in = tiny_inputs(5);
  EXPECT_THROW(generate(*model_, in, {}, options(sched::SamplerKind::kEuler)), c10::Error);
  auto bad = in;
  bad.ref_latents = at::randn({2, 4, 8, 8});
  EXPECT_THROW(generate(*model_, bad, {1}, options(sched::SamplerKind::kEuler)), c10::Error);
  bad = in;
  bad.clip_uncond = at::randn({1, 4, 12});
  EXPECT_THROW(generate(*model_, bad, {1}, options(sched::SamplerKind::kEuler)), c10::Error);
}

// An independent Euler loop: the SDXL config written out here, one UNet call per term, and the
// encoder given the IP tokens so that decoder calls with the reference read their IP K/V from it
// (the training composition; a second encoder run with the uncond tokens for full_u). Lookahead
// scales are all different so that swapped terms show.
at::Tensor hand_written_euler(LookaheadModel& m, const GenerationInputs& in, uint64_t seed,
                              const GuidanceOptions& guidance) {
  auto sampler = sched::make_sampler(sched::SamplerKind::kEuler, nlohmann::json::parse(R"({
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "interpolation_type": "linear",
    "num_train_timesteps": 1000, "prediction_type": "epsilon", "steps_offset": 1, "timestep_spacing": "leading",
    "use_karras_sigmas": false})"));
  sampler->set_timesteps(kSteps);
  auto g = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::Tensor eps0 = at::randn({1, 4, 8, 8}, g);
  at::Tensor x = eps0 * sampler->init_noise_sigma();
  at::NoGradGuard no_grad;
  const at::Tensor cond = m.ip_adapter()->image_tokens(in.clip_ref);
  const at::Tensor uncond = m.ip_adapter()->image_tokens(in.clip_uncond);
  for (int64_t i = 0; i < kSteps; ++i) {
    const double t = sampler->timestep(i);
    const at::Tensor tt = at::tensor({static_cast<float>(t)});
    unet::UNetInputs enc;
    enc.sample = m.schedule().add_noise(in.ref_latents, eps0, at::tensor({static_cast<int64_t>(std::llround(t))}));
    enc.timestep = tt;
    enc.encoder_hidden_states = in.encoder_prompt;
    enc.text_embeds = in.encoder_pooled;
    enc.time_ids = in.time_ids;
    auto kv_c = std::make_shared<nn::ReferenceKv>(m.encoder().forward(enc, cond));
    auto kv_u = std::make_shared<nn::ReferenceKv>(m.encoder().forward(enc, uncond));

    auto eps = [&](bool conditional, std::shared_ptr<nn::ReferenceKv> kv) {
      unet::UNetInputs d;
      d.sample = sampler->scale_model_input(x, i);
      d.timestep = tt;
      d.encoder_hidden_states = conditional ? in.prompt : at::zeros_like(in.prompt);
      d.text_embeds = conditional ? in.pooled : at::zeros_like(in.pooled);
      d.time_ids = in.time_ids;
      if (kv) d.reference = kv;  // IP K/V from the reference
      else d.ip_tokens = conditional ? cond : uncond;
      d.adapters = std::vector<std::string>{};
      return m.unet()->forward(d);
    };
    const at::Tensor nokv_u = eps(false, nullptr), full_c = eps(true, kv_c);
    at::Tensor e;
    if (guidance.mode == GuidanceMode::kCfg) {
      e = nokv_u + guidance.cfg_scale * (full_c - nokv_u);
    } else {
      const at::Tensor nokv_c = eps(true, nullptr), full_u = eps(false, kv_u);
      e = nokv_u + guidance.scale_nokv * (nokv_c - nokv_u) + guidance.scale_full * (full_c - nokv_u) +
          guidance.scale_kv * (full_u - nokv_u);
    }
    x = sampler->step(e, i, x).prev_sample;
  }
  return x;
}

TEST_F(Generation, MatchesAHandWrittenEulerLoop) {
  const auto in = tiny_inputs(6);
  GuidanceOptions cfg;
  cfg.mode = GuidanceMode::kCfg;
  cfg.cfg_scale = 4.0;
  GuidanceOptions look;
  look.scale_nokv = 3.0, look.scale_full = 1.5, look.scale_kv = 0.5;
  for (const auto* guidance : {&cfg, &look}) {
    const at::Tensor want = hand_written_euler(*model_, in, 21, *guidance);
    auto o = options(sched::SamplerKind::kEuler, guidance->mode);
    o.guidance = *guidance;
    const at::Tensor got = generate(*model_, in, {21}, o);
    EXPECT_GT(want.abs().max().item<double>(), 0.1);
    EXPECT_LT(max_abs(got, want), 1e-5 * (1.0 + want.abs().max().item<double>()))
        << (guidance == &cfg ? "cfg" : "lookahead");
  }
}

}  // namespace
}  // namespace lookahead::model
