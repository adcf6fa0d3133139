// Subcommands of the `lookahead` executable, each a function of its arguments and the World.
#pragma once

#include <string>
#include <vector>

#include "dist/world.h"

namespace lookahead::launch {

/// `lookahead env`: ranks, nodes, devices and library versions (torch, CUDA, NCCL, MPI, HDF5).
int run_env(dist::World& world, const std::vector<std::string>& args);

/// `lookahead model run|inspect`: run a network on named inputs; describe a weight file.
int run_model_command(dist::World& world, const std::vector<std::string>& args);

/// `lookahead train --config FILE.ini [--section.key=value ...] [--dry-run]`: LCM-Lookahead training.
int run_train(dist::World& world, const std::vector<std::string>& args);

/// `lookahead export --config FILE.ini [--checkpoint PATH|latest] [--out DIR]`: the trained encoder
/// of a checkpoint as safetensors (IP-Adapter part for diffusers, KV-encoder part).
int run_export(dist::World& world, const std::vector<std::string>& args);

/// `lookahead data pack|synth|info`: build, synthesize or describe a training-set file (rank 0 writes).
int run_data_command(dist::World& world, const std::vector<std::string>& args);

/// `lookahead data encode --config FILE.ini --in SET.h5 --out SET.h5`: adds the precomputed latents,
/// prompt embeddings and CLIP features the trainer reads (distributed over the ranks, rank 0 writes).
int run_data_encode(dist::World& world, const std::vector<std::string>& args);

/// `lookahead data generate --pipeline DIR --out DIR [...]`: the consistent synthetic training set
/// (SDXL-Turbo identities across seeds and styles, face-checked and filtered), distributed over the
/// ranks, resumable (docs/data-generation.md).
int run_data_generate(dist::World& world, const std::vector<std::string>& args);

/// `lookahead eval --config FILE.ini --checkpoint PATH|latest [...]`: samples with the trained encoder,
/// measures ID similarity and CLIP score, writes metrics.json, the images and an HTML report.
int run_eval(dist::World& world, const std::vector<std::string>& args);

}  // namespace lookahead::launch
