// The trainer's batches from an HDF5 training set (docs/data.md) through the data library's
// pairing, distributed sampler and background loader.
#pragma once

#include <c10/core/Device.h>

#include <memory>

#include "trainer/batch_source.h"
#include "trainer/train_config.h"

namespace lookahead::trainer {

/// Opens `config.data.train_set` for rank `rank` of `world_size` (global batch =
/// train.batch_per_rank x world_size). Latents, prompt embeddings (+ pooled) and CLIP features
/// come precomputed from the set (`lookahead data encode`) or, when it has none, are encoded on
/// the fly with build_conditioner; a set without them is refused only when no encoder can be
/// built. Augmentation (data.random_crop, data.hflip_p) needs on-the-fly encoding, which runs on
/// `device` (the World's).
std::unique_ptr<BatchSource> open_hdf5_batch_source(const TrainConfig& config, int rank, int world_size,
                                                    const c10::Device& device);

}  // namespace lookahead::trainer
