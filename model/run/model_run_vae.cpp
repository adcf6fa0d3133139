// `lookahead model run --model taesd|taesdxl|vae`: the SDXL autoencoders on named tensors.
// Input `latents` (UNet-space) -> output `image` in [-1, 1]; input `image` in [-1, 1] -> output
// `latents` (UNet-space); for `vae` also `latent_mean` and `latent_std` (VAE space), and `latents`
// is sample(noise) * scaling_factor when the inputs hold `noise`, mean * scaling_factor otherwise.
#include <ATen/ATen.h>

#include <iostream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "model/io/safetensors.h"
#include "model/io/state_dict.h"
#include "model/run/model_runners.h"
#include "model/vae/autoencoder_kl.h"
#include "model/vae/autoencoder_tiny.h"

namespace lookahead::model::run {

/// Runs TAESD/TAESDXL (`taesd`, `taesdxl`) or the SDXL VAE (`vae`) on `run.inputs`, writing the
/// outputs described in this file's header to `run.out`.
int run_vae_network(const NetworkRun& run) {
  const bool tiny = run.model == "taesd" || run.model == "taesdxl";
  TORCH_CHECK(tiny || run.model == "vae", "run_vae_network: unsupported model '", run.model,
              "' (supported: taesd, taesdxl, vae)");
  auto inputs = io::load_file(run.inputs);
  at::Tensor latents = optional_input(inputs, "latents");
  at::Tensor image = optional_input(inputs, "image");
  TORCH_CHECK(latents.defined() || image.defined(), run.inputs,
              ": needs an input tensor 'latents' (to decode) and/or 'image' (to encode)");
  auto weights = io::load_file(run.weights);
  NamedOutputs outputs;
  at::NoGradGuard no_grad;

  if (tiny) {
    auto config = vae::TinyConfig::from_file(run.config);
    // diffusers' pipelines upcast any VAE with force_upcast, AutoencoderTiny included.
    const at::ScalarType dtype = config.force_upcast && run.dtype == at::kHalf ? at::kFloat : run.dtype;
    if (dtype != run.dtype) std::cerr << "model run: force_upcast: running the VAE in float32\n";
    vae::AutoencoderTiny taesd(config, at::TensorOptions().dtype(dtype));
    auto report = io::load_state_dict(*taesd, weights, run.weights);
    std::cerr << "model run: " << run.weights << ": " << report.summary() << "\n";
    taesd->eval();
    if (latents.defined()) outputs.emplace_back("image", float_output(taesd->decode(latents)));
    if (image.defined()) outputs.emplace_back("latents", float_output(taesd->encode(image)));
  } else {
    auto config = vae::KLConfig::from_file(run.config);
    // diffusers' pipelines run a force_upcast VAE in float32 when asked for float16.
    const at::ScalarType dtype = config.force_upcast && run.dtype == at::kHalf ? at::kFloat : run.dtype;
    if (dtype != run.dtype) std::cerr << "model run: force_upcast: running the VAE in float32\n";
    vae::AutoencoderKL vae(config, at::TensorOptions().dtype(dtype));
    auto report = io::load_state_dict(*vae, weights, run.weights);
    std::cerr << "model run: " << run.weights << ": " << report.summary() << "\n";
    vae->eval();
    if (latents.defined()) outputs.emplace_back("image", float_output(vae->decode(vae->from_unet_latents(latents))));
    if (image.defined()) {
      vae::LatentDistribution dist = vae->encode(image);
      outputs.emplace_back("latents", float_output(vae->to_unet_latents(dist, optional_input(inputs, "noise"))));
      outputs.emplace_back("latent_mean", float_output(dist.mean));
      outputs.emplace_back("latent_std", float_output(dist.std));
    }
  }
  write_outputs(run.out, outputs);
  return 0;
}

}  // namespace lookahead::model::run
