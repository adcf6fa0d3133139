// Sinusoidal timestep embedding (diffusers `get_timestep_embedding`) and the TimestepEmbedding
// MLP (linear_1 -> SiLU -> linear_2).
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include "model/nn/lora.h"

namespace lookahead::model::nn {

/// t [B] (integer or fractional) -> [B, dim] float32: [sin | cos] of t·exp(-ln(10000)·j/(half - shift)),
/// swapped to [cos | sin] when flip_sin_to_cos.
at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim, bool flip_sin_to_cos, double freq_shift);

class TimestepEmbeddingImpl : public torch::nn::Cloneable<TimestepEmbeddingImpl> {
 public:
  TimestepEmbeddingImpl(int64_t in_channels, int64_t embed_dim, at::TensorOptions tensor_options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [B, in] -> [B, embed]
  int64_t in_channels, embed_dim;
  at::TensorOptions tensor_options;
  LoraLinear linear_1{nullptr}, linear_2{nullptr};
};
TORCH_MODULE(TimestepEmbedding);

}  // namespace lookahead::model::nn
