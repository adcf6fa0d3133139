// IP-Adapter Plus for the SDXL UNet: the Resampler (`image_proj.*`) and one decoupled image
// cross-attention per attn2 layer (`ip_adapter.{1,3,...}.to_k_ip / to_v_ip`, numbered as
// diffusers' attn_processors list every attention module: down_blocks, up_blocks, mid_block).
// Loads the published .safetensors (flat keys) and .bin (torch.save pickle of two dicts).
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <map>
#include <string>
#include <vector>

#include "model/adapters/resampler.h"
#include "model/unet/unet_2d_condition.h"

namespace lookahead::model::adapters {

/// The adapter of one UNet: image_proj (Resampler) and ip_adapter.<2j+1>.{to_k_ip,to_v_ip}.
///
/// Example:
///   IpAdapter ip(*unet, infer_resampler_options(weights));
///   io::load_state_dict(*ip, weights, path);
///   ip->attach(*unet);
///   inputs.ip_tokens = ip->image_tokens(clip_penultimate);  // [B, 16, 2048]
class IpAdapterImpl : public torch::nn::Cloneable<IpAdapterImpl> {
 public:
  IpAdapterImpl(unet::UNet2DConditionModelImpl& unet, const ResamplerOptions& resampler);
  void reset() override;
  /// Installs the image branch in every attn2 layer of `unet` (the UNet it was built for).
  void attach(unet::UNet2DConditionModelImpl& unet);
  /// Removes the image branch from every attn2 layer of `unet`.
  static void detach(unet::UNet2DConditionModelImpl& unet);
  /// CLIP ViT-H penultimate tokens [B, 257, 1280] -> image-prompt tokens [B, 16, 2048].
  at::Tensor image_tokens(const at::Tensor& image_features) { return image_proj->forward(image_features); }

  ResamplerOptions resampler_options;
  Resampler image_proj{nullptr};
  std::shared_ptr<torch::nn::Module> ip_adapter;  // children "1", "3", ...: to_k_ip, to_v_ip

 private:
  struct LayerShape {
    std::string path;  // attn2 path in the UNet
    int64_t channels;  // attn2 inner dim (heads * head_dim)
  };
  std::vector<LayerShape> layers_;
};
TORCH_MODULE(IpAdapter);

/// Resampler settings read off the checkpoint's shapes (dim_head 64, as IP-Adapter and diffusers
/// assume); `tensors` holds `image_proj.*` keys.
ResamplerOptions infer_resampler_options(const std::map<std::string, at::Tensor>& tensors, const std::string& origin);

/// IP-Adapter weights as flat `image_proj.*` / `ip_adapter.*` tensors, from a .safetensors file or
/// a .bin torch pickle ({"image_proj": {...}, "ip_adapter": {...}}).
std::map<std::string, at::Tensor> load_ip_adapter_file(const std::string& path);

}  // namespace lookahead::model::adapters
