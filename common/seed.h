// Platform-independent seed mixing: SplitMix64 (Steele, Lea, Flood 2014) as a hash and as a
// generator. The standard library's engines and distributions are implementation-defined, so
// everything that must draw the same numbers on every compiler and machine (the data pipeline's
// shuffles, the training step's draws, evaluation seeds) goes through these instead.
#pragma once

#include <cstdint>

namespace lookahead::common {

/// The SplitMix64 increment (2^64 / golden ratio).
inline constexpr uint64_t kSplitMixGamma = 0x9E3779B97F4A7C15ull;

/// One SplitMix64 step: a good 64-bit mixer, used both as a hash and as a generator.
inline uint64_t splitmix64(uint64_t x) {
  x += kSplitMixGamma;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// Mixes `value` (a step, a sample index, a stream tag) into `seed`.
inline uint64_t mix_seed(uint64_t seed, uint64_t value) { return splitmix64(splitmix64(seed) ^ value); }

/// Seed for stream `a`,`b` of `seed` (e.g. (seed, epoch)).
inline uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b = 0) { return splitmix64(mix_seed(seed, a) ^ b); }

/// Small generator over splitmix64; uniform() uses Lemire's multiply-shift (bias < 2^-32 for n < 2^32).
class SplitMix {
 public:
  explicit SplitMix(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t r = splitmix64(state_);
    state_ += kSplitMixGamma;
    return r;
  }
  /// Uniform in [0, n), n > 0.
  uint64_t uniform(uint64_t n) { return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64); }
  /// Uniform in [0, 1).
  double uniform01() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

}  // namespace lookahead::common
