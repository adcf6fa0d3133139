#include "trainer/generate/identity_filter.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "common/seed.h"

namespace lookahead::trainer::generate {
namespace {

void check_threshold(double value, const char* name) {
  TORCH_CHECK(std::isfinite(value) && value >= -1.0 && value <= 1.0, "filter option ", name,
              " must be a cosine in [-1, 1], got ", value);
}

// Rows of `embeddings` as a contiguous CPU tensor of `dtype`, after the checks every entry point shares.
at::Tensor rows(const at::Tensor& embeddings, const char* where, const char* what, at::ScalarType dtype) {
  TORCH_CHECK(embeddings.defined() && embeddings.dim() == 2 && embeddings.size(1) > 0, where, ": ", what,
              " must be [n, D] with D > 0, got ", embeddings.defined() ? embeddings.sizes() : at::IntArrayRef{});
  TORCH_CHECK(embeddings.is_floating_point(), where, ": ", what, " must be floating point, got ",
              embeddings.scalar_type());
  return embeddings.detach().to(at::kCPU, dtype).contiguous();
}

// Bin of cosine `c` in `h`, clamped into the end bins.
size_t bin_of(const Histogram& h, double c) {
  const auto bins = static_cast<double>(h.counts.size());
  const double x = std::floor((c - h.lo) / (h.hi - h.lo) * bins);
  return static_cast<size_t>(std::clamp(x, 0.0, bins - 1));
}

}  // namespace

void FilterOptions::validate() const {
  check_threshold(keep_threshold, "keep_threshold");
  check_threshold(duplicate_threshold, "duplicate_threshold");
  if (stylized_threshold) check_threshold(*stylized_threshold, "stylized_threshold");
  TORCH_CHECK(min_survivors >= 1, "filter option min_survivors must be >= 1, got ", min_survivors);
}

const char* to_string(Decision decision) {
  switch (decision) {
    case Decision::kKept: return "kept";
    case Decision::kNoFace: return "no_face";
    case Decision::kBelowThreshold: return "below_threshold";
    case Decision::kIdentityDropped: return "identity_dropped";
  }
  return "unknown";
}

FilterResult filter_identity(const at::Tensor& embeddings, const std::vector<bool>& face_found,
                             const std::vector<bool>& vanilla, const FilterOptions& options) {
  options.validate();
  // Double precision: the medoid and the threshold tests must not depend on summation order.
  const at::Tensor e = rows(embeddings, "filter_identity", "embeddings", at::kDouble);  // [n, D]
  const int64_t n = e.size(0);
  TORCH_CHECK(static_cast<int64_t>(face_found.size()) == n && static_cast<int64_t>(vanilla.size()) == n,
              "filter_identity: face_found (", face_found.size(), ") and vanilla (", vanilla.size(),
              ") must have one entry per embedding row (", n, ")");
  for (int64_t i = 0; i < n; ++i) {
    if (!face_found[i]) continue;
    const double norm = e[i].norm().item<double>();
    TORCH_CHECK(std::abs(norm - 1.0) < 1e-3, "filter_identity: embedding row ", i,
                " (an image with a face) must have unit norm, has ", norm);
  }

  FilterResult result;
  result.scores.assign(static_cast<size_t>(n), std::numeric_limits<float>::quiet_NaN());
  std::vector<int64_t> candidates;  // vanilla images with a face
  for (int64_t i = 0; i < n; ++i)
    if (face_found[i] && vanilla[i]) candidates.push_back(i);
  if (!candidates.empty()) {
    const at::Tensor sub = e.index_select(0, at::tensor(candidates, at::kLong));  // [m, D]
    const at::Tensor gram = sub.mm(sub.t());                                      // [m, m]
    const at::Tensor others = gram.sum(1) - gram.diagonal();                      // [m]
    const auto sums = others.accessor<double, 1>();
    size_t best = 0;
    for (size_t k = 1; k < candidates.size(); ++k)
      if (sums[static_cast<int64_t>(k)] > sums[static_cast<int64_t>(best)]) best = k;
    result.medoid = candidates[best];
    const at::Tensor cosines = e.mv(e[result.medoid]);  // [n]
    const auto cos = cosines.accessor<double, 1>();
    for (int64_t i = 0; i < n; ++i)
      if (face_found[i]) result.scores[i] = static_cast<float>(cos[i]);
  }

  int64_t kept_vanilla = 0;
  std::vector<int64_t> kept_rows;
  result.decisions.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    Decision& d = result.decisions[i];
    // Compared in float, as stored: a reader re-applying the threshold to the score agrees.
    const float score = result.scores[i];
    if (!face_found[i]) {
      d = Decision::kNoFace;
    } else if (vanilla[i]) {
      d = score >= static_cast<float>(options.keep_threshold) ? Decision::kKept : Decision::kBelowThreshold;
      if (d == Decision::kKept) {
        ++kept_vanilla;
        kept_rows.push_back(i);
      }
    } else {
      const bool close = !options.stylized_threshold || score >= static_cast<float>(*options.stylized_threshold);
      d = close ? Decision::kKept : Decision::kBelowThreshold;
    }
  }
  result.identity_kept = kept_vanilla >= options.min_survivors;
  if (!result.identity_kept) {
    std::fill(result.decisions.begin(), result.decisions.end(), Decision::kIdentityDropped);
    return result;
  }
  const at::Tensor mean = e.index_select(0, at::tensor(kept_rows, at::kLong)).mean(0);  // [D]
  result.centroid = (mean / mean.norm()).to(at::kFloat);
  return result;
}

