// World: ranks, nodes, devices and the cross-rank consistency check, under mpiexec -n 1..4.
#include <gtest/gtest.h>

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
  EXPECT_TRUE(w.device().is_cpu());  // no GPU on the test machines
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
  EXPECT_EQ(world().comm_for(c10::Device(c10::kCPU)).get(), world().comm().get());
  EXPECT_THROW(world().nccl_comm(), DistError);  // no GPU here
}

TEST(World, HashIsStable) {
  EXPECT_EQ(hash_string("abc"), hash_string("abc"));
  EXPECT_NE(hash_string("abc"), hash_string("abd"));
}

}  // namespace
}  // namespace lookahead::dist
