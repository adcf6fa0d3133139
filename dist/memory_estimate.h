// What the sharded engine holds per rank, by arithmetic: weight shards, fp32 masters, gradients,
// AdamW moments and the gather ring, from each sharding unit's element counts. The dry run of
// `lookahead train` and bench/sdxl_memory_model both report it; activations are not modelled.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "dist/unit_runner.h"

namespace lookahead::dist {

/// Elements of one sharding unit per role.
struct UnitElements {
  std::string name;
  int64_t frozen = 0, lcm = 0, adapter = 0, lora = 0;
  int64_t trainable() const { return adapter + lora; }
  int64_t total() const { return frozen + lcm + adapter + lora; }
};

/// Element counts of `units` (tensors may live on the meta device).
std::vector<UnitElements> count_elements(const std::vector<ShardingUnit>& units);

/// Elements of one shard of a group of `elements` over `shards` ranks, padded as FlatLayout pads.
int64_t shard_elements(int64_t elements, int64_t shards);

/// How a run is laid out.
struct ShardingLayout {
  int64_t world_size = 1;       ///< trainables are sharded over every rank
  int64_t frozen_shards = 1;    ///< ranks sharing one copy of the frozen weights (placement)
  double frozen_bytes = 4;      ///< bytes per frozen element (2: bf16)
  double compute_bytes = 4;     ///< bytes per element of a gathered unit (the compute dtype)
  int64_t ring_units = 2;       ///< units gathered at once (max_gathered_units)
  /// Units that keep their activations (dist.recompute): gathered from their forward until their
  /// backward, all at once, outside the ring.
  std::set<std::string> kept_units;
  /// Units whose frozen weights are whole on every rank (dist.replicate_units).
  std::set<std::string> replicated_units;
  /// Ranks sharing one copy of `unit`'s frozen weights.
  int64_t frozen_shards_of(const std::string& unit) const {
    return replicated_units.contains(unit) ? 1 : frozen_shards;
  }
};

/// Bytes one rank holds.
struct HeldBytes {
  double frozen = 0;   ///< frozen base weight shard
  double lcm = 0;      ///< frozen adapter (LCM-LoRA) shard
  double master = 0;   ///< fp32 trainable shard
  double grads = 0;    ///< fp32 gradient shard
  double adam = 0;     ///< two fp32 moments
  double ring = 0;     ///< the `ring_units` largest recomputed units' full buffers, of the roles really gathered
  double kept = 0;     ///< every kept unit's full buffers (held from its forward to its backward)
  double total() const { return frozen + lcm + master + grads + adam + ring + kept; }
};

/// Padded elements of `unit`'s groups in their gathered (full) buffers: frozen and LCM-LoRA groups
/// sharded over `frozen_shards` ranks, trainable groups over the world.
struct GatheredElements {
  int64_t frozen = 0;
  int64_t trainable = 0;
};
GatheredElements gathered_elements(const UnitElements& unit, const ShardingLayout& layout);

/// Full (padded) buffer bytes of `unit` while gathered: roles sharded over more than one rank,
/// and trainables whose compute dtype is not their fp32 master's (a whole frozen copy in its
/// compute dtype is used in place).
double gathered_bytes(const UnitElements& unit, const ShardingLayout& layout);

HeldBytes held_bytes(const std::vector<UnitElements>& units, const ShardingLayout& layout);

}  // namespace lookahead::dist
