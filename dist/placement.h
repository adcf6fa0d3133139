// Where a sharded run keeps its frozen weights. A header of its own so that configuration code can
// name a placement without the engine's headers.
#pragma once

#include <string>

namespace lookahead::dist {

/// Where the frozen weights live: sharded across all ranks, sharded within each node and
/// replicated across nodes (inter-node traffic is then only the trainable gradients), or whole on
/// every rank. Trainable parameters are always sharded across all ranks.
enum class Placement { kFull, kNode, kReplicate };

/// "full" | "node" | "replicate"; TORCH_CHECKs naming the accepted names otherwise.
Placement placement_from_string(const std::string& name);
const char* to_string(Placement placement);

/// Ranks that share one copy of the frozen weights: the world, a node, or one rank.
int frozen_shard_ranks(Placement placement, int world_size, int ranks_per_node);

}  // namespace lookahead::dist
