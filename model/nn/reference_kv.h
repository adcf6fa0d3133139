// Keys and values that the KV encoder extracts from the reference image's stream, per transformer
// block, and that the decoder and LCM UNets attend to ("extended self-attention", LCM-Lookahead
// §4): the reference self-attention K/V and the IP-Adapter K/V of the image tokens.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace lookahead::model::nn {

/// What one transformer block shares. Undefined tensors: nothing of that kind for this block.
struct BlockKv {
  at::Tensor k, v;        ///< [B, M, C] reference self-attention keys / values
  at::Tensor ip_k, ip_v;  ///< [B, T, C] image-prompt keys / values (to_k_ip / to_v_ip of the tokens)
};

/// Every block's share of one KV-encoder run, indexed by the UNet's transformer-block index
/// (down blocks, mid block, up blocks, in module order); blocks outside the encoder's range are
/// absent or empty.
struct ReferenceKv {
  std::vector<BlockKv> blocks;

  /// The block's K/V, or null when it has none.
  const BlockKv* block(int64_t index) const;
  /// Reference-token dropout: in every block, each reference token is dropped with probability p,
  /// the same tokens for every sample of the batch (IP K/V untouched). A generator seeded alike on
  /// every rank makes the subset the same across ranks, so N ranks reproduce one.
  ReferenceKv drop_tokens(double p, at::Generator generator = {}) const;
  /// The "no reference" mode of guidance: reference self-attention tokens removed, IP K/V kept.
  ReferenceKv without_reference() const;
  /// Bytes held by all tensors.
  int64_t bytes() const;
};

/// Trainable low-rank part of one block's reference K/V heads (`extract_kv1`): the heads are
/// attn1's frozen to_k / to_v plus these LoRAs (down [r, C], up [C, r]), so no copy of the base
/// projections exists.
struct KvHeadLora {
  at::Tensor k_down, k_up, v_down, v_up;
};

/// Filled by the transformer blocks while a KV-encoder run is in progress.
struct KvExtraction {
  const std::vector<KvHeadLora>* heads = nullptr;  ///< per block index; later blocks record nothing
  at::Tensor ip_tokens;                            ///< [B, T, D_ip] for the IP K/V, or undefined
  ReferenceKv* out = nullptr;
};

}  // namespace lookahead::model::nn
