// out/report.html of `lookahead data generate`: per-identity grids with kept and rejected images
// marked, the filter's statistics, the genuine / impostor similarity histograms with the keep
// threshold, the flagged duplicate identities and the settings. Self-contained (images as data:
// URIs, CSS inline, no script) so that it can be archived or mailed on its own.
#pragma once

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "trainer/generate/identity_filter.h"

namespace lookahead::trainer::generate {

/// One image tile.
struct ReportImage {
  std::vector<uint8_t> encoded;  ///< a JPEG or PNG thumbnail; when empty, `pixels` is used
  at::Tensor pixels;             ///< uint8 [H, W, 3], scaled and center-cropped to the thumbnail size
  bool vanilla = true;
  Decision decision = Decision::kKept;
  float score = std::numeric_limits<float>::quiet_NaN();  ///< cosine to the medoid; NaN: none
  std::string prompt;                                     ///< the full prompt (shown as the tile's tooltip)
  uint64_t seed = 0;
};

/// One identity's grid.
struct ReportIdentity {
  int64_t id = 0;
  std::string description;
  bool kept = true;
  std::vector<ReportImage> images;
};

/// Two identities flagged as probably one face.
struct ReportDuplicate {
  int64_t a = 0, b = 0;
  double cosine = 0;
};

/// What the page shows. `identities` may hold only a sample: identities_kept + identities_dropped
/// is the total the omitted-identities note counts against.
struct GenerateReport {
  std::string title = "lookahead data generate";
  std::vector<ReportIdentity> identities;
  std::map<Decision, int64_t> images_per_decision;
  int64_t identities_kept = 0, identities_dropped = 0;
  std::vector<ReportDuplicate> duplicates;
  Histogram genuine, impostor;
  double keep_threshold = 0.5;
  /// Shown under the title when not empty, e.g. why a run has no histograms (its filter was off).
  std::string note;
  nlohmann::json settings = nlohmann::json::object();
};

/// The page. Shows the first `max_identities` (>= 0) identities and notes how many are omitted;
/// thumbnails made from `pixels` are `thumbnail_size` pixels square (JPEG). Every text is escaped.
std::string render_generate_report(const GenerateReport& report, int64_t max_identities, int64_t thumbnail_size = 128);

/// render_generate_report written atomically to `path` (c10::Error naming the path on failure).
void write_generate_report(const GenerateReport& report, const std::filesystem::path& path, int64_t max_identities,
                           int64_t thumbnail_size = 128);

}  // namespace lookahead::trainer::generate
