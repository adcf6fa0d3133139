// kohya LoRA attachment and trainable LoRA creation.
#include "model/nn/lora_loader.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <set>

namespace lookahead::model::nn {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string underscored(std::string path) {
  std::replace(path.begin(), path.end(), '.', '_');
  return path;
}

void add_to_layer(torch::nn::Module& layer, LoraAdapter adapter) {
  if (auto* lin = dynamic_cast<LoraLinearImpl*>(&layer)) {
    adapter.down = adapter.down.to(lin->weight.options());
    adapter.up = adapter.up.to(lin->weight.options());
    lin->add_adapter(std::move(adapter));
  } else if (auto* conv = dynamic_cast<LoraConv2dImpl*>(&layer)) {
    adapter.down = adapter.down.to(conv->weight.options());
    adapter.up = adapter.up.to(conv->weight.options());
    conv->add_adapter(std::move(adapter));
  }
}

}  // namespace

std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> lora_layers(torch::nn::Module& module) {
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> out;
  for (const auto& item : module.named_modules("", /*include_self=*/false)) {
    auto* m = item.value().get();
    if (dynamic_cast<LoraLinearImpl*>(m) || dynamic_cast<LoraConv2dImpl*>(m)) out.emplace_back(item.key(), item.value());
  }
  return out;
}

LoraLoadReport attach_kohya_lora(torch::nn::Module& module, const std::map<std::string, at::Tensor>& tensors,
                                 const std::string& name, std::shared_ptr<LoraScale> scale, const std::string& origin,
                                 const std::string& prefix) {
  TORCH_CHECK(scale, "attach_kohya_lora: no scale given");
  std::map<std::string, std::shared_ptr<torch::nn::Module>> by_key;
  for (auto& [path, layer] : lora_layers(module)) by_key[prefix + underscored(path)] = layer;

  LoraLoadReport report;
  std::set<double> alphas;
  std::set<std::string> used;
  const std::string down_suffix = ".lora_down.weight", up_suffix = ".lora_up.weight", alpha_suffix = ".alpha";
  // Validate everything before touching the module, so a bad file leaves it unchanged.
  std::vector<std::pair<std::shared_ptr<torch::nn::Module>, LoraAdapter>> pending;
  for (const auto& [key, tensor] : tensors) {
    if (key.rfind(prefix, 0) != 0) {
      // Text-encoder adapters of the same file are not ours to apply; anything else is a format
      // we do not read (diffusers/PEFT `unet.<path>.lora_A.weight`, SGM block names, ...).
      TORCH_CHECK(key.rfind("lora_te", 0) == 0, origin, ": LoRA key '", key,
                  "' is not in the kohya format this loader reads ('", prefix,
                  "<module path with _>.lora_down.weight / .lora_up.weight / .alpha')");
      report.ignored.push_back(key);
      continue;
    }
    if (!ends_with(key, down_suffix)) {
      TORCH_CHECK(ends_with(key, up_suffix) || ends_with(key, alpha_suffix), origin, ": unexpected LoRA key '", key,
                  "' (expected .lora_down.weight, .lora_up.weight or .alpha)");
      continue;
    }
    std::string base = key.substr(0, key.size() - down_suffix.size());
    auto layer = by_key.find(base);
    TORCH_CHECK(layer != by_key.end(), origin, ": LoRA '", base, "' matches no layer of the network");
    auto up = tensors.find(base + up_suffix);
    TORCH_CHECK(up != tensors.end(), origin, ": LoRA '", base, "' has lora_down but no lora_up");
    LoraAdapter a;
    a.name = name;
    a.down = tensor;
    a.up = up->second;
    a.scale = scale;
    auto alpha = tensors.find(base + alpha_suffix);
    a.alpha = alpha != tensors.end() ? alpha->second.to(at::kDouble).item<double>() : static_cast<double>(tensor.size(0));
    alphas.insert(a.alpha);
    used.insert(base);
    pending.emplace_back(layer->second, std::move(a));
  }
  for (const auto& [key, tensor] : tensors) {
    if (key.rfind(prefix, 0) != 0 || ends_with(key, down_suffix)) continue;
    std::string base = key.substr(0, key.rfind(ends_with(key, up_suffix) ? up_suffix : alpha_suffix));
    TORCH_CHECK(used.count(base), origin, ": LoRA key '", key, "' has no matching lora_down");
  }
  for (auto& [layer, adapter] : pending) {
    try {
      report.parameters += adapter.down.numel() + adapter.up.numel();
      add_to_layer(*layer, adapter);
    } catch (const c10::Error& e) {
      detach_lora(module, name);  // all or nothing
      TORCH_CHECK(false, origin, ": ", e.what_without_backtrace());
    }
    ++report.layers;
  }
  TORCH_CHECK(report.layers > 0, origin, ": no '", prefix, "' LoRA entries for this network");
  report.alphas.assign(alphas.begin(), alphas.end());
  return report;
}

int detach_lora(torch::nn::Module& module, const std::string& name) {
  int touched = 0;
  for (auto& [path, layer] : lora_layers(module)) {
    if (auto* lin = dynamic_cast<LoraLinearImpl*>(layer.get())) touched += lin->remove_adapter(name) > 0;
    if (auto* conv = dynamic_cast<LoraConv2dImpl*>(layer.get())) touched += conv->remove_adapter(name) > 0;
  }
  return touched;
}

TrainableLora create_trainable_lora(torch::nn::Module& module, const std::string& name, int64_t rank, double alpha,
                                    const std::function<bool(const std::string& path)>& select,
                                    at::Generator generator, bool explicit_only) {
  TORCH_CHECK(rank > 0, "LoRA rank must be positive, got ", rank);
  TrainableLora out;
  out.name = name;
  out.scale = std::make_shared<LoraScale>();
  for (auto& [path, layer] : lora_layers(module)) {
    if (!select(path)) continue;
    LoraAdapter a;
    a.name = name;
    a.alpha = alpha;
    a.scale = out.scale;
    a.explicit_only = explicit_only;
    if (auto* lin = dynamic_cast<LoraLinearImpl*>(layer.get())) {
      auto opts = lin->weight.options().requires_grad(false);
      a.down = at::empty({rank, lin->options.in_features()}, opts);
      a.up = at::zeros({lin->options.out_features(), rank}, opts);
    } else if (auto* conv = dynamic_cast<LoraConv2dImpl*>(layer.get())) {
      const auto& o = conv->options;
      auto opts = conv->weight.options().requires_grad(false);
      a.down = at::empty({rank, o.in_channels(), o.kernel_size(), o.kernel_size()}, opts);
      a.up = at::zeros({o.out_channels(), rank, 1, 1}, opts);
    }
    if (!a.down.is_meta()) a.down.normal_(0.0, 1.0 / static_cast<double>(rank), generator);
    a.down.set_requires_grad(true);
    a.up.set_requires_grad(true);
    out.parameters[path + ".lora_down.weight"] = a.down;
    out.parameters[path + ".lora_up.weight"] = a.up;
    add_to_layer(*layer, a);
  }
  TORCH_CHECK(!out.parameters.empty(), "create_trainable_lora('", name, "'): no layer was selected");
  return out;
}

}  // namespace lookahead::model::nn
