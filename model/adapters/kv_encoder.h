// The KV encoder of LCM-Lookahead (§4 of the method): the SDXL UNet run on the noised reference
// latent, stopping after up_blocks[1], with trainable rank-4 LoRAs on its attention projections;
// every transformer block yields the reference self-attention K/V (norm1 of the reference stream
// through attn1's to_k / to_v plus a rank-4 KV-head LoRA) and the IP-Adapter K/V of the image
// tokens. It runs on the one frozen base UNet that the decoder and LCM branches also use: its
// LoRAs are adapters named "encoder", active only during its own run.
#pragma once

#include <ATen/core/Generator.h>
#include <torch/arg.h>

#include <map>
#include <string>
#include <vector>

#include "model/nn/lora_loader.h"
#include "model/nn/reference_kv.h"
#include "model/unet/unet_2d_condition.h"

namespace lookahead::model::adapters {

struct KvEncoderOptions {
  /// Rank of the encoder LoRAs on attn1 / attn2 to_q, to_k, to_v, to_out.0.
  TORCH_ARG(int64_t, lora_rank) = 4;
  /// Rank of the KV-head LoRAs (to_k / to_v of `extract_kv1`).
  TORCH_ARG(int64_t, kv_lora_rank) = 4;
  /// Last up block the encoder runs; negative counts from the end (-2: SDXL's up_blocks[1]).
  TORCH_ARG(int64_t, last_up_block) = -2;
};

/// Example:
///   KvEncoder encoder(unet, KvEncoderOptions());
///   auto kv = std::make_shared<nn::ReferenceKv>(encoder.forward(ref_inputs, ip_tokens).drop_tokens(0.05, gen));
///   tgt_inputs.reference = kv;                      // decoder / LCM run on the same UNet
///   at::Tensor eps = unet->forward(tgt_inputs);
class KvEncoder {
 public:
  /// Name of the encoder LoRA adapters on the UNet's layers.
  static constexpr const char* kAdapterName = "encoder";

  /// Attaches the encoder LoRAs to `unet` (down ~ N(0, 1/r), up = 0: the network is unchanged at
  /// creation) and creates the KV-head LoRAs, drawing from `generator`.
  KvEncoder(unet::UNet2DConditionModel unet, const KvEncoderOptions& options, at::Generator generator = {});
  /// Detaches the encoder LoRAs from the UNet.
  ~KvEncoder();
  KvEncoder(const KvEncoder&) = delete;
  KvEncoder& operator=(const KvEncoder&) = delete;

  /// Reference K/V of every block in range for the reference inputs (noised reference latent, t,
  /// the reference prompt). `ip_tokens` [B, T, D_ip] give the IP K/V through each block's
  /// to_k_ip / to_v_ip (the IP-Adapter must be attached); undefined: no IP K/V.
  nn::ReferenceKv forward(const unet::UNetInputs& reference, const at::Tensor& ip_tokens);

  /// Trainable tensors by key: "<layer path>.lora_down.weight" / ".lora_up.weight" for the encoder
  /// LoRAs and "<block path>.extract_kv1.to_k.lora_down.weight" (to_k / to_v, down / up) for the
  /// KV heads. The tensors are the live ones (requires_grad).
  std::map<std::string, at::Tensor> trainable_parameters() const;
  /// Copies values into the trainable tensors; every key must be present and of the same shape.
  void load_trainable(const std::map<std::string, at::Tensor>& tensors, const std::string& origin);

  int64_t last_up_block() const { return last_up_block_; }
  /// Paths of the transformer blocks whose K/V the encoder yields (index = block index).
  const std::vector<std::string>& block_paths() const { return block_paths_; }
  /// Layer paths that carry an encoder LoRA.
  std::vector<std::string> lora_layer_paths() const;
  const unet::UNet2DConditionModel& unet() const { return unet_; }

 private:
  unet::UNet2DConditionModel unet_;
  KvEncoderOptions options_;
  int64_t last_up_block_ = 0;
  std::vector<std::string> block_paths_;
  std::vector<nn::KvHeadLora> heads_;
  nn::TrainableLora lora_;
};

}  // namespace lookahead::model::adapters
