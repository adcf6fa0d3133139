// metrics.jsonl and the progress bar.
#include "trainer/metrics_log.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <vector>

namespace lookahead::trainer {

MetricsLog::MetricsLog(const std::string& path, bool enabled, bool progress, int64_t total_steps)
    : path_(path), enabled_(enabled), progress_(progress && enabled), total_(total_steps),
      start_(std::chrono::steady_clock::now()) {
  if (!enabled_ || path.empty()) return;
  file_.open(path, std::ios::app);
  if (!file_) throw std::runtime_error("cannot open the metrics file '" + path + "' for appending");
}

MetricsLog::~MetricsLog() {
  if (bar_shown_) std::fputc('\n', stderr);
}

void MetricsLog::write(const StepRecord& r) {
  if (!enabled_) return;
  if (file_.is_open()) {
    nlohmann::json j;
    j["step"] = r.step;
    for (const auto& [k, v] : r.values) j[k] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
    for (const auto& [k, v] : r.labels) j[k] = v;
    if (mark_resumed_) j["resumed"] = 1;
    mark_resumed_ = false;
    file_ << j.dump() << "\n";
    file_.flush();  // a killed run keeps every step it finished
  }
  if (!progress_) return;
  if (first_step_ < 0) {
    first_step_ = r.step;
    start_ = std::chrono::steady_clock::now();
  }
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double done = static_cast<double>(r.step - first_step_);
  const double rate = elapsed > 0 ? done / elapsed : 0.0;
  const double eta = rate > 0 ? static_cast<double>(total_ - r.step - 1) / rate : 0.0;
  const int width = 24;
  const int filled = static_cast<int>(width * static_cast<double>(r.step + 1) / static_cast<double>(std::max<int64_t>(total_, 1)));
  std::string bar(static_cast<size_t>(std::clamp(filled, 0, width)), '#');
  bar.resize(width, '.');
  auto get = [&](const char* k) { auto it = r.values.find(k); return it == r.values.end() ? NAN : it->second; };
  if (done < 2) {  // no rate from a single step
    std::fprintf(stderr, "\r[%s] %lld/%lld  L_diff %.4f  L_LH %.5f  alpha %.2f ", bar.c_str(),
                 static_cast<long long>(r.step + 1), static_cast<long long>(total_), get("loss_diffusion"),
                 get("loss_lookahead"), get("alpha"));
    std::fflush(stderr);
    bar_shown_ = true;
    return;
  }
  std::fprintf(stderr, "\r[%s] %lld/%lld  L_diff %.4f  L_LH %.5f  alpha %.2f  %.2f it/s  ETA %02d:%02d:%02d ", bar.c_str(),
               static_cast<long long>(r.step + 1), static_cast<long long>(total_), get("loss_diffusion"),
               get("loss_lookahead"), get("alpha"), rate, static_cast<int>(eta) / 3600, static_cast<int>(eta) / 60 % 60,
               static_cast<int>(eta) % 60);
  std::fflush(stderr);
  bar_shown_ = true;
}

void MetricsLog::truncate_from(int64_t step, bool mark_resumed) {
  if (!enabled_ || path_.empty()) return;
  file_.close();
  std::vector<std::string> kept;
  {
    std::ifstream in(path_);
    std::string line;
    int64_t number = 0;
    while (std::getline(in, line)) {
      ++number;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      // A line cut short by a kill mid-write is dropped, as are steps the resume will redo.
      if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) {
        std::fprintf(stderr, "metrics: %s:%lld: dropped an unreadable line\n", path_.c_str(),
                     static_cast<long long>(number));
        continue;
      }
      if (j["step"].get<int64_t>() < step) kept.push_back(line);
    }
  }
  const std::string tmp = path_ + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (const auto& l : kept) out << l << "\n";
    out.flush();
    if (!out) throw std::runtime_error("cannot rewrite the metrics file '" + path_ + "' (writing " + tmp + ")");
  }
  if (std::rename(tmp.c_str(), path_.c_str()) != 0)
    throw std::runtime_error("cannot replace the metrics file '" + path_ + "' with " + tmp);
  file_.open(path_, std::ios::app);
  if (!file_) throw std::runtime_error("cannot open the metrics file '" + path_ + "' for appending");
  mark_resumed_ = mark_resumed;
}

void MetricsLog::message(const std::string& text) {
  if (!enabled_) return;
  if (bar_shown_) std::fputc('\n', stderr);
  bar_shown_ = false;
  std::fprintf(stderr, "%s\n", text.c_str());
}

}  // namespace lookahead::trainer
