// The summary table as data: the columns that can be best, one row per run (its "overall" block),
// the best displayed value per column, and comparison.json.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "trainer/eval/eval_report.h"
#include "trainer/eval/report_schema.h"

namespace lookahead::trainer::report {

/// A column of the summary table that can hold a run's best value (`digits` as displayed).
struct Column {
  std::string key, header;
  int digits = 3;
  bool higher_is_better = true;
};

/// One row's values for the columns that can be best.
struct Row {
  std::map<std::string, Stat> stats;
  std::optional<double> failure_percent;
  int64_t samples = 0;
};

/// id_similarity, id_similarity_strict, face_failure_rate, clip_score, clip_cosine.
const std::vector<Column>& ranked_columns();

/// The row of one metrics.json document (its "overall" block).
Row make_row(const nlohmann::json& metrics);

/// The row's value in `column`; none when it has none.
std::optional<double> ranked_value(const Row& row, const Column& column);

/// Rounded as displayed, so that bold marks exactly the cells whose printed value is the best.
double rounded(double value, int digits);

/// The best displayed value per column; none when fewer than two rows have a value.
std::map<std::string, double> best_values(const std::vector<Row>& rows);

/// Whether the row's displayed value in `column` is the column's best.
bool is_best(const Row& row, const Column& column, const std::map<std::string, double>& best);

/// comparison.json: format "lookahead-eval-comparison", version 1, the columns and one row per entry.
nlohmann::json comparison_json(const std::vector<ReportEntry>& entries, const std::vector<Row>& rows,
                               const std::map<std::string, double>& best, const std::string& title);

}  // namespace lookahead::trainer::report
