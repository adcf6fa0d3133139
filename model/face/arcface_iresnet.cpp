// ArcFace iresnet forward and module tree. Stage containers (layer1..4, downsample) are plain
// torch::nn::Module holders so their children get nn.Sequential's numeric key names.
#include "model/face/arcface_iresnet.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <memory>

namespace lookahead::model::face {

IResNetOptions IResNetOptions::named(const std::string& name) {
  IResNetOptions o;
  if (name == "iresnet100") {
    o.layers({3, 13, 30, 3});
  } else if (name == "iresnet50") {
    o.layers({3, 4, 14, 3});
  } else {
    TORCH_CHECK(false, "unknown iresnet network '", name, "' (expected iresnet50 or iresnet100)");
  }
  return o;
}

IResNetOptions IResNetOptions::from_json_file(const std::string& path) {
  std::ifstream in(path);
  TORCH_CHECK(in.good(), "cannot open iresnet config ", path);
  const auto j = nlohmann::json::parse(in);
  // Our own format (insightface ships no config file): an unknown key, e.g. insightface's `fp16`
  // or `dropout` arguments, would otherwise be silently ignored.
  TORCH_CHECK(j.is_object(), "iresnet config ", path, ": must be a JSON object");
  for (const auto& [key, value] : j.items())
    TORCH_CHECK(key == "network" || key == "layers" || key == "num_features", "iresnet config ", path, ": ", key,
                " = ", value.dump(), " is not supported (known keys: network, layers, num_features)");
  IResNetOptions o = named(j.value("network", std::string("iresnet100")));
  if (j.contains("layers")) o.layers(j.at("layers").get<std::vector<int64_t>>());
  if (j.contains("num_features")) o.num_features(j.at("num_features").get<int64_t>());
  TORCH_CHECK(o.layers().size() == 4, "iresnet config ", path, ": layers must have 4 entries");
  return o;
}

IBasicBlockImpl::IBasicBlockImpl(int64_t inplanes_, int64_t planes_, int64_t stride_, bool downsample,
                                 at::TensorOptions tensor_options_)
    : inplanes(inplanes_), planes(planes_), stride(stride_), has_downsample(downsample),
      tensor_options(tensor_options_) {
  reset();
}

void IBasicBlockImpl::reset() {
  const auto& t = tensor_options;
  bn1 = register_module("bn1", BatchNorm(BatchNormOptions(inplanes).tensor_options(t)));
  conv1 = register_module("conv1", Conv(ConvOptions(inplanes, planes, 3).padding(1).tensor_options(t)));
  bn2 = register_module("bn2", BatchNorm(BatchNormOptions(planes).tensor_options(t)));
  prelu = register_module("prelu", PRelu(planes, t));
  conv2 = register_module("conv2", Conv(ConvOptions(planes, planes, 3).stride(stride).padding(1).tensor_options(t)));
  bn3 = register_module("bn3", BatchNorm(BatchNormOptions(planes).tensor_options(t)));
  if (has_downsample) {
    auto holder = register_module("downsample", std::make_shared<torch::nn::Module>("Sequential"));
    down_conv = holder->register_module("0", Conv(ConvOptions(inplanes, planes, 1).stride(stride).tensor_options(t)));
    down_bn = holder->register_module("1", BatchNorm(BatchNormOptions(planes).tensor_options(t)));
  }
}

at::Tensor IBasicBlockImpl::forward(const at::Tensor& x) {
  auto out = bn3(conv2(prelu(bn2(conv1(bn1(x))))));
  const auto identity = has_downsample ? down_bn(down_conv(x)) : x;
  return out + identity;
}

IResNetImpl::IResNetImpl(const IResNetOptions& options_) : options(options_) { reset(); }

void IResNetImpl::reset() {
  const auto& t = options.tensor_options();
  TORCH_CHECK(options.layers().size() == 4, "IResNet needs 4 stage depths");
  conv1 = register_module("conv1", Conv(ConvOptions(3, 64, 3).padding(1).tensor_options(t)));
  bn1 = register_module("bn1", BatchNorm(BatchNormOptions(64).tensor_options(t)));
  prelu = register_module("prelu", PRelu(64, t));
  const int64_t widths[4] = {64, 128, 256, 512};
  int64_t inplanes = 64;
  stages.clear();
  for (int s = 0; s < 4; ++s) {
    auto holder = register_module("layer" + std::to_string(s + 1), std::make_shared<torch::nn::Module>("Sequential"));
    std::vector<IBasicBlock> blocks;
    for (int64_t b = 0; b < options.layers()[s]; ++b) {
      const bool first = b == 0;
      blocks.push_back(holder->register_module(
          std::to_string(b), IBasicBlock(first ? inplanes : widths[s], widths[s], first ? 2 : 1, first, t)));
    }
    inplanes = widths[s];
    stages.push_back(std::move(blocks));
  }
  bn2 = register_module("bn2", BatchNorm(BatchNormOptions(512).tensor_options(t)));
  fc = register_module("fc", Linear(512 * 7 * 7, options.num_features(), t));
  features_bn = register_module("features", BatchNorm(BatchNormOptions(options.num_features()).tensor_options(t)));
}

at::Tensor IResNetImpl::features(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == 3 && x.size(2) == 112 && x.size(3) == 112,
              "IResNet expects [B, 3, 112, 112], got ", x.sizes());
  auto h = prelu(bn1(conv1(x)));  // [B, 64, 112, 112]
  for (auto& stage : stages)
    for (auto& block : stage) h = block(h);  // -> [B, 512, 7, 7]
  h = bn2(h).flatten(1);                     // [B, 25088]
  return features_bn(fc(h));                 // [B, num_features]
}

at::Tensor IResNetImpl::forward(const at::Tensor& x) { return l2_normalize(features(x)); }

}  // namespace lookahead::model::face
