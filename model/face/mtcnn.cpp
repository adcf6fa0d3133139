// MTCNN network forwards. Max pools use ceil_mode (as facenet-pytorch's nn.MaxPool2d(...,
// ceil_mode=True)); the dense layers see activations flattened after a permute to [B, W, H, C].
#include "model/face/mtcnn.h"

#include <ATen/ATen.h>

namespace lookahead::model::face {
namespace {

at::Tensor pool(const at::Tensor& x, int64_t kernel, int64_t stride) {
  return at::max_pool2d(x, {kernel, kernel}, {stride, stride}, {0, 0}, {1, 1}, /*ceil_mode=*/true);
}

ConvOptions conv(int64_t in, int64_t out, int64_t k, at::TensorOptions t) {
  return ConvOptions(in, out, k).bias(true).tensor_options(t);
}

}  // namespace

PNetImpl::PNetImpl(at::TensorOptions tensor_options_) : tensor_options(tensor_options_) { reset(); }

void PNetImpl::reset() {
  const auto& t = tensor_options;
  conv1 = register_module("conv1", Conv(conv(3, 10, 3, t)));
  prelu1 = register_module("prelu1", PRelu(10, t));
  conv2 = register_module("conv2", Conv(conv(10, 16, 3, t)));
  prelu2 = register_module("prelu2", PRelu(16, t));
  conv3 = register_module("conv3", Conv(conv(16, 32, 3, t)));
  prelu3 = register_module("prelu3", PRelu(32, t));
  conv4_1 = register_module("conv4_1", Conv(conv(32, 2, 1, t)));
  conv4_2 = register_module("conv4_2", Conv(conv(32, 4, 1, t)));
}

PNetOutput PNetImpl::forward(const at::Tensor& x) {
  auto h = pool(prelu1(conv1(x)), 2, 2);
  h = prelu3(conv3(prelu2(conv2(h))));  // [B, 32, h, w]
  return {conv4_2(h), at::softmax(conv4_1(h), 1)};
}

RNetImpl::RNetImpl(at::TensorOptions tensor_options_) : tensor_options(tensor_options_) { reset(); }

void RNetImpl::reset() {
  const auto& t = tensor_options;
  conv1 = register_module("conv1", Conv(conv(3, 28, 3, t)));
  prelu1 = register_module("prelu1", PRelu(28, t));
  conv2 = register_module("conv2", Conv(conv(28, 48, 3, t)));
  prelu2 = register_module("prelu2", PRelu(48, t));
  conv3 = register_module("conv3", Conv(conv(48, 64, 2, t)));
  prelu3 = register_module("prelu3", PRelu(64, t));
  dense4 = register_module("dense4", Linear(576, 128, t));
  prelu4 = register_module("prelu4", PRelu(128, t));
  dense5_1 = register_module("dense5_1", Linear(128, 2, t));
  dense5_2 = register_module("dense5_2", Linear(128, 4, t));
}

RefineOutput RNetImpl::forward(const at::Tensor& x) {
  auto h = pool(prelu1(conv1(x)), 3, 2);
  h = pool(prelu2(conv2(h)), 3, 2);
  h = prelu3(conv3(h));                                   // [B, 64, 3, 3]
  h = h.permute({0, 3, 2, 1}).reshape({h.size(0), -1});   // [B, 576] in (W, H, C) order
  h = prelu4(dense4(h));                                  // [B, 128]
  return {dense5_2(h), at::softmax(dense5_1(h), 1), at::Tensor()};
}

ONetImpl::ONetImpl(at::TensorOptions tensor_options_) : tensor_options(tensor_options_) { reset(); }

void ONetImpl::reset() {
  const auto& t = tensor_options;
  conv1 = register_module("conv1", Conv(conv(3, 32, 3, t)));
  prelu1 = register_module("prelu1", PRelu(32, t));
  conv2 = register_module("conv2", Conv(conv(32, 64, 3, t)));
  prelu2 = register_module("prelu2", PRelu(64, t));
  conv3 = register_module("conv3", Conv(conv(64, 64, 3, t)));
  prelu3 = register_module("prelu3", PRelu(64, t));
  conv4 = register_module("conv4", Conv(conv(64, 128, 2, t)));
  prelu4 = register_module("prelu4", PRelu(128, t));
  dense5 = register_module("dense5", Linear(1152, 256, t));
  prelu5 = register_module("prelu5", PRelu(256, t));
  dense6_1 = register_module("dense6_1", Linear(256, 2, t));
  dense6_2 = register_module("dense6_2", Linear(256, 4, t));
  dense6_3 = register_module("dense6_3", Linear(256, 10, t));
}

RefineOutput ONetImpl::forward(const at::Tensor& x) {
  auto h = pool(prelu1(conv1(x)), 3, 2);
  h = pool(prelu2(conv2(h)), 3, 2);
  h = pool(prelu3(conv3(h)), 2, 2);
  h = prelu4(conv4(h));                                   // [B, 128, 3, 3]
  h = h.permute({0, 3, 2, 1}).reshape({h.size(0), -1});   // [B, 1152] in (W, H, C) order
  h = prelu5(dense5(h));                                  // [B, 256]
  return {dense6_2(h), at::softmax(dense6_1(h), 1), dense6_3(h)};
}

}  // namespace lookahead::model::face
