// gtest main shared by every test binary: starts the World (MPI) before the tests and ends it
// after. Timeouts are short so that a test that diverges across ranks fails instead of hanging.
#include <gtest/gtest.h>

#include "tests/test_main.h"

namespace lookahead::test {

namespace {
dist::World* g_world = nullptr;
}

dist::World& world() {
  TORCH_INTERNAL_ASSERT(g_world, "the World is created in tests/test_main.cpp");
  return *g_world;
}

}  // namespace lookahead::test

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  lookahead::dist::WorldConfig config;
  config.comm.timeout_s = 120;
  config.abort_grace_s = 5;
  lookahead::dist::World world(config, &argc, &argv);
  lookahead::test::g_world = &world;
  int rc = RUN_ALL_TESTS();
  // A rank whose test failed must not leave the others waiting in MPI_Finalize's barrier forever
  // with a different view of what happened: agree on the outcome first.
  at::Tensor failed = at::tensor({static_cast<int64_t>(rc != 0)}, at::kLong);
  world.comm()->all_reduce(failed, lookahead::dist::ReduceOp::kMax)->wait();
  lookahead::test::g_world = nullptr;
  return failed.item<int64_t>() != 0 ? 1 : 0;
}
