// Shared fixture of the checkpoint tests: a small sharded model (odd sizes, so 3 and 4 ranks get
// padded shards; one bf16-storage group so fp32 masters differ from the shards; a scalar
// parameter), a ShardedAdamW over it, a couple of training steps with rank-dependent gradients,
// and helpers to compare the full (gathered) state.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <unistd.h>

#include <ATen/ATen.h>

#include "checkpoints/checkpoint.h"
#include "dist/sharded_adamw.h"
#include "tests/test_main.h"

namespace lookahead::ckpt::testing_util {

using dist::CommunicatorPtr;
using dist::FlatParamGroup;
using Named = std::vector<std::pair<std::string, at::Tensor>>;

/// Values that encode their position (so any misplaced element shows), plus `shift`.
inline at::Tensor positional(std::vector<int64_t> shape, double base, double shift) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return (at::arange(n, at::kFloat) * 0.01 + base + shift).reshape(shape);
}

struct Model {
  std::shared_ptr<FlatParamGroup> heads, aux, base;
  std::unique_ptr<dist::ShardedAdamW> opt;
  std::vector<std::shared_ptr<FlatParamGroup>> trainable() const { return {heads, aux}; }
};

/// A fresh model sharded over `comm`. `shift` moves every trainable value (a "fresh" model that
/// must be overwritten by a load); `frozen_shift` moves the frozen ones.
inline std::unique_ptr<Model> make_model(const CommunicatorPtr& comm, double shift, double frozen_shift = 0.0) {
  auto m = std::make_unique<Model>();
  auto p = [](at::Tensor t, bool grad) { return t.requires_grad_(grad); };
  m->heads = std::make_shared<FlatParamGroup>(
      "heads",
      Named{{"W", p(positional({3, 5}, 0.1, shift), true)},
            {"b", p(positional({3}, -0.2, shift), true)},
            {"s", p(positional({}, 0.7, shift), true)},
            {"E", p(positional({37, 3}, -0.5, shift), true)}},
      comm, at::kFloat, c10::kCPU);
  m->aux = std::make_shared<FlatParamGroup>(
      "aux", Named{{"U", p(positional({7, 5}, 0.3, shift), true)}, {"v", p(positional({13}, 0.05, shift), true)}}, comm,
      at::kBFloat16, c10::kCPU);
  m->base = std::make_shared<FlatParamGroup>(
      "base", Named{{"F", p(positional({5, 5}, 1.0, frozen_shift), false)}, {"G", p(positional({11}, 2.0, frozen_shift), false)}},
      comm, at::kFloat, c10::kCPU);
  m->opt = std::make_unique<dist::ShardedAdamW>(
      std::vector<dist::AdamWGroupOptions>{{"adapters", 0.05, 0.1}, {"lora", 0.02, 0.03}},
      dist::AdamWOptions{0.9, 0.99, 1e-8});
  m->opt->add(m->heads, "adapters");
  m->opt->add(m->aux, "lora");
  return m;
}

/// `steps` AdamW steps; each rank's gradient depends on its rank (so the reduction matters) and
/// on the step. Only "heads" gets a gradient on odd steps, so the groups' step counts differ.
inline void train(Model& m, const CommunicatorPtr& comm, int steps, int first_step = 0) {
  const double r = comm->rank() + 1;
  for (int k = first_step; k < first_step + steps; ++k) {
    const bool aux_active = k % 2 == 0;
    std::vector<FlatParamGroup*> groups{m.heads.get(), m.base.get()};
    if (aux_active) groups.push_back(m.aux.get());
    for (auto* g : groups) g->gather();
    for (auto* g : groups) g->bind();
    at::Tensor loss = at::zeros({}, at::kFloat);
    for (const auto& t : m.heads->params()) loss = loss + (t * t * (0.3 * r) - t * (0.1 * (k + 1))).sum();
    if (aux_active)
      for (const auto& t : m.aux->params()) loss = loss + (t.to(at::kFloat) * t.to(at::kFloat) * (0.2 * r)).sum();
    loss.backward();
    for (auto* g : groups) g->release();
    m.heads->reduce_scatter_grads(dist::ReduceOp::kAvg);
    if (aux_active) m.aux->reduce_scatter_grads(dist::ReduceOp::kAvg);
    m.opt->step();
    m.opt->zero_grad();
  }
}

