// ShardedAdamW under mpiexec -n 1..4 (MPI backend, CPU): ten steps of a small problem trained
// sharded (each rank its part of the global batch) against torch::optim::AdamW on the full batch,
// optimizer memory per rank, padding, bf16 storage and state round trips.
#include <gtest/gtest.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include "dist/sharded_adamw.h"
#include "tests/tensor_expect.h"
#include "tests/test_main.h"

namespace lookahead::dist {
namespace {

using test::expect_close;
using test::world;

using Named = std::vector<std::pair<std::string, at::Tensor>>;

// The problem: a frozen projection F, then two trainable heads in two lr groups.
//   h = x F^T;  loss = mean_i ( |W h_i + b - t_i|^2 + 0.5 |U h_i - s_i|^2 )
// Sizes are awkward (18 and 35 trainable elements) so that 3 and 4 ranks get padded shards.
struct Problem {
  static constexpr int64_t kBatch = 12;  // divisible by 1, 2, 3, 4
  at::Tensor F, W, b, U;                 // initial values
  at::Tensor x, t, s;                    // global batch

  Problem() {
    torch::manual_seed(42);
    F = torch::randn({5, 5}) * 0.5 + torch::eye(5);
    W = torch::randn({3, 5}) * 0.3;
    b = torch::randn({3}) * 0.1;
    U = torch::randn({7, 5}) * 0.3;
    x = torch::randn({kBatch, 5});
    t = torch::randn({kBatch, 3});
    s = torch::randn({kBatch, 7}) * 2;
  }

  static at::Tensor loss(const at::Tensor& F, const at::Tensor& W, const at::Tensor& b, const at::Tensor& U,
                         const at::Tensor& x, const at::Tensor& t, const at::Tensor& s) {
    at::Tensor h = at::linear(x, F);
    return ((at::linear(h, W, b) - t).pow(2).sum(1) + 0.5 * (at::linear(h, U) - s).pow(2).sum(1)).mean();
  }
};

constexpr double kMaxNormActive = 0.5;  // below the gradient norms of this problem: clips
constexpr double kMaxNormIdle = 1e6;

double max_norm_for(int step) { return step % 3 == 1 ? kMaxNormIdle : kMaxNormActive; }

TEST(ShardedAdamW, MatchesTorchAdamWOnTheFullBatch) {
  auto comm = world().comm();
  const int rank = comm->rank(), n = comm->size();
  Problem p;
  const AdamWOptions adam{0.9, 0.99, 1e-8};
  const AdamWGroupOptions heads{"heads", 0.05, 0.1}, aux{"aux", 0.02, 0.03};

  // --- sharded ---
  at::Tensor F = p.F.clone(), W = p.W.clone().requires_grad_(true), b = p.b.clone().requires_grad_(true),
             U = p.U.clone().requires_grad_(true);
  FlatParamGroup frozen("base", Named{{"F", F}}, comm, at::kFloat, c10::kCPU);
  auto g_heads = std::make_shared<FlatParamGroup>("heads", Named{{"W", W}, {"b", b}}, comm, at::kFloat, c10::kCPU);
  auto g_aux = std::make_shared<FlatParamGroup>("aux", Named{{"U", U}}, comm, at::kFloat, c10::kCPU);
  ShardedAdamW opt({heads, aux}, adam);
  opt.add(g_heads, "heads");
  opt.add(g_aux, "aux");
  EXPECT_THROW(opt.add(g_aux, "aux"), c10::Error);
  EXPECT_THROW(opt.add(g_heads, "nope"), c10::Error);

  // --- reference: torch's AdamW, two param groups, full batch, one process ---
  at::Tensor rW = p.W.clone().requires_grad_(true), rb = p.b.clone().requires_grad_(true),
             rU = p.U.clone().requires_grad_(true);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  auto options = [&](const AdamWGroupOptions& g) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(g.lr).betas({adam.beta1, adam.beta2}).eps(adam.eps).weight_decay(g.weight_decay));
  };
  groups.emplace_back(std::vector<at::Tensor>{rW, rb}, options(heads));
  groups.emplace_back(std::vector<at::Tensor>{rU}, options(aux));
  torch::optim::AdamW ref(groups, torch::optim::AdamWOptions(1e-3));

