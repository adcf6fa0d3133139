// Perceiver Resampler of IP-Adapter Plus.
#include "model/adapters/resampler.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/activation.h>

#include <cmath>

namespace lookahead::model::adapters {

PerceiverAttentionImpl::PerceiverAttentionImpl(const ResamplerOptions& options_) : options(options_) { reset(); }

void PerceiverAttentionImpl::reset() {
  const auto& o = options;
  auto t = o.tensor_options();
  int64_t inner = o.dim_head() * o.heads();
  norm1 = register_module("norm1", nn::LayerNorm(nn::LayerNormOptions(o.dim()).tensor_options(t)));
  norm2 = register_module("norm2", nn::LayerNorm(nn::LayerNormOptions(o.dim()).tensor_options(t)));
  to_q = register_module("to_q", nn::LoraLinear(nn::LinearOptions(o.dim(), inner).bias(false).tensor_options(t)));
  to_kv = register_module("to_kv", nn::LoraLinear(nn::LinearOptions(o.dim(), 2 * inner).bias(false).tensor_options(t)));
  to_out = register_module("to_out", nn::LoraLinear(nn::LinearOptions(inner, o.dim()).bias(false).tensor_options(t)));
}

at::Tensor PerceiverAttentionImpl::forward(const at::Tensor& x, const at::Tensor& latents) {
  const int64_t b = latents.size(0), q_len = latents.size(1), h = options.heads(), d = options.dim_head();
  at::Tensor xn = norm1->forward(x);
  at::Tensor ln = norm2->forward(latents);
  at::Tensor q = to_q->forward(ln);                                // [B, Q, h*d]
  auto kv = to_kv->forward(at::cat({xn, ln}, 1)).chunk(2, -1);     // [B, N+Q, h*d] each
  auto heads = [&](const at::Tensor& t) { return t.view({b, t.size(1), h, d}).transpose(1, 2); };
  // Scaling q and k by d^-1/4 each (instead of the product by d^-1/2) is how the reference keeps
  // fp16 logits in range; the softmax runs in float32.
  double s = 1.0 / std::sqrt(std::sqrt(static_cast<double>(d)));
  at::Tensor w = at::matmul(heads(q) * s, (heads(kv[0]) * s).transpose(-2, -1));  // [B, h, Q, N+Q]
  // float64 stays float64 (gradient checks): "at least float32".
  const auto softmax_type = w.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  w = at::softmax(w.to(softmax_type), -1).to(w.scalar_type());
  at::Tensor o = at::matmul(w, heads(kv[1]));                                     // [B, h, Q, d]
  return to_out->forward(o.transpose(1, 2).reshape({b, q_len, h * d}));
}

ResamplerImpl::ResamplerImpl(const ResamplerOptions& options_) : options(options_) { reset(); }

void ResamplerImpl::reset() {
  const auto& o = options;
  auto t = o.tensor_options();
  latents = register_parameter("latents", at::empty({1, o.num_queries(), o.dim()}, t));
  if (!latents.is_meta()) {
    at::NoGradGuard no_grad;
    latents.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(o.dim())));
  }
  proj_in = register_module("proj_in", nn::LoraLinear(nn::LinearOptions(o.embedding_dim(), o.dim()).tensor_options(t)));
  proj_out = register_module("proj_out", nn::LoraLinear(nn::LinearOptions(o.dim(), o.output_dim()).tensor_options(t)));
  norm_out = register_module("norm_out", nn::LayerNorm(nn::LayerNormOptions(o.output_dim()).tensor_options(t)));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.depth(); ++i) {
    torch::nn::ModuleList ff;
    ff->push_back(nn::LayerNorm(nn::LayerNormOptions(o.dim()).tensor_options(t)));
    ff->push_back(nn::LoraLinear(nn::LinearOptions(o.dim(), o.dim() * o.ff_mult()).bias(false).tensor_options(t)));
    ff->push_back(torch::nn::GELU());
    ff->push_back(nn::LoraLinear(nn::LinearOptions(o.dim() * o.ff_mult(), o.dim()).bias(false).tensor_options(t)));
    torch::nn::ModuleList layer;
    layer->push_back(PerceiverAttention(o));
    layer->push_back(ff);
    layers->push_back(layer);
  }
}

at::Tensor ResamplerImpl::forward(const at::Tensor& image_features) {
  TORCH_CHECK(image_features.dim() == 3 && image_features.size(2) == options.embedding_dim(),
              "Resampler: image features must be [B, N, ", options.embedding_dim(), "], got ", image_features.sizes());
  at::Tensor x = proj_in->forward(image_features.to(latents.scalar_type()));
  at::Tensor lat = latents.repeat({x.size(0), 1, 1});  // [B, Q, dim]
  for (size_t i = 0; i < layers->size(); ++i) {
    auto layer = layers->ptr<torch::nn::ModuleListImpl>(i);
    lat = layer->ptr<PerceiverAttentionImpl>(0)->forward(x, lat) + lat;
    auto ff = layer->ptr<torch::nn::ModuleListImpl>(1);
    at::Tensor h = ff->ptr<nn::LayerNormImpl>(0)->forward(lat);
    h = at::gelu(ff->ptr<nn::LoraLinearImpl>(1)->forward(h));
    lat = ff->ptr<nn::LoraLinearImpl>(3)->forward(h) + lat;
  }
  return norm_out->forward(proj_out->forward(lat));
}

}  // namespace lookahead::model::adapters
