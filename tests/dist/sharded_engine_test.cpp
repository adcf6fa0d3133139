// The sharded engine under mpiexec -n 1..4 (MPI backend, CPU), on a tiny SDXL-family UNet with
// the KV encoder and IP-Adapter branches: N ranks (each a slice of the same global batch) against
// one unsharded model trained with torch::optim::AdamW on the whole batch; reduce-scatter volume,
// per-rank memory, release of gathered buffers, delay injection and the schedule options.
#include <gtest/gtest.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include <ATen/ATen.h>

#include <set>

#include "dist/sharded_adamw.h"
#include "dist/sharded_engine.h"
#include "model/adapters/ip_adapter.h"
#include "model/adapters/kv_encoder.h"
#include "tests/test_main.h"

namespace lookahead::dist {
namespace {

using test::world;
using Named = std::vector<std::pair<std::string, at::Tensor>>;

constexpr int64_t kGlobalBatch = 12;
constexpr int kSteps = 10;
constexpr double kLr[2] = {1e-2, 5e-3};  // adapter, lora (large, so that 10 steps move the weights)

model::unet::UNetConfig tiny_config() {
  return model::unet::UNetConfig::from_json(R"({"block_out_channels": [16, 32, 32],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1, "transformer_layers_per_block": [1, 1, 2], "attention_head_dim": 2,
    "cross_attention_dim": 24, "norm_num_groups": 4, "use_linear_projection": true,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 4, "projection_class_embeddings_input_dim": 40})",
                                            "tiny");
}

/// The device everything runs on: the World's, where the engine puts the shards (a GPU when the
/// World bound one). The unsharded reference runs there too, so both see the same kernels.
c10::Device device() { return world().device(); }

/// The UNet with its KV encoder and IP-Adapter, built identically on every rank: drawn on the
/// CPU (GPU random kernels depend on the launch grid), then moved to device().
struct Model {
  Model()
      : unet((at::manual_seed(7), tiny_config())),
        ip(*unet, model::adapters::ResamplerOptions().dim(16).heads(1).depth(1).num_queries(4).embedding_dim(12).output_dim(24)) {
    ip->attach(*unet);
    encoder = std::make_unique<model::adapters::KvEncoder>(unet, model::adapters::KvEncoderOptions());
    at::NoGradGuard no_grad;
    // Nonzero LoRA ups, so that every trainable tensor has a gradient from the first step.
    for (auto& [k, t] : encoder->trainable_parameters()) {
      at::Tensor v = t;
      v.normal_(0.0, 0.1);
    }
    for (auto& p : unet->parameters()) p.set_requires_grad(false);
    // Module::to swaps each parameter's data in place, so the tensors the encoder and the
    // adapter handed out stay the module's.
    unet->to(device());
    ip->to(device());
  }

  /// Sharding units with their parameters by role; names are the checkpoint keys.
  std::vector<ShardingUnit> units() {
    std::map<std::string, std::string> ip_paths;  // attn2 path -> "ip_adapter.N."
    auto attn2 = unet->cross_attention_layers();
    for (size_t j = 0; j < attn2.size(); ++j) ip_paths[attn2[j].first] = "ip_adapter." + std::to_string(2 * j + 1) + ".";
    auto ip_params = ip->named_parameters();
    auto lora = encoder->trainable_parameters();
    std::vector<ShardingUnit> out;
    for (const auto& u : unet->units()) {
      ShardingUnit eu;
      eu.name = u.name;
      std::vector<std::string> prefixes;
      if (u.module) prefixes.push_back(u.name + ".");
      for (const auto& m : u.members) prefixes.push_back(m + ".");
      auto under = [&](const std::string& key) {
        for (const auto& p : prefixes)
          if (key.rfind(p, 0) == 0) return true;
        return false;
      };
      for (const auto& item : unet->named_parameters())
        if (under(item.key())) eu.frozen.emplace_back(item.key(), item.value());
      for (const auto& [k, t] : lora)
        if (under(k)) eu.lora.emplace_back(k, t);
      for (const auto& [path, prefix] : ip_paths)
        if (under(path))
          for (const char* w : {"to_k_ip.weight", "to_v_ip.weight"})
            eu.adapter.emplace_back(prefix + w, ip_params[prefix + w]);
      out.push_back(std::move(eu));
    }
    return out;
  }

