// DreamSim (Fu, Tamir et al. 2023; PyPI `dreamsim` 0.2.1) as LCM-Lookahead's DreamSIMLoss uses it:
// `dreamsim(pretrained=True)`, the "ensemble" type. Three LoRA-tuned ViT-B/16 networks of the
// package's DINO-style VisionTransformer (dino_vit.h) each map an image in [0, 1] to a feature:
//   0 dino_vitb16        ImageNet mean/std, 'cls': class token of block 11's output (no final norm), 768
//   1 clip_vitb16        OpenAI CLIP mean/std, 'embedding': norm(tokens)[:, 0] @ proj, 512
//   2 open_clip_vitb16   OpenAI CLIP mean/std, 'embedding', 512
// concatenated (1792) and normalized (mean subtracted, then divided by the L2 norm); the distance
// is 1 - cos. The LoRA (PEFT, on every `qkv`) is merged into the base weights at load, so
// named_parameters() are the package's keys after PEFT's merge_and_unload(): extractor_list.N.
// model.* plus extractor_list.N.proj for the CLIP networks (a plain tensor attribute in the
// package). The DINO projection head the package also loads (extractor_list.0.proj.*) is not
// built: the 'cls' feature never uses it.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "model/io/config_keys.h"
#include "model/io/safetensors_header.h"
#include "model/io/torch_save.h"
#include "model/vision/dino_vit.h"

namespace lookahead::model::vision {

/// Which feature an extractor returns (the package's feat_type).
enum class DreamSimFeature {
  kCls,        ///< 'cls': class token of block `cls_layer`'s output, before the final norm
  kEmbedding,  ///< 'embedding': the ViT's forward (normalized class token) @ proj
};

/// One base network of the ensemble.
struct DreamSimExtractorOptions {
  /// The package's model_type, which also names its weight file: "dino_vitb16", "clip_vitb16" or
  /// "open_clip_vitb16".
  std::string model_type;
  DinoVitOptions vit;
  DreamSimFeature feature = DreamSimFeature::kCls;
  /// kCls: the block whose output is read. The package hard-codes 11 (ViT-B's last block); tiny
  /// networks use their last block.
  int64_t cls_layer = 11;
  int64_t proj_dim = 0;                 ///< kEmbedding: `proj` is [embed_dim, proj_dim]
  std::array<double, 3> mean{}, std{};  ///< per-channel normalization of the [0, 1] input

  /// The package's three networks at width `dim`, `depth` blocks and `heads` heads (MLP 4 * dim;
  /// cls_layer min(11, depth - 1)); `proj_dim` for the CLIP ones. (768, 12, 12, 512) are the
  /// released sizes.
  static DreamSimExtractorOptions dino(int64_t dim, int64_t depth, int64_t heads);
  static DreamSimExtractorOptions clip(int64_t dim, int64_t depth, int64_t heads, int64_t proj_dim);
  static DreamSimExtractorOptions open_clip(int64_t dim, int64_t depth, int64_t heads, int64_t proj_dim);
  /// Width of this extractor's feature.
  int64_t feature_dim() const;
};

/// The whole metric.
struct DreamSimOptions {
  std::vector<DreamSimExtractorOptions> extractors;
  /// The package's normalize_embeds (dreamsim() passes True): subtract each embedding's mean,
  /// then divide by its L2 norm. The mean subtraction changes the distance (the cosine becomes a
  /// correlation over the concatenated features); the division does not.
  bool normalize_embeds = true;
  at::TensorOptions tensor_options = at::TensorOptions();

