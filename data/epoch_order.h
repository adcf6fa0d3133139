// The epoch order: a deterministic, resumable split of the training set over ranks (PyTorch calls
// this a DistributedSampler). All ranks draw the same seeded permutation per epoch; every global
// batch is cut into contiguous per-rank slices, so N ranks together see exactly the samples (and
// the order) that one rank would see with the same global batch.
#pragma once

#include <cstdint>
#include <vector>

#include "common/stream_cursor.h"

namespace lookahead::data {

/// Position in the sample stream (global samples consumed in an epoch; see common/stream_cursor.h).
using Cursor = common::StreamCursor;

/// One rank's share of one global batch.
struct RankSlice {
  int64_t epoch = 0;
  int64_t step = 0;                 ///< global batch number within the epoch (index / global_batch)
  Cursor start;                     ///< cursor before this batch
  std::vector<int64_t> indices;     ///< sample indices in [0, num_samples), this rank's slice
};

class EpochOrder {
 public:
  /// `num_samples` items (pairs), `global_batch` samples per step over all ranks; rank r of
  /// world_size gets [r*B/N, (r+1)*B/N) of each global batch (B not divisible by N gives slices
  /// differing by one). drop_last: an epoch has floor(num_samples / B) batches.
  EpochOrder(int64_t num_samples, int64_t global_batch, int rank, int world_size, uint64_t seed);

  /// This rank's slice of the next global batch; advances the cursor (rolling into the next epoch).
  RankSlice next();
  /// Cursor of the next batch next() returns.
  Cursor cursor() const { return cursor_; }
  /// Resumes at `epoch`, `index` global samples in. Valid after a change of world size (and even of
  /// global batch: the next batch starts at sample `index` of the epoch's permutation).
  void set_cursor(int64_t epoch, int64_t index);
  void set_cursor(const Cursor& c) { set_cursor(c.epoch, c.index); }

  /// Global batches per epoch.
  int64_t batches_per_epoch() const { return num_samples_ / global_batch_; }
  int64_t num_samples() const { return num_samples_; }
  int64_t global_batch() const { return global_batch_; }
  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  /// This rank's slice [begin, end) of a global batch.
  int64_t slice_begin() const { return rank_ * global_batch_ / world_size_; }
  int64_t slice_end() const { return (rank_ + 1) * global_batch_ / world_size_; }
  /// The permutation of `epoch` (the same on every rank).
  std::vector<int64_t> permutation(int64_t epoch) const;

 private:
  const std::vector<int64_t>& perm(int64_t epoch);

  int64_t num_samples_, global_batch_;
  int rank_, world_size_;
  uint64_t seed_;
  Cursor cursor_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> cached_perm_;
};

}  // namespace lookahead::data
