// AutoencoderTiny construction (diffusers' EncoderTiny / DecoderTiny layer order) and forward.
#include "model/vae/autoencoder_tiny.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/upsampling.h>

#include "model/vae/vae_blocks.h"

namespace lookahead::model::vae {

namespace {

nn::LoraConv2d conv3x3(int64_t in, int64_t out, int64_t stride, bool bias, at::TensorOptions t) {
  return nn::LoraConv2d(nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(bias).tensor_options(t));
}

}  // namespace

// ---- block --------------------------------------------------------------------------------------

TinyBlockImpl::TinyBlockImpl(int64_t in, int64_t out, std::string act, at::TensorOptions t)
    : in_channels(in), out_channels(out), act_fn(std::move(act)), tensor_options(t) {
  reset();
}

void TinyBlockImpl::reset() {
  conv = register_module("conv", torch::nn::Sequential(conv3x3(in_channels, out_channels, 1, true, tensor_options),
                                                       Activation(act_fn),
                                                       conv3x3(out_channels, out_channels, 1, true, tensor_options),
                                                       Activation(act_fn),
                                                       conv3x3(out_channels, out_channels, 1, true, tensor_options)));
  if (in_channels != out_channels)
    skip = register_module(
        "skip", nn::LoraConv2d(nn::Conv2dOptions(in_channels, out_channels, 1).bias(false).tensor_options(tensor_options)));
}

at::Tensor TinyBlockImpl::forward(const at::Tensor& x) {
  at::Tensor h = conv->forward(x);
  return at::relu(h + (skip ? skip->forward(x) : x));
}

// ---- encoder ------------------------------------------------------------------------------------

EncoderTinyImpl::EncoderTinyImpl(TinyConfig c, at::TensorOptions t) : config(std::move(c)), tensor_options(t) { reset(); }

void EncoderTinyImpl::reset() {
  const auto& c = config;
  layers = register_module("layers", torch::nn::Sequential());
  for (size_t i = 0; i < c.num_encoder_blocks.size(); ++i) {
    const int64_t ch = c.encoder_block_out_channels[i];
    if (i == 0)
      layers->push_back(conv3x3(c.in_channels, ch, 1, true, tensor_options));
    else
      layers->push_back(conv3x3(ch, ch, 2, false, tensor_options));  // stride-2 downsampling
    for (int64_t b = 0; b < c.num_encoder_blocks[i]; ++b) layers->push_back(TinyBlock(ch, ch, c.act_fn, tensor_options));
  }
  layers->push_back(conv3x3(c.encoder_block_out_channels.back(), c.latent_channels, 1, true, tensor_options));
}

at::Tensor EncoderTinyImpl::forward(const at::Tensor& x) {
  return layers->forward(x.add(1).div(2));  // [-1, 1] -> [0, 1]
}

// ---- decoder ------------------------------------------------------------------------------------

DecoderTinyImpl::DecoderTinyImpl(TinyConfig c, at::TensorOptions t) : config(std::move(c)), tensor_options(t) { reset(); }

void DecoderTinyImpl::reset() {
  const auto& c = config;
  layers = register_module("layers", torch::nn::Sequential());
  layers->push_back(conv3x3(c.latent_channels, c.decoder_block_out_channels[0], 1, true, tensor_options));
  layers->push_back(Activation(c.act_fn));
  const size_t n = c.num_decoder_blocks.size();
  for (size_t i = 0; i < n; ++i) {
    const bool last = i + 1 == n;
    const int64_t ch = c.decoder_block_out_channels[i];
    for (int64_t b = 0; b < c.num_decoder_blocks[i]; ++b) layers->push_back(TinyBlock(ch, ch, c.act_fn, tensor_options));
    if (!last) {
      const auto f = static_cast<double>(c.upsampling_scaling_factor);
      layers->push_back(
          torch::nn::Upsample(torch::nn::UpsampleOptions().scale_factor(std::vector<double>{f, f}).mode(torch::kNearest)));
    }
    layers->push_back(conv3x3(ch, last ? c.out_channels : ch, 1, /*bias=*/last, tensor_options));
  }
}

at::Tensor DecoderTinyImpl::forward(const at::Tensor& z) {
  at::Tensor x = at::tanh(z / 3) * 3;  // soft clamp to (-3, 3)
  return layers->forward(x).mul(2).sub(1);  // [0, 1] -> [-1, 1]
}

// ---- autoencoder --------------------------------------------------------------------------------

AutoencoderTinyImpl::AutoencoderTinyImpl(TinyConfig config, at::TensorOptions tensor_options)
    : config_(std::move(config)), tensor_options_(tensor_options) {
  reset();
}

void AutoencoderTinyImpl::reset() {
  encoder = register_module("encoder", EncoderTiny(config_, tensor_options_));
  decoder = register_module("decoder", DecoderTiny(config_, tensor_options_));
}

at::Tensor AutoencoderTinyImpl::encode(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == config_.in_channels, "AutoencoderTiny: image must be [B, ",
              config_.in_channels, ", H, W], got ", x.sizes());
  return encoder->forward(x.to(encoder->layers->ptr<nn::LoraConv2dImpl>(0)->weight.scalar_type()));
}

at::Tensor AutoencoderTinyImpl::decode(const at::Tensor& z) {
  TORCH_CHECK(z.dim() == 4 && z.size(1) == config_.latent_channels, "AutoencoderTiny: latents must be [B, ",
              config_.latent_channels, ", h, w], got ", z.sizes());
  return decoder->forward(z.to(decoder->layers->ptr<nn::LoraConv2dImpl>(0)->weight.scalar_type()));
}

at::Tensor AutoencoderTinyImpl::scale_latents(const at::Tensor& z) const {
  return z.div(2 * config_.latent_magnitude).add(config_.latent_shift).clamp(0, 1);
}

at::Tensor AutoencoderTinyImpl::unscale_latents(const at::Tensor& x) const {
  return x.sub(config_.latent_shift).mul(2 * config_.latent_magnitude);
}

}  // namespace lookahead::model::vae
