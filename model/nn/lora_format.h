// Which layout a UNet LoRA file is written in, and which layer each of its adapters belongs to.
// One place decides this for every caller (the trainer's LCM-LoRA, `model run --lora`,
// `model inspect`), so a file is read the same way everywhere. The layouts and their scale rules
// are diffusers' (loaders/lora_pipeline.py, lora_conversion_utils.py, utils/peft_utils.py):
//   kohya            lora_unet_<diffusers path, '.' -> '_'>.lora_down.weight / .lora_up.weight / .alpha
//   kohya, SGM names lora_unet_input_blocks_4_1_proj_in... (the original SDXL repository's module tree)
//   PEFT             unet.<path>.lora_A.weight / .lora_B.weight, alpha in the safetensors header
//                    (`lora_adapter_metadata`, written by diffusers' save_lora_weights)
//   diffusers pre-PEFT unet.<path>.lora.down.weight / .lora.up.weight and
//                    unet.<attn>.processor.to_q_lora.down.weight (to_k, to_v, to_out -> to_out.0)
// Text-encoder entries (lora_te*, text_encoder., text_encoder_2.) are reported and ignored.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lookahead::model::nn {

/// The LoRA file layouts we read.
enum class LoraFormat {
  kKohya,          ///< kohya keys named after diffusers module paths (LCM-LoRA SDXL)
  kKohyaSgm,       ///< kohya keys named after the SGM module tree (input_blocks / middle_block / output_blocks)
  kPeft,           ///< `unet.<path>.lora_A.weight / .lora_B.weight`
  kDiffusersOld,   ///< diffusers' keys before PEFT: `unet.<path>.lora.down.weight`, `...to_q_lora.down.weight`
};

/// How `model inspect` and messages name a format ("kohya LoRA (SGM block names)", ...).
const char* format_name(LoraFormat format);

/// One adapter of a file, resolved to a layer of the network.
struct LoraEntry {
  std::string layer;  ///< module path of the layer ("down_blocks.1.attentions.0.proj_in")
  std::string key;    ///< the file's down-matrix key, for messages
  at::Tensor down;    // [r, in] (Linear) or [r, in, k, k] (Conv2d)
  at::Tensor up;      // [out, r] or [out, r, 1, 1]
  double alpha = 0;   ///< the adapter's factor is alpha / r
};

/// A whole file resolved against one network.
struct LoraMapping {
  LoraFormat format = LoraFormat::kKohya;
  std::vector<LoraEntry> entries;    ///< one per adapted layer, in key order
  std::vector<std::string> ignored;  ///< text-encoder keys
  /// Where the alphas came from: ".alpha keys", "lora_adapter_metadata", or "alpha = rank" (none given).
  std::string alpha_source;
};

/// Maps the SGM name of a module, underscored as kohya writes it without the `lora_unet_` prefix
/// ("input_blocks_4_1_proj_in", "middle_block_0_in_layers_2", "out_2"), to the diffusers path
/// underscored the same way ("down_blocks_1_attentions_0_proj_in", "mid_block_resnets_0_conv1",
/// "conv_out"), for a UNet with `layers_per_block` resnets in every down block, as diffusers'
/// converter does. Returns "" for a name that is not an SGM block or stem name; throws c10::Error
/// naming `origin` and `key` for an SGM block name diffusers cannot place either (middle_block
/// index above 2, a number missing).
std::string sgm_to_diffusers(const std::string& name, int64_t layers_per_block, const std::string& origin,
                             const std::string& key);

/// Detects the layout of a LoRA file (`tensors` and its safetensors header `metadata`) and maps
/// every UNet entry to one of `layer_paths` (the network's LoRA-capable layers, dotted paths).
/// Throws c10::Error naming `origin` and the key for anything it cannot map: a key in no known
/// layout, layouts mixed in one file, a down matrix without its up matrix (or the reverse), an
/// alpha without its matrices, a key naming no layer, DoRA / LoRA-bias / rsLoRA entries, and
/// PEFT `.alpha` keys (diffusers rejects those files too). No UNet key is dropped silently.
LoraMapping map_lora_file(const std::map<std::string, at::Tensor>& tensors,
                          const std::map<std::string, std::string>& metadata,
                          const std::vector<std::string>& layer_paths, const std::string& origin);

}  // namespace lookahead::model::nn
