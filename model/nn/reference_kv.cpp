// Reference K/V container: token dropout and the no-reference mode.
#include "model/nn/reference_kv.h"

#include <ATen/ATen.h>

namespace lookahead::model::nn {

const BlockKv* ReferenceKv::block(int64_t index) const {
  if (index < 0 || index >= static_cast<int64_t>(blocks.size())) return nullptr;
  const BlockKv& b = blocks[static_cast<size_t>(index)];
  if (!b.k.defined() && !b.ip_k.defined()) return nullptr;
  return &b;
}

ReferenceKv ReferenceKv::drop_tokens(double p, at::Generator generator) const {
  TORCH_CHECK(p >= 0.0 && p <= 1.0, "reference-token dropout must be in [0, 1], got ", p);
  ReferenceKv out = *this;
  if (p == 0.0) return out;
  for (BlockKv& b : out.blocks) {
    if (!b.k.defined()) continue;
    const int64_t m = b.k.size(1);
    // One draw per token, shared by the batch; drawn on the CPU so that the subset does not depend
    // on the device the K/V live on.
    at::Tensor keep = at::empty({m}, at::kFloat).uniform_(0.0, 1.0, generator).ge(p);  // [M]
    at::Tensor index = keep.nonzero().flatten().to(b.k.device());                     // [M']
    b.k = b.k.index_select(1, index);
    b.v = b.v.index_select(1, index);
  }
  return out;
}

ReferenceKv ReferenceKv::without_reference() const {
  ReferenceKv out = *this;
  for (BlockKv& b : out.blocks) b.k = b.v = at::Tensor();
  return out;
}

int64_t ReferenceKv::bytes() const {
  int64_t total = 0;
  for (const BlockKv& b : blocks)
    for (const at::Tensor* t : {&b.k, &b.v, &b.ip_k, &b.ip_v})
      if (t->defined()) total += t->numel() * static_cast<int64_t>(t->element_size());
  return total;
}

}  // namespace lookahead::model::nn