std::vector<std::pair<int64_t, int64_t>> find_duplicates(const at::Tensor& centroids,
                                                         const std::vector<int64_t>& identity_ids, double threshold,
                                                         std::vector<double>* cosines) {
  check_threshold(threshold, "duplicate_threshold");
  const at::Tensor c = rows(centroids, "find_duplicates", "centroids", at::kFloat);  // [I, D]
  const int64_t count = c.size(0);
  TORCH_CHECK(static_cast<int64_t>(identity_ids.size()) == count, "find_duplicates: identity_ids (",
              identity_ids.size(), ") must have one entry per centroid row (", count, ")");
  struct Found {
    std::pair<int64_t, int64_t> ids;
    double cosine;
  };
  std::vector<Found> found;
  // Blocks of rows bound the similarity matrix to kBlock x I (100K identities: 400 MB at once otherwise 40 GB).
  constexpr int64_t kBlock = 1024;
  for (int64_t begin = 0; begin < count; begin += kBlock) {
    const int64_t end = std::min(count, begin + kBlock);
    const at::Tensor sim = c.slice(0, begin, end).mm(c.t());  // [B, I]
    const at::Tensor hits = (sim > threshold).nonzero();      // [k, 2]
    const auto h = hits.accessor<int64_t, 2>();
    const auto s = sim.accessor<float, 2>();
    for (int64_t k = 0; k < hits.size(0); ++k) {
      const int64_t i = begin + h[k][0], j = h[k][1];
      if (j <= i) continue;
      const int64_t a = identity_ids[i], b = identity_ids[j];
      found.push_back({{std::min(a, b), std::max(a, b)}, static_cast<double>(s[h[k][0]][j])});
    }
  }
  std::sort(found.begin(), found.end(), [](const Found& x, const Found& y) { return x.ids < y.ids; });
  std::vector<std::pair<int64_t, int64_t>> pairs;
  if (cosines) cosines->clear();
  for (const Found& f : found) {
    pairs.push_back(f.ids);
    if (cosines) cosines->push_back(f.cosine);
  }
  return pairs;
}

