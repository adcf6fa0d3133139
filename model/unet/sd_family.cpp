// The Stable Diffusion generation of a weight file by its cross-attention width (see sd_family.h).
#include "model/unet/sd_family.h"

namespace lookahead::model::unet {

namespace {

/// A key whose last dimension is the cross-attention width: a key projection of an `attn2`
/// (the base weight or a LoRA's down / A matrix, never the up / B matrix, whose input is the
/// rank) or an IP-Adapter's image key projection.
bool reads_text(const std::string& key) {
  if (key.ends_with("to_k_ip.weight")) return true;
  if (key.find("attn2") == std::string::npos || key.find("to_k") == std::string::npos) return false;
  for (const char* tail :
       {"to_k.weight", "to_k.lora_down.weight", "to_k.lora_A.weight", "to_k_lora.down.weight", "to_k.lora.down.weight"})
    if (key.ends_with(tail)) return true;
  return false;
}

}  // namespace

std::optional<SdFamilyGuess> guess_sd_family(const std::vector<io::WeightShape>& tensors) {
  for (const auto& t : tensors) {
    if (t.shape.size() != 2 || !reads_text(t.name)) continue;
    const int64_t dim = t.shape[1];
    return SdFamilyGuess{sd_family_name(dim), dim, t.name, t.shape};
  }
  return std::nullopt;
}

std::string sd_family_name(int64_t cross_attention_dim) {
  switch (cross_attention_dim) {
    case 768: return "SD1.5";
    case 1024: return "SD2.x";
    case 2048: return "SDXL";
    default: return "";
  }
}

std::string evidence(const SdFamilyGuess& guess) {
  return "cross-attention dim " + std::to_string(guess.cross_attention_dim) + ": tensor '" + guess.key + "' is " +
         io::shape_text(guess.shape);
}

}  // namespace lookahead::model::unet
