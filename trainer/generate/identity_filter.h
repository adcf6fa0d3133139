// Identity-consistency filtering of generated images (beyond the official script, which keeps
// everything): per identity, keep the vanilla images close to the identity's medoid in ArcFace
// space and drop identities with too few survivors; across identities, flag pairs whose centroids
// are so close that they are probably one face; and the genuine / impostor similarity histograms a
// user calibrates the threshold with.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lookahead::trainer::generate {

/// The filter's settings. Thresholds are cosine similarities of unit ArcFace embeddings.
struct FilterOptions {
  /// A vanilla image is kept when its cosine to the identity's medoid is at least this. Data
  /// cleaning wants precision, above the verification operating points of ArcFace models (cos
  /// 0.30-0.40 at FAR 1e-4..1e-3): the reference's cleaning range is 0.45-0.5 to the centroid.
  double keep_threshold = 0.5;
  /// An identity keeping fewer vanilla images than this is dropped entirely.
  int64_t min_survivors = 4;
  /// Two identities whose centroids have a cosine above this are flagged as duplicates. Equal to
  /// keep_threshold: above it, the images of one identity would pass the other's keep test, so
  /// the filter itself could not tell the two apart. (0.3, the bottom of the verification range,
  /// would flag many distinct look-alike identities of a 100K-identity set.)
  double duplicate_threshold = 0.5;
  /// Stylized images: unset, a detected face suffices (ArcFace is unreliable on drawings and
  /// paintings); set, their cosine to the medoid must also reach it (a relaxed threshold).
  std::optional<double> stylized_threshold;

  /// Thresholds in [-1, 1], min_survivors >= 1; c10::Error naming the option.
  void validate() const;
};

/// What happened to one image.
enum class Decision { kKept, kNoFace, kBelowThreshold, kIdentityDropped };

/// "kept", "no_face", "below_threshold", "identity_dropped" (the names stored per image).
const char* to_string(Decision decision);

/// The filter's verdict on one identity's images.
struct FilterResult {
  std::vector<Decision> decisions;  ///< per image
  std::vector<float> scores;        ///< cosine to the medoid; NaN without a face or without a medoid
  int64_t medoid = -1;              ///< index among the images, -1 when no vanilla image has a face
  at::Tensor centroid;              ///< [D] float32, unit mean of the kept vanilla embeddings; undefined if dropped
  bool identity_kept = false;
};

/// Filters one identity. `embeddings` [n, D] float (rows of images with a face unit norm; other
/// rows are ignored), `face_found` and `vanilla` of length n. The medoid is the vanilla image with
/// a face whose mean cosine to the other vanilla images with a face is largest (the first on a
/// tie). A vanilla image is kept iff it has a face and cos >= keep_threshold; a stylized one iff it
/// has a face (and cos >= stylized_threshold when that is set); otherwise kNoFace or
/// kBelowThreshold. With fewer than min_survivors kept vanilla images every decision becomes
/// kIdentityDropped (scores stay).
FilterResult filter_identity(const at::Tensor& embeddings, const std::vector<bool>& face_found,
                             const std::vector<bool>& vanilla, const FilterOptions& options);

/// Pairs of identities whose centroids ([I, D] float, unit rows) have a cosine above `threshold`,
/// as (smaller id, larger id) of `identity_ids` (length I), sorted ascending. `cosines` (optional)
/// receives each pair's cosine, in the same order.
std::vector<std::pair<int64_t, int64_t>> find_duplicates(const at::Tensor& centroids,
                                                         const std::vector<int64_t>& identity_ids, double threshold,
                                                         std::vector<double>* cosines = nullptr);

/// Counts of cosines in `counts.size()` equal bins over [lo, hi] (the last bin includes hi;
/// values outside are clamped into the end bins).
struct Histogram {
  double lo = -1, hi = 1;
  std::vector<int64_t> counts;
};

/// Cosine histograms over [-1, 1] of `embeddings` ([N, D] float, unit rows) with `identity` (length
/// N): first genuine pairs (same identity), then impostor pairs (different identities). Each kind
/// uses all its pairs when there are at most `max_pairs_per_kind`, otherwise exactly that many
/// pairs drawn uniformly (with replacement) by a generator seeded with `seed`, so the result is
/// deterministic.
std::pair<Histogram, Histogram> similarity_histograms(const at::Tensor& embeddings,
                                                      const std::vector<int64_t>& identity, int64_t bins,
                                                      int64_t max_pairs_per_kind, uint64_t seed);

}  // namespace lookahead::trainer::generate
