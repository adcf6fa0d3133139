// The traffic model's arithmetic against a simulation of each algorithm's exchanges, message by
// message, and its per-unit accounting on a toy model.
#include <gtest/gtest.h>

#include <vector>

#include "dist/traffic_estimate.h"

namespace lookahead::dist {
namespace {

/// Bytes crossing between nodes (ranks filling nodes of `l` in order) summed over a schedule of
/// (sender, receiver, bytes) messages, divided by the node count: what one node sends.
struct Simulated {
  double per_rank = 0, inter_per_node = 0;
};

Simulated simulate(CollectiveKind kind, CollectiveAlgorithm algorithm, double t, int64_t s, int64_t l) {
  double total = 0, inter = 0;
  auto send = [&](int64_t from, int64_t to, double bytes) {
    total += bytes;
    if (from / l != to / l) inter += bytes;
  };
  const double chunk = t / static_cast<double>(s);
  if (algorithm == CollectiveAlgorithm::kRing) {
    for (int64_t step = 0; step + 1 < s; ++step)
      for (int64_t r = 0; r < s; ++r) send(r, (r + 1) % s, chunk);
  } else if (kind == CollectiveKind::kAllGather) {
    // Recursive doubling: at distance d every rank sends the d chunks it holds to rank ^ d.
    for (int64_t d = 1; d < s; d *= 2)
      for (int64_t r = 0; r < s; ++r) send(r, r ^ d, chunk * static_cast<double>(d));
  } else {
    // Vector halving, distance doubling: at distance d every rank sends half of what it still reduces.
    double part = t / 2;
    for (int64_t d = 1; d < s; d *= 2, part /= 2)
      for (int64_t r = 0; r < s; ++r) send(r, r ^ d, part);
  }
  const int64_t nodes = s / l;
  return {total / static_cast<double>(s), inter / static_cast<double>(nodes)};
}

TEST(TrafficEstimate, CollectiveBytesMatchTheSimulatedExchanges) {
  const double t = 3.0 * (1 << 20);
  for (auto kind : {CollectiveKind::kAllGather, CollectiveKind::kReduceScatter})
    for (auto algorithm : {CollectiveAlgorithm::kRing, CollectiveAlgorithm::kRecursive})
      for (int64_t s : {2, 4, 8, 16, 32})
        for (int64_t l : {1, 2, 4, 8}) {
          if (l > s) continue;
          const CollectiveBytes b = collective_bytes(kind, algorithm, t, s, l);
          const Simulated sim = simulate(kind, algorithm, t, s, l);
          SCOPED_TRACE(std::string(to_string(algorithm)) +
                       (kind == CollectiveKind::kAllGather ? " all-gather" : " reduce-scatter") + ", " +
                       std::to_string(s) + " ranks, " + std::to_string(l) + " per node");
          EXPECT_NEAR(b.sent_per_rank, sim.per_rank, 1e-6 * t);
          EXPECT_NEAR(b.inter_node_per_node, sim.inter_per_node, 1e-6 * t);
        }
}

TEST(TrafficEstimate, OpenMpiMeasurementsOnTwoNodes) {
  // Bytes node 0 sent per collective on the simulated cluster (2 nodes x 2 ranks, 64 MiB buffers,
  // link counters), OpenMPI 4.1 with the algorithm pinned: ring 0.753 T (all-gather) and 0.751 T
  // (reduce-scatter), recursive doubling 1.001 T, butterfly reduce-scatter 0.509 T.
  const double t = 1;
  EXPECT_NEAR(collective_bytes(CollectiveKind::kAllGather, CollectiveAlgorithm::kRing, t, 4, 2).inter_node_per_node,
              0.753, 0.01);
  EXPECT_NEAR(collective_bytes(CollectiveKind::kReduceScatter, CollectiveAlgorithm::kRing, t, 4, 2).inter_node_per_node,
              0.751, 0.01);
  EXPECT_NEAR(
      collective_bytes(CollectiveKind::kAllGather, CollectiveAlgorithm::kRecursive, t, 4, 2).inter_node_per_node, 1.001,
      0.01);
  EXPECT_NEAR(
      collective_bytes(CollectiveKind::kReduceScatter, CollectiveAlgorithm::kRecursive, t, 4, 2).inter_node_per_node,
      0.509, 0.01);
}

TEST(TrafficEstimate, RefusesWhatItCannotModel) {
  EXPECT_THROW(collective_bytes(CollectiveKind::kAllGather, CollectiveAlgorithm::kRing, 1, 6, 4), c10::Error);
  EXPECT_THROW(collective_bytes(CollectiveKind::kAllGather, CollectiveAlgorithm::kRecursive, 1, 12, 4), c10::Error);
  EXPECT_EQ(collective_bytes(CollectiveKind::kAllGather, CollectiveAlgorithm::kRing, 1, 1, 8).sent_per_rank, 0);
}

TEST(TrafficEstimate, StepTrafficFollowsTheEngineRules) {
  // Element counts that are multiples of every shard alignment, so no padding enters.
  const int64_t a = shard_elements(1, 1) * 64;
  std::vector<UnitElements> units = {{"block", 4 * a, a, 0, a / 2}, {"head", 2 * a, 0, a, 0}, {"unused", a, 0, 0, 0}};
  std::map<std::string, UnitUse> uses = {{"block", {3, 2}}, {"head", {1, 1}}};
  TrafficLayout l;
  l.sharding.world_size = 4;
  l.ranks_per_node = 2;
  l.sharding.frozen_shards = 4;
  l.sharding.compute_bytes = 2;
  const StepTraffic full = step_traffic(units, uses, l);
  // block: 3 forward + 2 backward gathers of 5a frozen-and-LCM and a/2 LoRA elements; head: 2 of 2a + a.
  EXPECT_EQ(full.gathers, 5 + 2);
  EXPECT_DOUBLE_EQ(full.gathered, 2.0 * (5 * 5.5 * a + 2 * 3.0 * a));
  EXPECT_EQ(full.reduce_scatters, 2 + 1);
  EXPECT_DOUBLE_EQ(full.reduced, 4.0 * (2 * 0.5 * a + 1.0 * a));
  EXPECT_DOUBLE_EQ(full.all_gather_sent_per_rank, 0.75 * full.gathered);
  EXPECT_DOUBLE_EQ(full.inter_node_per_node(), 0.75 * (full.gathered + full.reduced));

  l.sharding.frozen_shards = 2;  // node: frozen gathers stay within the node
  const StepTraffic node = step_traffic(units, uses, l);
  EXPECT_DOUBLE_EQ(node.all_gather_inter_node_per_node, 0.75 * 2.0 * (5 * 0.5 * a + 2 * 1.0 * a));
  EXPECT_DOUBLE_EQ(node.all_gather_sent_per_rank,
                   0.5 * 2.0 * (5 * 5.0 * a + 2 * 2.0 * a) + 0.75 * 2.0 * (5 * 0.5 * a + 2 * 1.0 * a));

  l.sharding.frozen_shards = 4;  // full, the head replicated: only its trainables move; it holds its whole copy
  l.sharding.replicated_units = {"head"};
  const StepTraffic whole_head = step_traffic(units, uses, l);
  EXPECT_DOUBLE_EQ(whole_head.gathered, 2.0 * (5 * 5.5 * a + 2 * 1.0 * a));
  EXPECT_DOUBLE_EQ(unit_collectives(units[1], l).frozen_gather, 0);
  EXPECT_EQ(unit_collectives(units[1], l).frozen_group, 1);
  const HeldBytes held = held_bytes(units, l.sharding), held_all_sharded = [&] {
    ShardingLayout s = l.sharding;
    s.replicated_units.clear();
    return held_bytes(units, s);
  }();
  EXPECT_DOUBLE_EQ(held.frozen - held_all_sharded.frozen, l.sharding.frozen_bytes * 0.75 * static_cast<double>(2 * a));
  l.sharding.replicated_units.clear();

  l.sharding.frozen_shards = 1;  // replicate: no frozen traffic; a kept unit gathers once
  l.sharding.kept_units = {"block"};
  const StepTraffic kept = step_traffic(units, uses, l);
  EXPECT_EQ(kept.gathers, 3 + 2);
  EXPECT_DOUBLE_EQ(kept.gathered, 2.0 * (3 * 0.5 * a + 2 * 1.0 * a));

  l.sharding.world_size = 1;
  l.ranks_per_node = 1;
  const StepTraffic one = step_traffic(units, uses, l);
  EXPECT_EQ(one.sent_per_rank(), 0);
  EXPECT_EQ(one.gathers, 0);
}

}  // namespace
}  // namespace lookahead::dist
