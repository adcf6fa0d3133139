// Platform-independent deterministic shuffles for the data pipeline, over common/seed.h: the same
// (seed, epoch) gives the same pairing, order and augmentation on every compiler and machine.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "common/seed.h"

namespace lookahead::data {

using common::derive_seed;
using common::SplitMix;

/// Fisher-Yates permutation of 0..n-1 from `rng`.
inline std::vector<int64_t> permutation(int64_t n, SplitMix& rng) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    auto j = static_cast<int64_t>(rng.uniform(static_cast<uint64_t>(i + 1)));
    std::swap(p[i], p[j]);
  }
  return p;
}

}  // namespace lookahead::data
