// The input encoders of LCM-Lookahead as one object: SDXL's two CLIP text encoders (prompt
// context and pooled embedding), the IP-Adapter's CLIP ViT-H/14 image encoder (penultimate
// hidden states, the Resampler's input) and the SDXL VAE (scaled latents). They turn a training
// record or an evaluation prompt/photo into the tensors LookaheadModel consumes; `lookahead data
// encode` precomputes them into a training set.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <optional>
#include <string>
#include <vector>

#include "model/text/clip_text.h"
#include "model/text/clip_tokenizer.h"
#include "model/vae/autoencoder_kl.h"
#include "model/vae/vae_config.h"
#include "model/vision/clip_vision.h"

namespace lookahead::model {

/// Architectures of the encoders.
struct ConditionerConfig {
  text::ClipTextConfig te1;              ///< text_encoder (CLIPTextModel)
  text::ClipTextConfig te2;              ///< text_encoder_2 (CLIPTextModelWithProjection)
  vision::ClipVisionConfig image_encoder;  ///< CLIPVisionModelWithProjection
  vae::KLConfig vae;
  /// Tokenizers without files (ClipTokenizer::byte_level, vocabulary 514); otherwise load() reads
  /// tokenizer/ and tokenizer_2/ and encode_prompts needs it first.
  bool byte_level_tokenizers = false;

  /// SDXL base's CLIP-L + OpenCLIP bigG text encoders, IP-Adapter's ViT-H/14, the SDXL VAE.
  static ConditionerConfig sdxl();
  /// Small encoders that feed LookaheadModelConfig::tiny(): context 8 + 16 = its UNet's
  /// cross_attention_dim 24, pooled 16, image features [5, 12] (its Resampler's embedding_dim),
  /// a 4-stage VAE of 8 channels (downsampling 8, 4 latent channels), byte-level tokenizers.
  static ConditionerConfig tiny();
};

/// Folders of the published weights (diffusers / transformers layouts).
struct ConditionerFiles {
  std::string sdxl_folder;    ///< text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/, vae/
  std::string vae;            ///< AutoencoderKL folder overriding <sdxl_folder>/vae; empty: none
  std::string image_encoder;  ///< CLIP ViT-H/14 folder (config.json, model.safetensors)
};

/// Example:
///   Conditioner cond(ConditionerConfig::sdxl(), at::kCUDA, at::kBFloat16);
///   cond.load({"sdxl-base", "", "ip-adapter/models/image_encoder"});
///   text::SdxlPromptEmbeds p = cond.encode_prompts({"a photo of a face"});
///   at::Tensor z = cond.encode_latents(images);  // [B, 4, H/8, W/8]
///
/// All methods run under no-grad and return float32 tensors on the conditioner's device.
class Conditioner {
 public:
  /// Every network with random weights, drawn from the CPU generator in float32 and then moved to
  /// `device` / `dtype`, so a seed gives the same weights on every device (the caller seeds).
  Conditioner(ConditionerConfig config, at::Device device, at::ScalarType dtype);

  /// Loads the published weights and tokenizers (strict key and shape checks). Throws naming the
  /// missing folder or file, or the encoder whose sizes differ from config().
  void load(const ConditionerFiles& files);

  /// SDXL prompt conditioning of each prompt: context [B, 77, te1 + te2 hidden], pooled [B, P].
  text::SdxlPromptEmbeds encode_prompts(const std::vector<std::string>& prompts);
  /// Token ids [B, L] int64 (CPU) of tokenizer/ (which = 1) or tokenizer_2/ (which = 2).
  at::Tensor token_ids(const std::vector<std::string>& prompts, int which) const;
  /// images [B, 3, H, W] in [0, 1] -> CLIP preprocessing -> penultimate hidden states [B, T, D].
  at::Tensor clip_features(const at::Tensor& images);
  /// CLIP-normalized pixel_values [B, 3, S, S] (clip_preprocess's output, S = image_size) ->
  /// penultimate hidden states [B, T, D]; for images of different sizes preprocessed one by one.
  at::Tensor image_features(const at::Tensor& pixel_values);
  /// [1, T, D]: the features of all-zero pixel_values (IP-Adapter's unconditional image).
  at::Tensor clip_uncond();
  /// images [B, 3, H, W] in [-1, 1] -> (latent_dist.mean - shift_factor) * scaling_factor.
  at::Tensor encode_latents(const at::Tensor& images);
  /// Scaled latents [B, 4, h, w] -> images [B, 3, 8h, 8w] in ≈ [-1, 1].
  at::Tensor decode_latents(const at::Tensor& latents);

  const ConditionerConfig& config() const { return config_; }
  at::Device device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }

  /// The networks (e.g. for tests and state-dict export).
  text::ClipTextModel& text_encoder() { return te1_; }
  text::ClipTextModel& text_encoder_2() { return te2_; }
  vision::ClipVisionModel& image_encoder() { return image_encoder_; }
  vae::AutoencoderKL& vae() { return vae_; }

 private:
  ConditionerConfig config_;
  at::Device device_;
  at::ScalarType dtype_;
  text::ClipTextModel te1_{nullptr}, te2_{nullptr};
  vision::ClipVisionModel image_encoder_{nullptr};
  vae::AutoencoderKL vae_{nullptr};
  std::optional<text::ClipTokenizer> tok1_, tok2_;
};

}  // namespace lookahead::model
