// The networks `lookahead model run --model NAME` can run, one runner per family. Each reads the
// named input tensors of a safetensors file, runs the network and writes its named outputs.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace lookahead::launch {

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

/// TAESD / TAESDXL (`taesd`, `taesdxl`) and the SDXL AutoencoderKL (`vae`): latents -> image,
/// image -> latents (launch/model_run_vae.cpp).
int run_vae_network(const NetworkRun& run);

/// CLIP text encoders (`clip-text`: input_ids -> hidden states, pooled, text_embeds) and vision
/// towers (`clip-vision`: pixel_values or image -> hidden states, image_embeds)
/// (launch/model_run_clip.cpp).
int run_clip_network(const NetworkRun& run);

/// ArcFace iresnet / TreB1eN IR-SE50 (`arcface-iresnet`, `arcface-irse50`) and MTCNN (`mtcnn`)
/// (launch/model_run_face.cpp).
int run_face_network(const NetworkRun& run);

/// facenet-pytorch ships MTCNN as three files (pnet.pt, rnet.pt, onet.pt): `weights` naming their
/// folder, or the three paths separated by commas, gives them in that order; anything else (one
/// merged file with pnet. / rnet. / onet. keys) gives an empty vector. Throws naming a missing file.
std::vector<std::string> mtcnn_files(const std::string& weights);

/// The KV encoder (`kv-encoder`): reference K/V and IP K/V of the reference stream, and the
/// decoder's output with and without them (launch/model_run_kv.cpp).
int run_kv_network(const NetworkRun& run);

}  // namespace lookahead::launch
