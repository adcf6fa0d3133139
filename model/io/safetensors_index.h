// Sharded safetensors checkpoints: a `*.safetensors.index.json` whose `weight_map` assigns every
// tensor to a shard file beside the index (the layout transformers and diffusers write).
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace lookahead::model::io {

/// All tensors of the sharded checkpoint `index_path`. Shards are found relative to the index's
/// folder and must not leave it; every shard must hold exactly the tensors the `weight_map`
/// assigns to it. Throws c10::Error naming the index (and the shard and tensor).
std::map<std::string, at::Tensor> load_index(const std::string& index_path);

}  // namespace lookahead::model::io
