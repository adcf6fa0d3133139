// Transformer2DModel and BasicTransformerBlock.
#include "model/unet/transformer_2d.h"

#include <ATen/ATen.h>

namespace lookahead::model::unet {

BasicTransformerBlockImpl::BasicTransformerBlockImpl(int64_t dim_, int64_t heads_, int64_t head_dim_,
                                                     int64_t cross_dim_, at::TensorOptions t,
                                                     std::shared_ptr<nn::AttentionContext> context_)
    : dim(dim_), heads(heads_), head_dim(head_dim_), cross_attention_dim(cross_dim_), tensor_options(t),
      context(std::move(context_)) {
  reset();
}

void BasicTransformerBlockImpl::reset() {
  auto t = tensor_options;
  norm1 = register_module("norm1", nn::LayerNorm(nn::LayerNormOptions(dim).tensor_options(t)));
  attn1 = register_module("attn1", nn::Attention(nn::AttentionOptions(dim, heads, head_dim).tensor_options(t)));
  norm2 = register_module("norm2", nn::LayerNorm(nn::LayerNormOptions(dim).tensor_options(t)));
  attn2 = register_module(
      "attn2",
      nn::Attention(nn::AttentionOptions(dim, heads, head_dim)
                        .cross_attention_dim(cross_attention_dim)
                        .tensor_options(t)
                        .context(context)));
  norm3 = register_module("norm3", nn::LayerNorm(nn::LayerNormOptions(dim).tensor_options(t)));
  ff = register_module("ff", nn::FeedForward(dim, t));
}

at::Tensor BasicTransformerBlockImpl::forward(const at::Tensor& x, const at::Tensor& context) {
  at::Tensor h = x + attn1->forward(norm1->forward(x));
  h = h + attn2->forward(norm2->forward(h), context);
  return h + ff->forward(norm3->forward(h));
}

Transformer2DModelImpl::Transformer2DModelImpl(const Transformer2DOptions& options_) : options(options_) { reset(); }

void Transformer2DModelImpl::reset() {
  const auto& o = options;
  auto t = o.tensor_options();
  TORCH_CHECK(o.channels() % o.heads() == 0, "Transformer2DModel: ", o.channels(), " channels do not split into ",
              o.heads(), " heads");
  norm = register_module("norm", nn::GroupNorm(nn::GroupNormOptions(o.groups(), o.channels()).eps(1e-6).tensor_options(t)));
  if (o.use_linear_projection()) {
    proj_in = register_module("proj_in", nn::LoraLinear(nn::LinearOptions(o.channels(), o.channels()).tensor_options(t)).ptr());
  } else {
    proj_in = register_module("proj_in", nn::LoraConv2d(nn::Conv2dOptions(o.channels(), o.channels(), 1).tensor_options(t)).ptr());
  }
  transformer_blocks = register_module("transformer_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.depth(); ++i)
    transformer_blocks->push_back(
        BasicTransformerBlock(o.channels(), o.heads(), o.channels() / o.heads(), o.cross_attention_dim(), t, o.context()));
  if (o.use_linear_projection()) {
    proj_out = register_module("proj_out", nn::LoraLinear(nn::LinearOptions(o.channels(), o.channels()).tensor_options(t)).ptr());
  } else {
    proj_out = register_module("proj_out", nn::LoraConv2d(nn::Conv2dOptions(o.channels(), o.channels(), 1).tensor_options(t)).ptr());
  }
}

at::Tensor Transformer2DModelImpl::forward(const at::Tensor& x, const at::Tensor& context) {
  const int64_t b = x.size(0), c = x.size(1), hh = x.size(2), ww = x.size(3);
  at::Tensor h = norm->forward(x);
  if (options.use_linear_projection()) {
    h = h.permute({0, 2, 3, 1}).reshape({b, hh * ww, c});  // [B, HW, C]
    h = std::static_pointer_cast<nn::LoraLinearImpl>(proj_in)->forward(h);
  } else {
    h = std::static_pointer_cast<nn::LoraConv2dImpl>(proj_in)->forward(h);
    h = h.permute({0, 2, 3, 1}).reshape({b, hh * ww, c});
  }
  for (size_t i = 0; i < transformer_blocks->size(); ++i) h = block(i).forward(h, context);
  if (options.use_linear_projection()) {
    h = std::static_pointer_cast<nn::LoraLinearImpl>(proj_out)->forward(h);
    h = h.reshape({b, hh, ww, c}).permute({0, 3, 1, 2});
  } else {
    h = h.reshape({b, hh, ww, c}).permute({0, 3, 1, 2});
    h = std::static_pointer_cast<nn::LoraConv2dImpl>(proj_out)->forward(h.contiguous());
  }
  return h + x;
}

}  // namespace lookahead::model::unet
