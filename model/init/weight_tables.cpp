// Key and shape tables of the public files (see weight_tables.h).
#include "model/init/weight_tables.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <string>

#include "model/adapters/ip_adapter.h"
#include "model/lookahead/lookahead_model.h"
#include "model/nn/lora_loader.h"
#include "model/unet/unet_2d_condition.h"
#include "model/vae/autoencoder_kl.h"
#include "model/vae/autoencoder_tiny.h"

namespace lookahead::model::init {
namespace {

const at::TensorOptions kMeta = at::TensorOptions().device(at::kMeta);

io::TensorInfo entry(std::string name, at::ScalarType dtype, std::vector<int64_t> shape) {
  io::TensorInfo e;
  e.name = std::move(name);
  e.dtype = dtype;
  e.shape = std::move(shape);
  return e;
}

}  // namespace

Entries module_entries(torch::nn::Module& module, at::ScalarType dtype) {
  Entries out;
  auto add = [&](const std::string& name, const at::Tensor& t) {
    out.push_back(entry(name, at::isFloatingType(t.scalar_type()) ? dtype : t.scalar_type(), t.sizes().vec()));
  };
  for (const auto& p : module.named_parameters()) add(p.key(), p.value());
  for (const auto& b : module.named_buffers()) add(b.key(), b.value());
  return out;
}

Entries unet_entries(const unet::UNetConfig& config, at::ScalarType dtype) {
  unet::UNet2DConditionModel unet(config, kMeta);
  return module_entries(*unet, dtype);
}

Entries kl_vae_entries(const vae::KLConfig& config, at::ScalarType dtype) {
  vae::AutoencoderKL vae(config, kMeta);
  return module_entries(*vae, dtype);
}

Entries tiny_vae_entries(const vae::TinyConfig& config, at::ScalarType dtype) {
  vae::AutoencoderTiny taesd(config, kMeta);
  return module_entries(*taesd, dtype);
}

Entries clip_text_entries(const text::ClipTextConfig& config, bool with_projection, at::ScalarType dtype) {
  text::ClipTextModel clip(config, with_projection, kMeta);
  return module_entries(*clip, dtype);
}

Entries clip_vision_entries(const vision::ClipVisionConfig& config, at::ScalarType dtype) {
  vision::ClipVisionModel clip(config, /*with_projection=*/true, kMeta);
  Entries out = module_entries(*clip, dtype);
  const int64_t tokens = (config.image_size / config.patch_size) * (config.image_size / config.patch_size) + 1;
  out.push_back(entry("vision_model.embeddings.position_ids", at::kLong, {1, tokens}));
  return out;
}

Entries clip_model_entries(const text::ClipTextConfig& text, const vision::ClipVisionConfig& vision,
                           int64_t projection_dim, at::ScalarType dtype) {
  vision::ClipModel clip(text, vision, projection_dim, kMeta);
  return module_entries(*clip, dtype);
}

Entries ip_adapter_entries(const unet::UNetConfig& unet_config, const adapters::ResamplerOptions& resampler,
                           at::ScalarType dtype) {
  unet::UNet2DConditionModel unet(unet_config, kMeta);
  auto options = resampler;
  options.tensor_options(kMeta);
  adapters::IpAdapter ip(*unet, options);
  return module_entries(*ip, dtype);
}

Entries lcm_lora_entries(const unet::UNetConfig& config, int64_t rank, at::ScalarType dtype) {
  unet::UNet2DConditionModel unet(config, kMeta);
  std::map<std::string, std::vector<int64_t>> weights;
  for (const auto& p : unet->named_parameters()) weights.emplace(p.key(), p.value().sizes().vec());
  Entries out;
  for (const auto& [path, layer] : nn::lora_layers(*unet)) {
    if (!LookaheadModelConfig::lcm_lora_sdxl_target(path)) continue;
    const std::vector<int64_t>& w = weights.at(path + ".weight");  // [out, in] or [out, in, k, k]
    std::string kohya = "lora_unet_" + path;
    std::replace(kohya.begin(), kohya.end(), '.', '_');
    std::vector<int64_t> down = w, up{w[0], rank};
    down[0] = rank;
    if (w.size() == 4) up.insert(up.end(), {1, 1});
    out.push_back(entry(kohya + ".lora_down.weight", dtype, down));
    out.push_back(entry(kohya + ".lora_up.weight", dtype, up));
    out.push_back(entry(kohya + ".alpha", dtype, {}));
  }
  return out;
}

Entries irse_entries(const face::IRSEOptions& options, at::ScalarType dtype) {
  auto o = options;
  face::IRSE net(o.tensor_options(kMeta));
  return module_entries(*net, dtype);
}

Entries iresnet_entries(const face::IResNetOptions& options, at::ScalarType dtype) {
  auto o = options;
  face::IResNet net(o.tensor_options(kMeta));
  return module_entries(*net, dtype);
}

}  // namespace lookahead::model::init
