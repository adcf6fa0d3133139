// AutoencoderKL blocks: resnet, VAE attention, mid block, down-encoder and up-decoder stages.
#include "model/vae/vae_blocks.h"

#include <ATen/ATen.h>

#include "model/unet/resnet.h"

namespace lookahead::model::vae {

at::Tensor activate(const at::Tensor& x, const std::string& name) {
  if (name == "silu" || name == "swish") return at::silu(x);
  if (name == "relu") return at::relu(x);
  if (name == "gelu") return at::gelu(x);
  if (name == "mish") return at::mish(x);
  TORCH_CHECK(false, "unsupported activation '", name, "' (supported: relu, silu, swish, gelu, mish)");
}

// ---- resnet -------------------------------------------------------------------------------------

VaeResnetBlockImpl::VaeResnetBlockImpl(int64_t in, int64_t out, const VaeBlockOptions& o)
    : in_channels(in), out_channels(out), options(o) {
  reset();
}

void VaeResnetBlockImpl::reset() {
  const auto& o = options;
  const auto t = o.tensor_options;
  norm1 = register_module("norm1", nn::GroupNorm(nn::GroupNormOptions(o.groups, in_channels).eps(o.eps).tensor_options(t)));
  conv1 = register_module("conv1", nn::LoraConv2d(nn::Conv2dOptions(in_channels, out_channels, 3).padding(1).tensor_options(t)));
  norm2 = register_module("norm2", nn::GroupNorm(nn::GroupNormOptions(o.groups, out_channels).eps(o.eps).tensor_options(t)));
  conv2 = register_module("conv2", nn::LoraConv2d(nn::Conv2dOptions(out_channels, out_channels, 3).padding(1).tensor_options(t)));
  if (in_channels != out_channels)
    conv_shortcut = register_module("conv_shortcut",
                                    nn::LoraConv2d(nn::Conv2dOptions(in_channels, out_channels, 1).tensor_options(t)));
}

at::Tensor VaeResnetBlockImpl::forward(const at::Tensor& x) {
  at::Tensor h = conv1->forward(activate(norm1->forward(x), options.act_fn));
  h = conv2->forward(activate(norm2->forward(h), options.act_fn));
  return (conv_shortcut ? conv_shortcut->forward(x) : x) + h;
}

// ---- attention ----------------------------------------------------------------------------------

VaeAttentionImpl::VaeAttentionImpl(int64_t c, const VaeBlockOptions& o) : channels(c), options(o) { reset(); }

void VaeAttentionImpl::reset() {
  const auto t = options.tensor_options;
  group_norm = register_module(
      "group_norm", nn::GroupNorm(nn::GroupNormOptions(options.groups, channels).eps(options.eps).tensor_options(t)));
  auto linear = [&] { return nn::LoraLinear(nn::LinearOptions(channels, channels).tensor_options(t)); };
  to_q = register_module("to_q", linear());
  to_k = register_module("to_k", linear());
  to_v = register_module("to_v", linear());
  to_out = register_module("to_out", torch::nn::ModuleList());
  to_out->push_back(linear());
}

at::Tensor VaeAttentionImpl::forward(const at::Tensor& x) {
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  at::Tensor tokens = group_norm->forward(x).reshape({b, c, h * w}).transpose(1, 2);  // [B, N, C]
  at::Tensor q = to_q->forward(tokens).unsqueeze(1);                                  // [B, 1, N, C]
  at::Tensor k = to_k->forward(tokens).unsqueeze(1);
  at::Tensor v = to_v->forward(tokens).unsqueeze(1);
  at::Tensor attn = at::scaled_dot_product_attention(q, k, v).squeeze(1);             // [B, N, C]
  at::Tensor out = to_out->ptr<nn::LoraLinearImpl>(0)->forward(attn);
  return out.transpose(1, 2).reshape({b, c, h, w}) + x;                                // [B, C, H, W]
}

// ---- mid block ----------------------------------------------------------------------------------

VaeMidBlockImpl::VaeMidBlockImpl(const VaeBlockOptions& o) : options(o) { reset(); }

void VaeMidBlockImpl::reset() {
  const int64_t c = options.in_channels;
  if (options.add_attention) {
    attentions = register_module("attentions", torch::nn::ModuleList());
    attentions->push_back(VaeAttention(c, options));
  }
  resnets = register_module("resnets", torch::nn::ModuleList());
  resnets->push_back(VaeResnetBlock(c, c, options));
  resnets->push_back(VaeResnetBlock(c, c, options));
}

at::Tensor VaeMidBlockImpl::forward(const at::Tensor& x) {
  at::Tensor h = resnets->ptr<VaeResnetBlockImpl>(0)->forward(x);
  if (attentions) h = attentions->ptr<VaeAttentionImpl>(0)->forward(h);
  return resnets->ptr<VaeResnetBlockImpl>(1)->forward(h);
}

// ---- stages -------------------------------------------------------------------------------------

DownEncoderBlockImpl::DownEncoderBlockImpl(const VaeBlockOptions& o) : options(o) { reset(); }

void DownEncoderBlockImpl::reset() {
  resnets = register_module("resnets", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.num_layers; ++i)
    resnets->push_back(VaeResnetBlock(i == 0 ? options.in_channels : options.out_channels, options.out_channels, options));
  if (options.add_sampler) {
    downsamplers = register_module("downsamplers", torch::nn::ModuleList());
    downsamplers->push_back(unet::Downsample2D(options.out_channels, 0, options.tensor_options));
  }
}

at::Tensor DownEncoderBlockImpl::forward(const at::Tensor& x) {
  at::Tensor h = x;
  for (size_t i = 0; i < resnets->size(); ++i) h = resnets->ptr<VaeResnetBlockImpl>(i)->forward(h);
  if (downsamplers) h = downsamplers->ptr<unet::Downsample2DImpl>(0)->forward(h);
  return h;
}

UpDecoderBlockImpl::UpDecoderBlockImpl(const VaeBlockOptions& o) : options(o) { reset(); }

void UpDecoderBlockImpl::reset() {
  resnets = register_module("resnets", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.num_layers; ++i)
    resnets->push_back(VaeResnetBlock(i == 0 ? options.in_channels : options.out_channels, options.out_channels, options));
  if (options.add_sampler) {
    upsamplers = register_module("upsamplers", torch::nn::ModuleList());
    upsamplers->push_back(unet::Upsample2D(options.out_channels, options.tensor_options));
  }
}

at::Tensor UpDecoderBlockImpl::forward(const at::Tensor& x) {
  at::Tensor h = x;
  for (size_t i = 0; i < resnets->size(); ++i) h = resnets->ptr<VaeResnetBlockImpl>(i)->forward(h);
  if (upsamplers) h = upsamplers->ptr<unet::Upsample2DImpl>(0)->forward(h);
  return h;
}

}  // namespace lookahead::model::vae