  /// Trainable tensors by key (adapter group first).
  std::map<std::string, at::Tensor> trainables() {
    std::map<std::string, at::Tensor> out;
    for (auto& u : units()) {
      for (auto& [k, t] : u.adapter) out[k] = t;
      for (auto& [k, t] : u.lora) out[k] = t;
    }
    return out;
  }

  model::unet::UNet2DConditionModel unet;
  model::adapters::IpAdapter ip;
  std::unique_ptr<model::adapters::KvEncoder> encoder;
};

/// Step `step`'s data for samples [first, first + count) of the global batch: per-sample
/// generators, so that any split of the batch sees the same samples.
struct Batch {
  at::Tensor ref, tgt, target, prompt, text_embeds, time_ids, ip_tokens;
};
Batch make_batch(int step, int64_t first, int64_t count) {
  std::vector<at::Tensor> cols[7];
  for (int64_t i = first; i < first + count; ++i) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(1000 * step + i);
    cols[0].push_back(at::randn({1, 4, 8, 8}, gen));
    cols[1].push_back(at::randn({1, 4, 8, 8}, gen));
    cols[2].push_back(at::randn({1, 4, 8, 8}, gen));
    cols[3].push_back(at::randn({1, 3, 24}, gen));
    cols[4].push_back(at::randn({1, 16}, gen));
    cols[5].push_back(at::randn({1, 6}, gen));
    cols[6].push_back(at::randn({1, 4, 24}, gen));
  }
  auto cat = [&](int c) { return at::cat(cols[c], 0).to(device()); };
  return Batch{cat(0), cat(1), cat(2), cat(3), cat(4), cat(5), cat(6)};
}

/// KV encoder on the reference, decoder on the target with the reference K/V and IP K/V; mse.
at::Tensor loss(Model& m, const Batch& b, int step) {
  model::unet::UNetInputs ref;
  ref.sample = b.ref;
  ref.timestep = at::full({b.ref.size(0)}, 100 + 37 * step, at::TensorOptions().dtype(at::kLong).device(device()));
  ref.encoder_hidden_states = b.prompt;
  ref.text_embeds = b.text_embeds;
  ref.time_ids = b.time_ids;
  auto kv = std::make_shared<model::nn::ReferenceKv>(m.encoder->forward(ref, b.ip_tokens));
  model::unet::UNetInputs tgt = ref;
  tgt.sample = b.tgt;
  tgt.reference = kv;
  tgt.adapters = std::vector<std::string>{};
  return (m.unet->forward(tgt) - b.target).square().mean();
}

struct Trace {
  std::vector<double> losses;
  std::map<std::string, at::Tensor> params;
};

/// One unsharded model, whole batch, torch::optim::AdamW.
Trace reference_run() {
  Model m;
  std::vector<at::Tensor> groups[2];
  for (auto& u : m.units()) {
    for (auto& [k, t] : u.adapter) groups[0].push_back(t);
    for (auto& [k, t] : u.lora) groups[1].push_back(t);
  }
  std::vector<torch::optim::OptimizerParamGroup> pg;
  for (int g = 0; g < 2; ++g)
    pg.emplace_back(groups[g], std::make_unique<torch::optim::AdamWOptions>(
                                   torch::optim::AdamWOptions(kLr[g]).weight_decay(0.01)));
  torch::optim::AdamW opt(pg, torch::optim::AdamWOptions(1e-3).weight_decay(0.01));
  std::vector<at::Tensor> all(groups[0]);
  all.insert(all.end(), groups[1].begin(), groups[1].end());
  Trace trace;
  for (int step = 0; step < kSteps; ++step) {
    opt.zero_grad();
    at::Tensor l = loss(m, make_batch(step, 0, kGlobalBatch), step);
    l.backward();
    torch::nn::utils::clip_grad_norm_(all, 0.05);
    opt.step();
    trace.losses.push_back(l.item<double>());
  }
  for (auto& [k, t] : m.trainables()) trace.params[k] = t.detach().cpu().clone();
  return trace;
}