  /// The released "ensemble": DINO, CLIP and OpenCLIP ViT-B/16 (width 768, 12 blocks, 12 heads of
  /// 64, MLP 3072, proj 512) at 224² in 16² patches; embedding width 1792.
  static DreamSimOptions ensemble();
  /// The same three networks with width 32, 2 blocks, 2 heads of 16, MLP 128, proj 16 (the
  /// 'cls' feature reads block 1, the last), still 224² in 16² patches (197 tokens): embedding
  /// width 64, for tests and the tiny preset.
  static DreamSimOptions tiny();
  /// Sum of the extractors' feature widths.
  int64_t embed_dim() const;
  /// Input side every extractor takes (their ViTs' image_size, which must agree).
  int64_t image_size() const;
};

/// One extractor: `model` (the ViT) and, for kEmbedding, `proj`.
class DreamSimExtractorImpl : public torch::nn::Cloneable<DreamSimExtractorImpl> {
 public:
  DreamSimExtractorImpl(const DreamSimExtractorOptions& options, at::TensorOptions tensor_options = {});
  void reset() override;
  /// The feature of images already normalized with options.mean / options.std.
  at::Tensor forward(const at::Tensor& normalized);  // [B, 3, S, S] -> [B, feature_dim]

  DreamSimExtractorOptions options;
  at::TensorOptions tensor_options;
  DinoVisionTransformer model{nullptr};
  at::Tensor proj;  // [embed_dim, proj_dim], kEmbedding only
};
TORCH_MODULE(DreamSimExtractor);

/// The DreamSim metric. Every method is differentiable with respect to the images (the
/// lookahead loss backpropagates through it); the loader freezes the weights.
class DreamSimImpl : public torch::nn::Cloneable<DreamSimImpl> {
 public:
  explicit DreamSimImpl(const DreamSimOptions& options = DreamSimOptions::ensemble());
  void reset() override;

  /// Number of base networks (3 for the ensemble).
  int64_t num_extractors() const;
  /// Extractor i (its module tree is `extractor_prefix(i)` + its parameter names), so that a
  /// caller can place or shard the networks one by one.
  torch::nn::Module& extractor(int64_t i);
  /// State-dict prefix of extractor i: "extractor_list.<i>.".
  std::string extractor_prefix(int64_t i) const;
  /// Extractor i's feature of images in [0, 1]: its mean/std normalization, then its feature type.
  /// Computed in the weights' dtype; returned in it.
  at::Tensor features(int64_t i, const at::Tensor& images01);  // [B, 3, S, S] -> [B, d_i]
  /// The package's embed() from the extractors' features in extractor order: concatenation, then
  /// (normalize_embeds) mean subtraction and division by the L2 norm. No epsilon, as the package:
  /// a constant embedding gives NaN there too.
  at::Tensor combine(const std::vector<at::Tensor>& features) const;  // n x [B, d_i] -> [B, D]
  /// combine(features(0..n-1)).
  at::Tensor embed(const at::Tensor& images01);  // [B, 3, S, S] -> [B, D]
  /// The package's forward: 1 - cosine_similarity(embed(a), embed(b)) (eps 1e-8).
  at::Tensor distance(const at::Tensor& a01, const at::Tensor& b01);  // 2 x [B, 3, S, S] -> [B]

