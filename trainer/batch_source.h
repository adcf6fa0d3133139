// Where the trainer's per-rank batches come from: the HDF5 training set through the data
// library's epoch order and loader (trainer/hdf5_batch_source.cpp), or anything else that yields the
// model's inputs for samples [first, first + count) of each global batch.
#pragma once

#include <cstdint>
#include <string>

#include "data/epoch_order.h"
#include "model/lookahead/lookahead_model.h"

namespace lookahead::trainer {

/// One rank's share of a global batch, in the model's input format.
struct RankBatch {
  model::Batch batch;
  at::Tensor ref_pixels;  ///< [B, 3, S, S] reference photo in [-1, 1] (for its ArcFace embedding)
  at::Tensor ref_pixel_landmarks;  ///< [B, 5, 2] landmarks in ref_pixels' pixels (NaN: unknown)
  int64_t skipped_records = 0;     ///< corrupt records skipped to fill it
};

class BatchSource {
 public:
  virtual ~BatchSource() = default;
  /// The next batch for this rank (samples [rank * B, (rank + 1) * B) of the next global batch).
  virtual RankBatch next() = 0;
  /// Where the stream stands, in global samples (survives a change of world size).
  virtual data::Cursor cursor() const = 0;
  virtual void seek(const data::Cursor& cursor) = 0;
  /// Latent shape [C, h, w] of the batches.
  virtual std::vector<int64_t> latent_shape() const = 0;
  virtual std::string describe() const = 0;
};

}  // namespace lookahead::trainer
