// The evaluation report: metrics.json files are read and checked by report_schema, ranked by
// report_summary (best values, comparison.json) and rendered by report_html (tables, image grids)
// with report_plot's ID-vs-CLIP scatter plot.
#include "trainer/eval/eval_report.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>

#include "trainer/eval/report_html.h"
#include "trainer/eval/report_schema.h"
#include "trainer/eval/report_summary.h"

namespace lookahead::trainer {
namespace {

namespace fs = std::filesystem;

void write_file(const fs::path& path, const std::string& content) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) throw std::runtime_error("cannot write '" + path.string() + "'");
  file << content;
  file.close();
  if (!file) throw std::runtime_error("writing '" + path.string() + "' failed");
}

}  // namespace

ReportEntry load_report_entry(const std::string& metrics_json_path) {
  nlohmann::json doc = report::read_metrics(metrics_json_path);
  ReportEntry entry;
  entry.label = doc.at("label").get<std::string>();
  entry.folder = fs::path(metrics_json_path).parent_path().string();
  if (entry.folder.empty()) entry.folder = ".";
  entry.metrics = std::move(doc);
  return entry;
}

void write_report(const std::vector<ReportEntry>& entries, const std::string& out_dir, const std::string& title) {
  if (entries.empty()) throw std::invalid_argument("write_report: no entries to report");
  std::set<std::string> labels;
  for (const ReportEntry& entry : entries) {
    const std::string where = "entry '" + entry.label + "' (" + entry.folder + ")";
    report::check_metrics(entry.metrics, where);
    if (entry.label.empty()) throw std::invalid_argument("write_report: " + where + " has an empty label");
    if (!labels.insert(entry.label).second)
      throw std::invalid_argument("write_report: two entries are labelled '" + entry.label +
                                  "'; give each run a distinct label");
  }
  fs::create_directories(out_dir);
  const fs::path dir = fs::weakly_canonical(fs::absolute(out_dir));

  std::vector<report::Row> rows;
  for (const ReportEntry& entry : entries) rows.push_back(report::make_row(entry.metrics));
  const auto best = report::best_values(rows);

  write_file(dir / "report.html", report::render_report_html(entries, rows, best, dir, title));
  write_file(dir / "comparison.json", report::comparison_json(entries, rows, best, title).dump(2) + "\n");
}

}  // namespace lookahead::trainer
