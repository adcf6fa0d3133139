// ResnetBlock2D, Downsample2D, Upsample2D.
#include "model/unet/resnet.h"

#include <ATen/ATen.h>

namespace lookahead::model::unet {

ResnetBlock2DImpl::ResnetBlock2DImpl(const ResnetOptions& options_) : options(options_) { reset(); }

void ResnetBlock2DImpl::reset() {
  const auto& o = options;
  auto t = o.tensor_options();
  norm1 = register_module("norm1", nn::GroupNorm(nn::GroupNormOptions(o.groups(), o.in_channels()).eps(o.eps()).tensor_options(t)));
  conv1 = register_module("conv1", nn::LoraConv2d(nn::Conv2dOptions(o.in_channels(), o.out_channels(), 3).padding(1).tensor_options(t)));
  time_emb_proj = register_module("time_emb_proj", nn::LoraLinear(nn::LinearOptions(o.temb_channels(), o.out_channels()).tensor_options(t)));
  norm2 = register_module("norm2", nn::GroupNorm(nn::GroupNormOptions(o.groups(), o.out_channels()).eps(o.eps()).tensor_options(t)));
  conv2 = register_module("conv2", nn::LoraConv2d(nn::Conv2dOptions(o.out_channels(), o.out_channels(), 3).padding(1).tensor_options(t)));
  if (o.in_channels() != o.out_channels())
    conv_shortcut = register_module(
        "conv_shortcut", nn::LoraConv2d(nn::Conv2dOptions(o.in_channels(), o.out_channels(), 1).tensor_options(t)));
}

at::Tensor ResnetBlock2DImpl::forward(const at::Tensor& x, const at::Tensor& emb) {
  at::Tensor h = conv1->forward(at::silu(norm1->forward(x)));
  h = h + time_emb_proj->forward(at::silu(emb)).unsqueeze(-1).unsqueeze(-1);  // [B, C, 1, 1]
  h = conv2->forward(at::silu(norm2->forward(h)));
  at::Tensor skip = conv_shortcut ? conv_shortcut->forward(x) : x;
  at::Tensor out = skip + h;
  return options.output_scale_factor() == 1.0 ? out : out / options.output_scale_factor();
}

Downsample2DImpl::Downsample2DImpl(int64_t c, int64_t p, at::TensorOptions t) : channels(c), padding(p), tensor_options(t) {
  reset();
}

void Downsample2DImpl::reset() {
  conv = register_module(
      "conv", nn::LoraConv2d(nn::Conv2dOptions(channels, channels, 3).stride(2).padding(padding).tensor_options(tensor_options)));
}

at::Tensor Downsample2DImpl::forward(const at::Tensor& x) {
  // diffusers pads asymmetrically (right/bottom) itself only when padding == 0.
  if (padding == 0) return conv->forward(at::constant_pad_nd(x, {0, 1, 0, 1}));
  return conv->forward(x);
}

Upsample2DImpl::Upsample2DImpl(int64_t c, at::TensorOptions t) : channels(c), tensor_options(t) { reset(); }

void Upsample2DImpl::reset() {
  conv = register_module("conv", nn::LoraConv2d(nn::Conv2dOptions(channels, channels, 3).padding(1).tensor_options(tensor_options)));
}

at::Tensor Upsample2DImpl::forward(const at::Tensor& x, c10::optional<at::IntArrayRef> size) {
  at::Tensor up = size ? at::upsample_nearest2d(x, *size) : at::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2});
  return conv->forward(up);
}

}  // namespace lookahead::model::unet
