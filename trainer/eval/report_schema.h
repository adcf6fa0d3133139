// The metrics.json schema as the report reads it (format "lookahead-eval", version 1, written by
// the evaluator): reading and checking a document, with errors that name the file and the key path
// ("identities[1].clip_score.ci95"), and typed views of its summary values.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace lookahead::trainer::report {

/// Checks one metrics.json document: format, version and every key the report reads, types
/// included. Throws std::runtime_error "metrics file '<where>': key '<path>' ..." otherwise.
void check_metrics(const nlohmann::json& doc, const std::string& where);

/// Reads the metrics.json at `path` and checks it as check_metrics does. Throws std::runtime_error
/// naming the file when it cannot be opened, is not JSON or does not match the schema.
nlohmann::json read_metrics(const std::string& path);

/// The value as a double; none when it is not a number (null).
std::optional<double> number(const nlohmann::json& value);

/// A Summary JSON ({"n", "mean", "std", "ci95"}) scaled by `scale`.
struct Stat {
  int64_t n = 0;
  std::optional<double> mean, low, high;
  std::optional<double> half_width() const {
    if (low && high) return (*high - *low) / 2;
    return std::nullopt;
  }
};

Stat stat(const nlohmann::json& summary, double scale = 1);

}  // namespace lookahead::trainer::report
