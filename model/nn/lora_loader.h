// Attaching LoRA adapters to a module tree of LoraLinear / LoraConv2d layers: kohya-format files
// (`lora_unet_<path with '_'>.lora_down.weight / .lora_up.weight / .alpha`, LCM-LoRA SDXL is one)
// and trainable adapters created in code.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/nn/lora.h"

namespace lookahead::model::nn {

/// What attaching a LoRA file did.
struct LoraLoadReport {
  int layers = 0;                        ///< layers that received an adapter
  int64_t parameters = 0;                ///< elements of all down/up matrices
  std::vector<std::string> ignored;      ///< keys for other networks (text encoders: lora_te*)
  std::vector<double> alphas;            ///< distinct alpha values found
};

/// Attaches every `<prefix><path>` entry of a kohya-format state dict to the layer at `path` of
/// `module` as adapter `name`, converted to the layer's dtype and device, sharing `scale`. Module
/// paths are matched by enumerating the module's layers (names contain '_', so '_' -> '.' cannot be
/// inverted). Throws c10::Error naming `origin` and the key for: a key with no matching layer,
/// a lora_down without lora_up, shapes that do not fit the layer. A missing `.alpha` means
/// alpha = rank (factor 1).
LoraLoadReport attach_kohya_lora(torch::nn::Module& module, const std::map<std::string, at::Tensor>& tensors,
                                 const std::string& name, std::shared_ptr<LoraScale> scale, const std::string& origin,
                                 const std::string& prefix = "lora_unet_");

/// Removes adapter `name` from every layer of `module`; returns the number of layers touched.
int detach_lora(torch::nn::Module& module, const std::string& name);

/// Trainable adapters created in code (rank r, lora_down ~ N(0, 1/r), lora_up = 0, so the
/// network's output is unchanged at creation). `select(path)` chooses the layers; `explicit_only`
/// adapters run only where an AdapterSelection names them.
struct TrainableLora {
  std::string name;
  std::shared_ptr<LoraScale> scale;
  /// "<layer path>.lora_down.weight" / ".lora_up.weight" -> tensor (requires_grad).
  std::map<std::string, at::Tensor> parameters;
};
TrainableLora create_trainable_lora(torch::nn::Module& module, const std::string& name, int64_t rank, double alpha,
                                    const std::function<bool(const std::string& path)>& select,
                                    at::Generator generator = {}, bool explicit_only = false);

/// Every LoraLinear / LoraConv2d of `module` by path.
std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> lora_layers(torch::nn::Module& module);

}  // namespace lookahead::model::nn