/// Collective: "params|exp_avg|exp_avg_sq|shard/<group>/<param>" -> full fp32 values (masters for
/// params, the storage-dtype shard values cast to fp32 for shard/).
inline std::map<std::string, at::Tensor> full_state(Model& m) {
  std::map<std::string, at::Tensor> out;
  for (const auto& st : m.opt->state()) {
    FlatParamGroup& g = st.group == "heads" ? *m.heads : *m.aux;
    const auto& comm = g.comm();
    const int64_t n = comm ? comm->size() : 1;
    at::Tensor local = at::stack({st.master, st.exp_avg, st.exp_avg_sq, g.local_shard().to(at::kFloat)});
    at::Tensor all = at::empty({n * local.numel()}, at::kFloat);
    if (n > 1) comm->all_gather(all, local.reshape({-1}))->wait();
    else all.copy_(local.reshape({-1}));
    at::Tensor rows = all.view({n, 4, -1}).permute({1, 0, 2}).reshape({4, -1});
    const char* kinds[] = {"params", "exp_avg", "exp_avg_sq", "shard"};
    for (const auto& e : g.layout().entries)
      for (int k = 0; k < 4; ++k)
        out[std::string(kinds[k]) + "/" + g.name() + "/" + e.name] = rows[k].narrow(0, e.offset, e.numel).reshape(e.shape).clone();
  }
  return out;
}

inline void expect_equal_state(const std::map<std::string, at::Tensor>& got, const std::map<std::string, at::Tensor>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, t] : want) {
    ASSERT_TRUE(got.count(name)) << name;
    EXPECT_TRUE(got.at(name).equal(t)) << name << " differs: max |diff| "
                                        << (got.at(name) - t).abs().max().item<double>();
  }
}

inline std::string rng_of(int rank) { return "rng-bytes-of-rank-" + std::to_string(rank) + std::string(rank, '\x01'); }

inline SaveRequest save_request(Model& m, const CommunicatorPtr& comm, const std::filesystem::path& dir, int64_t step) {
  SaveRequest req;
  req.dir = dir;
  req.step = step;
  req.comm = comm;
  req.trainable = m.trainable();
  req.optimizer = m.opt.get();
  req.frozen = {{m.base, {"/models/sdxl/unet.safetensors", "/models/sdxl/text_encoder.safetensors"}}};
  req.config_text = "lr: 1e-5\nsteps: " + std::to_string(step) + "\n";
  req.rng_state = rng_of(comm->rank());
  req.cursor = {2, 1000 + step};
  req.alpha = {0.25 + step, step - 1};
  req.keep_last = 0;
  return req;
}

inline LoadRequest load_request(Model& m, const CommunicatorPtr& comm, const std::filesystem::path& source) {
  LoadRequest req;
  req.source = source;
  req.comm = comm;
  req.trainable = m.trainable();
  req.optimizer = m.opt.get();
  req.frozen = {m.base};
  return req;
}

/// A directory every rank agrees on (rank 0's pid), emptied by rank 0. Collective.
inline std::filesystem::path shared_dir(const CommunicatorPtr& comm, const std::string& name) {
  at::Tensor pid = at::tensor({static_cast<int64_t>(::getpid())}, at::kLong);
  if (comm->size() > 1) comm->broadcast(pid, 0)->wait();
  auto dir = std::filesystem::temp_directory_path() /
             ("la_ckpt_" + name + "_" + std::to_string(pid.item<int64_t>()));
  if (comm->rank() == 0) {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  comm->barrier()->wait();
  return dir;
}

}  // namespace lookahead::ckpt::testing_util
