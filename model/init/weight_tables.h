// The tensors (public key names, shapes) of every file `lookahead model init` writes, read off our
// networks built on the meta device (their parameter and buffer names are the public checkpoint
// keys, which `model inspect` and the loaders check) or, for LoRA files, derived from the UNet's
// layers. No table allocates tensor memory.
#pragma once

#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <vector>

#include "model/adapters/resampler.h"
#include "model/face/arcface_iresnet.h"
#include "model/face/arcface_irse.h"
#include "model/io/safetensors_header.h"
#include "model/text/clip_text.h"
#include "model/unet/unet_config.h"
#include "model/vae/vae_config.h"
#include "model/vision/clip_vision.h"

namespace lookahead::model::init {

using Entries = std::vector<io::TensorInfo>;

/// Parameters then buffers of `module` (state_dict names), floating tensors as `dtype`, integer
/// buffers keeping their dtype.
Entries module_entries(torch::nn::Module& module, at::ScalarType dtype);

/// diffusers UNet2DConditionModel (unet/diffusion_pytorch_model.safetensors).
Entries unet_entries(const unet::UNetConfig& config, at::ScalarType dtype);
/// diffusers AutoencoderKL (vae/diffusion_pytorch_model.safetensors).
Entries kl_vae_entries(const vae::KLConfig& config, at::ScalarType dtype);
/// diffusers AutoencoderTiny (taesdxl/diffusion_pytorch_model.safetensors).
Entries tiny_vae_entries(const vae::TinyConfig& config, at::ScalarType dtype);
/// transformers CLIPTextModel / CLIPTextModelWithProjection (model.safetensors, no position_ids).
Entries clip_text_entries(const text::ClipTextConfig& config, bool with_projection, at::ScalarType dtype);
/// transformers CLIPVisionModelWithProjection, with the int64 `vision_model.embeddings.position_ids`
/// [1, T] buffer the IP-Adapter image encoder file carries.
Entries clip_vision_entries(const vision::ClipVisionConfig& config, at::ScalarType dtype);
/// transformers CLIPModel (both towers, `text_projection`, `visual_projection`, `logit_scale`).
Entries clip_model_entries(const text::ClipTextConfig& text, const vision::ClipVisionConfig& vision,
                           int64_t projection_dim, at::ScalarType dtype);
/// IP-Adapter Plus: `image_proj.*` (Resampler) and `ip_adapter.<k>.to_{k,v}_ip.weight` for the
/// cross-attention layers of a UNet of `unet`.
Entries ip_adapter_entries(const unet::UNetConfig& unet, const adapters::ResamplerOptions& resampler,
                           at::ScalarType dtype);
/// The LCM-LoRA SDXL layout: kohya keys `lora_unet_<path with '_'>.{lora_down.weight, lora_up.weight,
/// alpha}` for every layer the LCM distillation script targets (to_q/k/v/out.0, proj_in/out,
/// ff.net.0.proj, ff.net.2, resnet conv1/conv2/conv_shortcut/time_emb_proj, down/upsampler convs:
/// 788 layers in SDXL) at `rank`; alpha is a scalar of `dtype`.
Entries lcm_lora_entries(const unet::UNetConfig& unet, int64_t rank, at::ScalarType dtype);
/// TreB1eN IR-SE50 / insightface iresnet state dicts (the .pth files).
Entries irse_entries(const face::IRSEOptions& options, at::ScalarType dtype);
Entries iresnet_entries(const face::IResNetOptions& options, at::ScalarType dtype);

}  // namespace lookahead::model::init
