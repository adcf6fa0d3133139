// The report page: HTML escaping, the summary and settings tables, per-prompt tables, per-identity
// image grids, and the assembled self-contained page (CSS inline, no script).
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "trainer/eval/eval_report.h"
#include "trainer/eval/report_summary.h"

namespace lookahead::trainer::report {

/// Text for HTML content and attribute values: & < > " ' escaped.
std::string escape_html(const std::string& text);

/// Percent-encodes a relative path for a src attribute ('/' kept; '#', '?', '%', spaces and
/// non-ASCII bytes encoded so that file names survive as written).
std::string escape_url_path(const std::string& path);

/// The whole report.html for `entries` (rows and best values as report_summary computes them);
/// image paths are made relative to `out_dir`, the folder the page is written to.
std::string render_report_html(const std::vector<ReportEntry>& entries, const std::vector<Row>& rows,
                               const std::map<std::string, double>& best, const std::filesystem::path& out_dir,
                               const std::string& title);

}  // namespace lookahead::trainer::report
