// Which Stable Diffusion generation a UNet-side weight file was made for, read off its shapes:
// SD1.5, SD2.x and SDXL differ in the width of the text their cross-attention reads (768, 1024,
// 2048), and every UNet, UNet-LoRA and IP-Adapter file carries that width in its key projections.
// `model inspect` prints it, and the configuration check (trainer/weight_check.h) uses it to say
// "an SD1.5 kohya LoRA" rather than only which key does not fit.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/io/weight_shapes.h"

namespace lookahead::model::unet {

/// What guess_sd_family found.
struct SdFamilyGuess {
  std::string family;  ///< sd_family_name(cross_attention_dim); empty for another width
  int64_t cross_attention_dim = 0;
  std::string key;  ///< the tensor that tells
  std::vector<int64_t> shape;
};

/// The cross-attention width of a UNet, UNet-LoRA (any layout of lora_format.h) or IP-Adapter
/// file: the input width of the first `attn2` key projection it has — `...attn2.to_k.weight`, its
/// LoRA down matrix (`..._attn2_to_k.lora_down.weight`, `...attn2.to_k.lora_A.weight`,
/// `...attn2.processor.to_k_lora.down.weight`) — or of an IP-Adapter's `to_k_ip.weight`. Nothing
/// for files without such a key (VAEs, text encoders, face networks).
std::optional<SdFamilyGuess> guess_sd_family(const std::vector<io::WeightShape>& tensors);

/// "SD1.5" (768), "SD2.x" (1024), "SDXL" (2048); "" for any other width.
std::string sd_family_name(int64_t cross_attention_dim);

/// "cross-attention dim 768: tensor 'KEY' is [64, 768]": what the guess rests on.
std::string evidence(const SdFamilyGuess& guess);

}  // namespace lookahead::model::unet
