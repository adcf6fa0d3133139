// Platform-independent deterministic randomness for the data pipeline. The standard library's
// distributions are implementation-defined, so pairing and shuffling use these instead: the same
// (seed, epoch) gives the same order on every compiler and machine.
#pragma once

#include <cstdint>
#include <vector>

namespace lookahead::data {

/// SplitMix64 step: a good 64-bit mixer, used both as a hash and as a generator.
inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// Small generator over mix64; uniform() uses Lemire's multiply-shift (bias < 2^-32 for n < 2^32).
class SplitMix {
 public:
  explicit SplitMix(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t r = mix64(state_);
    state_ += 0x9E3779B97F4A7C15ull;
    return r;
  }
  /// Uniform in [0, n), n > 0.
  uint64_t uniform(uint64_t n) { return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64); }
  /// Uniform in [0, 1).
  double uniform01() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

/// Seed for stream `a`,`b` of `seed` (e.g. (seed, epoch)).
inline uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b = 0) { return mix64(mix64(mix64(seed) ^ a) ^ b); }

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
