// What the sharded engine sends over the network in one training step, by arithmetic: each unit's
// gathers and reduce-scatters (from a traced step's unit calls and the engine's rules for which
// call gathers), the bytes each collective moves under a named algorithm, and how much of that
// crosses between nodes when ranks fill nodes in order (OpenMPI's by-slot mapping, a SLURM block
// distribution). The dry run of `lookahead train` prints it; the simulated cluster's test checks it
// against the bytes its links carried.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "dist/memory_estimate.h"

namespace lookahead::dist {

/// Uses of one sharding unit in one training step.
struct UnitUse {
  int64_t forward_calls = 0;   ///< every call gathers its unit in forward
  int64_t backward_calls = 0;  ///< calls with a backward: a gather again (unless kept) and one reduce-scatter
};

/// How a collective moves data between ranks.
enum class CollectiveAlgorithm {
  /// Each rank sends (S-1) chunks of T/S to the next rank of a ring in rank order: NCCL's default,
  /// OpenMPI's for large messages (coll_tuned_allgather_algorithm 4, reduce_scatter_algorithm 3).
  kRing,
  /// Recursive doubling (all-gather) / recursive halving with distance doubling (reduce-scatter,
  /// OpenMPI's "butterfly"): log2(S) exchanges with the rank at distance 1, 2, 4, …; S and the
  /// ranks per node powers of two.
  kRecursive,
};

const char* to_string(CollectiveAlgorithm a);

enum class CollectiveKind { kAllGather, kReduceScatter };

/// Bytes one collective over a group sends, in total and across nodes.
struct CollectiveBytes {
  double sent_per_rank = 0;        ///< every rank sends the same amount
  double inter_node_per_node = 0;  ///< what each node sends to other nodes
};

/// A collective whose full (gathered, or reduced) buffer is `bytes`, over `group` ranks that fill
/// `group / per_node` nodes of `per_node` consecutive ranks each.
CollectiveBytes collective_bytes(CollectiveKind kind, CollectiveAlgorithm algorithm, double bytes, int64_t group,
                                 int64_t per_node);

/// How a run is laid out for communication.
struct TrafficLayout {
  /// World size, frozen shard count (placement), compute dtype bytes of a gathered unit, and the
  /// units that keep their activations (gathered once, from forward to backward).
  ShardingLayout sharding;
  int64_t ranks_per_node = 1;
  bool keep_gathered = false;  ///< every unit stays gathered from its forward to its last backward
  CollectiveAlgorithm all_gather = CollectiveAlgorithm::kRing;
  CollectiveAlgorithm reduce_scatter = CollectiveAlgorithm::kRing;
};

/// Bytes of one training step, per rank and per node.
struct StepTraffic {
  int64_t nodes = 1;
  int64_t gathers = 0;          ///< unit gathers that move data (a unit's groups together)
  int64_t reduce_scatters = 0;  ///< unit reduce-scatters that move data (a unit's trainable groups together)
  double gathered = 0;          ///< full buffer bytes of those gathers (what a rank ends up holding)
  double reduced = 0;           ///< full fp32 gradient bytes handed to reduce-scatters
  double all_gather_sent_per_rank = 0, reduce_scatter_sent_per_rank = 0;
  double all_gather_inter_node_per_node = 0, reduce_scatter_inter_node_per_node = 0;
  double sent_per_rank() const { return all_gather_sent_per_rank + reduce_scatter_sent_per_rank; }
  double inter_node_per_node() const { return all_gather_inter_node_per_node + reduce_scatter_inter_node_per_node; }
};

/// One gather and one gradient reduce-scatter of a unit: its frozen groups (base and LCM-LoRA,
/// over the placement's `frozen_shards` ranks, none for a replicated unit) and its trainable groups (over the world) as
/// collectives of their own. Groups over one rank move nothing (a zero buffer, group 1).
struct UnitCollectives {
  double frozen_gather = 0;                       ///< full buffer bytes of the frozen groups' all-gather
  double trainable_gather = 0;                    ///< of the trainable groups' all-gather (compute dtype)
  double reduce = 0;                              ///< full fp32 gradient bytes of the trainable groups' reduce-scatter
  int64_t frozen_group = 1, trainable_group = 1;  ///< ranks of each collective
  CollectiveBytes frozen_sent, trainable_sent, reduce_sent;
};
UnitCollectives unit_collectives(const UnitElements& unit, const TrafficLayout& layout);

/// The step's traffic from each unit's element counts and its uses. Collectives over one rank
/// move nothing; frozen groups go over `frozen_shards` ranks (within a node for `node`
/// placement), trainable groups over the world; gradients are reduced in fp32.
StepTraffic step_traffic(const std::vector<UnitElements>& units, const std::map<std::string, UnitUse>& uses,
                         const TrafficLayout& layout);

}  // namespace lookahead::dist