  const int64_t per_rank = Problem::kBatch / n;
  int clipped = 0;
  for (int step = 0; step < 10; ++step) {
    // Sharded: gather, this rank's part of the batch, backward, release, reduce-scatter (avg of
    // equal-sized per-rank means = the global mean).
    for (FlatParamGroup* g : {&frozen, g_heads.get(), g_aux.get()}) g->gather();
    for (FlatParamGroup* g : {&frozen, g_heads.get(), g_aux.get()}) g->bind();
    auto part = [&](const at::Tensor& a) { return a.narrow(0, rank * per_rank, per_rank); };
    at::Tensor loss = Problem::loss(F, W, b, U, part(p.x), part(p.t), part(p.s));
    loss.backward();
    for (FlatParamGroup* g : {&frozen, g_heads.get(), g_aux.get()}) g->release();
    g_heads->reduce_scatter_grads(ReduceOp::kAvg);
    g_aux->reduce_scatter_grads(ReduceOp::kAvg);
    const double norm = opt.clip_grad_norm(max_norm_for(step), comm);
    opt.step();
    opt.zero_grad();

    // Reference on the full batch.
    ref.zero_grad();
    Problem::loss(p.F, rW, rb, rU, p.x, p.t, p.s).backward();
    const double ref_norm = torch::nn::utils::clip_grad_norm_(std::vector<at::Tensor>{rW, rb, rU}, max_norm_for(step));
    ref.step();

    EXPECT_NEAR(norm, ref_norm, 1e-6 * ref_norm) << "step " << step;
    if (ref_norm > max_norm_for(step)) ++clipped;
  }
  // Clipping was active in some steps and idle in others (both paths compared).
  EXPECT_GE(clipped, 3);
  EXPECT_LT(clipped, 10);

  // Every rank holds the same updated parameters as the reference, to 1e-6 relative.
  expect_close(g_heads->full_tensor("W"), rW, 1e-6, 1e-7, "W");
  expect_close(g_heads->full_tensor("b"), rb, 1e-6, 1e-7, "b");
  expect_close(g_aux->full_tensor("U"), rU, 1e-6, 1e-7, "U");
  // They moved far beyond the tolerance (the comparison is not vacuous).
  EXPECT_GT((rW - p.W).abs().max().item<double>(), 0.1);
  EXPECT_GT((rU - p.U).abs().max().item<double>(), 0.05);
  // The frozen weight is untouched and was never reduced.
  EXPECT_EQ(frozen.reduced_elements(), 0);
  EXPECT_TRUE(frozen.full_tensor("F").equal(p.F));
  EXPECT_EQ(g_heads->reduced_elements(), 10 * 18);
  EXPECT_EQ(g_aux->reduced_elements(), 10 * 35);

  // Padding elements stayed zero everywhere: shard, master and both moments.
  for (const auto& st : opt.state()) {
    const FlatParamGroup& g = st.group == "heads" ? *g_heads : *g_aux;
    const FlatLayout& l = g.layout();
    const int64_t begin = rank * l.shard_numel;
    const int64_t valid = std::clamp<int64_t>(l.numel - begin, 0, l.shard_numel);
    for (const at::Tensor& t : {g.local_shard(), st.master, st.exp_avg, st.exp_avg_sq})
      EXPECT_EQ(t.narrow(0, valid, l.shard_numel - valid).abs().sum().item<double>(), 0.0) << st.group;
    EXPECT_EQ(st.step, 10);
  }
  EXPECT_EQ(opt.step_count(), 10);
}

TEST(ShardedAdamW, StateBytesAreThreeFp32CopiesOfTheShard) {
  auto comm = world().comm();
  const int64_t n = comm->size();
  torch::manual_seed(7);
  at::Tensor a = torch::randn({33}).requires_grad_(true), b = torch::randn({7}).requires_grad_(true),
             c = torch::randn({1000}).requires_grad_(true);
  auto g1 = std::make_shared<FlatParamGroup>("g1", Named{{"a", a}, {"b", b}}, comm, at::kFloat, c10::kCPU);
  auto g2 = std::make_shared<FlatParamGroup>("g2", Named{{"c", c}}, comm, at::kFloat, c10::kCPU);
  auto round_up = [&](int64_t v) { return (v + 16 * n - 1) / (16 * n) * (16 * n); };
  EXPECT_EQ(g1->layout().shard_numel, round_up(40) / n);
  EXPECT_EQ(g2->layout().shard_numel, round_up(1000) / n);
  EXPECT_EQ(g1->local_shard().numel(), g1->layout().shard_numel);

  ShardedAdamW opt({{"x", 1e-3, 0.0}, {"y", 1e-4, 0.01}});
  EXPECT_EQ(opt.state_bytes(), 0);
  opt.add(g1, "x");
  opt.add(g2, "y");
  EXPECT_EQ(opt.state_bytes(), 3 * 4 * (g1->layout().shard_numel + g2->layout().shard_numel));
  // With more than one rank that is a fraction of the unsharded 3 * 4 * 1040 bytes.
  if (n > 1) {
    EXPECT_LT(opt.state_bytes(), 3 * 4 * 1040);
  }

  // Frozen groups get no optimizer state.
  auto frozen = std::make_shared<FlatParamGroup>("f", Named{{"f", torch::randn({5})}}, comm, at::kFloat, c10::kCPU);
  EXPECT_THROW(opt.add(frozen, "x"), c10::Error);
  // Groups without a gradient skip the step, like torch parameters whose grad is None.
  at::Tensor before = g1->local_shard().clone();
  opt.step();
  EXPECT_TRUE(g1->local_shard().equal(before));
  EXPECT_EQ(opt.state()[0].step, 0);
  EXPECT_EQ(opt.step_count(), 1);
}

