// The harness the `model run` runners share: named inputs, float32 outputs, and the UNet / LoRA /
// IP-Adapter loading that the unet and kv-encoder runners both do.
#include "model/run/model_runners.h"

#include <ATen/ATen.h>

#include <iostream>
#include <memory>

#include "model/io/safetensors.h"
#include "model/io/state_dict.h"
#include "model/nn/lora_loader.h"

namespace lookahead::model::run {

at::Tensor required_input(const NamedTensors& inputs, const std::string& name, const std::string& file) {
  auto it = inputs.find(name);
  TORCH_CHECK(it != inputs.end(), file, ": missing input tensor '", name, "'");
  return it->second;
}

at::Tensor optional_input(const NamedTensors& inputs, const std::string& name) {
  auto it = inputs.find(name);
  return it == inputs.end() ? at::Tensor() : it->second;
}

at::Tensor float_output(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

void write_outputs(const std::string& path, const NamedOutputs& outputs) {
  io::save_file(path, outputs);
  std::cerr << "model run: wrote " << path << " (";
  for (size_t i = 0; i < outputs.size(); ++i)
    std::cerr << (i ? ", " : "") << outputs[i].first << " " << outputs[i].second.sizes();
  std::cerr << ")\n";
}

unet::UNet2DConditionModel load_unet(const NetworkRun& run) {
  auto config = unet::UNetConfig::from_file(run.config);
  unet::UNet2DConditionModel net(config, at::TensorOptions().dtype(run.dtype));
  auto report = io::load_state_dict(*net, io::load_file(run.weights), run.weights);
  std::cerr << "model run: " << run.weights << ": " << report.summary() << "\n";
  if (!run.lora.empty()) {
    auto scale = std::make_shared<nn::LoraScale>();
    scale->value = run.lora_scale;
    auto lr = nn::attach_lora_file(*net, run.lora, "lora", scale);
    std::cerr << "model run: " << run.lora << ": " << nn::format_name(lr.format) << ", " << lr.layers
              << " layers, scale " << run.lora_scale << "\n";
  }
  return net;
}

adapters::IpAdapter attach_ip_adapter(unet::UNet2DConditionModel& unet, const NetworkRun& run) {
  auto weights = adapters::load_ip_adapter_file(run.ip_adapter);
  adapters::IpAdapter ip(*unet, adapters::infer_resampler_options(weights, run.ip_adapter));
  ip->to(run.dtype);
  auto report = io::load_state_dict(*ip, weights, run.ip_adapter);
  ip->attach(*unet);
  std::cerr << "model run: " << run.ip_adapter << ": " << report.summary() << ", scale " << run.ip_scale << "\n";
  return ip;
}

}  // namespace lookahead::model::run
