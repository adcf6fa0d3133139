// Export of the trained encoder as safetensors that other tools load: the IP-Adapter part
// (`image_proj.*`, `ip_adapter.<N>.to_k_ip/to_v_ip.weight` — the layout diffusers' IP-Adapter
// loader reads) and the KV-encoder part (encoder LoRAs and extract_kv1 KV-head LoRAs — the layout
// `lookahead model run --model kv-encoder --encoder-weights` reads).
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace lookahead::trainer {

struct ExportedFiles {
  std::string ip_adapter;  ///< <dir>/ip_adapter.safetensors
  std::string kv_encoder;  ///< <dir>/kv_encoder.safetensors; empty without a KV encoder (nothing written)
  int64_t ip_adapter_tensors = 0, kv_encoder_tensors = 0;
};

/// Splits the trainable tensors (checkpoint keys) into the two files and writes them atomically
/// into `dir` (created). Throws if a key belongs to neither part.
ExportedFiles export_encoder(const std::map<std::string, at::Tensor>& trainables, const std::string& dir);

}  // namespace lookahead::trainer
