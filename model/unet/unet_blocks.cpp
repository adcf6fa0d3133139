// Down, mid and up stages of UNet2DConditionModel.
#include "model/unet/unet_blocks.h"

#include <ATen/ATen.h>

#include "model/nn/unit_call.h"

namespace lookahead::model::unet {

namespace {

/// resnet(h, emb) as a sharding unit.
at::Tensor run_resnet(const BlockOptions& o, ResnetBlock2DImpl* resnet, const at::Tensor& h, const at::Tensor& emb) {
  return nn::call_unit(o.attention_context.get(), *resnet,
                       [resnet](const std::vector<at::Tensor>& in) {
                         return std::vector<at::Tensor>{resnet->forward(in[0], in[1])};
                       },
                       {h, emb})[0];
}

ResnetBlock2D make_resnet(const BlockOptions& o, int64_t in, int64_t out) {
  return ResnetBlock2D(ResnetOptions(in, out, o.temb_channels)
                           .groups(o.groups)
                           .eps(o.eps)
                           .output_scale_factor(o.output_scale_factor)
                           .tensor_options(o.tensor_options));
}

Transformer2DModel make_transformer(const BlockOptions& o) {
  return Transformer2DModel(Transformer2DOptions(o.out_channels, o.heads, o.transformer_depth, o.cross_attention_dim)
                                .groups(o.groups)
                                .use_linear_projection(o.use_linear_projection)
                                .tensor_options(o.tensor_options)
                                .context(o.attention_context));
}

}  // namespace

// ---- down ---------------------------------------------------------------------------------------

DownBlockImpl::DownBlockImpl(const BlockOptions& options_) : options(options_) { reset(); }

void DownBlockImpl::reset() {
  const auto& o = options;
  // Registration order follows diffusers' attribute order (attentions before resnets).
  if (o.cross_attention) attentions = register_module("attentions", torch::nn::ModuleList());
  resnets = register_module("resnets", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.num_layers; ++i) {
    resnets->push_back(make_resnet(o, i == 0 ? o.in_channels : o.out_channels, o.out_channels));
    if (o.cross_attention) attentions->push_back(make_transformer(o));
  }
  if (o.add_sampler) {
    downsamplers = register_module("downsamplers", torch::nn::ModuleList());
    downsamplers->push_back(Downsample2D(o.out_channels, o.downsample_padding, o.tensor_options));
  }
}

at::Tensor DownBlockImpl::forward(at::Tensor h, const at::Tensor& emb, const at::Tensor& context,
                                  std::vector<at::Tensor>& skips) {
  for (size_t i = 0; i < resnets->size(); ++i) {
    h = run_resnet(options, resnets->ptr<ResnetBlock2DImpl>(i).get(), h, emb);
    if (attentions) h = attentions->ptr<Transformer2DModelImpl>(i)->forward(h, context);
    skips.push_back(h);
  }
  if (downsamplers) {
    auto* down = downsamplers->ptr<Downsample2DImpl>(0).get();
    h = nn::call_unit(options.attention_context.get(), *down,
                      [down](const std::vector<at::Tensor>& in) { return std::vector<at::Tensor>{down->forward(in[0])}; },
                      {h})[0];
    skips.push_back(h);
  }
  return h;
}

// ---- mid ----------------------------------------------------------------------------------------

MidBlockImpl::MidBlockImpl(const BlockOptions& options_) : options(options_) { reset(); }

void MidBlockImpl::reset() {
  const auto& o = options;
  attentions = register_module("attentions", torch::nn::ModuleList());
  resnets = register_module("resnets", torch::nn::ModuleList());
  resnets->push_back(make_resnet(o, o.in_channels, o.in_channels));
  for (int64_t i = 0; i < o.num_layers; ++i) {
    attentions->push_back(make_transformer(o));
    resnets->push_back(make_resnet(o, o.in_channels, o.in_channels));
  }
}

at::Tensor MidBlockImpl::forward(at::Tensor h, const at::Tensor& emb, const at::Tensor& context) {
  h = run_resnet(options, resnets->ptr<ResnetBlock2DImpl>(0).get(), h, emb);
  for (size_t i = 0; i < attentions->size(); ++i) {
    h = attentions->ptr<Transformer2DModelImpl>(i)->forward(h, context);
    h = run_resnet(options, resnets->ptr<ResnetBlock2DImpl>(i + 1).get(), h, emb);
  }
  return h;
}

// ---- up -----------------------------------------------------------------------------------------

UpBlockImpl::UpBlockImpl(const BlockOptions& options_) : options(options_) { reset(); }

void UpBlockImpl::reset() {
  const auto& o = options;
  if (o.cross_attention) attentions = register_module("attentions", torch::nn::ModuleList());
  resnets = register_module("resnets", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.num_layers; ++i) {
    // The last layer consumes the skip of the stage's input; the others the stage's own outputs.
    int64_t skip_channels = i == o.num_layers - 1 ? o.in_channels : o.out_channels;
    int64_t resnet_in = i == 0 ? o.prev_output_channels : o.out_channels;
    resnets->push_back(make_resnet(o, resnet_in + skip_channels, o.out_channels));
    if (o.cross_attention) attentions->push_back(make_transformer(o));
  }
  if (o.add_sampler) {
    upsamplers = register_module("upsamplers", torch::nn::ModuleList());
    upsamplers->push_back(Upsample2D(o.out_channels, o.tensor_options));
  }
}

at::Tensor UpBlockImpl::forward(at::Tensor h, const at::Tensor& emb, const at::Tensor& context,
                                std::vector<at::Tensor>& skips, c10::optional<std::vector<int64_t>> upsample_size,
                                bool run_upsampler) {
  for (size_t i = 0; i < resnets->size(); ++i) {
    TORCH_INTERNAL_ASSERT(!skips.empty(), "UNet skip stack exhausted");
    at::Tensor skip = std::move(skips.back());
    skips.pop_back();
    h = at::cat({h, skip}, 1);  // [B, C_h + C_skip, H, W]
    h = run_resnet(options, resnets->ptr<ResnetBlock2DImpl>(i).get(), h, emb);
    if (attentions) h = attentions->ptr<Transformer2DModelImpl>(i)->forward(h, context);
  }
  if (upsamplers && run_upsampler) {
    auto* up = upsamplers->ptr<Upsample2DImpl>(0).get();
    h = nn::call_unit(options.attention_context.get(), *up,
                      [up, upsample_size](const std::vector<at::Tensor>& in) {
                        return std::vector<at::Tensor>{
                            upsample_size ? up->forward(in[0], at::IntArrayRef(*upsample_size)) : up->forward(in[0])};
                      },
                      {h})[0];
  }
  return h;
}

}  // namespace lookahead::model::unet
