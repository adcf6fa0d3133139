// Fault-injection probe for tests/dist/fault_test.sh: every rank runs a few all-reduces, then the
// last rank dies (SIGKILL) or stalls while the others enter another all-reduce (kill, stall), or
// run a sharded-engine unit whose weight gather the stalled rank never joins (engine: the engine
// is destroyed while the gather's timeout unwinds, and must not end the process without the
// report). The survivors must end with a timeout report naming the op, the rank and the history,
// within the configured time.
// Usage: dist_fault_probe kill|stall|engine TIMEOUT_S
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "dist/sharded_engine.h"
#include "dist/world.h"

using namespace lookahead;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s kill|stall|engine TIMEOUT_S\n", argv[0]);
    return 2;
  }
  std::string mode = argv[1];
  dist::WorldConfig config;
  config.comm.timeout_s = std::atof(argv[2]);
  config.abort_grace_s = 1.0;
  dist::World world(config, &argc, &argv);
  try {
    // One unit of 1000 frozen weights, sharded over every rank (no collective to build it).
    at::Tensor weight = at::randn({1000});
    dist::ShardingUnit unit{"unit", {{"weight", weight}}, {}, {}, {}};
    dist::ShardedEngine engine(world, {unit}, dist::EngineOptions());
    at::Tensor t = at::ones({1024}, at::kFloat);
    for (int i = 0; i < 3; ++i) world.comm()->all_reduce(t)->wait();
    if (world.rank() == world.size() - 1) {
      std::fprintf(stderr, "probe: rank %d %s\n", world.rank(), mode == "kill" ? "dies" : "stalls");
      std::fflush(stderr);
      if (mode == "kill") raise(SIGKILL);
      for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    if (mode == "engine") {
      auto fn = [&](const std::vector<at::Tensor>& in) { return std::vector<at::Tensor>{in[0] * weight}; };
      engine.run("unit", fn, {at::ones({1000})});
      std::fprintf(stderr, "probe: rank %d: the unit ran without the stalled rank's shard\n", world.rank());
      return 1;
    }
    world.comm()->all_reduce(t)->wait();
    std::fprintf(stderr, "probe: rank %d: all_reduce completed without the dead rank\n", world.rank());
    return 1;
  } catch (const dist::DistError& e) {
    world.abort(3, e.what());
  }
}
