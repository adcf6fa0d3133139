// Attaching LoRA adapters to a module tree of LoraLinear / LoraConv2d layers: LoRA files in any
// layout lora_format.h reads (kohya, SGM-named kohya, PEFT, diffusers' pre-PEFT keys; LCM-LoRA
// SDXL is kohya) and trainable adapters created in code.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/nn/lora.h"
#include "model/nn/lora_format.h"

namespace lookahead::model::nn {

/// What attaching a LoRA file did.
struct LoraLoadReport {
  LoraFormat format = LoraFormat::kKohya;  ///< the layout the file was read as
  int layers = 0;                          ///< layers that received an adapter
  int64_t parameters = 0;                  ///< elements of all down/up matrices
  std::vector<std::string> ignored;        ///< keys for other networks (text encoders)
  std::vector<double> alphas;              ///< distinct alpha values applied
  std::string alpha_source;                ///< where they came from (see LoraMapping)
};

/// Attaches every UNet entry of a LoRA file (`tensors` and its safetensors header `metadata`) to
/// its layer of `module` as adapter `name`, converted to the layer's dtype and device, sharing
/// `scale`. The layout is detected by map_lora_file, which names the layers by enumerating the
/// module's LoRA-capable layers. Throws c10::Error naming `origin` and the key for anything that
/// cannot be mapped or does not fit its layer; nothing is attached then.
LoraLoadReport attach_lora(torch::nn::Module& module, const std::map<std::string, at::Tensor>& tensors,
                           const std::map<std::string, std::string>& metadata, const std::string& name,
                           std::shared_ptr<LoraScale> scale, const std::string& origin);

/// attach_lora for a safetensors file at `path` (tensors and header metadata).
LoraLoadReport attach_lora_file(torch::nn::Module& module, const std::string& path, const std::string& name,
                                std::shared_ptr<LoraScale> scale);

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
