// The evaluation report: reads the metrics.json files that evaluation writes (one per checkpoint,
// method or guidance setting) and renders them side by side as one self-contained HTML page (the
// summary table in the manner of the paper, an ID-vs-CLIP scatter plot in inline SVG, per-prompt
// tables and per-identity image grids) plus comparison.json, the summary table as data.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace lookahead::trainer {

/// One evaluated run: a row of the summary table, a point of the plot, a grid of images.
struct ReportEntry {
  /// Its name in tables and plots (metrics.json "label" unless the caller overrides it).
  std::string label;
  /// The whole metrics.json document (format "lookahead-eval", version 1).
  nlohmann::json metrics;
  /// Folder of the metrics.json; the image paths inside `metrics` are relative to it.
  std::string folder;
};

/// Reads `metrics_json_path` and checks its format, version and every key the report reads (types
/// included). Throws std::runtime_error naming the file and the offending key (e.g.
/// "samples[3].clip_score") when the file cannot be read, is not JSON or does not match the schema.
ReportEntry load_report_entry(const std::string& metrics_json_path);

/// Writes <out_dir>/report.html (self-contained: CSS and SVG inline, no script; the images are
/// referenced by paths relative to out_dir, so the folder tree must stay together) and
/// <out_dir>/comparison.json (the summary table as data). `title` is the page's <h1>. Creates
/// out_dir. Entries are validated as by load_report_entry; their labels must be distinct and
/// non-empty. Stable hooks for tools and tests: table#summary (tbody tr.entry[data-label]),
/// svg#id-vs-clip (circle.point[data-label]), table.prompts[data-label], div.grid[data-label]
/// with img.reference and img.generation.
void write_report(const std::vector<ReportEntry>& entries, const std::string& out_dir, const std::string& title);

}  // namespace lookahead::trainer
