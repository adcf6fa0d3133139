// Deterministic random weights (see random_weights.h).
#include "model/init/random_weights.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

namespace lookahead::model::init {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t name_seed(uint64_t seed, const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a 64
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ull;
  return splitmix64(splitmix64(seed) ^ h);
}

at::Tensor random_weight(uint64_t seed, const io::TensorInfo& entry, double std) {
  const std::string& n = entry.name;
  const auto opts = at::TensorOptions().dtype(entry.dtype);
  if (n.ends_with("position_ids")) {
    const int64_t last = entry.shape.empty() ? 1 : entry.shape.back();
    return at::arange(last, opts.dtype(at::kLong)).expand(entry.shape).contiguous().to(entry.dtype);  // [1, T]
  }
  if (n.ends_with("num_batches_tracked") || n.ends_with("running_mean") || n.ends_with("bias"))
    return at::zeros(entry.shape, opts);
  if (n.ends_with("running_var") || (entry.shape.size() == 1 && n.ends_with("weight")))
    return at::ones(entry.shape, opts);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(name_seed(seed, n));
  return at::empty(entry.shape, at::TensorOptions().dtype(at::kFloat)).normal_(0.0, std, gen).to(entry.dtype);
}

}  // namespace lookahead::model::init
