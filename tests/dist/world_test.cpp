// World: ranks, nodes, devices and the cross-rank consistency check, under mpiexec -n 1..4.
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "lookahead/build_config.h"
#include "tests/test_main.h"

namespace lookahead::dist {
namespace {

using test::world;

TEST(World, RanksAndNodesAreConsistent) {
  World& w = world();
  EXPECT_GE(w.size(), 1);
  EXPECT_GE(w.rank(), 0);
  EXPECT_LT(w.rank(), w.size());
  EXPECT_LT(w.local_rank(), w.local_size());
  EXPECT_LT(w.node_rank(), w.num_nodes());
  // Every rank counted once: local sizes summed over node leaders equal the world size.
  at::Tensor mine = at::tensor({static_cast<int64_t>(w.local_rank() == 0 ? w.local_size() : 0)}, at::kLong);
  w.comm()->all_reduce(mine)->wait();
  EXPECT_EQ(mine.item<int64_t>(), w.size());
  EXPECT_FALSE(w.hostname().empty());
  if (torch::cuda::is_available()) {
    // Bound to a GPU of its own node, by local rank.
    ASSERT_TRUE(w.device().is_cuda()) << w.device();
    EXPECT_EQ(w.device().index(), w.local_rank() % static_cast<int>(torch::cuda::device_count()));
  } else {
    EXPECT_TRUE(w.device().is_cpu()) << w.device();
  }
  EXPECT_NE(where().find("rank " + std::to_string(w.rank()) + " of " + std::to_string(w.size())),
            std::string::npos);
  EXPECT_NE(w.mpi_version().find("MPI"), std::string::npos);
}

TEST(World, ConsistencyCheckAcceptsEqualValues) {
  world().check_consistent("test config", hash_string("lr=1e-5 steps=100"));
}

TEST(World, ConsistencyCheckNamesTheRankThatDiffers) {
  World& w = world();
  if (w.size() < 2) GTEST_SKIP() << "needs 2+ ranks";
  std::string config = w.rank() == w.size() - 1 ? "lr=1e-4" : "lr=1e-5";
  try {
    w.check_consistent("training config", hash_string(config));
    ADD_FAILURE() << "ranks with different configs must not start";
  } catch (const DistError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kMismatch);
    std::string msg = e.what();
    EXPECT_NE(msg.find("training config differs across ranks"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rank " + std::to_string(w.size() - 1) + ": "), std::string::npos) << msg;
    EXPECT_NE(msg.find("<-- differs from rank 0"), std::string::npos) << msg;
    // Only the last rank differs from rank 0, so exactly one line is marked.
    size_t marks = 0;
    for (size_t p = msg.find("<-- differs"); p != std::string::npos; p = msg.find("<-- differs", p + 1)) ++marks;
    EXPECT_EQ(marks, 1u) << msg;
  }
}

TEST(World, CommForPicksTheBackendByDevice) {
  World& w = world();
  EXPECT_EQ(w.comm_for(c10::Device(c10::kCPU)).get(), w.comm().get());
  if (!w.device().is_cuda()) {
    EXPECT_THROW(w.nccl_comm(), DistError);  // no GPU to run NCCL on
    return;
  }
  if (!LA_HAVE_NCCL) {
    EXPECT_THROW(w.nccl_comm(), DistError);  // a GPU, but a build without NCCL
    return;
  }
  CommunicatorPtr nccl;
  try {
    nccl = w.nccl_comm();
  } catch (const DistError& e) {
    // The one refusal allowed: more ranks than GPUs on this node, named up front.
    EXPECT_GT(w.local_size(), static_cast<int>(torch::cuda::device_count())) << e.what();
    EXPECT_NE(std::string(e.what()).find("are all bound to GPU"), std::string::npos) << e.what();
    return;
  }
  EXPECT_STREQ(nccl->backend(), "nccl");
  EXPECT_EQ(w.comm_for(w.device()).get(), nccl.get());
  at::Tensor t = at::full({3}, static_cast<double>(w.rank() + 1), at::TensorOptions().dtype(at::kFloat).device(w.device()));
  nccl->all_reduce(t)->synchronize();
  EXPECT_EQ(t.cpu()[2].item<double>(), w.size() * (w.size() + 1) / 2.0);
}

TEST(World, WatchdogThreadRunsOnTheWorldsDevice) {
  // The polling thread selects the process's device: on a GPU node, otherwise its CUDA calls
  // (event queries, frees of held tensors) would create a context on GPU 0 for every rank.
  EXPECT_EQ(world().services()->watchdog->thread_device(), world().device());
}

TEST(World, SharedGpusAreNamedWithTheFix) {
  EXPECT_EQ(shared_gpu_problem({"0000:1B:00.0", "0000:1C:00.0"}, {"cuda:0", "cuda:1"}, 2), "");
  // One GPU visible per rank (CUDA_VISIBLE_DEVICES per rank): all are cuda:0, yet distinct.
  EXPECT_EQ(shared_gpu_problem({"0000:1B:00.0", "0000:1C:00.0", "0000:3D:00.0"}, {"cuda:0", "cuda:0", "cuda:0"}, 1),
            "");
  // Four ranks on two GPUs: 0 and 2 share one, 1 and 3 the other.
  const std::string p = shared_gpu_problem({"0000:1B:00.0", "0000:1C:00.0", "0000:1B:00.0", "0000:1C:00.0"},
                                           {"cuda:0", "cuda:1", "cuda:0", "cuda:1"}, 2);
  EXPECT_NE(p.find("local ranks 0 (cuda:0) and 2 (cuda:0) are all bound to GPU 0000:1B:00.0"), std::string::npos) << p;
  EXPECT_NE(p.find("local ranks 1 (cuda:1) and 3 (cuda:1) are all bound to GPU 0000:1C:00.0"), std::string::npos) << p;
  EXPECT_NE(p.find("this node has 4 ranks and each sees 2 GPU(s)"), std::string::npos) << p;
  EXPECT_NE(p.find("at most 2 rank(s) per node"), std::string::npos) << p;
  // Three on one.
  const std::string q = shared_gpu_problem({"A", "A", "A"}, {"cuda:0", "cuda:0", "cuda:0"}, 1);
  EXPECT_NE(q.find("local ranks 0 (cuda:0), 1 (cuda:0) and 2 (cuda:0) are all bound to GPU A"), std::string::npos) << q;
}

TEST(World, HashIsStable) {
  EXPECT_EQ(hash_string("abc"), hash_string("abc"));
  EXPECT_NE(hash_string("abc"), hash_string("abd"));
}

}  // namespace
}  // namespace lookahead::dist