/// N ranks, sharded, each its slice of the batch.
struct ShardedRun {
  Trace trace;
  std::vector<EngineMemory> memory;  // after each step
  int64_t reduced = 0, trainable_numel = 0, frozen_reduced = 0;
  bool reduce_volume_matches = true;
};

ShardedRun sharded_run(const EngineOptions& options) {
  auto& w = world();
  Model m;
  ShardedEngine engine(w, m.units(), options);
  m.unet->set_unit_runner(&engine);
  ShardedAdamW opt({{"adapter", kLr[0], 0.01}, {"lora", kLr[1], 0.01}});
  for (auto& [g, lr] : engine.trainable_groups()) opt.add(g, lr);
  const int64_t per_rank = kGlobalBatch / w.size();
  ShardedRun run;
  for (int step = 0; step < kSteps; ++step) {
    at::Tensor l = loss(m, make_batch(step, w.rank() * per_rank, per_rank), step);
    l.backward();
    engine.finish_gradients();
    opt.clip_grad_norm(0.05, w.comm());
    opt.step();
    run.memory.push_back(engine.memory());  // gradient shards still held
    opt.zero_grad();
    engine.end_step();
    // The loss is on the device; the World's MPI communicator takes host values.
    run.trace.losses.push_back(all_reduce_values(*w.comm(), {l.item<double>()}, ReduceOp::kAvg)[0]);
  }
  for (auto& [g, lr] : engine.trainable_groups()) {
    for (const auto& e : g->layout().entries) run.trace.params[e.name] = g->full_tensor(e.name).cpu();
    run.trainable_numel += g->layout().numel;
    run.reduce_volume_matches =
        run.reduce_volume_matches && g->reduced_elements() == g->reduce_calls() * g->layout().numel;
    run.reduced += g->reduced_elements();
  }
  for (auto& g : engine.groups())
    if (!g->trainable()) run.frozen_reduced += g->reduced_elements();
  m.unet->set_unit_runner(nullptr);
  return run;
}

const Trace& reference() {
  static const Trace trace = reference_run();
  return trace;
}

void expect_matches_reference(const Trace& got, const std::string& what) {
  const Trace& want = reference();
  ASSERT_EQ(got.losses.size(), want.losses.size());
  for (size_t s = 0; s < want.losses.size(); ++s)
    EXPECT_NEAR(got.losses[s], want.losses[s], 2e-5 * std::abs(want.losses[s])) << what << ": step " << s;
  ASSERT_EQ(got.params.size(), want.params.size()) << what;
  double worst = 0;
  std::string worst_key;
  for (const auto& [k, t] : want.params) {
    ASSERT_TRUE(got.params.contains(k)) << what << ": " << k;
    double err = (got.params.at(k) - t).abs().max().item<double>();
    if (err > worst) worst = err, worst_key = k;
  }
  // fp32 with different summation orders (batch split, reduction order). AdamW normalizes every
  // coordinate's step to about lr whatever the gradient's size, so where a gradient is near zero
  // the rounding noise can flip a step: parameters move up to 10 steps x 1e-2 = 0.1, and must
  // agree to 1e-4 (0.1 % of that motion; measured up to 1.6e-5 on 3 ranks).
  EXPECT_LT(worst, 1e-4) << what << ": worst parameter " << worst_key;
  // The training moved the parameters (the comparison is not of untouched initial values).
  Model fresh;
  double moved = 0;
  for (auto& [k, t] : fresh.trainables())
    moved = std::max(moved, (want.params.at(k) - t.cpu()).abs().max().item<double>());
  EXPECT_GT(moved, 1e-3) << what;
}

TEST(ShardedEngine, NRanksReproduceOneRank) {
  ShardedRun run = sharded_run(EngineOptions());
  expect_matches_reference(run.trace, "prefetch");
  // Only trainable gradients are reduced, each exactly once per backward call of its unit.
  EXPECT_EQ(run.frozen_reduced, 0);
  EXPECT_TRUE(run.reduce_volume_matches);
  EXPECT_GT(run.reduced, 0);
  EXPECT_EQ(run.reduced % run.trainable_numel, 0) << "every trainable element is reduced the same number of times";
}

