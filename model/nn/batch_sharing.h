// Consistent self-attention across the rows of one batch (StoryDiffusion, Zhou et al. 2024,
// "Consistent Self-Attention"), adapted to a single denoising step: rows that show the same
// invented identity form a group, and in the self-attention of the UNet's up blocks each row also
// attends to a random subset of the tokens of the other rows of its group.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace lookahead::model::nn {

class AttentionImpl;

/// Which rows of a batch share self-attention tokens, and how many. A group must lie wholly in one
/// batch; the tokens each row sees depend only on (seed, group id, block index, the group's row
/// count, the block's token count), so splitting a batch into other batches along group
/// boundaries gives the same images.
///
/// Example:
///   auto sharing = std::make_shared<nn::BatchSharing>();
///   sharing->groups = {7, 7, 7, 9, 9};  // rows 0-2 one identity, rows 3-4 another
///   sharing->seed = 1234;
///   inputs.batch_sharing = sharing;     // unet::UNetInputs
struct BatchSharing {
  std::vector<int64_t> groups;  ///< [B] identity group of each row
  /// Probability that one token of another row of the group is kept (StoryDiffusion's sa32 /
  /// sa64). 0: plain self-attention.
  double rate = 0.5;
  uint64_t seed = 0;

  /// Throws unless there is one group id per row of a batch of `batch` and rate is in [0, 1].
  void check(int64_t batch) const;
  /// Whether any row sees another row's tokens: rate > 0 and some group has two rows or more.
  bool active() const;
  /// The rows of each group, ascending, groups in order of their first row.
  std::vector<std::vector<int64_t>> group_rows() const;
  /// Which tokens of each row of `group` its other rows see at transformer block `block_index`:
  /// [rows, tokens] bool on the CPU, one draw per token with probability `rate`. Row r of the mask
  /// is the r-th row of the group in batch order.
  at::Tensor keep_mask(int64_t group, int64_t block_index, int64_t rows, int64_t tokens) const;
};

/// Keys and values one row attends over.
struct RowKv {
  at::Tensor k, v;  ///< [1, N + E, C]: own tokens first, then the E tokens shared with it
};

/// Row i of k, v [B, N, C] extended with the kept tokens (keep_mask at `block_index`) of every
/// other row of its group, in batch order: [k_i ; k_j[mask_j] for j != i in the group]. A row
/// alone in its group, or any row at rate 0, keeps its own K/V only.
std::vector<RowKv> extend_kv(const BatchSharing& sharing, const at::Tensor& k, const at::Tensor& v,
                             int64_t block_index);

/// `attention` (a self-attention layer) on x [B, N, C] with each row's keys extended by
/// extend_kv; the output is [B, N, C] like AttentionImpl::forward's.
at::Tensor shared_self_attention(AttentionImpl& attention, const at::Tensor& x, const BatchSharing& sharing,
                                 int64_t block_index);

}  // namespace lookahead::model::nn
