// Background loading of per-rank training batches: pairing, sampling, decoding on K threads,
// resize/crop to the training resolution, stacking. Batches come out in epoch order whatever the
// thread count, so a run is reproducible and N ranks see exactly what one rank sees.
#pragma once

#include <ATen/ATen.h>

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data/pairing.h"
#include "data/epoch_order.h"
#include "data/training_set.h"

namespace lookahead::data {

struct LoaderOptions {
  int64_t resolution = 1024;  ///< output images are resolution x resolution
  int64_t global_batch = 4;   ///< samples per step over all ranks
  int rank = 0;               ///< this process's rank (plain ints: data does not depend on dist)
  int world_size = 1;
  uint64_t seed = 0;          ///< drives the pairing and the epoch permutation
  int threads = 2;            ///< decoding threads; 0 = decode in the caller's thread on next()
  int prefetch = 4;           ///< batches decoded ahead of the consumer (>= 1)
  /// Replace (and count) samples whose target or reference is corrupt by another pair drawn from
  /// (seed, epoch, sample index), so batches keep their size and any rank count sees the same.
  bool skip_corrupt = false;
  /// Augmentation (each image of a pair drawn independently, from (seed, epoch, sample) only, so
  /// any thread or rank count gives the same batches). Crops then only differ on non-square images.
  bool random_crop = false;   ///< Resize + RandomCrop (the official transform) instead of a center crop
  double hflip_p = 0;         ///< probability of a horizontal flip (landmark roles swapped with it)
};

/// One rank's batch as read from the training set (decoded images, prompts, precomputed tensors);
/// the trainer turns it into the model's input, model::Batch. B = this rank's slice (corrupt samples
/// replaced under skip_corrupt); S = resolution.
struct LoadedBatch {
  int64_t epoch = 0, step = 0;
  Cursor start;  ///< cursor before this batch
  Cursor next;   ///< cursor after it (save this in a checkpoint)
  std::vector<Pair> pairs;       ///< record indices, [B]
  std::vector<int64_t> identities;
  at::Tensor target_images;      ///< float [B,3,S,S] in [-1,1]
  at::Tensor reference_images;   ///< float [B,3,S,S] in [-1,1]
  at::Tensor target_landmarks;   ///< float [B,5,2] in output pixels (NaN = unknown)
  at::Tensor reference_landmarks;
  std::vector<std::string> target_prompts, reference_prompts;
  // Precomputed tensors stacked over the batch; undefined when the file has none.
  at::Tensor target_latents, reference_latents;                    ///< [B,4,h,w]
  at::Tensor target_prompt_embeds, reference_prompt_embeds;        ///< [B,M,D]
  at::Tensor target_pooled_prompt_embeds, reference_pooled_prompt_embeds;  ///< [B,P]
  at::Tensor reference_clip_features;                              ///< [B,T,D]
  int64_t skipped = 0;  ///< corrupt pairs replaced in this batch (skip_corrupt)
  int64_t size() const { return static_cast<int64_t>(pairs.size()); }
};

class Loader {
 public:
  /// Starts the decoding threads. Throws DataError when the set has no usable pair or fewer pairs
  /// than one global batch.
  Loader(std::shared_ptr<const TrainingSet> set, const LoaderOptions& options);
  /// Stops and joins the threads (batches in flight are discarded).
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  /// The next batch in epoch order. Rethrows a worker's error (a DataError naming the file and
  /// record index) at the batch where it happened.
  LoadedBatch next();
  /// Cursor of the batch next() returns next.
  Cursor cursor() const;
  /// Resumes at `c` (e.g. from a checkpoint, possibly written at another world size).
  void set_cursor(const Cursor& c);

  /// Corrupt pairs replaced in the batches returned so far.
  int64_t skipped() const;
  int64_t num_pairs() const { return num_pairs_; }
  int64_t batches_per_epoch() const;
  /// Identities/records left out because the identity has a single record.
  int64_t excluded_identities() const { return excluded_identities_; }
  int64_t excluded_records() const { return excluded_records_; }

  /// Builds the batch for one rank slice (what a worker does). Public for tests and tools.
  LoadedBatch load(const RankSlice& sb, const std::vector<Pair>& pairs) const;

 private:
  struct Slot {
    bool ready = false;
    LoadedBatch batch;
    std::exception_ptr error;
  };
  void start();
  void stop();
  void worker();
  // The pairs of the samples in `sb` (pairing of sb.epoch, cached). Caller holds mu_.
  std::vector<Pair> pairs_of(const RankSlice& sb);

  std::shared_ptr<const TrainingSet> set_;
  LoaderOptions opt_;
  int64_t num_pairs_ = 0, excluded_identities_ = 0, excluded_records_ = 0;

  mutable std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::map<int64_t, std::vector<Pair>> pairing_cache_;  // epoch -> pairs; declared before order_,
                                                        // whose initializer fills epoch 0
  EpochOrder order_;  // guarded by mu_: advanced by whoever claims the next batch
  std::map<int64_t, Slot> slots_;
  int64_t claimed_ = 0, consumed_ = 0;
  Cursor cursor_;
  int64_t skipped_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace lookahead::data
