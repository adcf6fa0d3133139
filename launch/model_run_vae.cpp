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

#include "launch/cli.h"
#include "launch/model_runners.h"
#include "model/io/safetensors.h"
#include "model/io/state_dict.h"
#include "model/vae/autoencoder_kl.h"
#include "model/vae/autoencoder_tiny.h"

namespace lookahead::launch {

namespace {

at::Tensor find_tensor(const std::map<std::string, at::Tensor>& tensors, const std::string& name) {
  auto it = tensors.find(name);
  return it == tensors.end() ? at::Tensor() : it->second;
}

at::Tensor output(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

}  // namespace

/// Runs TAESD/TAESDXL (`taesd`, `taesdxl`) or the SDXL VAE (`vae`) on `run.inputs`, writing the
/// outputs described in this file's header to `run.out`.
int run_vae_network(const NetworkRun& run) {
  const bool tiny = run.model == "taesd" || run.model == "taesdxl";
  TORCH_CHECK(tiny || run.model == "vae", "run_vae_network: unsupported model '", run.model,
              "' (supported: taesd, taesdxl, vae)");
  auto inputs = model::io::load_file(run.inputs);
  at::Tensor latents = find_tensor(inputs, "latents");
  at::Tensor image = find_tensor(inputs, "image");
  TORCH_CHECK(latents.defined() || image.defined(), run.inputs,
              ": needs an input tensor 'latents' (to decode) and/or 'image' (to encode)");
  auto weights = model::io::load_file(run.weights);
  std::vector<std::pair<std::string, at::Tensor>> outputs;
  at::NoGradGuard no_grad;

  if (tiny) {
    auto config = model::vae::TinyConfig::from_file(run.config);
    // diffusers' pipelines upcast any VAE with force_upcast, AutoencoderTiny included.
    const at::ScalarType dtype = config.force_upcast && run.dtype == at::kHalf ? at::kFloat : run.dtype;
    if (dtype != run.dtype) std::cerr << "model run: force_upcast: running the VAE in float32\n";
    model::vae::AutoencoderTiny taesd(config, at::TensorOptions().dtype(dtype));
    auto report = model::io::load_state_dict(*taesd, weights, run.weights);
    std::cerr << "model run: " << run.weights << ": " << report.summary() << "\n";
    taesd->eval();
    if (latents.defined()) outputs.emplace_back("image", output(taesd->decode(latents)));
    if (image.defined()) outputs.emplace_back("latents", output(taesd->encode(image)));
  } else {
    auto config = model::vae::KLConfig::from_file(run.config);
    // diffusers' pipelines run a force_upcast VAE in float32 when asked for float16.
    const at::ScalarType dtype = config.force_upcast && run.dtype == at::kHalf ? at::kFloat : run.dtype;
    if (dtype != run.dtype) std::cerr << "model run: force_upcast: running the VAE in float32\n";
    model::vae::AutoencoderKL vae(config, at::TensorOptions().dtype(dtype));
    auto report = model::io::load_state_dict(*vae, weights, run.weights);
    std::cerr << "model run: " << run.weights << ": " << report.summary() << "\n";
    vae->eval();
    if (latents.defined()) outputs.emplace_back("image", output(vae->decode(vae->from_unet_latents(latents))));
    if (image.defined()) {
      model::vae::LatentDistribution dist = vae->encode(image);
      outputs.emplace_back("latents", output(vae->to_unet_latents(dist, find_tensor(inputs, "noise"))));
      outputs.emplace_back("latent_mean", output(dist.mean));
      outputs.emplace_back("latent_std", output(dist.std));
    }
  }
  model::io::save_file(run.out, outputs);
  std::cerr << "model run: wrote " << run.out << " (";
  for (size_t i = 0; i < outputs.size(); ++i)
    std::cerr << (i ? ", " : "") << outputs[i].first << " " << outputs[i].second.sizes();
  std::cerr << ")\n";
  return kExitOk;
}

}  // namespace lookahead::launch
