// trainer/metrics_log: truncate_from keeps the steps before the resume point, drops a line cut short
// by a kill, and marks the first record after a resume — and only after a resume: a fresh start
// (`resume = latest` with no checkpoint yet) writes step 0 unmarked.
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "trainer/metrics_log.h"

namespace lookahead::trainer {
namespace {

namespace fs = std::filesystem;

class MetricsLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("la_metrics_log_test." + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "metrics.jsonl").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<nlohmann::json> records() const {
    std::vector<nlohmann::json> out;
    std::ifstream in(path_);
    std::string line;
    while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
    return out;
  }
  static void write_steps(MetricsLog& log, int64_t from, int64_t to) {
    for (int64_t s = from; s < to; ++s) log.write(StepRecord{s, {{"loss", 0.5}}, {}});
  }
  /// The steps in the file, and which of them carry "resumed": 1.
  void expect(const std::vector<int64_t>& steps, const std::vector<int64_t>& marked) const {
    std::vector<int64_t> got, got_marked;
    for (const auto& j : records()) {
      got.push_back(j["step"].get<int64_t>());
      if (j.contains("resumed")) {
        EXPECT_EQ(j["resumed"].get<int>(), 1);
        got_marked.push_back(j["step"].get<int64_t>());
      }
    }
    EXPECT_EQ(got, steps);
    EXPECT_EQ(got_marked, marked);
  }

  fs::path dir_;
  std::string path_;
};

TEST_F(MetricsLogTest, FreshStartIsNotMarkedResumed) {
  {  // a run that died before its first checkpoint, and left half a line
    MetricsLog log(path_, true, false, 10);
    write_steps(log, 0, 3);
  }
  std::ofstream(path_, std::ios::app) << "{\"step\": 3, \"lo";
  {  // resume = latest, no checkpoint: starts over at step 0
    MetricsLog log(path_, true, false, 10);
    log.truncate_from(0, /*mark_resumed=*/false);
    write_steps(log, 0, 4);
  }
  expect({0, 1, 2, 3}, {});
}

TEST_F(MetricsLogTest, ResumeDropsRedoneStepsAndMarksTheFirstRecord) {
  {
    MetricsLog log(path_, true, false, 10);
    write_steps(log, 0, 7);  // checkpoint at 4, stopped after logging 6
  }
  {
    MetricsLog log(path_, true, false, 10);
    log.truncate_from(4);
    write_steps(log, 4, 10);
  }
  expect({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {4});
}

TEST_F(MetricsLogTest, OtherRanksWriteNothing) {
  MetricsLog log(path_, false, false, 10);
  log.truncate_from(0);
  write_steps(log, 0, 2);
  EXPECT_FALSE(fs::exists(path_));
}

}  // namespace
}  // namespace lookahead::trainer
