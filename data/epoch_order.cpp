// Seeded per-epoch permutation, sliced by rank.
#include "data/epoch_order.h"

#include <c10/util/Exception.h>

#include "data/random.h"

namespace lookahead::data {

EpochOrder::EpochOrder(int64_t num_samples, int64_t global_batch, int rank, int world_size,
                                       uint64_t seed)
    : num_samples_(num_samples), global_batch_(global_batch), rank_(rank), world_size_(world_size), seed_(seed) {
  TORCH_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "EpochOrder: rank ", rank,
              " is not in a world of ", world_size);
  TORCH_CHECK(global_batch >= world_size, "EpochOrder: global batch ", global_batch,
              " is smaller than the world size ", world_size, " (some ranks would get no sample)");
  TORCH_CHECK(num_samples >= global_batch, "EpochOrder: ", num_samples,
              " samples are fewer than one global batch of ", global_batch, " (drop_last leaves nothing)");
}

std::vector<int64_t> EpochOrder::permutation(int64_t epoch) const {
  SplitMix rng(derive_seed(seed_, static_cast<uint64_t>(epoch), 0x5A4D5045ull /* "sampler" stream */));
  return data::permutation(num_samples_, rng);
}

const std::vector<int64_t>& EpochOrder::perm(int64_t epoch) {
  if (epoch != cached_epoch_) {
    cached_perm_ = permutation(epoch);
    cached_epoch_ = epoch;
  }
  return cached_perm_;
}

void EpochOrder::set_cursor(int64_t epoch, int64_t index) {
  TORCH_CHECK(epoch >= 0 && index >= 0 && index <= num_samples_, "EpochOrder: invalid cursor (epoch ", epoch,
              ", index ", index, ") for ", num_samples_, " samples");
  cursor_ = {epoch, index};
}

RankSlice EpochOrder::next() {
  // drop_last: the tail shorter than a global batch is skipped.
  if (cursor_.index + global_batch_ > num_samples_) cursor_ = {cursor_.epoch + 1, 0};
  const auto& p = perm(cursor_.epoch);
  RankSlice b;
  b.epoch = cursor_.epoch;
  b.step = cursor_.index / global_batch_;
  b.start = cursor_;
  for (int64_t i = slice_begin(); i < slice_end(); ++i) b.indices.push_back(p[cursor_.index + i]);
  cursor_.index += global_batch_;
  return b;
}

}  // namespace lookahead::data
