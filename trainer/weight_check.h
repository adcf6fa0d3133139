// The weight files of a configuration checked against the model it builds, from their headers
// alone, before anything is built or loaded: a wrong file is refused in a second, naming the
// configuration key, the file and the tensor, instead of minutes into a start-up (or as a shape
// error deep inside a load).
#pragma once

#include <c10/core/Device.h>

#include <string>
#include <vector>

#include "trainer/train_config.h"

namespace lookahead::trainer {

/// Checks every weight file `config` names — model.unet_weights, model.ip_adapter,
/// model.lcm_lora, model.taesd (its `decoder.*` part), model.arcface — against the networks
/// model_config(config, device) builds (on the meta device): headers only (io::load_shapes), so
/// a truncated shard or an unreadable header is refused too. Returns one line per refused file,
/// "model.ip_adapter = PATH: <what>", where <what> names the tensor with the shape found and the
/// shape expected (or the key that is missing or unexpected, with counts), and, for UNet, LoRA and
/// IP-Adapter files made for another Stable Diffusion generation, which one (unet/sd_family.h):
/// "an SD1.5 kohya LoRA (cross-attention dim 768: ...), SDXL expects cross-attention dim 2048".
/// Empty when every file fits. Files that do not exist are left to missing_inputs.
std::vector<std::string> check_weights(const TrainConfig& config, const c10::Device& device);

}  // namespace lookahead::trainer
