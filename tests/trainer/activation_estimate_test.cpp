// The per-rank memory model (trainer/activation_estimate.h: weights and optimizer by arithmetic,
// activations from a step traced on the meta device) against real steps: TrainState::step on the
// CPU, with the live tensor bytes counted by the allocator (trainer/tensor_memory.h), phase by
// phase. Under mpiexec -n 1 and 2. The tolerance is the 15 % of the measured peak.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "model/lookahead/lookahead_model.h"
#include "model/lookahead/synthetic_batch.h"
#include "tests/test_main.h"
#include "trainer/activation_estimate.h"
#include "trainer/tensor_memory.h"
#include "trainer/train_state.h"

namespace lookahead::trainer {
namespace {

using test::world;

constexpr double kTolerance = 0.15;

struct Case {
  const char* name;
  bool mid;
  ModelDtype dtype;
  Recompute recompute;
  LossMode mode;
  int64_t batch;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class MemoryModel : public ::testing::TestWithParam<Case> {};

TEST_P(MemoryModel, PredictsEachPhasesMeasuredTensorPeakWithin15Percent) {
  const Case& k = GetParam();
  count_cpu_tensor_bytes();
  TrainConfig c;
  c.model.preset = Preset::kTiny;
  c.model.dtype = k.dtype;
  c.train.seed = 7;
  c.train.threads = 1;
  c.train.batch_per_rank = k.batch;
  c.dist.recompute = k.recompute;
  c.loss.mode = k.mode;
  model::LookaheadModelConfig mc = k.mid ? model::LookaheadModelConfig::mid() : model::LookaheadModelConfig::tiny();
  mc.dtype = k.dtype == ModelDtype::kBf16 ? at::kBFloat16 : at::kFloat;
  const int64_t resolution = k.mid ? 256 : 64;
  const model::SyntheticShape shape = activation_inputs(c, resolution);

  StepStats measured;
  {
    TrainState state(world(), c, TrainStateOptions{mc, {}});
    const int64_t first = world().rank() * k.batch;
    for (int step = 0; step < 2; ++step) {  // the first step records the unit order
      model::SyntheticBatch sb = model::synthetic_batch(mc, shape, step, first, k.batch);
      state.model().set_reference_identity(sb.batch, sb.ref_pixels, sb.ref_pixel_landmarks);
      measured = state.step(sb.batch, state.draw(k.batch, {4, shape.latent, shape.latent}), state.alpha());
    }
  }
  const StepMemoryPrediction p = predict_step_memory(c, mc, world().size(), world().local_size(), resolution);

  const double mib = 1024.0 * 1024.0;
  const std::pair<const char*, std::pair<double, double>> phases[] = {
      {"diffusion", {p.diffusion(), static_cast<double>(measured.tensor_peak_diffusion)}},
      {"lookahead", {p.lookahead(), static_cast<double>(measured.tensor_peak_lookahead)}},
      {"optimizer", {p.optimizer(), static_cast<double>(measured.tensor_peak_optimizer)}},
  };
  for (const auto& [phase, pm] : phases) {
    const auto [predicted, got] = pm;
    ASSERT_GT(got, 0) << phase << ": no tensor bytes counted";
    const double rel = (predicted - got) / got;
    std::printf("[%s np%d] %-9s predicted %8.2f MiB, measured %8.2f MiB (%+.1f %%)\n", k.name, world().size(), phase,
                predicted / mib, got / mib, 100 * rel);
    EXPECT_LE(std::abs(rel), kTolerance) << k.name << " " << phase << ": predicted " << predicted / mib
                                         << " MiB, measured " << got / mib << " MiB";
  }
  std::printf("[%s np%d] always held %.2f MiB; activations: branch 1 %.2f MiB at %s, branch 2 %.2f MiB at %s\n", k.name,
              world().size(), p.base / mib, p.activations.diffusion.total / mib, p.activations.diffusion.unit.c_str(),
              p.activations.lookahead.total / mib, p.activations.lookahead.unit.c_str());
}

INSTANTIATE_TEST_SUITE_P(
    TinyAndMid, MemoryModel,
    ::testing::Values(Case{"tiny_fp32_blocks", false, ModelDtype::kFp32, Recompute::kBlocks, LossMode::kSum, 2},
                      Case{"tiny_bf16_all", false, ModelDtype::kBf16, Recompute::kAll, LossMode::kSum, 2},
                      Case{"mid_fp32_blocks", true, ModelDtype::kFp32, Recompute::kBlocks, LossMode::kSum, 2},
                      Case{"mid_bf16_none", true, ModelDtype::kBf16, Recompute::kNone, LossMode::kAlternate, 1},
                      Case{"mid_bf16_all", true, ModelDtype::kBf16, Recompute::kAll, LossMode::kSum, 2}),
    [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

}  // namespace
}  // namespace lookahead::trainer
