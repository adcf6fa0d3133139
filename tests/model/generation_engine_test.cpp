// generate() through the sharded engine under mpiexec -n 1..2: every rank runs the same sampling
// loop in lockstep (the engine gathers each unit's weights collectively), and the latents equal
// those of the unsharded model, for lookahead guidance (encoder + two decoder calls per step) and
// for CFG.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <memory>

#include "dist/sharded_engine.h"
#include "model/lookahead/generation.h"
#include "model/lookahead/lookahead_model.h"
#include "tests/test_main.h"

namespace lookahead::model {
namespace {

std::unique_ptr<LookaheadModel> tiny_model() {
  at::set_num_threads(1);
  at::manual_seed(11);
  auto m = std::make_unique<LookaheadModel>(LookaheadModelConfig::tiny());
  at::NoGradGuard no_grad;
  for (auto& [k, t] : m->adapter_parameters()) t.normal_(0.0, 0.2);
  for (auto& [k, t] : m->lora_parameters()) t.normal_(0.0, 0.2);
  return m;
}

GenerationInputs tiny_inputs() {
  auto g = at::make_generator<at::CPUGeneratorImpl>(17);
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

TEST(GenerationEngine, ShardedLatentsEqualTheUnshardedModels) {
  const auto in = tiny_inputs();
  const std::vector<uint64_t> seeds{3, 8};
  GenerationOptions look;
  look.steps = 3;
  GenerationOptions cfg = look;
  cfg.sampler = sched::SamplerKind::kEuler;
  cfg.guidance.mode = GuidanceMode::kCfg;

  std::vector<at::Tensor> want;
  {
    auto m = tiny_model();
    for (const auto* o : {&look, &cfg}) want.push_back(generate(*m, in, seeds, *o));
  }

  auto m = tiny_model();
  dist::ShardedEngine engine(test::world(), m->units(), dist::EngineOptions());
  m->set_unit_runner(&engine);
  size_t k = 0;
  for (const auto* o : {&look, &cfg}) {
    const at::Tensor got = generate(*m, in, seeds, *o);
    engine.end_step();
    ASSERT_EQ(got.sizes(), want[k].sizes());
    const double scale = 1.0 + want[k].abs().max().item<double>();
    EXPECT_LT((got - want[k]).abs().max().item<double>(), 1e-5 * scale)
        << (k == 0 ? "lookahead" : "cfg") << " on " << test::world().size() << " ranks";
    ++k;
  }
  m->set_unit_runner(nullptr);
}

}  // namespace
}  // namespace lookahead::model
