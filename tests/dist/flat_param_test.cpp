// FlatParamGroup under mpiexec -n 1..4 (MPI backend, CPU): layout arithmetic for awkward sizes,
// gather/bind/release seen through the module's own member tensors, shard ranges, gradient
// reduce-scatter against an all-gathered reference, accumulation, frozen groups, delays.
#include <gtest/gtest.h>

#include <thread>

#include "dist/flat_param.h"
#include "tests/tensor_expect.h"
#include "tests/test_main.h"

namespace lookahead::dist {
namespace {

using test::expect_close;
using test::world;

void expect_equal(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.scalar_type(), want.scalar_type()) << what;
  expect_close(got, want, 0, 0, what);
}

// A module holding parameters of awkward sizes as members, registered by name: the member fields
// and the parameter dict share TensorImpls, which is what the group relies on.
struct Odd : torch::nn::Module {
  Odd() {
    w1 = register_parameter("w1", torch::randn({1}));
    w7 = register_parameter("w7", torch::randn({7}));
    w33 = register_parameter("w33", torch::randn({3, 11}));
  }
  at::Tensor w1, w7, w33;
};

// Same seeded values on every rank, as after loading a model; the returned originals are copies.
struct Model {
  std::shared_ptr<Odd> odd;
  torch::nn::Linear linear{nullptr};
  std::vector<std::pair<std::string, at::Tensor>> params;  // odd.* then linear.*
  std::map<std::string, at::Tensor> original;
};

Model make_model(bool trainable) {
  torch::manual_seed(1234);
  Model m;
  m.odd = std::make_shared<Odd>();
  m.linear = torch::nn::Linear(5, 3);
  for (const auto& item : m.odd->named_parameters()) m.params.emplace_back("odd." + item.key(), item.value());
  for (const auto& item : m.linear->named_parameters())
    m.params.emplace_back("linear." + item.key(), item.value());
  for (auto& [name, p] : m.params) {
    p.requires_grad_(trainable);
    m.original[name] = p.detach().clone();
  }
  return m;
}

int64_t total_numel(const Model& m) {
  int64_t n = 0;
  for (const auto& [name, t] : m.original) n += t.numel();
  return n;
}

// Largest |value| of `t` over all ranks (a rank's shard may be all padding).
double global_abs_max(const at::Tensor& t, const CommunicatorPtr& comm) {
  at::Tensor m = at::full({1}, t.numel() ? t.abs().max().item<double>() : 0.0, at::kDouble);
  comm->all_reduce(m, ReduceOp::kMax)->wait();
  return m.item<double>();
}

// Concatenation of `parts` (flattened), zero-padded to `padded`.
at::Tensor padded_flat(const std::vector<at::Tensor>& parts, int64_t padded) {
  std::vector<at::Tensor> flat;
  for (const auto& p : parts) flat.push_back(p.reshape({-1}).to(at::kFloat));
  at::Tensor cat = at::cat(flat);
  return at::constant_pad_nd(cat, {0, padded - cat.numel()});
}

TEST(FlatLayout, PadsAwkwardSizesToAlignedEqualShards) {
  const std::vector<std::pair<std::string, std::vector<int64_t>>> entries = {
      {"a", {1}}, {"b", {7}}, {"c", {3, 11}}};  // 41 elements: not a multiple of 3 or 16
  FlatLayout three(entries, 3, at::kFloat);
  EXPECT_EQ(three.numel, 41);
  EXPECT_EQ(three.padded_numel, 48);  // multiple of 16 * 3
  EXPECT_EQ(three.shard_numel, 16);
  EXPECT_EQ(three.padding(), 7);
  ASSERT_EQ(three.entries.size(), 3u);
  EXPECT_EQ(three.entries[0].offset, 0);
  EXPECT_EQ(three.entries[1].offset, 1);
  EXPECT_EQ(three.entries[2].offset, 8);
  EXPECT_EQ(three.entries[2].numel, 33);
  EXPECT_EQ(three.entries[2].shape, (std::vector<int64_t>{3, 11}));
  EXPECT_EQ(three.index("c"), 2u);
  EXPECT_THROW(three.index("missing"), c10::Error);

  FlatLayout five(entries, 5, at::kBFloat16);
  EXPECT_EQ(five.padded_numel, 80);
  EXPECT_EQ(five.shard_numel, 16);
  FlatLayout one(entries, 1, at::kFloat);
  EXPECT_EQ(one.padded_numel, 48);
  EXPECT_EQ(one.shard_numel, 48);
  FlatLayout big({{"x", {100}}, {"y", {3}}}, 2, at::kFloat);
  EXPECT_EQ(big.padded_numel, 128);
  EXPECT_EQ(big.shard_numel, 64);
  for (int64_t n = 1; n <= 7; ++n) {
    FlatLayout l(entries, n, at::kFloat);
    EXPECT_EQ(l.shard_numel % FlatLayout::kAlignment, 0) << n;
    EXPECT_EQ(l.shard_numel * n, l.padded_numel) << n;
    EXPECT_GE(l.padded_numel, l.numel) << n;
    EXPECT_LT(l.padded_numel - l.numel, FlatLayout::kAlignment * n) << n;
  }
  EXPECT_THROW(FlatLayout({{"a", {1}}, {"a", {2}}}, 2, at::kFloat), c10::Error);
  EXPECT_THROW(FlatLayout(entries, 0, at::kFloat), c10::Error);
}

TEST(FlatParamGroup, GatherBindShowsOriginalValuesThroughModuleMembers) {
  auto comm = world().comm();
  Model m = make_model(/*trainable=*/false);
  FlatParamGroup g("unit.base", m.params, comm, at::kFloat, c10::kCPU);
  const FlatLayout& l = g.layout();
  EXPECT_EQ(l.numel, total_numel(m));
  EXPECT_EQ(l.shard_count, comm->size());
  EXPECT_FALSE(g.trainable());

  // After construction the full values are gone from the parameters, members included.
  EXPECT_EQ(m.linear->weight.numel(), 0);
  EXPECT_EQ(m.odd->w33.numel(), 0);
  EXPECT_EQ(m.linear->named_parameters()["weight"].numel(), 0);
  EXPECT_EQ(m.linear->weight.storage().nbytes(), 0u);
  EXPECT_FALSE(g.is_bound());
  FlatParamBytes b0 = g.bytes();
  EXPECT_EQ(b0.shard_param_bytes, 4 * l.shard_numel);
  EXPECT_EQ(b0.gathered_bytes, 0);
  EXPECT_EQ(b0.shard_grad_bytes, 0);
  EXPECT_EQ(b0.padding_elements, l.padded_numel - l.numel);

  for (int round = 0; round < 2; ++round) {  // binding twice must work the same
    WorkHandle work = g.gather();
    ASSERT_TRUE(work);
    EXPECT_TRUE(g.gather_pending());
    g.bind();
    EXPECT_TRUE(g.is_bound());
    EXPECT_FALSE(g.gather_pending());
    // The members the module computes with are the bound views.
    expect_equal(m.linear->weight, m.original["linear.weight"], "linear.weight");
    expect_equal(m.linear->bias, m.original["linear.bias"], "linear.bias");
    expect_equal(m.odd->w1, m.original["odd.w1"], "odd.w1");
    expect_equal(m.odd->w7, m.original["odd.w7"], "odd.w7");
    expect_equal(m.odd->w33, m.original["odd.w33"], "odd.w33");
    EXPECT_EQ(m.odd->w33.sizes(), (at::IntArrayRef{3, 11}));
    expect_equal(m.odd->named_parameters()["w33"], m.original["odd.w33"], "odd.w33 via the parameter dict");
    at::Tensor x = at::arange(10, at::kFloat).reshape({2, 5}) / 10;
    expect_close(m.linear->forward(x), at::linear(x, m.original["linear.weight"], m.original["linear.bias"]), 1e-6,
                 1e-6, "forward through bound weights");
    // One rank binds straight onto its shard (nothing to gather); more ranks hold the full buffer.
    EXPECT_EQ(g.bytes().gathered_bytes, comm->size() == 1 ? 0 : 4 * l.padded_numel);

    g.release();
    EXPECT_FALSE(g.is_bound());
    EXPECT_EQ(g.bytes().gathered_bytes, 0);
    EXPECT_EQ(m.linear->weight.numel(), 0);
    EXPECT_EQ(m.odd->w7.numel(), 0);
    EXPECT_EQ(m.linear->weight.storage().nbytes(), 0u);
  }
  // Misuse is refused rather than silently ignored.
  EXPECT_THROW(g.bind(), c10::Error);
  g.gather();
  EXPECT_THROW(g.gather(), c10::Error);
  g.release();  // waits for the gather in flight, then frees
  EXPECT_EQ(g.bytes().gathered_bytes, 0);
}

TEST(FlatParamGroup, GatherCastsToComputeDtypeAndUsesCallerBuffer) {
  auto comm = world().comm();
  Model m = make_model(false);
  FlatParamGroup g("unit.base.bf16", m.params, comm, at::kFloat, c10::kCPU, at::kBFloat16);
  EXPECT_EQ(g.storage_dtype(), at::kFloat);
  EXPECT_EQ(g.compute_dtype(), at::kBFloat16);
  EXPECT_EQ(m.linear->weight.scalar_type(), at::kBFloat16);  // placeholders already carry it

  at::Tensor buffer = at::full({g.layout().padded_numel + 5}, 7.0, at::kBFloat16);
  g.gather(buffer);
  g.bind();
  for (const auto& [name, p] : m.params)
    expect_equal(p, m.original[name].to(at::kBFloat16), name + " gathered as bf16");
  // The views live inside the caller's buffer.
  auto* lo = static_cast<char*>(buffer.data_ptr());
  auto* w = static_cast<char*>(m.linear->weight.data_ptr());
  EXPECT_TRUE(w >= lo && w < lo + buffer.nbytes());
  g.release();
  EXPECT_EQ(m.linear->weight.numel(), 0);
  // The shard stays fp32: exact values.
  expect_equal(g.full_tensor("odd.w33"), m.original["odd.w33"], "full_tensor keeps the storage dtype");
  EXPECT_THROW(g.gather(at::zeros({g.layout().padded_numel}, at::kFloat)), c10::Error);  // wrong dtype
}

TEST(FlatParamGroup, AssignWritesTheFullPrecisionValueIntoTheShards) {
  // An fp32 group whose modules held bf16 roundings takes exact fp16 values (what a bf16 model
  // loading an fp16 file hands over, and what the file holds); w33 spans shard boundaries at 2..4
  // ranks.
  auto comm = world().comm();
  Model m = make_model(true);
  FlatParamGroup g("unit.adapter", m.params, comm, at::kFloat, c10::kCPU, at::kBFloat16);
  const at::Tensor exact = m.original["odd.w33"].to(at::kHalf) / 3;  // [3, 11] not bf16-representable
  ASSERT_FALSE(at::equal(exact.to(at::kBFloat16).to(at::kFloat), exact.to(at::kFloat)));
  g.assign("odd.w33", exact);
  expect_equal(g.full_tensor("odd.w33"), exact.to(at::kFloat), "assigned parameter, exact in fp32");
  expect_equal(g.full_tensor("odd.w7"), m.original["odd.w7"], "neighbour before");
  expect_equal(g.full_tensor("linear.weight"), m.original["linear.weight"], "neighbour after");
  g.gather();
  g.bind();
  expect_equal(m.odd->w33, exact.to(at::kBFloat16), "gathered as bf16 from the assigned shard");
  EXPECT_THROW(g.assign("odd.w33", exact), c10::Error);  // bound: the copy would go stale
  g.release();
  EXPECT_THROW(g.assign("odd.w33", exact.t()), c10::Error);  // wrong shape
  EXPECT_THROW(g.assign("odd.nope", exact), c10::Error);
}

TEST(FlatParamGroup, ShardRangesCoverEveryElementOnce) {
  auto comm = world().comm();
  Model m = make_model(false);
  std::vector<at::Tensor> order;
  for (const auto& [name, p] : m.params) order.push_back(m.original[name]);
  FlatParamGroup g("unit.base", m.params, comm, at::kFloat, c10::kCPU);
  const FlatLayout& l = g.layout();
  EXPECT_EQ(g.local_shard().numel(), l.shard_numel);

  // The local shard is exactly this rank's slice of the padded concatenation.
  at::Tensor flat = padded_flat(order, l.padded_numel);
  expect_equal(g.local_shard(), flat.narrow(0, comm->rank() * l.shard_numel, l.shard_numel), "local shard");

  // Each range points at the right elements; counted over all ranks they cover each element once.
  at::Tensor covered = at::zeros({l.numel}, at::kLong);
  for (const ShardRange& r : g.shard_ranges()) {
    const auto& e = l.entries[l.index(r.name)];
    expect_equal(g.local_shard().narrow(0, r.shard_offset, r.numel),
                 m.original[r.name].reshape({-1}).narrow(0, r.param_offset, r.numel), "range of " + r.name);
    covered.narrow(0, e.offset + r.param_offset, r.numel).add_(1);
  }
  comm->all_reduce(covered)->wait();
  EXPECT_EQ(covered.min().item<int64_t>(), 1);
  EXPECT_EQ(covered.max().item<int64_t>(), 1);
  // Ranges of other ranks are computable locally (checkpoint planning) and agree.
  int64_t all = 0;
  for (int64_t r = 0; r < l.shard_count; ++r)
    for (const ShardRange& s : g.shard_ranges(r)) all += s.numel;
  EXPECT_EQ(all, l.numel);
  EXPECT_THROW(g.shard_ranges(l.shard_count), c10::Error);

  for (const auto& [name, t] : m.original) expect_equal(g.full_tensor(name), t, "full_tensor " + name);
  EXPECT_THROW(g.full_tensor("nope"), c10::Error);
}

// Per-rank gradient of parameter `i`: distinct across ranks and parameters.
at::Tensor rank_grad(const at::Tensor& like, int rank, int i, double scale = 1.0) {
  return (at::arange(like.numel(), at::kFloat).reshape(like.sizes()) * 0.01 * (i + 1) + rank * 0.5 - 0.3) * scale;
}

// Reference: every rank's flat padded gradient, all-gathered, reduced, then this rank's slice.
at::Tensor reference_shard(const at::Tensor& my_flat, const CommunicatorPtr& comm, ReduceOp op, int64_t shard_numel) {
  const int n = comm->size();
  at::Tensor all = at::empty({n * my_flat.numel()}, at::kFloat);
  comm->all_gather(all, my_flat.contiguous())->wait();
  at::Tensor reduced = all.reshape({n, my_flat.numel()}).sum(0);
  if (op == ReduceOp::kAvg) reduced = reduced / n;
  return reduced.narrow(0, comm->rank() * shard_numel, shard_numel);
}

TEST(FlatParamGroup, ReduceScatterGradsMatchesAllGatheredReference) {
  auto comm = world().comm();
  const int rank = comm->rank();
  Model m = make_model(/*trainable=*/true);
  FlatParamGroup g("unit.lora", m.params, comm, at::kFloat, c10::kCPU);
  ASSERT_TRUE(g.trainable());
  const FlatLayout& l = g.layout();

  for (ReduceOp op : {ReduceOp::kAvg, ReduceOp::kSum}) {
    g.zero_grad();
    std::vector<at::Tensor> mine;
    for (size_t i = 0; i < m.params.size(); ++i) {
      at::Tensor grad = rank_grad(m.original[m.params[i].first], rank, static_cast<int>(i));
      // odd.w7 has no gradient on rank 0: it must count as zeros there.
      if (m.params[i].first == "odd.w7" && rank == 0) grad = at::zeros_like(grad);
      else m.params[i].second.mutable_grad() = grad.clone();
      mine.push_back(grad);
    }
    WorkHandle work = g.reduce_scatter_grads(op);
    ASSERT_TRUE(work);
    // Parameter gradients are consumed by the call (the flat copy is what gets reduced).
    for (const auto& [name, p] : m.params) EXPECT_FALSE(p.grad().defined()) << name;
    // On one rank the contribution goes into the gradient shard at once: nothing pends.
    EXPECT_EQ(g.pending_reductions(), comm->size() > 1 ? 1u : 0u);
    g.finish();
    EXPECT_EQ(g.pending_reductions(), 0u);
    ASSERT_TRUE(g.grad_shard().defined());
    EXPECT_EQ(g.grad_shard().scalar_type(), at::kFloat);
    at::Tensor want = reference_shard(padded_flat(mine, l.padded_numel), comm, op, l.shard_numel);
    expect_close(g.grad_shard(), want, 1e-6, 1e-7, std::string("grad shard ") + to_string(op));
    EXPECT_EQ(g.bytes().shard_grad_bytes, 4 * l.shard_numel);
  }
  EXPECT_EQ(g.reduced_elements(), 2 * l.numel);
  EXPECT_EQ(g.reduce_calls(), 2);
  EXPECT_THROW(g.reduce_scatter_grads(ReduceOp::kMax), c10::Error);
}

TEST(FlatParamGroup, TwoReductionsAccumulateLikeOneOfTheSum) {
  auto comm = world().comm();
  const int rank = comm->rank();
  Model m = make_model(true);
  FlatParamGroup g("unit.lora", m.params, comm, at::kFloat, c10::kCPU);

  auto set_grads = [&](double scale) {
    for (size_t i = 0; i < m.params.size(); ++i)
      m.params[i].second.mutable_grad() = rank_grad(m.original[m.params[i].first], rank, static_cast<int>(i), scale);
  };
  // Two branches: both reduce-scatters in flight at once, then added.
  set_grads(1.0);
  g.reduce_scatter_grads(ReduceOp::kAvg);
  set_grads(-2.5);
  g.reduce_scatter_grads(ReduceOp::kAvg);
  EXPECT_EQ(g.pending_reductions(), comm->size() > 1 ? 2u : 0u);
  g.finish();
  at::Tensor accumulated = g.grad_shard().clone();

  g.zero_grad();
  EXPECT_FALSE(g.grad_shard().defined());
  EXPECT_EQ(g.bytes().shard_grad_bytes, 0);
  set_grads(1.0 - 2.5);
  g.reduce_scatter_grads(ReduceOp::kAvg);
  g.finish();
  expect_close(accumulated, g.grad_shard(), 1e-6, 1e-6, "RS(g1) + RS(g2) vs RS(g1 + g2)");
  // Not trivially zero.
  EXPECT_GT(global_abs_max(g.grad_shard(), comm), 0.1);

  EXPECT_EQ(g.reduced_elements(), 3 * g.layout().numel);
  EXPECT_EQ(g.reduce_calls(), 3);
}

TEST(FlatParamGroup, BackwardThroughBoundViewsThenReduceScatter) {
  auto comm = world().comm();
  const int rank = comm->rank(), n = comm->size();
  Model m = make_model(true);
  FlatParamGroup g("unit.lora", m.params, comm, at::kFloat, c10::kCPU);
  const FlatLayout& l = g.layout();

  // Rank r's batch; every rank can rebuild every other rank's batch, so the reference is local.
  auto batch = [](int r) { return at::arange(10, at::kFloat).reshape({2, 5}) * 0.1 + r; };
  g.gather();
  g.bind();
  at::Tensor loss = (m.linear->forward(batch(rank)).pow(2).sum() + (m.odd->w33 * m.odd->w7.sum()).sum() +
                     m.odd->w1.sum() * (rank + 1));
  loss.backward();
  g.release();  // gradients survive the release of the parameters' data
  EXPECT_EQ(m.linear->weight.grad().sizes(), (at::IntArrayRef{3, 5}));
  g.reduce_scatter_grads(ReduceOp::kSum);
  g.finish();

  // Reference: the same losses on full copies, summed over all ranks' batches.
  std::vector<at::Tensor> ref;
  std::map<std::string, at::Tensor> leaf;
  for (const auto& [name, p] : m.params) leaf[name] = m.original[name].clone().requires_grad_(true);
  for (int r = 0; r < n; ++r) {
    at::Tensor lr = at::linear(batch(r), leaf["linear.weight"], leaf["linear.bias"]).pow(2).sum() +
                    (leaf["odd.w33"] * leaf["odd.w7"].sum()).sum() + leaf["odd.w1"].sum() * (r + 1);
    lr.backward();
  }
  for (const auto& [name, p] : m.params) ref.push_back(leaf[name].grad());
  at::Tensor want = padded_flat(ref, l.padded_numel).narrow(0, rank * l.shard_numel, l.shard_numel);
  expect_close(g.grad_shard(), want, 1e-5, 1e-5, "summed gradient shard");
  EXPECT_GT(global_abs_max(want, comm), 0.5);
}

TEST(FlatParamGroup, FrozenGroupsRefuseReduction) {
  auto comm = world().comm();
  Model m = make_model(false);
  FlatParamGroup g("unit.base", m.params, comm, at::kFloat, c10::kCPU);
  EXPECT_THROW(g.reduce_scatter_grads(ReduceOp::kAvg), c10::Error);
  EXPECT_EQ(g.reduced_elements(), 0);
  EXPECT_EQ(g.reduce_calls(), 0);

  // Mixed roles in one group are refused.
  torch::manual_seed(0);
  std::vector<std::pair<std::string, at::Tensor>> mixed = {{"a", torch::randn({3}).requires_grad_(true)},
                                                           {"b", torch::randn({3})}};
  EXPECT_THROW(FlatParamGroup("mixed", mixed, comm, at::kFloat, c10::kCPU), c10::Error);
}

TEST(FlatParamGroup, DelayedRanksGiveTheSameResults) {
  auto comm = world().comm();
  const int rank = comm->rank();
  Model m = make_model(true);
  FlatParamGroup g("unit.lora", m.params, comm, at::kFloat, c10::kCPU);
  const FlatLayout& l = g.layout();
  // Ranks start their collectives at different times, and also sit on started collectives.
  g.set_debug_delay(std::chrono::milliseconds(25 * ((rank * 7) % 4)));
  for (int round = 0; round < 3; ++round) {
    g.gather();
    std::this_thread::sleep_for(std::chrono::milliseconds(10 * ((rank + round) % 3)));
    g.bind();
    for (const auto& [name, p] : m.params) expect_equal(p.detach(), m.original[name], "delayed gather " + name);
    g.release();

    g.zero_grad();  // each round checks one reduction, not the running sum
    std::vector<at::Tensor> mine;
    for (size_t i = 0; i < m.params.size(); ++i) {
      at::Tensor grad = rank_grad(m.original[m.params[i].first], rank, static_cast<int>(i), round + 1);
      m.params[i].second.mutable_grad() = grad.clone();
      mine.push_back(grad);
    }
    g.reduce_scatter_grads(ReduceOp::kAvg);
    std::this_thread::sleep_for(std::chrono::milliseconds(10 * ((rank + 2 * round) % 3)));
    g.finish();
    at::Tensor want = reference_shard(padded_flat(mine, l.padded_numel), comm, ReduceOp::kAvg, l.shard_numel);
    expect_close(g.grad_shard(), want, 1e-6, 1e-7, "delayed reduce-scatter round " + std::to_string(round));
  }
}

TEST(FlatParamGroup, ReplicatedModeKeepsEverythingLocal) {
  Model m = make_model(true);
  const uint64_t issued = world().comm()->issued();
  FlatParamGroup g("unit.replicated", m.params, nullptr, at::kFloat, c10::kCPU);
  const FlatLayout& l = g.layout();
  EXPECT_EQ(l.shard_count, 1);
  EXPECT_EQ(l.shard_numel, l.padded_numel);
  EXPECT_EQ(m.linear->weight.numel(), 0);
  WorkHandle work = g.gather();
  EXPECT_EQ(work->state(), WorkState::kDone);
  g.bind();
  for (const auto& [name, p] : m.params) expect_equal(p.detach(), m.original[name], "replicated " + name);
  EXPECT_EQ(g.bytes().gathered_bytes, 0);  // bound straight onto the local full buffer
  g.release();

  std::vector<at::Tensor> mine;
  for (size_t i = 0; i < m.params.size(); ++i) {
    mine.push_back(rank_grad(m.original[m.params[i].first], 3, static_cast<int>(i)));
    m.params[i].second.mutable_grad() = mine.back().clone();
  }
  g.reduce_scatter_grads(ReduceOp::kAvg);
  g.finish();
  expect_equal(g.grad_shard(), padded_flat(mine, l.padded_numel), "replicated gradient");
  for (const auto& [name, t] : m.original) expect_equal(g.full_tensor(name), t, "replicated full_tensor");
  EXPECT_EQ(world().comm()->issued(), issued);  // no collective at all
}

}  // namespace
}  // namespace lookahead::dist
