// Sharded safetensors checkpoints: a `*.safetensors.index.json` whose `weight_map` assigns every
// tensor to a shard file beside the index (the layout transformers and diffusers write).
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace lookahead::model::io {

class SafetensorsFile;

/// Whether `path` names a sharded checkpoint's index: `*.index.json`, or a diffusers variant's
/// `*.safetensors.index.<variant>.json` (`diffusion_pytorch_model.safetensors.index.fp16.json`
/// beside `diffusion_pytorch_model.fp16-00001-of-00002.safetensors`).
bool is_index_path(const std::string& path);

/// The shards of the sharded checkpoint `index_path`, opened (each header validated against its
/// file, so a truncated shard is refused here; no tensor data is read) and checked against the
/// index: valid JSON without duplicate keys, a non-empty `weight_map`, every shard a relative path
/// inside the index's folder holding exactly the tensors the `weight_map` assigns to it. Throws
/// c10::Error naming the index (and the shard and tensor).
std::vector<std::shared_ptr<SafetensorsFile>> open_index(const std::string& index_path);

/// All tensors of the sharded checkpoint `index_path`. Shards are found relative to the index's
/// folder and must not leave it; every shard must hold exactly the tensors the `weight_map`
/// assigns to it. Throws c10::Error naming the index (and the shard and tensor).
std::map<std::string, at::Tensor> load_index(const std::string& index_path);

}  // namespace lookahead::model::io
