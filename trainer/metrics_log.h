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
/// seconds, memory bytes, counts), `labels` string fields (the dtype that ran).
struct StepRecord {
  int64_t step = 0;
  std::map<std::string, double> values;
  std::map<std::string, std::string> labels;
};

class MetricsLog {
 public:
  /// `path` is appended to (a resumed run continues the file); empty: no file. `enabled` is false
  /// on ranks other than 0.
  MetricsLog(const std::string& path, bool enabled, bool progress, int64_t total_steps);
  ~MetricsLog();
  void write(const StepRecord& record);
  /// A resumed run starts again at `step`: records of steps >= `step` (written after the checkpoint
  /// by the run that stopped) are dropped from the file, so every step appears once, and, with
  /// `mark_resumed`, the next record written carries "resumed": 1 (plots mark the resume point with
  /// it; a fresh start, `resume = latest` without a checkpoint, is no resume). The file is rewritten
  /// to a temporary name and renamed, so a crash leaves the old or the new file whole.
  void truncate_from(int64_t step, bool mark_resumed = true);
  /// Prints a line that stays (above the progress bar).
  void message(const std::string& text);

 private:
  std::string path_;
  bool enabled_, progress_;
  bool mark_resumed_ = false;
  int64_t total_;
  std::ofstream file_;
  std::chrono::steady_clock::time_point start_;
  int64_t first_step_ = -1;
  bool bar_shown_ = false;
};

}  // namespace lookahead::trainer
