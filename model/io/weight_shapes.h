// The shapes of a weight file read from its header alone: what a configuration check needs to
// refuse a file before gigabytes are loaded (trainer/weight_check.h).
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lookahead::model::io {

/// One tensor as its file's header describes it.
struct WeightShape {
  std::string name;
  at::ScalarType dtype = at::kFloat;
  std::vector<int64_t> shape;
  std::string file;  ///< the file that holds it: the path given, or a shard of a sharded checkpoint
};

/// A weight file's tensors (file order; a sharded checkpoint's shards in path order) and its
/// safetensors `__metadata__` (empty for other formats and for sharded checkpoints).
struct WeightShapes {
  std::vector<WeightShape> tensors;
  std::map<std::string, std::string> metadata;
};

/// The tensors of a weight file by what its header says, with the checks that need no tensor data:
/// a safetensors header validated against the file's size (a truncated file is refused), every
/// shard of a sharded checkpoint (`*.index.json`, safetensors_index.h) opened and matched against
/// the index, a torch.save file's pickle run and its storages located (load_torch_shapes). Reads
/// headers only, so a 5 GB UNet costs milliseconds. Throws c10::Error naming the file.
WeightShapes load_shapes(const std::string& path);

/// "[320, 4, 3, 3]".
std::string shape_text(const std::vector<int64_t>& shape);

}  // namespace lookahead::model::io
