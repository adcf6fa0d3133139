// Per-rank bytes of the sharded engine from element counts.
#include "dist/memory_estimate.h"

#include <algorithm>
#include <functional>

#include "dist/flat_param.h"

namespace lookahead::dist {

std::vector<UnitElements> count_elements(const std::vector<ShardingUnit>& units) {
  std::vector<UnitElements> out;
  for (const auto& u : units) {
    UnitElements e;
    e.name = u.name;
    for (auto [role, total] : {std::pair{&u.frozen, &e.frozen}, {&u.lcm, &e.lcm}, {&u.adapter, &e.adapter}, {&u.lora, &e.lora}})
      for (const auto& [k, t] : *role) *total += t.numel();
    out.push_back(e);
  }
  return out;
}

int64_t shard_elements(int64_t elements, int64_t shards) {
  if (elements == 0) return 0;
  const int64_t chunk = FlatLayout::kAlignment * shards;
  return (elements + chunk - 1) / chunk * FlatLayout::kAlignment;
}

GatheredElements gathered_elements(const UnitElements& u, const ShardingLayout& l) {
  const int64_t shards = l.frozen_shards_of(u.name);
  return {(shard_elements(u.frozen, shards) + shard_elements(u.lcm, shards)) * shards,
          (shard_elements(u.adapter, l.world_size) + shard_elements(u.lora, l.world_size)) * l.world_size};
}

double gathered_bytes(const UnitElements& u, const ShardingLayout& l) {
  const GatheredElements g = gathered_elements(u, l);
  const double frozen = l.frozen_shards_of(u.name) > 1 ? static_cast<double>(g.frozen) : 0.0;
  // fp32 masters computing in another dtype are copied even when whole on this rank.
  const double trainable = l.world_size > 1 || l.compute_bytes != 4 ? static_cast<double>(g.trainable) : 0.0;
  return (frozen + trainable) * l.compute_bytes;
}

HeldBytes held_bytes(const std::vector<UnitElements>& units, const ShardingLayout& l) {
  constexpr double kFp32 = 4;
  HeldBytes h;
  std::vector<double> gathered;
  for (const auto& u : units) {
    const int64_t shards = l.frozen_shards_of(u.name);
    h.frozen += static_cast<double>(shard_elements(u.frozen, shards)) * l.frozen_bytes;
    h.lcm += static_cast<double>(shard_elements(u.lcm, shards)) * l.frozen_bytes;
    const double shard = static_cast<double>(shard_elements(u.adapter, l.world_size) + shard_elements(u.lora, l.world_size));
    h.master += shard * kFp32;
    h.grads += shard * kFp32;
    h.adam += 2 * shard * kFp32;
    if (l.kept_units.contains(u.name))
      h.kept += gathered_bytes(u, l);
    else
      gathered.push_back(gathered_bytes(u, l));
  }
  std::sort(gathered.begin(), gathered.end(), std::greater<>());
  for (size_t i = 0; i < gathered.size() && static_cast<int64_t>(i) < l.ring_units; ++i) h.ring += gathered[i];
  return h;
}

}  // namespace lookahead::dist
