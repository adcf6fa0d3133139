// `lookahead model run --model unet`: the diffusers UNet, optionally with a LoRA (unfused, at
// --lora-scale) and an IP-Adapter Plus, on named tensors. Inputs `sample`, `timestep`,
// `encoder_hidden_states`, optional `text_embeds` and `time_ids`, and `image_embeds` with an
// IP-Adapter -> output `out` (the predicted noise / v / sample, float32).
#include <ATen/ATen.h>

#include "model/io/safetensors.h"
#include "model/run/model_runners.h"

namespace lookahead::model::run {

/// Runs the UNet as described in this file's header.
int run_unet_network(const NetworkRun& o) {
  unet::UNet2DConditionModel unet = load_unet(o);
  adapters::IpAdapter ip{nullptr};
  if (!o.ip_adapter.empty()) ip = attach_ip_adapter(unet, o);
  unet->eval();
  auto in = io::load_file(o.inputs);
  unet::UNetInputs x;
  x.sample = required_input(in, "sample", o.inputs);
  x.timestep = required_input(in, "timestep", o.inputs);
  x.encoder_hidden_states = required_input(in, "encoder_hidden_states", o.inputs);
  x.text_embeds = optional_input(in, "text_embeds");
  x.time_ids = optional_input(in, "time_ids");
  at::NoGradGuard no_grad;
  if (ip) {
    x.ip_tokens = ip->image_tokens(required_input(in, "image_embeds", o.inputs));
    x.ip_scale = o.ip_scale;
  }
  write_outputs(o.out, {{"out", float_output(unet->forward(x))}});
  return 0;
}

}  // namespace lookahead::model::run
