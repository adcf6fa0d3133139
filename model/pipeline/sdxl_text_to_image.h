// SDXL text-to-image on our modules: diffusers' StableDiffusionXLPipeline as `lookahead data
// generate` runs it (sdxl-turbo at 1-4 steps without guidance, SDXL base at more steps with
// classifier-free guidance). Loads a diffusers pipeline folder as downloaded (model_index.json,
// unet/, vae/, text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/).
//
// What is bit-exact with diffusers on the CPU in float32: the tokenization, the initial latents of
// every seed (one torch CPU generator per image, seeded as torch.Generator("cpu").manual_seed(seed)),
// the scheduler's timesteps and sigmas and the noise it draws, the post-processing to uint8. The
// networks agree to rounding (docs/data-generation.md, tests/model/text_to_image_parity_test.cpp).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/nn/batch_sharing.h"
#include "model/sched/sampler.h"
#include "model/text/clip_text.h"
#include "model/text/clip_tokenizer.h"
#include "model/unet/unet_2d_condition.h"
#include "model/vae/autoencoder_kl.h"

namespace lookahead::model::pipeline {

/// One call's settings.
struct TextToImageOptions {
  int64_t steps = 1;            ///< inference steps (sdxl-turbo: 1-4)
  double guidance_scale = 0.0;  ///< > 1: classifier-free guidance against the empty prompt (SDXL base)
  int64_t height = 0;           ///< pixels; 0: unet sample_size × the VAE's downsampling (sdxl-turbo: 512)
  int64_t width = 0;
  /// Up-block self-attention shared inside groups of the batch (the `shared-attention` consistency
  /// mode, nn::BatchSharing); null: every image on its own (`collapse`).
  std::shared_ptr<const nn::BatchSharing> sharing;
  void validate() const;
};

/// What one call produced (CPU tensors).
struct TextToImageOutput {
  at::Tensor initial_latents;  ///< [B, 4, h, w] float32: randn(seed) × init_noise_sigma
  at::Tensor final_latents;    ///< [B, 4, h, w] float32: the scheduler's last sample (the VAE's input × scaling)
  at::Tensor images;           ///< [B, H, W, 3] uint8 RGB, diffusers' post-processing
};

/// Files of a pipeline folder, resolved and checked by locate_pipeline().
struct PipelineFolder {
  std::string root;
  std::string class_name;  ///< model_index.json `_class_name`
  bool force_zeros_for_empty_prompt = true;
  std::string unet_config, unet_weights;  ///< weights: a .safetensors file or its .index.json
  std::string vae_config, vae_weights;
  std::string text_encoder, text_encoder_2;  ///< transformers folders
  std::string tokenizer, tokenizer_2;
  std::string scheduler_config;
  std::string scheduler_class;  ///< model_index.json's scheduler class: diffusers builds that one
};

/// Checks that `root` is a diffusers SDXL pipeline folder and names its files. `variant` (e.g.
/// "fp16") picks `diffusion_pytorch_model.<variant>.safetensors` / `model.<variant>.safetensors`.
/// Throws c10::Error naming the folder and the missing part or the bad model_index.json key.
PipelineFolder locate_pipeline(const std::string& root, const std::string& variant = "");

/// The sampler of a located folder (sched::make_sampler_from_class on its scheduler config with
/// model_index.json's class). Throws c10::Error naming the file for an unsupported class.
std::unique_ptr<sched::Sampler> make_pipeline_sampler(const PipelineFolder& folder);

/// Example:
///   SdxlTextToImage pipe = SdxlTextToImage::from_pretrained("sdxl-turbo", at::kCPU, at::kFloat);
///   TextToImageOutput out = pipe.generate({"A photo of a smiling woman"}, {42}, {});
///   // out.images [1, 512, 512, 3] uint8, equal to diffusers' pipe(prompt, generator=[Generator().manual_seed(42)],
///   //   num_inference_steps=1, guidance_scale=0.0).images
class SdxlTextToImage {
 public:
  /// Loads every part (strict key and shape checks) in `dtype` on `device`. The scheduler is the
  /// class model_index.json names (as diffusers' from_pretrained builds it, whatever
  /// scheduler_config.json's own `_class_name` says) with scheduler_config.json's values.
  static SdxlTextToImage from_pretrained(const std::string& folder, at::Device device, at::ScalarType dtype,
                                         const std::string& variant = "");

  /// Images of `prompts`, image i from seeds[i] (one CPU generator per image, as diffusers with
  /// a list of generators). Runs under no-grad; the UNet sees the whole batch at once (and twice
  /// that with guidance).
  TextToImageOutput generate(const std::vector<std::string>& prompts, const std::vector<uint64_t>& seeds,
                             const TextToImageOptions& options);

  /// SDXL prompt conditioning (context [B, 77, C1 + C2], pooled [B, P]) in float32.
  text::SdxlPromptEmbeds encode_prompts(const std::vector<std::string>& prompts);
  /// unet sample_size × VAE downsampling: the resolution diffusers defaults to.
  int64_t default_size() const { return sample_size_ * vae_scale_; }
  const PipelineFolder& folder() const { return folder_; }
  at::Device device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }
  unet::UNet2DConditionModel& unet() { return unet_; }
  vae::AutoencoderKL& vae() { return vae_; }
  sched::Sampler& sampler() { return *sampler_; }

 private:
  SdxlTextToImage() = default;
  /// VAE decode of final latents and diffusers' post-processing: uint8 [B, H, W, 3] on the CPU.
  at::Tensor decode(const at::Tensor& latents);

  PipelineFolder folder_;
  at::Device device_ = at::kCPU;
  at::ScalarType dtype_ = at::kFloat;
  int64_t sample_size_ = 0, vae_scale_ = 0;
  text::ClipTextModel te1_{nullptr}, te2_{nullptr};
  std::optional<text::ClipTokenizer> tok1_, tok2_;
  unet::UNet2DConditionModel unet_{nullptr};
  vae::AutoencoderKL vae_{nullptr};
  bool vae_upcast_ = false;  ///< the VAE runs in float32 (a float16 pipeline with force_upcast)
  std::shared_ptr<sched::Sampler> sampler_;
};

}  // namespace lookahead::model::pipeline
