// Encoder export.
#include "trainer/export.h"

#include <ATen/ATen.h>

#include <filesystem>

#include "model/io/safetensors.h"

namespace lookahead::trainer {

ExportedFiles export_encoder(const std::map<std::string, at::Tensor>& trainables, const std::string& dir) {
  std::map<std::string, at::Tensor> ip, kv;
  for (const auto& [key, t] : trainables) {
    at::Tensor v = t.detach().to(at::kCPU, at::kFloat).contiguous();
    if (key.rfind("image_proj.", 0) == 0 || key.rfind("ip_adapter.", 0) == 0)
      ip[key] = v;
    else if (key.ends_with(".lora_down.weight") || key.ends_with(".lora_up.weight"))
      kv[key] = v;
    else
      TORCH_CHECK(false, "export: trainable tensor '", key, "' belongs to neither the IP-Adapter nor the KV encoder");
  }
  std::filesystem::create_directories(dir);
  ExportedFiles out;
  out.ip_adapter = dir + "/ip_adapter.safetensors";
  const std::map<std::string, std::string> meta{{"format", "pt"}, {"producer", "lookahead export"}};
  model::io::save_file(out.ip_adapter, {ip.begin(), ip.end()}, meta);
  // A run without the KV encoder (model.kv_encoder = off) has no encoder file to write.
  if (!kv.empty()) {
    out.kv_encoder = dir + "/kv_encoder.safetensors";
    model::io::save_file(out.kv_encoder, {kv.begin(), kv.end()}, meta);
  }
  out.ip_adapter_tensors = static_cast<int64_t>(ip.size());
  out.kv_encoder_tensors = static_cast<int64_t>(kv.size());
  return out;
}

}  // namespace lookahead::trainer
