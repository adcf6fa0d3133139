// IR-SE backbone forward and module tree; nn.Sequential containers are plain Module holders
// whose children carry the numeric names TreB1eN's checkpoint uses.
#include "model/face/arcface_irse.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <memory>
#include <string>

namespace lookahead::model::face {

BottleneckIRImpl::BottleneckIRImpl(int64_t in_channel_, int64_t depth_, int64_t stride_, bool se_,
                                   at::TensorOptions tensor_options_)
    : in_channel(in_channel_), depth(depth_), stride(stride_), se(se_), tensor_options(tensor_options_) {
  reset();
}

void BottleneckIRImpl::reset() {
  const auto& t = tensor_options;
  if (in_channel != depth) {
    auto shortcut = register_module("shortcut_layer", std::make_shared<torch::nn::Module>("Sequential"));
    short_conv = shortcut->register_module("0", Conv(ConvOptions(in_channel, depth, 1).stride(stride).tensor_options(t)));
    short_bn = shortcut->register_module("1", BatchNorm(BatchNormOptions(depth).tensor_options(t)));
  }
  auto res = register_module("res_layer", std::make_shared<torch::nn::Module>("Sequential"));
  res_bn0 = res->register_module("0", BatchNorm(BatchNormOptions(in_channel).tensor_options(t)));
  res_conv1 = res->register_module("1", Conv(ConvOptions(in_channel, depth, 3).padding(1).tensor_options(t)));
  res_prelu = res->register_module("2", PRelu(depth, t));
  res_conv3 = res->register_module("3", Conv(ConvOptions(depth, depth, 3).stride(stride).padding(1).tensor_options(t)));
  res_bn4 = res->register_module("4", BatchNorm(BatchNormOptions(depth).tensor_options(t)));
  if (se) {
    auto se_module = res->register_module("5", std::make_shared<torch::nn::Module>("SEModule"));
    se_fc1 = se_module->register_module("fc1", Conv(ConvOptions(depth, depth / 16, 1).tensor_options(t)));
    se_fc2 = se_module->register_module("fc2", Conv(ConvOptions(depth / 16, depth, 1).tensor_options(t)));
  }
}

at::Tensor BottleneckIRImpl::forward(const at::Tensor& x) {
  // MaxPool2d(kernel 1, stride s) is exactly a strided subsample.
  const auto shortcut = short_conv ? short_bn(short_conv(x)) : x.slice(2, 0, c10::nullopt, stride).slice(3, 0, c10::nullopt, stride);
  auto res = res_bn4(res_conv3(res_prelu(res_conv1(res_bn0(x)))));  // [B, depth, H/s, W/s]
  if (se) {
    const auto pooled = res.mean({2, 3}, /*keepdim=*/true);           // [B, depth, 1, 1]
    res = res * at::sigmoid(se_fc2(at::relu(se_fc1(pooled))));
  }
  return res + shortcut;
}

IRSEImpl::IRSEImpl(const IRSEOptions& options_) : options(options_) { reset(); }

void IRSEImpl::reset() {
  const auto& t = options.tensor_options();
  std::vector<int64_t> units;
  switch (options.num_layers()) {
    case 50: units = {3, 4, 14, 3}; break;
    case 100: units = {3, 13, 30, 3}; break;
    case 152: units = {3, 8, 36, 3}; break;
    default: TORCH_CHECK(false, "IR-SE num_layers must be 50, 100 or 152, got ", options.num_layers());
  }
  auto input = register_module("input_layer", std::make_shared<torch::nn::Module>("Sequential"));
  in_conv = input->register_module("0", Conv(ConvOptions(3, 64, 3).padding(1).tensor_options(t)));
  in_bn = input->register_module("1", BatchNorm(BatchNormOptions(64).tensor_options(t)));
  in_prelu = input->register_module("2", PRelu(64, t));

  auto output = register_module("output_layer", std::make_shared<torch::nn::Module>("Sequential"));
  out_bn = output->register_module("0", BatchNorm(BatchNormOptions(512).tensor_options(t)));
  out_linear = output->register_module("3", Linear(512 * 7 * 7, 512, t));
  out_bn1d = output->register_module("4", BatchNorm(BatchNormOptions(512).tensor_options(t)));

  auto body_holder = register_module("body", std::make_shared<torch::nn::Module>("Sequential"));
  body.clear();
  const int64_t depths[4] = {64, 128, 256, 512};
  int64_t in_channel = 64;
  for (int s = 0; s < 4; ++s) {
    for (int64_t u = 0; u < units[s]; ++u) {
      const bool first = u == 0;
      const auto name = std::to_string(body.size());
      body.push_back(body_holder->register_module(
          name, BottleneckIR(first ? in_channel : depths[s], depths[s], first ? 2 : 1, options.se(), t)));
    }
    in_channel = depths[s];
  }
}

at::Tensor IRSEImpl::features(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == 3 && x.size(2) == 112 && x.size(3) == 112,
              "IR-SE expects [B, 3, 112, 112], got ", x.sizes());
  auto h = in_prelu(in_bn(in_conv(x)));  // [B, 64, 112, 112]
  for (auto& unit : body) h = unit(h);   // -> [B, 512, 7, 7]
  h = out_bn(h).flatten(1);              // [B, 25088]
  return out_bn1d(out_linear(h));        // [B, 512]
}

at::Tensor IRSEImpl::forward(const at::Tensor& x) { return l2_normalize(features(x)); }

}  // namespace lookahead::model::face