std::pair<Histogram, Histogram> similarity_histograms(const at::Tensor& embeddings,
                                                      const std::vector<int64_t>& identity, int64_t bins,
                                                      int64_t max_pairs_per_kind, uint64_t seed) {
  TORCH_CHECK(bins >= 1, "similarity_histograms: bins must be >= 1, got ", bins);
  TORCH_CHECK(max_pairs_per_kind >= 1, "similarity_histograms: max_pairs_per_kind must be >= 1, got ",
              max_pairs_per_kind);
  const at::Tensor e = rows(embeddings, "similarity_histograms", "embeddings", at::kFloat);  // [N, D]
  const int64_t n = e.size(0), dim = e.size(1);
  TORCH_CHECK(static_cast<int64_t>(identity.size()) == n, "similarity_histograms: identity (", identity.size(),
              ") must have one entry per embedding row (", n, ")");
  const float* data = e.data_ptr<float>();
  const auto cosine = [&](int64_t i, int64_t j) {
    double dot = 0;
    for (int64_t d = 0; d < dim; ++d) dot += static_cast<double>(data[i * dim + d]) * data[j * dim + d];
    return dot;
  };

  // Rows grouped by identity: order[start[g] .. start[g+1]) are the rows of the g-th identity.
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return identity[a] < identity[b]; });
  std::vector<int64_t> start;
  for (int64_t k = 0; k < n; ++k)
    if (k == 0 || identity[order[k]] != identity[order[k - 1]]) start.push_back(k);
  start.push_back(n);
  const size_t groups = start.size() - 1;
  const auto size_of = [&](size_t g) { return start[g + 1] - start[g]; };

  Histogram genuine{-1.0, 1.0, std::vector<int64_t>(static_cast<size_t>(bins), 0)};
  Histogram impostor = genuine;
  int64_t genuine_pairs = 0;
  for (size_t g = 0; g < groups; ++g) genuine_pairs += size_of(g) * (size_of(g) - 1) / 2;
  const int64_t impostor_pairs = n * (n - 1) / 2 - genuine_pairs;

  if (genuine_pairs <= max_pairs_per_kind) {
    for (size_t g = 0; g < groups; ++g)
      for (int64_t a = start[g]; a < start[g + 1]; ++a)
        for (int64_t b = a + 1; b < start[g + 1]; ++b) ++genuine.counts[bin_of(genuine, cosine(order[a], order[b]))];
  } else {
    // An identity with probability proportional to its ordered pairs, then two distinct rows of
    // it: every unordered pair equally likely.
    std::vector<uint64_t> cumulative;
    uint64_t total = 0;
    for (size_t g = 0; g < groups; ++g) cumulative.push_back(total += size_of(g) * (size_of(g) - 1));
    common::SplitMix rng(common::derive_seed(seed, 1));
    for (int64_t k = 0; k < max_pairs_per_kind; ++k) {
      const uint64_t r = rng.uniform(total);
      const size_t g = std::upper_bound(cumulative.begin(), cumulative.end(), r) - cumulative.begin();
      const auto m = static_cast<uint64_t>(size_of(g));
      const auto a = static_cast<int64_t>(rng.uniform(m));
      auto b = static_cast<int64_t>(rng.uniform(m - 1));
      if (b >= a) ++b;
      ++genuine.counts[bin_of(genuine, cosine(order[start[g] + a], order[start[g] + b]))];
    }
  }

  if (impostor_pairs <= max_pairs_per_kind) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j)
        if (identity[i] != identity[j]) ++impostor.counts[bin_of(impostor, cosine(i, j))];
  } else {
    // An identity with probability proportional to its rows times the rows outside it, one of its
    // rows, then one row outside it: again every unordered pair equally likely.
    std::vector<uint64_t> cumulative;
    uint64_t total = 0;
    for (size_t g = 0; g < groups; ++g) cumulative.push_back(total += size_of(g) * (n - size_of(g)));
    common::SplitMix rng(common::derive_seed(seed, 2));
    for (int64_t k = 0; k < max_pairs_per_kind; ++k) {
      const uint64_t r = rng.uniform(total);
      const size_t g = std::upper_bound(cumulative.begin(), cumulative.end(), r) - cumulative.begin();
      const int64_t a = start[g] + static_cast<int64_t>(rng.uniform(static_cast<uint64_t>(size_of(g))));
      auto b = static_cast<int64_t>(rng.uniform(static_cast<uint64_t>(n - size_of(g))));
      if (b >= start[g]) b += size_of(g);
      ++impostor.counts[bin_of(impostor, cosine(order[a], order[b]))];
    }
  }
  return {std::move(genuine), std::move(impostor)};
}

}  // namespace lookahead::trainer::generate
