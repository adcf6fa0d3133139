// Consistent self-attention: per-group token masks and the per-row extended attention.
#include "model/nn/batch_sharing.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>

#include "common/seed.h"
#include "model/nn/attention.h"

namespace lookahead::model::nn {

void BatchSharing::check(int64_t batch) const {
  TORCH_CHECK(static_cast<int64_t>(groups.size()) == batch, "batch sharing: ", groups.size(),
              " group ids for a batch of ", batch, " rows");
  TORCH_CHECK(rate >= 0.0 && rate <= 1.0, "batch sharing: the token rate must be in [0, 1], got ", rate);
}

bool BatchSharing::active() const {
  if (rate <= 0.0) return false;
  const auto all = group_rows();
  return std::any_of(all.begin(), all.end(), [](const auto& rows) { return rows.size() > 1; });
}

std::vector<std::vector<int64_t>> BatchSharing::group_rows() const {
  std::vector<std::vector<int64_t>> out;
  std::vector<int64_t> ids;  // ids[g] = group id of out[g]; batches are small, a linear search is fine
  for (size_t row = 0; row < groups.size(); ++row) {
    auto it = std::find(ids.begin(), ids.end(), groups[row]);
    if (it == ids.end()) {
      ids.push_back(groups[row]);
      out.emplace_back();
      it = ids.end() - 1;
    }
    out[static_cast<size_t>(it - ids.begin())].push_back(static_cast<int64_t>(row));
  }
  return out;
}

at::Tensor BatchSharing::keep_mask(int64_t group, int64_t block_index, int64_t rows, int64_t tokens) const {
  TORCH_CHECK(rows > 0 && tokens >= 0, "batch sharing: a keep mask needs rows > 0 and tokens >= 0, got ", rows, " x ",
              tokens);
  const uint64_t s = common::splitmix64(common::splitmix64(common::splitmix64(seed) ^ static_cast<uint64_t>(group)) ^
                                        static_cast<uint64_t>(block_index));
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(s);
  // Drawn on the CPU so that the subset does not depend on the device the K/V live on.
  return at::empty({rows, tokens}, at::kFloat).uniform_(0.0, 1.0, generator).lt(rate);  // [rows, tokens]
}

std::vector<RowKv> extend_kv(const BatchSharing& sharing, const at::Tensor& k, const at::Tensor& v,
                             int64_t block_index) {
  TORCH_CHECK(k.dim() == 3 && v.sizes() == k.sizes(), "batch sharing: keys and values must both be [B, N, C], got ",
              k.sizes(), " and ", v.sizes());
  sharing.check(k.size(0));
  std::vector<RowKv> out(static_cast<size_t>(k.size(0)));
  for (const std::vector<int64_t>& rows : sharing.group_rows()) {
    const auto m = static_cast<int64_t>(rows.size());
    if (m == 1 || sharing.rate <= 0.0) {
      for (int64_t r : rows) out[static_cast<size_t>(r)] = {k.narrow(0, r, 1), v.narrow(0, r, 1)};
      continue;
    }
    at::Tensor mask = sharing.keep_mask(sharing.groups[static_cast<size_t>(rows[0])], block_index, m, k.size(1));
    std::vector<at::Tensor> kept_k, kept_v;  // per member: [1, E_a, C]
    for (int64_t a = 0; a < m; ++a) {
      at::Tensor index = mask[a].nonzero().flatten().to(k.device());  // [E_a]
      kept_k.push_back(k.narrow(0, rows[static_cast<size_t>(a)], 1).index_select(1, index));
      kept_v.push_back(v.narrow(0, rows[static_cast<size_t>(a)], 1).index_select(1, index));
    }
    for (int64_t a = 0; a < m; ++a) {
      const int64_t row = rows[static_cast<size_t>(a)];
      std::vector<at::Tensor> ks{k.narrow(0, row, 1)}, vs{v.narrow(0, row, 1)};
      for (int64_t b = 0; b < m; ++b) {
        if (b == a) continue;
        ks.push_back(kept_k[static_cast<size_t>(b)]);
        vs.push_back(kept_v[static_cast<size_t>(b)]);
      }
      out[static_cast<size_t>(row)] = {at::cat(ks, 1), at::cat(vs, 1)};  // [1, N + E, C]
    }
  }
  return out;
}

at::Tensor shared_self_attention(AttentionImpl& attention, const at::Tensor& x, const BatchSharing& sharing,
                                 int64_t block_index) {
  TORCH_CHECK(attention.options.cross_attention_dim() == attention.options.query_dim(),
              "batch sharing: only self-attention layers share tokens");
  TORCH_CHECK(x.dim() == 3, "batch sharing: attention input must be [B, N, C], got ", x.sizes());
  at::Tensor q = attention.to_q->forward(x);                                  // [B, N, C]
  at::Tensor k = attention.to_k->forward(x), v = attention.to_v->forward(x);  // [B, N, C]
  std::vector<RowKv> rows = extend_kv(sharing, k, v, block_index);
  // Rows see different numbers of keys, so each attends on its own (batches here hold a few rows).
  std::vector<at::Tensor> o;
  o.reserve(rows.size());
  for (size_t i = 0; i < rows.size(); ++i)
    o.push_back(attention.attend(q.narrow(0, static_cast<int64_t>(i), 1), rows[i].k, rows[i].v));  // [1, N, C]
  return attention.out_proj()->forward(at::cat(o, 0));
}

}  // namespace lookahead::model::nn
