// The typed configuration of `lookahead train`, filled once by launch/ from an INI file and flag
// overrides and passed by const reference. Defaults are the official LCM-Lookahead
// hyper-parameters (method.md §1–§6).
#pragma once

#include <cstdint>
#include <string>

namespace lookahead::trainer {

/// [model]: which networks and weights.
struct ModelConfig {
  std::string preset = "sdxl";          ///< sdxl | tiny (random-initialized, CPU-sized)
  std::string unet_config;              ///< diffusers unet/config.json (sdxl: built in)
  std::string unet_weights;             ///< SDXL base UNet safetensors (or .index.json)
  std::string ip_adapter;               ///< ip-adapter-plus-face_sdxl_vit-h (.bin or .safetensors)
  std::string lcm_lora;                 ///< LCM-LoRA SDXL (kohya safetensors)
  std::string taesd;                    ///< TAESDXL safetensors
  std::string arcface;                  ///< IR-SE50 (.pth) or iresnet weights
  std::string arcface_network = "irse50";  ///< irse50 | iresnet50 | iresnet100
  std::string mtcnn;                    ///< folder with facenet-pytorch's pnet.pt, rnet.pt, onet.pt: landmarks
                                        ///< for samples that have none (empty: such samples are masked)
  int64_t encoder_lora_rank = 4;
  int64_t kv_lora_rank = 4;
  double ip_scale = 1.0;
  std::string dtype = "auto";           ///< auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
  // Networks that only encode inputs (`lookahead data encode`, on-the-fly encoding, evaluation).
  std::string sdxl_folder;              ///< diffusers SDXL base folder: text_encoder(_2)/, tokenizer(_2)/, vae/
  std::string vae;                      ///< AutoencoderKL folder overriding <sdxl_folder>/vae (e.g. the fp16 fix)
  std::string image_encoder;            ///< IP-Adapter image encoder folder (CLIP ViT-H/14, transformers layout)
};

/// [data]
struct DataConfig {
  std::string train_set;                ///< HDF5 training set (docs/data.md)
  int64_t resolution = 1024;            ///< training images are resized / center-cropped to this
  int64_t loader_threads = 2;
  int64_t prefetch_batches = 2;
  bool skip_corrupt = false;            ///< skip and count corrupt records instead of failing
  /// Augmentation (needs on-the-fly encoding: precomputed latents are of the unaugmented image).
  bool random_crop = false;             ///< Resize + RandomCrop as the official code (a no-op on square images)
  double hflip_p = 0;                   ///< probability of a horizontal flip (not in the official code)
};

/// [loss]
struct LossConfig {
  std::string mode = "sum";             ///< sum: L_diff + L_LH, one optimizer step; alternate: two steps
  double lambda_id = 1e-3;
  double adapter_drop = 0.1;
  double kv_drop = 0.05;
  double timestep_a_diffusion = 0.5;
  double timestep_a_lookahead = 0.2;
  int64_t alpha_every = 5;              ///< α redrawn every this many steps
  double alpha_p_one = 0.5;             ///< probability of α = 1 (else U(alpha_min, 1))
  double alpha_min = 0.1;
};

/// [optim]
struct OptimConfig {
  double lr_adapter = 1e-5;             ///< Resampler + to_k_ip / to_v_ip
  double lr_lora = 5e-6;                ///< encoder LoRAs + KV-head LoRAs
  double weight_decay = 0.01;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double clip = 1.0;                    ///< global grad-norm clipping; <= 0 disables
};

/// [train]
struct RunConfig {
  int64_t steps = 5001;
  int64_t batch_per_rank = 4;
  uint64_t seed = 0;
  std::string out = "out/train";        ///< run directory: metrics.jsonl, checkpoints/, export/
  int64_t log_every = 1;
  int64_t checkpoint_every = 500;
  int64_t keep_checkpoints = 3;
  std::string resume;                   ///< "", "latest" or a checkpoint path
  bool fallback_to_previous = true;     ///< a corrupt latest checkpoint falls back to the one before
  bool progress = true;                 ///< progress bar on rank 0 (stderr)
  int64_t threads = 0;                  ///< intra-op CPU threads per rank; 0 = cores / ranks per node
};

/// [dist]
struct DistConfig {
  std::string placement = "full";       ///< full | node | replicate (frozen weights)
  bool prefetch = true;
  int64_t max_gathered_units = 2;
  bool keep_gathered = false;
};

/// [eval]: `lookahead eval`, and a small evaluation every `every` steps of training (method §4, §8).
struct EvalConfig {
  std::string eval_set;                 ///< HDF5 set (docs/data.md): one reference photo per identity is used
  std::string prompts;                  ///< text file, one prompt per line ('#' comments, blank lines ignored)
  int64_t identities = 0;               ///< evaluate the first N identities of the set (0: all)
  int64_t samples = 4;                  ///< images per (identity, prompt)
  int64_t steps = 50;                   ///< sampler steps
  std::string sampler = "dpm_solver";   ///< dpm_solver (DPM-Solver++ 2M) | euler | ddim
  std::string scheduler_config;         ///< diffusers scheduler_config.json (empty: SDXL base's)
  std::string guidance = "lookahead";   ///< lookahead (three-term, with / without reference K/V) | cfg
  double cfg_scale = 5.0;               ///< cfg: ε_u + s·(ε_c − ε_u)
  double scale_nokv = 3.0;              ///< lookahead: weight of (ε_nokv_c − ε_nokv_u)
  double scale_full = 2.0;              ///< lookahead: weight of (ε_full_c − ε_nokv_u)
  double scale_kv = 2.0;                ///< lookahead: weight of (ε_full_u − ε_nokv_u)
  std::string encoder_prompt = "A photo of a face";  ///< prompt of the KV encoder's reference run
  int64_t resolution = 1024;            ///< generated image side (8 x the latent side)
  uint64_t seed = 0;                    ///< seeds are drawn per (identity, prompt, sample) from this
  std::string clip_model;               ///< transformers CLIPModel folder for the CLIP score (tiny: random)
  std::string clip_model_name = "openai/clip-vit-large-patch14";  ///< name written into the results
  int64_t every = 0;                    ///< training: evaluate every K steps (0: never)
  std::string out;                      ///< output folder (default <train.out>/eval)
  bool save_images = true;              ///< write the generated images (PNG) next to metrics.json
};

struct TrainConfig {
  ModelConfig model;
  DataConfig data;
  LossConfig loss;
  OptimConfig optim;
  RunConfig train;
  DistConfig dist;
  EvalConfig eval;
  /// The resolved configuration as INI text (stored in checkpoints and printed by --dry-run).
  std::string resolved_ini;
};

}  // namespace lookahead::trainer
