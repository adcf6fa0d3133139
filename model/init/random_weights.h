// Random values for a named weight that depend on (seed, name) alone: the same file comes out
// whatever the order tensors are written in and whichever other files are written with it.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "model/io/safetensors_header.h"

namespace lookahead::model::init {

/// Standard deviation of the normally drawn weights: small enough that a forward pass through
/// every network of the set stays finite, large enough that outputs depend on the input.
inline constexpr double kInitStd = 0.02;

/// 64-bit seed of `name` under `seed` (FNV-1a of the name mixed with the seed by splitmix64).
uint64_t name_seed(uint64_t seed, const std::string& name);

/// A tensor of `entry`'s dtype and shape for the weight `entry.name`, by the name's role:
///   *position_ids                 arange over the last dimension (int64 buffers of CLIP)
///   *num_batches_tracked          0
///   *running_mean / *running_var  0 / 1 (BatchNorm statistics)
///   *bias                         0
///   1-D *weight                   1 (norm and PReLU scales)
///   anything else                 normal(0, std), drawn in float32 from name_seed(seed, name)
at::Tensor random_weight(uint64_t seed, const io::TensorInfo& entry, double std = kInitStd);

}  // namespace lookahead::model::init