TEST(ShardedAdamW, Bf16StorageKeepsAnFp32Master) {
  auto comm = world().comm();
  const int rank = comm->rank();
  torch::manual_seed(3);
  at::Tensor init = torch::randn({37});
  at::Tensor w = init.clone().requires_grad_(true);
  auto g = std::make_shared<FlatParamGroup>("bf", Named{{"w", w}}, comm, at::kBFloat16, c10::kCPU, at::kFloat);
  EXPECT_EQ(g->local_shard().scalar_type(), at::kBFloat16);
  ShardedAdamW opt({{"only", 1e-3, 0.0}});
  opt.add(g, "only");
  const auto st = opt.state();
  ASSERT_EQ(st.size(), 1u);
  EXPECT_EQ(st[0].master.scalar_type(), at::kFloat);
  EXPECT_FALSE(st[0].master.is_same(g->local_shard()));
  EXPECT_EQ(opt.state_bytes(), 3 * 4 * g->layout().shard_numel);

  // A step far smaller than bf16's resolution: the master moves, the cast shard follows it.
  for (int i = 0; i < 3; ++i) {
    w.mutable_grad() = at::full({37}, 1.0 + rank);
    g->reduce_scatter_grads(ReduceOp::kAvg);
    opt.step();
    opt.zero_grad();
  }
  const at::Tensor master = opt.state()[0].master;  // state() returns by value
  EXPECT_TRUE(g->local_shard().equal(master.to(at::kBFloat16)));
  // The fp32 master carries the small updates that bf16 rounding would have lost: each of the
  // three steps moved every valid element by lr (Adam's normalized step with a constant gradient).
  const int64_t begin = rank * g->layout().shard_numel;
  const int64_t valid = std::clamp<int64_t>(37 - begin, 0, g->layout().shard_numel);
  if (valid > 0) {
    at::Tensor start = init.to(at::kBFloat16).to(at::kFloat).narrow(0, begin, valid);
    expect_close(master.narrow(0, 0, valid), start - 3e-3, 1e-6, 1e-6, "fp32 master after 3 steps");
  }
}

TEST(ShardedAdamW, LoadStateResumesExactly) {
  auto comm = world().comm();
  const int rank = comm->rank();
  auto run = [&](ShardedAdamW& opt, FlatParamGroup& g, at::Tensor& w, int from, int to) {
    for (int i = from; i < to; ++i) {
      w.mutable_grad() = at::sin(at::arange(50, at::kFloat) * (i + 1) + rank);
      g.reduce_scatter_grads(ReduceOp::kAvg);
      opt.clip_grad_norm(1.0, comm);
      opt.step();
      opt.zero_grad();
    }
  };
  torch::manual_seed(11);
  at::Tensor init = torch::randn({50});
  const AdamWGroupOptions hp{"g", 1e-2, 0.05};

  at::Tensor w1 = init.clone().requires_grad_(true);
  auto g1 = std::make_shared<FlatParamGroup>("w", Named{{"w", w1}}, comm, at::kFloat, c10::kCPU);
  ShardedAdamW straight({hp});
  straight.add(g1, "g");
  run(straight, *g1, w1, 0, 4);
  // Snapshot (copies: state() returns the live tensors).
  std::vector<ShardedAdamWGroupState> saved = straight.state();
  for (auto& s : saved) {
    s.master = s.master.clone();
    s.exp_avg = s.exp_avg.clone();
    s.exp_avg_sq = s.exp_avg_sq.clone();
  }
  const int64_t saved_steps = straight.step_count();
  run(straight, *g1, w1, 4, 8);

  at::Tensor w2 = torch::zeros({50}).requires_grad_(true);  // different values: load must overwrite
  auto g2 = std::make_shared<FlatParamGroup>("w", Named{{"w", w2}}, comm, at::kFloat, c10::kCPU);
  ShardedAdamW resumed({hp});
  resumed.add(g2, "g");
  resumed.load_state(saved_steps, saved);
  EXPECT_EQ(resumed.step_count(), 4);
  EXPECT_EQ(resumed.state()[0].step, 4);
  EXPECT_TRUE(g2->local_shard().equal(saved[0].master));
  run(resumed, *g2, w2, 4, 8);
  EXPECT_TRUE(g2->local_shard().equal(g1->local_shard()));
  EXPECT_TRUE(resumed.state()[0].exp_avg_sq.equal(straight.state()[0].exp_avg_sq));

  // A state of the wrong shape is refused and leaves the optimizer untouched.
  auto bad = saved;
  bad[0].master = at::zeros({bad[0].master.numel() + 1});
  at::Tensor before = g2->local_shard().clone();
  EXPECT_THROW(resumed.load_state(0, bad), c10::Error);
  EXPECT_TRUE(g2->local_shard().equal(before));
  EXPECT_EQ(resumed.step_count(), 8);
}

}  // namespace
}  // namespace lookahead::dist
