// Placement names and the shard count each implies.
#include "dist/placement.h"

#include <c10/util/Exception.h>

namespace lookahead::dist {

Placement placement_from_string(const std::string& name) {
  if (name == "full") return Placement::kFull;
  if (name == "node") return Placement::kNode;
  if (name == "replicate") return Placement::kReplicate;
  TORCH_CHECK(false, "unknown placement '", name, "' (expected full, node or replicate)");
}

const char* to_string(Placement placement) {
  switch (placement) {
    case Placement::kFull: return "full";
    case Placement::kNode: return "node";
    case Placement::kReplicate: return "replicate";
  }
  return "?";
}

int frozen_shard_ranks(Placement placement, int world_size, int ranks_per_node) {
  switch (placement) {
    case Placement::kFull: return world_size;
    case Placement::kNode: return ranks_per_node;
    case Placement::kReplicate: return 1;
  }
  return 1;
}

}  // namespace lookahead::dist
