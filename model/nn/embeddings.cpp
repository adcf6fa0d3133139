// Timestep embeddings.
#include "model/nn/embeddings.h"

#include <ATen/ATen.h>

#include <cmath>

namespace lookahead::model::nn {

at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim, bool flip_sin_to_cos, double freq_shift) {
  TORCH_CHECK(t.dim() == 1, "timesteps must be 1-D [B], got ", t.sizes());
  int64_t half = dim / 2;
  auto opts = at::TensorOptions().dtype(at::kFloat).device(t.device());
  at::Tensor exponent = at::arange(0, half, opts) * (-std::log(10000.0)) / (static_cast<double>(half) - freq_shift);
  at::Tensor arg = t.to(at::kFloat).unsqueeze(1) * exponent.exp().unsqueeze(0);  // [B, half]
  at::Tensor emb = at::cat({arg.sin(), arg.cos()}, -1);                         // [B, 2*half]
  if (flip_sin_to_cos) emb = at::cat({emb.narrow(1, half, half), emb.narrow(1, 0, half)}, -1);
  if (dim % 2 == 1) emb = at::constant_pad_nd(emb, {0, 1});
  return emb;
}

TimestepEmbeddingImpl::TimestepEmbeddingImpl(int64_t in, int64_t embed, at::TensorOptions t)
    : in_channels(in), embed_dim(embed), tensor_options(t) {
  reset();
}

void TimestepEmbeddingImpl::reset() {
  linear_1 = register_module("linear_1", LoraLinear(LinearOptions(in_channels, embed_dim).tensor_options(tensor_options)));
  linear_2 = register_module("linear_2", LoraLinear(LinearOptions(embed_dim, embed_dim).tensor_options(tensor_options)));
}

at::Tensor TimestepEmbeddingImpl::forward(const at::Tensor& x) {
  return linear_2->forward(at::silu(linear_1->forward(x)));
}

}  // namespace lookahead::model::nn
