// The networks `lookahead model run --model NAME` can run, one runner per family, and the harness
// they share. Each runner reads the named input tensors of a safetensors file, runs the network
// and writes its named outputs (float32). They need nothing but lookahead_model, so the parity
// tests drive the same compiled code as the executable without depending on launch/.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "model/adapters/ip_adapter.h"
#include "model/unet/unet_2d_condition.h"

namespace lookahead::model::run {

/// A validated `lookahead model run` request.
struct NetworkRun {
  std::string model;    ///< network name (unet, taesd, vae, clip-text, ...)
  std::string config;   ///< the reference library's config.json
  std::string weights;  ///< safetensors file or *.index.json
  std::string lora;     ///< optional kohya LoRA (UNet only)
  double lora_scale = 1.0;
  std::string ip_adapter;  ///< optional IP-Adapter Plus checkpoint (UNet only; input `image_embeds`)
  double ip_scale = 1.0;
  std::string encoder_weights;  ///< KV-encoder trainables (kv-encoder only; KvEncoder::trainable_parameters keys)
  std::string inputs;   ///< safetensors file of named inputs
  std::string out;      ///< safetensors file for named outputs
  at::ScalarType dtype = at::kFloat;
};

/// The diffusers UNet (`unet`), optionally with a LoRA and an IP-Adapter Plus: inputs `sample`,
/// `timestep`, `encoder_hidden_states`, optional `text_embeds`, `time_ids` (and `image_embeds`
/// with an IP-Adapter) -> output `out` (model/run/model_run_unet.cpp).
int run_unet_network(const NetworkRun& run);

/// TAESD / TAESDXL (`taesd`, `taesdxl`) and the SDXL AutoencoderKL (`vae`): latents -> image,
/// image -> latents (model/run/model_run_vae.cpp).
int run_vae_network(const NetworkRun& run);

/// CLIP text encoders (`clip-text`: input_ids -> hidden states, pooled, text_embeds) and vision
/// towers (`clip-vision`: pixel_values or image -> hidden states, image_embeds)
/// (model/run/model_run_clip.cpp).
int run_clip_network(const NetworkRun& run);

/// ArcFace iresnet / TreB1eN IR-SE50 (`arcface-iresnet`, `arcface-irse50`) and MTCNN (`mtcnn`)
/// (model/run/model_run_face.cpp).
int run_face_network(const NetworkRun& run);

/// facenet-pytorch ships MTCNN as three files (pnet.pt, rnet.pt, onet.pt): `weights` naming their
/// folder, or the three paths separated by commas, gives them in that order; anything else (one
/// merged file with pnet. / rnet. / onet. keys) gives an empty vector. Throws naming a missing file.
std::vector<std::string> mtcnn_files(const std::string& weights);

/// The KV encoder (`kv-encoder`): reference K/V and IP K/V of the reference stream, and the
/// decoder's output with and without them (model/run/model_run_kv.cpp).
int run_kv_network(const NetworkRun& run);

// ---- the runners' harness (model/run/model_runners.cpp) -----------------------------------------

/// Named tensors as read from / written to a safetensors file.
using NamedTensors = std::map<std::string, at::Tensor>;
using NamedOutputs = std::vector<std::pair<std::string, at::Tensor>>;

/// inputs[name]; throws "<file>: missing input tensor '<name>'".
at::Tensor required_input(const NamedTensors& inputs, const std::string& name, const std::string& file);
/// inputs[name], or an undefined tensor when the file does not hold it.
at::Tensor optional_input(const NamedTensors& inputs, const std::string& name);
/// `t` as a contiguous float32 tensor: every runner writes float32, whatever dtype it ran in.
at::Tensor float_output(const at::Tensor& t);
/// Writes `outputs` to `path` and says so on stderr: "model run: wrote PATH (name [sizes], ...)".
void write_outputs(const std::string& path, const NamedOutputs& outputs);

/// The UNet of `run.config` in `run.dtype` with `run.weights` loaded, and `run.lora` (when given)
/// attached as adapter "lora" at `run.lora_scale`; reports each file on stderr.
unet::UNet2DConditionModel load_unet(const NetworkRun& run);
/// The IP-Adapter Plus of `run.ip_adapter`, loaded in `run.dtype` and attached to `unet`.
adapters::IpAdapter attach_ip_adapter(unet::UNet2DConditionModel& unet, const NetworkRun& run);

}  // namespace lookahead::model::run