TEST(ShardedEngine, MemoryFollowsTheShardingFormulaAndDoesNotGrow) {
  auto& w = world();
  Model m;
  int64_t frozen_numel = 0, trainable_numel = 0;
  std::vector<int64_t> group_numels;
  for (auto& u : m.units()) {
    for (auto* role : {&u.frozen, &u.lcm, &u.adapter, &u.lora}) {
      int64_t n = 0;
      for (auto& [k, t] : *role) n += t.numel();
      if (n == 0) continue;
      group_numels.push_back(n);
      (role == &u.frozen || role == &u.lcm ? frozen_numel : trainable_numel) += n;
    }
  }
  ShardedRun run = sharded_run(EngineOptions());
  const EngineMemory& mem = run.memory.back();
  // Each group pads to a multiple of 16 * N elements and keeps 1/N of it: total / N plus at most
  // 16 elements per group.
  const int64_t n = w.size();
  const auto groups = static_cast<int64_t>(group_numels.size());
  EXPECT_GE(mem.frozen_shard_bytes + mem.trainable_shard_bytes, 4 * (frozen_numel + trainable_numel) / n);
  EXPECT_LE(mem.frozen_shard_bytes + mem.trainable_shard_bytes, 4 * ((frozen_numel + trainable_numel) / n + 16 * groups));
  EXPECT_GE(mem.trainable_shard_bytes, 4 * trainable_numel / n);
  EXPECT_EQ(mem.grad_shard_bytes, mem.trainable_shard_bytes);  // fp32 gradient shards, same size
  // Nothing stays gathered after the backward, and nothing grows from step to step.
  for (const auto& m_step : run.memory) {
    EXPECT_EQ(m_step.gathered_bytes, 0);
    EXPECT_EQ(m_step.frozen_shard_bytes, mem.frozen_shard_bytes);
    EXPECT_EQ(m_step.peak_gathered_bytes, run.memory.front().peak_gathered_bytes);
  }
  // The ring caps what is gathered at once: at most two units' full buffers.
  std::sort(group_numels.rbegin(), group_numels.rend());
  EXPECT_LE(mem.peak_gathered_bytes, 4 * (frozen_numel + trainable_numel));
  if (n > 1) {
    EXPECT_LT(mem.peak_gathered_bytes, 4 * (frozen_numel + trainable_numel) / 2);
  }
}

TEST(ShardedEngine, DelaysAndScheduleOptionsChangeNoResult) {
  auto& w = world();
  EngineOptions delayed;
  // Late ranks: any missing wait shows up as a wrong value.
  delayed.debug_delay = std::chrono::milliseconds(w.rank() % 2 == 1 ? 3 : 0);
  expect_matches_reference(sharded_run(delayed).trace, "delayed");
  EngineOptions keep;
  keep.keep_gathered = true;
  keep.prefetch = false;
  keep.max_gathered_units = 64;
  expect_matches_reference(sharded_run(keep).trace, "keep gathered, no prefetch");
  EngineOptions replicate;
  replicate.placement = Placement::kReplicate;
  replicate.max_gathered_units = 1;
  expect_matches_reference(sharded_run(replicate).trace, "replicated base, ring of one");
  EngineOptions node;
  node.placement = Placement::kNode;  // one node here: the node group is every rank, built by a split
  expect_matches_reference(sharded_run(node).trace, "node placement");
  EngineOptions deep;
  deep.max_gathered_units = 4;  // prefetch three calls ahead, in forward and in backward
  deep.debug_delay = delayed.debug_delay;
  expect_matches_reference(sharded_run(deep).trace, "ring of four, prefetch three ahead");
  EngineOptions some_whole;
  // The first and the last unit whole on every rank (frozen groups resident), the rest sharded.
  const std::vector<ShardingUnit> units = Model().units();
  some_whole.replicate_units = {units.front().name, units.back().name};
  expect_matches_reference(sharded_run(some_whole).trace, "replicate_units: the first and last unit");
}

