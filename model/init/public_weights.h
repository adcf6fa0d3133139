// `lookahead model init`: every public weight layout a preset's configuration names, written with
// random values at the real key names and shapes (full size for SDXL), so the loaders, `model
// inspect` and the training launch run on files of the real layout where the real weights cannot
// be downloaded. Files are streamed tensor by tensor: memory stays at the largest single tensor.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace lookahead::model::init {

/// Which set of networks to write.
enum class InitPreset {
  kSdxl,       ///< stable-diffusion-xl-base-1.0 and the official method's companions
  kSdxlTurbo,  ///< the same with an sdxl-turbo folder (its scheduler and 512² UNet sample size)
  kTiny,       ///< the sizes of LookaheadModelConfig::tiny() / ConditionerConfig::tiny()
};

struct InitOptions {
  InitPreset preset = InitPreset::kSdxl;
  std::string out;  ///< existing folder the files go into
  uint64_t seed = 0;
  /// Storage dtype of every floating tensor; nullopt: as the published files (float16 for the SDXL
  /// folders, IP-Adapter and LCM-LoRA; float32 for the image encoder, TAESDXL and face networks).
  std::optional<at::ScalarType> dtype;
  std::string bpe_vocab;  ///< open_clip's bpe_simple_vocab_16e6.txt.gz (the real CLIP vocabulary)
  std::string mtcnn;      ///< folder with facenet-pytorch's pnet.pt / rnet.pt / onet.pt (copied as they are)
  /// Called after each file with its path and size in bytes (progress output).
  std::function<void(const std::string& path, uint64_t bytes)> on_file;
};

/// Where the written files are, by the role a training configuration gives them (absolute paths).
struct InitFiles {
  std::string sdxl_folder;    ///< diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder*/, ...)
  std::string unet_config;    ///< <sdxl_folder>/unet/config.json
  std::string unet_weights;   ///< <sdxl_folder>/unet/diffusion_pytorch_model.safetensors
  std::string vae;            ///< sdxl-vae-fp16-fix folder
  std::string image_encoder;  ///< IP-Adapter's CLIP ViT-H/14 folder
  std::string ip_adapter;     ///< ip-adapter-plus-face_sdxl_vit-h.bin (torch.save)
  std::string ip_adapter_safetensors;  ///< the same tensors as .safetensors
  std::string lcm_lora;                ///< lcm-lora-sdxl/pytorch_lora_weights.safetensors
  std::string taesd;                   ///< taesdxl/diffusion_pytorch_model.safetensors
  std::string arcface;                 ///< IR-SE50 model_ir_se50.pth
  std::string arcface_iresnet;         ///< insightface iresnet .pth (iresnet100; tiny: iresnet50 of {1,1,1,1})
  std::string arcface_iresnet_name;    ///< "iresnet100" or "iresnet50"
  std::string mtcnn;                   ///< facenet-pytorch data folder
  std::string clip_model;              ///< the CLIP score's CLIPModel folder (clip-vit-large-patch14)
  std::string dreamsim;                ///< the dreamsim package's cache folder (the ensemble; tiny: its tiny sizes)
  std::vector<std::string> files;      ///< every file written, in order
  uint64_t bytes = 0;                  ///< their total size
};

/// "sdxl", "sdxl-turbo", "tiny" -> preset; nullopt for anything else.
std::optional<InitPreset> parse_init_preset(const std::string& name);

/// Writes the preset's whole set into options.out (which must exist). Values are a deterministic
/// function of (seed, tensor name) (random_weights.h). Throws c10::Error naming the file that
/// cannot be read or written.
InitFiles write_public_weights(const InitOptions& options);

}  // namespace lookahead::model::init
