// LoRA file attachment and trainable LoRA creation.
#include "model/nn/lora_loader.h"

#include "model/io/safetensors.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <set>

namespace lookahead::model::nn {

namespace {

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

LoraLoadReport attach_lora(torch::nn::Module& module, const std::map<std::string, at::Tensor>& tensors,
                           const std::map<std::string, std::string>& metadata, const std::string& name,
                           std::shared_ptr<LoraScale> scale, const std::string& origin) {
  TORCH_CHECK(scale, "attach_lora: no scale given");
  auto layers = lora_layers(module);
  std::vector<std::string> paths;
  std::map<std::string, std::shared_ptr<torch::nn::Module>> by_path;
  for (auto& [path, layer] : layers) {
    paths.push_back(path);
    by_path[path] = layer;
  }
  // Every key is mapped and checked before the module is touched, so a bad file leaves it unchanged.
  LoraMapping mapping = map_lora_file(tensors, metadata, paths, origin);
  LoraLoadReport report;
  report.format = mapping.format;
  report.ignored = std::move(mapping.ignored);
  report.alpha_source = mapping.alpha_source;
  std::set<double> alphas;
  for (auto& entry : mapping.entries) {
    LoraAdapter a;
    a.name = name;
    a.down = entry.down;
    a.up = entry.up;
    a.alpha = entry.alpha;
    a.scale = scale;
    try {
      add_to_layer(*by_path.at(entry.layer), a);
    } catch (const c10::Error& e) {
      detach_lora(module, name);  // all or nothing
      TORCH_CHECK(false, origin, ": LoRA '", entry.key, "' for layer '", entry.layer, "': ", e.what_without_backtrace());
    }
    alphas.insert(entry.alpha);
    report.parameters += entry.down.numel() + entry.up.numel();
    ++report.layers;
  }
  report.alphas.assign(alphas.begin(), alphas.end());
  return report;
}

LoraLoadReport attach_lora_file(torch::nn::Module& module, const std::string& path, const std::string& name,
                                std::shared_ptr<LoraScale> scale) {
  auto file = io::SafetensorsFile::open(path);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& info : file->tensors()) tensors[info.name] = file->get(info.name);
  return attach_lora(module, tensors, file->metadata(), name, std::move(scale), path);
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