TEST(ShardedEngine, ReplicateUnitsNameUnits) {
  Model m;
  EngineOptions options;
  options.replicate_units = {"no.such.unit"};
  EXPECT_THROW(ShardedEngine(world(), m.units(), options), c10::Error);
}

/// The second of two steps (the first records the unit order, so the second prefetches): its loss
/// and every trainable group's gradient shard after finish_gradients.
struct GradientRun {
  double loss = 0;
  std::map<std::string, at::Tensor> grads;
  EngineMemory memory;
};

GradientRun gradient_run(const EngineOptions& options) {
  auto& w = world();
  Model m;
  ShardedEngine engine(w, m.units(), options);
  m.unet->set_unit_runner(&engine);
  const int64_t per_rank = kGlobalBatch / w.size();
  GradientRun out;
  for (int step = 0; step < 2; ++step) {
    at::Tensor l = loss(m, make_batch(step, w.rank() * per_rank, per_rank), step);
    l.backward();
    engine.finish_gradients();
    if (step == 1) {
      out.loss = l.item<double>();
      out.memory = engine.memory();
      for (auto& [g, lr] : engine.trainable_groups()) out.grads[g->name()] = g->grad_shard().cpu().clone();
    }
    for (auto& [g, lr] : engine.trainable_groups()) g->zero_grad();
    engine.end_step();
  }
  m.unet->set_unit_runner(nullptr);
  return out;
}

TEST(ShardedEngine, KeptActivationsGiveTheRecomputedGradients) {
  std::set<std::string> all, every_other;
  {
    Model m;
    int i = 0;
    for (const auto& u : m.units()) {
      all.insert(u.name);
      if (i++ % 2 == 0) every_other.insert(u.name);
    }
  }
  const GradientRun want = gradient_run(EngineOptions());  // every unit recomputes in backward
  EngineOptions keep_all;
  keep_all.keep_activations = all;
  EngineOptions keep_some;
  keep_some.keep_activations = every_other;
  EngineOptions keep_some_ring_of_one = keep_some;
  keep_some_ring_of_one.max_gathered_units = 1;
  keep_some_ring_of_one.prefetch = false;
  EngineOptions keep_some_replicated = keep_some;
  keep_some_replicated.placement = Placement::kReplicate;
  EngineOptions keep_some_gathered = keep_some;
  keep_some_gathered.keep_gathered = true;
  for (const auto& [what, options] :
       std::vector<std::pair<std::string, EngineOptions>>{{"keep all", keep_all},
                                                          {"keep every other unit", keep_some},
                                                          {"keep every other unit, ring of one", keep_some_ring_of_one},
                                                          {"keep every other unit, replicate", keep_some_replicated},
                                                          {"keep every other unit, keep_gathered", keep_some_gathered}}) {
    const GradientRun got = gradient_run(options);
    // The kept graph is the recompute's, built on the same values by the same kernels: the
    // same bits, not merely close.
    EXPECT_EQ(got.loss, want.loss) << what;
    ASSERT_EQ(got.grads.size(), want.grads.size()) << what;
    for (const auto& [name, g] : want.grads) {
      ASSERT_TRUE(got.grads.contains(name)) << what << ": " << name;
      EXPECT_TRUE(at::equal(got.grads.at(name), g))
          << what << ": gradient shard of " << name << " differs by up to "
          << (got.grads.at(name) - g).abs().max().item<double>();
    }
    // Held units give their buffers back once their backward ran.
    EXPECT_EQ(got.memory.gathered_bytes, 0) << what;
  }
  // And the whole training matches the unsharded model.
  expect_matches_reference(sharded_run(keep_all).trace, "keep all activations");
}

TEST(ShardedEngine, KeptActivationsNameUnits) {
  Model m;
  EngineOptions options;
  options.keep_activations = {"no_such_unit"};
  EXPECT_THROW(ShardedEngine(world(), m.units(), options), c10::Error);
}

}  // namespace
}  // namespace lookahead::dist
