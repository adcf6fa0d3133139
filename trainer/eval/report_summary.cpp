#include "trainer/eval/report_summary.h"

#include <cmath>

#include "trainer/eval/report_format.h"

namespace lookahead::trainer::report {

using nlohmann::json;

const std::vector<Column>& ranked_columns() {
  static const std::vector<Column> columns = {
      {"id_similarity", "ID similarity", 3, true},
      {"id_similarity_strict", "ID strict (no face = 0)", 3, true},
      {"face_failure_rate", "no face", 1, false},
      {"clip_score", std::string("CLIP score (") + kTimes + "100)", 2, true},
      {"clip_cosine", "CLIP cosine", 4, true},
  };
  return columns;
}

Row make_row(const json& metrics) {
  const json& overall = metrics.at("overall");
  Row row;
  for (const char* key : {"id_similarity", "id_similarity_strict", "clip_score", "clip_cosine"})
    row.stats[key] = stat(overall.at(key));
  if (auto rate = number(overall.at("face_failure_rate"))) row.failure_percent = *rate * 100;
  row.samples = overall.at("n").get<int64_t>();
  return row;
}

std::optional<double> ranked_value(const Row& row, const Column& column) {
  if (column.key == "face_failure_rate") return row.failure_percent;
  return row.stats.at(column.key).mean;
}

double rounded(double value, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::round(value * scale) / scale;
}

std::map<std::string, double> best_values(const std::vector<Row>& rows) {
  std::map<std::string, double> best;
  for (const Column& column : ranked_columns()) {
    std::optional<double> b;
    int count = 0;
    for (const Row& row : rows) {
      auto v = ranked_value(row, column);
      if (!v) continue;
      ++count;
      const double r = rounded(*v, column.digits);
      if (!b || (column.higher_is_better ? r > *b : r < *b)) b = r;
    }
    if (b && count >= 2) best[column.key] = *b;
  }
  return best;
}

bool is_best(const Row& row, const Column& column, const std::map<std::string, double>& best) {
  auto it = best.find(column.key);
  auto v = ranked_value(row, column);
  return it != best.end() && v && rounded(*v, column.digits) == it->second;
}

json comparison_json(const std::vector<ReportEntry>& entries, const std::vector<Row>& rows,
                     const std::map<std::string, double>& best, const std::string& title) {
  json columns = json::array();
  for (const Column& c : ranked_columns())
    columns.push_back({{"key", c.key}, {"header", c.header}, {"better", c.higher_is_better ? "higher" : "lower"}});
  json out_rows = json::array();
  for (size_t i = 0; i < entries.size(); ++i) {
    const json& settings = entries[i].metrics.at("settings");
    const json& overall = entries[i].metrics.at("overall");
    json best_keys = json::array();
    for (const Column& c : ranked_columns())
      if (is_best(rows[i], c, best)) best_keys.push_back(c.key);
    out_rows.push_back({{"label", entries[i].label},
                        {"folder", entries[i].folder},
                        {"checkpoint", settings.value("checkpoint", json())},
                        {"step", settings.at("step")},
                        {"guidance", settings.at("guidance")},
                        {"guidance_text", guidance_text(settings.at("guidance"))},
                        {"samples", overall.at("n")},
                        {"id_similarity", overall.at("id_similarity")},
                        {"id_similarity_strict", overall.at("id_similarity_strict")},
                        {"face_failure_rate", overall.at("face_failure_rate")},
                        {"clip_score", overall.at("clip_score")},
                        {"clip_cosine", overall.at("clip_cosine")},
                        {"best", best_keys}});
  }
  return {{"format", "lookahead-eval-comparison"},
          {"version", 1},
          {"title", title},
          {"columns", columns},
          {"rows", out_rows}};
}

}  // namespace lookahead::trainer::report
