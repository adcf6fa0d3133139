// The trainer's batches from an HDF5 training set (docs/data.md) through the data library's
// pairing, distributed sampler and background loader.
#pragma once

#include <memory>

#include "trainer/batch_source.h"
#include "trainer/train_config.h"

namespace lookahead::trainer {

/// Opens `config.data.train_set` for rank `rank` of `world_size` (global batch =
/// train.batch_per_rank x world_size). The set must carry precomputed latents, prompt embeddings
/// (+ pooled) and CLIP features; a set without them is refused with a message naming what is
/// missing.
std::unique_ptr<BatchSource> open_hdf5_batch_source(const TrainConfig& config, int rank, int world_size);

}  // namespace lookahead::trainer
