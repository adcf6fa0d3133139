// AutoencoderKL construction (diffusers' Encoder / Decoder rules) and encode / decode.
#include "model/vae/autoencoder_kl.h"

#include <ATen/ATen.h>

namespace lookahead::model::vae {

namespace {

VaeBlockOptions block_options(const KLConfig& c, at::TensorOptions t) {
  VaeBlockOptions o;
  o.groups = c.norm_num_groups;
  o.eps = 1e-6;
  o.act_fn = c.act_fn;
  o.add_attention = c.mid_block_add_attention;
  o.tensor_options = t;
  return o;
}

nn::LoraConv2d conv(int64_t in, int64_t out, int64_t kernel, at::TensorOptions t) {
  return nn::LoraConv2d(nn::Conv2dOptions(in, out, kernel).padding(kernel / 2).tensor_options(t));
}

}  // namespace

at::Tensor LatentDistribution::sample(const at::Tensor& noise) const {
  TORCH_CHECK(noise.sizes() == mean.sizes(), "LatentDistribution: noise must be ", mean.sizes(), ", got ", noise.sizes());
  return mean + std * noise.to(mean.scalar_type());
}

LatentDistribution LatentDistribution::from_moments(const at::Tensor& moments) {
  auto parts = moments.chunk(2, 1);  // [B, C, h, w] each
  LatentDistribution d;
  d.mean = parts[0];
  d.logvar = at::clamp(parts[1], -30.0, 20.0);
  d.std = at::exp(0.5 * d.logvar);
  return d;
}

// ---- encoder ------------------------------------------------------------------------------------

VaeEncoderImpl::VaeEncoderImpl(KLConfig c, at::TensorOptions t) : config(std::move(c)), tensor_options(t) { reset(); }

void VaeEncoderImpl::reset() {
  const auto& c = config;
  const auto t = tensor_options;
  const size_t n = c.block_out_channels.size();
  conv_in = register_module("conv_in", conv(c.in_channels, c.block_out_channels[0], 3, t));
  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  int64_t out_ch = c.block_out_channels[0];
  for (size_t i = 0; i < n; ++i) {
    VaeBlockOptions o = block_options(c, t);
    o.in_channels = out_ch;
    out_ch = c.block_out_channels[i];
    o.out_channels = out_ch;
    o.num_layers = c.layers_per_block;
    o.add_sampler = i + 1 < n;
    down_blocks->push_back(DownEncoderBlock(o));
  }
  VaeBlockOptions mid = block_options(c, t);
  mid.in_channels = mid.out_channels = c.block_out_channels.back();
  mid_block = register_module("mid_block", VaeMidBlock(mid));
  conv_norm_out = register_module(
      "conv_norm_out",
      nn::GroupNorm(nn::GroupNormOptions(c.norm_num_groups, c.block_out_channels.back()).eps(1e-6).tensor_options(t)));
  conv_out = register_module("conv_out", conv(c.block_out_channels.back(), 2 * c.latent_channels, 3, t));
}

at::Tensor VaeEncoderImpl::forward(const at::Tensor& x) {
  at::Tensor h = conv_in->forward(x);
  for (size_t i = 0; i < down_blocks->size(); ++i) h = down_blocks->ptr<DownEncoderBlockImpl>(i)->forward(h);
  h = mid_block->forward(h);
  return conv_out->forward(at::silu(conv_norm_out->forward(h)));  // [B, 2 * latent, H/f, W/f]
}

// ---- decoder ------------------------------------------------------------------------------------

VaeDecoderImpl::VaeDecoderImpl(KLConfig c, at::TensorOptions t) : config(std::move(c)), tensor_options(t) { reset(); }

void VaeDecoderImpl::reset() {
  const auto& c = config;
  const auto t = tensor_options;
  const size_t n = c.block_out_channels.size();
  std::vector<int64_t> rev(c.block_out_channels.rbegin(), c.block_out_channels.rend());
  conv_in = register_module("conv_in", conv(c.latent_channels, rev[0], 3, t));
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  VaeBlockOptions mid = block_options(c, t);
  mid.in_channels = mid.out_channels = rev[0];
  mid_block = register_module("mid_block", VaeMidBlock(mid));
  int64_t out_ch = rev[0];
  for (size_t i = 0; i < n; ++i) {
    VaeBlockOptions o = block_options(c, t);
    o.in_channels = out_ch;
    out_ch = rev[i];
    o.out_channels = out_ch;
    o.num_layers = c.layers_per_block + 1;
    o.add_sampler = i + 1 < n;
    up_blocks->push_back(UpDecoderBlock(o));
  }
  conv_norm_out = register_module(
      "conv_norm_out",
      nn::GroupNorm(nn::GroupNormOptions(c.norm_num_groups, c.block_out_channels[0]).eps(1e-6).tensor_options(t)));
  conv_out = register_module("conv_out", conv(c.block_out_channels[0], c.out_channels, 3, t));
}

at::Tensor VaeDecoderImpl::forward(const at::Tensor& z) {
  at::Tensor h = conv_in->forward(z);
  h = mid_block->forward(h);
  for (size_t i = 0; i < up_blocks->size(); ++i) h = up_blocks->ptr<UpDecoderBlockImpl>(i)->forward(h);
  return conv_out->forward(at::silu(conv_norm_out->forward(h)));  // [B, out_channels, h*f, w*f]
}

// ---- autoencoder --------------------------------------------------------------------------------

AutoencoderKLImpl::AutoencoderKLImpl(KLConfig config, at::TensorOptions tensor_options)
    : config_(std::move(config)), tensor_options_(tensor_options) {
  reset();
}

void AutoencoderKLImpl::reset() {
  const auto t = tensor_options_;
  const int64_t lc = config_.latent_channels;
  encoder = register_module("encoder", VaeEncoder(config_, t));
  decoder = register_module("decoder", VaeDecoder(config_, t));
  if (config_.use_quant_conv) quant_conv = register_module("quant_conv", conv(2 * lc, 2 * lc, 1, t));
  if (config_.use_post_quant_conv) post_quant_conv = register_module("post_quant_conv", conv(lc, lc, 1, t));
}

LatentDistribution AutoencoderKLImpl::encode(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == config_.in_channels, "AutoencoderKL: image must be [B, ",
              config_.in_channels, ", H, W], got ", x.sizes());
  at::Tensor moments = encoder->forward(x.to(encoder->conv_in->weight.scalar_type()));
  if (quant_conv) moments = quant_conv->forward(moments);
  return LatentDistribution::from_moments(moments);
}

at::Tensor AutoencoderKLImpl::decode(const at::Tensor& z) {
  TORCH_CHECK(z.dim() == 4 && z.size(1) == config_.latent_channels, "AutoencoderKL: latents must be [B, ",
              config_.latent_channels, ", h, w], got ", z.sizes());
  at::Tensor h = z.to(decoder->conv_in->weight.scalar_type());
  if (post_quant_conv) h = post_quant_conv->forward(h);
  return decoder->forward(h);
}

at::Tensor AutoencoderKLImpl::to_unet_latents(const LatentDistribution& dist, const at::Tensor& noise) const {
  at::Tensor z = noise.defined() ? dist.sample(noise) : dist.mean;
  return (z - config_.shift_factor) * config_.scaling_factor;
}

at::Tensor AutoencoderKLImpl::from_unet_latents(const at::Tensor& z) const {
  return z / config_.scaling_factor + config_.shift_factor;
}

int64_t AutoencoderKLImpl::downscale_factor() const {
  return int64_t{1} << (config_.block_out_channels.size() - 1);
}

}  // namespace lookahead::model::vae
