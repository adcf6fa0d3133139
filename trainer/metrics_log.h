// Rank 0's view of training: one JSON object per step in metrics.jsonl and a progress line on
// stderr (step, losses, α, it/s, ETA). Other ranks write nothing.
#pragma once

#include <chrono>
#include <cstdint>
#include <fstream>
#include <map>
#include <string>

namespace lookahead::trainer {

/// One step's record; `values` become the JSON fields (losses, α, t, grad norm, lr, phase
/// seconds, memory bytes, counts).
struct StepRecord {
  int64_t step = 0;
  std::map<std::string, double> values;
};

class MetricsLog {
 public:
  /// `path` is appended to (a resumed run continues the file); empty: no file. `enabled` is false
  /// on ranks other than 0.
  MetricsLog(const std::string& path, bool enabled, bool progress, int64_t total_steps);
  ~MetricsLog();
  void write(const StepRecord& record);
  /// Prints a line that stays (above the progress bar).
  void message(const std::string& text);

 private:
  bool enabled_, progress_;
  int64_t total_;
  std::ofstream file_;
  std::chrono::steady_clock::time_point start_;
  int64_t first_step_ = -1;
  bool bar_shown_ = false;
};

}  // namespace lookahead::trainer
