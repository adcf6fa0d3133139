// The input encoders (model::Conditioner) a training configuration asks for: the tiny preset's
// fixed random encoders, or SDXL's published ones from [model] sdxl_folder / vae / image_encoder.
// `lookahead data encode`, on-the-fly encoding in training and `lookahead eval` all build them
// here, so they agree on the encoders.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <memory>

#include "model/lookahead/conditioner.h"
#include "trainer/train_config.h"

namespace lookahead::trainer {

/// Seed of the tiny preset's random encoders (drawn on the CPU, whatever the device).
inline constexpr uint64_t kTinyConditionerSeed = 20240403;

/// preset tiny: ConditionerConfig::tiny() with weights drawn from kTinyConditionerSeed (the
/// caller's CPU random stream is left as it was), identical on every rank and in every command.
/// preset sdxl: ConditionerConfig::sdxl() loaded from model.sdxl_folder (and model.vae when set)
/// and model.image_encoder; throws naming the missing key. dtype follows model.dtype (auto: bf16
/// on a CUDA device, fp32 otherwise).
std::unique_ptr<model::Conditioner> build_conditioner(const TrainConfig& c, const c10::Device& device);

/// Whether build_conditioner can succeed for `c` without touching files: the tiny preset, or
/// sdxl with sdxl_folder and image_encoder set.
bool can_build_conditioner(const TrainConfig& c);

}  // namespace lookahead::trainer
