// The training step users run (TrainState::step on the tiny model) under mpiexec -n 1..4: ten
// steps of both branches (per-branch backward, branch 1's reduce-scatters in flight during branch
// 2's forward, the global-mean rescale of the identity loss) on N ranks, each a slice of one global
// batch, reproduce one unsharded model trained with torch::optim::AdamW on the whole batch (same
// losses, same final trainables).
#include <gtest/gtest.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include <ATen/ATen.h>

#include "model/lookahead/lookahead_model.h"
#include "model/lookahead/synthetic_batch.h"
#include "tests/test_main.h"
#include "trainer/train_state.h"

namespace lookahead::trainer {
namespace {

using test::world;
using model::LookaheadModel;

/// Global batch: a multiple of every tested world size would cost each of 4 oversubscribed ranks a
/// 12-sample reference run, so it is 4, or 6 on 3 ranks.
int64_t global_batch() { return world().size() == 3 ? 6 : 4; }
constexpr int kSteps = 10;
constexpr uint64_t kSeed = 2024;
constexpr double kLr[2] = {2e-3, 1e-3};  // adapter, lora
const std::vector<int64_t> kLatent{4, 8, 8};

model::LookaheadModelConfig model_config() {
  auto config = model::LookaheadModelConfig::tiny();
  config.lambda_id = 1.0;  // so that the identity branch's gradients weigh as much as the diffusion's
  return config;
}

/// Every LoRA passes gradients from the first step (up-projections start at zero otherwise).
void randomize_loras(LookaheadModel& m) {
  at::NoGradGuard no_grad;
  for (auto& [k, t] : m.lora_parameters()) t.normal_(0.0, 0.1);
}

/// The unsharded reference model, built as TrainState builds it.
std::unique_ptr<LookaheadModel> make_model() {
  at::set_num_threads(1);  // tiny tensors: worker threads only add synchronisation
  at::manual_seed(kSeed);
  // On the World's device, where the engine puts the shards; batches stay on the CPU (the model
  // moves its inputs).
  auto m = std::make_unique<LookaheadModel>(model_config(), world().device());
  randomize_loras(*m);
  return m;
}

/// Samples [first, first + count) of step `step`'s global batch.
model::Batch make_batch(int step, int64_t first, int64_t count) {
  return model::synthetic_batch(model_config(), model::SyntheticShape{}, step, first, count).batch;
}

struct Trace {
  std::vector<double> diffusion, lookahead, grad_norm;
  std::map<std::string, at::Tensor> params;
};

Trace reference_run() {
  auto m = make_model();
  std::vector<at::Tensor> groups[2], all;
  for (auto& [k, t] : m->adapter_parameters()) groups[0].push_back(t);
  for (auto& [k, t] : m->lora_parameters()) groups[1].push_back(t);
  std::vector<torch::optim::OptimizerParamGroup> pg;
  for (int g = 0; g < 2; ++g) {
    all.insert(all.end(), groups[g].begin(), groups[g].end());
    pg.emplace_back(groups[g], std::make_unique<torch::optim::AdamWOptions>(
                                   torch::optim::AdamWOptions(kLr[g]).weight_decay(0.01)));
  }
  torch::optim::AdamW opt(std::move(pg), torch::optim::AdamWOptions(1e-3).weight_decay(0.01));
  model::AlphaSchedule alpha(kSeed);
  Trace trace;
  for (int step = 0; step < kSteps; ++step) {
    opt.zero_grad();
    auto batch = make_batch(step, 0, global_batch());
    auto draw = m->draw(kSeed, step, global_batch(), 0, global_batch(), kLatent);
    at::Tensor l1 = m->diffusion_loss(batch, draw);
    at::Tensor l2 = m->lookahead_loss(batch, draw, alpha.value(step)).loss;
    (l1 + l2).backward();
    torch::nn::utils::clip_grad_norm_(all, 1.0);
    opt.step();
    trace.diffusion.push_back(l1.item<double>());
    trace.lookahead.push_back(l2.item<double>());
  }
  for (auto& [k, t] : m->adapter_parameters()) trace.params[k] = t.detach().cpu().clone();
  for (auto& [k, t] : m->lora_parameters()) trace.params[k] = t.detach().cpu().clone();
  return trace;
}

Trace sharded_run(const DistConfig& dist, int steps = kSteps, LossMode mode = LossMode::kSum) {
  auto& w = world();
  TrainConfig config;
  config.model.preset = Preset::kTiny;
  config.train.seed = kSeed;
  config.train.threads = 1;
  config.optim.lr_adapter = kLr[0];
  config.optim.lr_lora = kLr[1];
  config.optim.weight_decay = 0.01;
  config.optim.clip = 1.0;
  config.dist = dist;
  config.loss.mode = mode;
  TrainState state(w, config, TrainStateOptions{model_config(), randomize_loras});
  const int64_t per_rank = global_batch() / w.size(), first = w.rank() * per_rank;
  Trace trace;
  for (int step = 0; step < steps; ++step) {
    auto batch = make_batch(step, first, per_rank);
    const StepStats st = state.step(batch, state.draw(per_rank, kLatent), state.alpha());
    trace.diffusion.push_back(st.loss_diffusion);
    trace.lookahead.push_back(st.loss_lookahead);
    trace.grad_norm.push_back(st.grad_norm);
    if (st.grad_norm_diffusion) trace.grad_norm.push_back(*st.grad_norm_diffusion);
  }
  trace.params = state.trainable_tensors();
  return trace;
}

TEST(TrainState, NRanksReproduceOneRankOnTheWholeModel) {
  const Trace want = reference_run();
  const Trace got = sharded_run(DistConfig());
  for (int s = 0; s < kSteps; ++s) {
    EXPECT_NEAR(got.diffusion[s], want.diffusion[s], 1e-5 * std::abs(want.diffusion[s]) + 1e-7) << "step " << s;
    EXPECT_NEAR(got.lookahead[s], want.lookahead[s], 1e-5 * std::abs(want.lookahead[s]) + 1e-7) << "step " << s;
  }
  ASSERT_EQ(got.params.size(), want.params.size());
  double worst = 0, moved = 0;
  std::string worst_key;
  auto fresh = make_model();
  std::map<std::string, at::Tensor> initial;
  for (auto& [k, t] : fresh->adapter_parameters()) initial[k] = t.cpu();
  for (auto& [k, t] : fresh->lora_parameters()) initial[k] = t.cpu();
  for (const auto& [k, t] : want.params) {
    ASSERT_TRUE(got.params.contains(k)) << k;
    const double err = (got.params.at(k) - t).abs().max().item<double>();
    if (err > worst) worst = err, worst_key = k;
    moved = std::max(moved, (t - initial.at(k)).abs().max().item<double>());
  }
  // fp32, different summation orders; AdamW's per-coordinate normalisation turns rounding noise
  // in near-zero gradients into steps of up to lr: agreement to 5 % of one step (lr 2e-3).
  EXPECT_LT(worst, 1e-4) << "worst parameter " << worst_key;
  EXPECT_GT(moved, 5e-3) << "ten steps must move the parameters";
}

TEST(TrainState, KeptActivationsGiveTheRecomputedStep) {
  // dist.recompute only decides whether a unit's backward recomputes its forward or runs the graph
  // its forward kept: the same kernels on the same values, so every loss, gradient norm (the
  // gradients' global L2 norm, before clipping) and trained parameter is bit-identical.
  for (const LossMode mode : {LossMode::kSum, LossMode::kAlternate}) {
    DistConfig all;
    all.recompute = Recompute::kAll;
    const Trace want = sharded_run(all, 3, mode);
    for (const Recompute policy : {Recompute::kBlocks, Recompute::kNone}) {
      DistConfig dist;
      dist.recompute = policy;
      const std::string what = std::string("recompute ") + std::string(config_name(policy)) + ", loss.mode " +
                               std::string(config_name(mode));
      const Trace got = sharded_run(dist, 3, mode);
      EXPECT_EQ(got.diffusion, want.diffusion) << what;
      EXPECT_EQ(got.lookahead, want.lookahead) << what;
      EXPECT_EQ(got.grad_norm, want.grad_norm) << what;
      ASSERT_EQ(got.params.size(), want.params.size()) << what;
      for (const auto& [k, t] : want.params)
        EXPECT_TRUE(at::equal(got.params.at(k), t))
            << what << ": " << k << " differs by up to " << (got.params.at(k) - t).abs().max().item<double>();
    }
  }
}

TEST(TrainState, RecomputePolicyNamesTheKeptUnits) {
  const std::vector<std::string> names{"image_proj", "stem_in", "down_blocks.0.resnets.0", "down_blocks.0.downsamplers.0",
                                       "down_blocks.1.attentions.0", "mid_block.resnets.0", "up_blocks.0.upsamplers.0",
                                       "stem_out", "taesd.decoder", "arcface"};
  EXPECT_TRUE(kept_activation_units(Recompute::kAll, names).empty());
  EXPECT_EQ(kept_activation_units(Recompute::kNone, names), std::set<std::string>(names.begin(), names.end()));
  EXPECT_EQ(kept_activation_units(Recompute::kBlocks, names),
            (std::set<std::string>{"image_proj", "stem_in", "down_blocks.0.downsamplers.0", "up_blocks.0.upsamplers.0",
                                   "stem_out", "taesd.decoder", "arcface"}));
}

}  // namespace
}  // namespace lookahead::trainer