  DreamSimOptions options;
  std::vector<DreamSimExtractor> extractors;  // registered as extractor_list.<i>
};
TORCH_MODULE(DreamSim);

/// LCM-Lookahead's DreamSIMLoss input from images in [-1, 1] of any size: (x + 1) / 2, then
/// bicubic resize to size x size as F.interpolate(mode='bicubic') does (align_corners false, no
/// antialias, no clamp). The official loss is described as "(x+1)/2, resized bicubic to 224x224";
/// that it calls F.interpolate (not an antialiased or PIL resize) is our reading of it.
at::Tensor dreamsim_input(const at::Tensor& images_pm1, int64_t size = 224);  // [B, 3, H, W] -> [B, 3, size, size]

// Files of the package's cache folder (its cache_dir) for the ensemble, relative to it.

/// torch hub's DINO ViT-B/16 state dict, which torch.hub.load downloads into <cache_dir>/checkpoints.
inline constexpr const char* kDreamSimDinoHubFile = "checkpoints/dino_vitbase16_pretrain.pth";
/// {"student": {"module.head.*": ...}}: the DINO projection head, loaded by the package and unused
/// by 'cls'; load_dreamsim does not read it.
inline constexpr const char* kDreamSimDinoHeadFile = "dino_vitb16_pretrain.pth";
/// {"state_dict": {<ViT keys>, "proj": [768, 512]}}.
inline constexpr const char* kDreamSimClipFile = "clip_vitb16_pretrain.pth.tar";
inline constexpr const char* kDreamSimOpenClipFile = "open_clip_vitb16_pretrain.pth.tar";
/// PEFT adapter folder: adapter_config.json and adapter_model.safetensors (what save_pretrained
/// writes by default, 0.21 included) or adapter_model.bin (torch.save; read when no .safetensors is
/// present, as PEFT does).
inline constexpr const char* kDreamSimLoraDir = "ensemble_lora";

/// How every key of PEFT 0.21's LoraConfig (adapter_config.json) is treated by load_dreamsim.
/// Keys outside the table are ignored, as PEFT ignores (with a warning) keys it does not know.
io::ConfigKeyTable dreamsim_lora_config_keys();

/// Loads the ensemble from the package's cache folder: the DINO hub checkpoint and the two CLIP
/// files (kDreamSim*File), whose state dicts load strictly (every key used, none missing; the CLIP
/// files' `proj` included), and the PEFT LoRA of kDreamSimLoraDir, merged into the base weights
/// (W += lora_alpha / r * B A on every Linear layer that adapter_config.json's target_modules
/// names, PEFT's name-suffix rule). Sizes are inferred from the tensor shapes (ensemble or tiny;
/// heads are not stored: width / 64 heads when the width is a multiple of 64, else width / 16).
/// The weights are merged in float32, then moved to `device` / `dtype` and frozen (requires_grad
/// false). Throws c10::Error naming the file (and key) for a missing or truncated file, a missing,
/// unexpected or mis-shaped tensor, a target_modules entry that names no layer or a non-Linear one,
/// an adapter key for a layer that is not targeted, a targeted layer without its pair, and
/// adapter_config.json values PEFT would apply and this port does not (dreamsim_lora_config_keys()).
/// The DINO head file (kDreamSimDinoHeadFile) is not read.
DreamSim load_dreamsim(const std::string& folder, at::Device device = at::kCPU, at::ScalarType dtype = at::kFloat);

/// What write_random_dreamsim writes besides the networks.
struct DreamSimWriteOptions {
  int64_t lora_rank = 16;             ///< the released adapter's r
  double lora_alpha = 0.5;            ///< the released adapter's lora_alpha (scale alpha / r = 1/32)
  at::ScalarType dtype = at::kFloat;  ///< storage dtype of every tensor (the release is float32)
  bool adapter_bin = false;           ///< write adapter_model.bin (torch.save) instead of adapter_model.safetensors
};

/// One file of the cache-folder layout: its path (relative), its tensors (names as
/// io::load_torch_file / io::load_file flatten them, e.g. "state_dict.cls_token"), and for
/// torch.save files how the names nest.
struct DreamSimFileLayout {
  std::string path;
  std::vector<io::TensorInfo> tensors;
  bool torch_save = true;  ///< false: safetensors
  io::TorchSaveNesting nesting = io::TorchSaveNesting::kFlat;
};

/// The tensor files write_random_dreamsim writes for `options` (built on the meta device; no
/// tensor memory). The DINO head of kDreamSimDinoHeadFile has DINOHead's layout with hidden and
/// output width min(2048, 4 * width) and bottleneck min(256, width) (2048 / 256 at ViT-B size).
std::vector<DreamSimFileLayout> dreamsim_file_layout(const DreamSimOptions& options,
                                                     const DreamSimWriteOptions& write = {});

/// Writes a cache folder of the package's layout (dreamsim_file_layout) with random values that
/// depend on (seed, file, tensor name) only (model/init/random_weights.h; the adapter's not on its
/// format), plus ensemble_lora/adapter_config.json (PEFT LoRA on "qkv", bias "none"). The LoRA B
/// matrices are nonzero (normal, std 0.2, as the A matrices) so that the merged update is a visible
/// part of every qkv weight. `options` must hold the ensemble's model types. Creates `folder` as
/// needed; returns the files written (absolute paths, in order). Throws c10::Error naming the file
/// that cannot be written.
std::vector<std::string> write_random_dreamsim(const std::string& folder, const DreamSimOptions& options, uint64_t seed,
                                               const DreamSimWriteOptions& write = {});

}  // namespace lookahead::model::vision
