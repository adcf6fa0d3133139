// Network bytes of a training step from element counts and unit uses.
#include "dist/traffic_estimate.h"

#include <c10/util/Exception.h>

#include <algorithm>

namespace lookahead::dist {
namespace {

bool power_of_two(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

}  // namespace

const char* to_string(CollectiveAlgorithm a) {
  switch (a) {
    case CollectiveAlgorithm::kRing: return "ring";
    case CollectiveAlgorithm::kRecursive: return "recursive";
  }
  return "?";
}

CollectiveBytes collective_bytes(CollectiveKind kind, CollectiveAlgorithm algorithm, double bytes, int64_t group,
                                 int64_t per_node) {
  TORCH_CHECK(group >= 1 && per_node >= 1, "collective_bytes: group ", group, " and ranks per node ", per_node,
              " must be positive");
  CollectiveBytes out;
  if (group == 1) return out;
  const int64_t local = std::min(group, per_node);
  TORCH_CHECK(group % local == 0, "collective_bytes: a group of ", group, " ranks does not fill nodes of ", local);
  const auto s = static_cast<double>(group), l = static_cast<double>(local);
  // Both algorithms send (S-1)/S of the buffer from every rank; they differ in where it goes.
  out.sent_per_rank = bytes * (s - 1) / s;
  if (local == group) return out;
  switch (algorithm) {
    case CollectiveAlgorithm::kRing:
      // Ranks in order: each node's last rank sends all its ring traffic to the next node.
      out.inter_node_per_node = bytes * (s - 1) / s;
      break;
    case CollectiveAlgorithm::kRecursive:
      TORCH_CHECK(power_of_two(group) && power_of_two(local),
                  "collective_bytes: the recursive algorithms need powers of "
                  "two (",
                  group, " ranks, ", local, " per node)");
      // Exchanges at distance d >= L cross nodes (d = L, 2L, …, S/2). All-gather: d·T/S each,
      // (S-L)/S·T a rank; reduce-scatter halves the vector as the distance doubles: T/2d each,
      // (1/L - 1/S)·T a rank. A node sends L times its rank's share.
      out.inter_node_per_node =
          kind == CollectiveKind::kAllGather ? l * bytes * (s - l) / s : l * bytes * (1.0 / l - 1.0 / s);
      break;
  }
  return out;
}

UnitCollectives unit_collectives(const UnitElements& unit, const TrafficLayout& layout) {
  const ShardingLayout& l = layout.sharding;
  const int64_t per_node = std::min(l.world_size, layout.ranks_per_node);
  constexpr double kFp32 = 4;
  const GatheredElements g = gathered_elements(unit, l);
  UnitCollectives c;
  if (l.frozen_shards_of(unit.name) > 1 && g.frozen > 0) {
    c.frozen_group = l.frozen_shards_of(unit.name);
    c.frozen_gather = static_cast<double>(g.frozen) * l.compute_bytes;
    c.frozen_sent = collective_bytes(CollectiveKind::kAllGather, layout.all_gather, c.frozen_gather, c.frozen_group,
                                     std::min(per_node, c.frozen_group));
  }
  if (l.world_size > 1 && g.trainable > 0) {
    c.trainable_group = l.world_size;
    c.trainable_gather = static_cast<double>(g.trainable) * l.compute_bytes;
    c.trainable_sent =
        collective_bytes(CollectiveKind::kAllGather, layout.all_gather, c.trainable_gather, l.world_size, per_node);
    c.reduce = static_cast<double>(g.trainable) * kFp32;
    c.reduce_sent =
        collective_bytes(CollectiveKind::kReduceScatter, layout.reduce_scatter, c.reduce, l.world_size, per_node);
  }
  return c;
}

StepTraffic step_traffic(const std::vector<UnitElements>& units, const std::map<std::string, UnitUse>& uses,
                         const TrafficLayout& layout) {
  const ShardingLayout& l = layout.sharding;
  const int64_t per_node = std::min(l.world_size, layout.ranks_per_node);
  TORCH_CHECK(l.world_size >= 1 && per_node >= 1 && l.world_size % per_node == 0, "step_traffic: ", l.world_size,
              " ranks do not fill nodes of ", layout.ranks_per_node);
  StepTraffic t;
  t.nodes = l.world_size / per_node;
  for (const auto& u : units) {
    const auto it = uses.find(u.name);
    if (it == uses.end()) continue;
    const UnitUse& use = it->second;
    const bool once = layout.keep_gathered || l.kept_units.contains(u.name);
    const auto gathers = static_cast<double>(use.forward_calls + (once ? 0 : use.backward_calls));
    const auto reductions = static_cast<double>(use.backward_calls);
    const UnitCollectives c = unit_collectives(u, layout);
    if (c.frozen_gather + c.trainable_gather > 0) {
      t.gathers += static_cast<int64_t>(gathers);
      t.gathered += gathers * (c.frozen_gather + c.trainable_gather);
      t.all_gather_sent_per_rank += gathers * (c.frozen_sent.sent_per_rank + c.trainable_sent.sent_per_rank);
      t.all_gather_inter_node_per_node +=
          gathers * (c.frozen_sent.inter_node_per_node + c.trainable_sent.inter_node_per_node);
    }
    if (c.reduce > 0) {
      t.reduce_scatters += use.backward_calls;
      t.reduced += reductions * c.reduce;
      t.reduce_scatter_sent_per_rank += reductions * c.reduce_sent.sent_per_rank;
      t.reduce_scatter_inter_node_per_node += reductions * c.reduce_sent.inter_node_per_node;
    }
  }
  return t;
}

}  // namespace lookahead::dist
