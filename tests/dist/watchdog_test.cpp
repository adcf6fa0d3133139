// Watchdog: a running collective past its timeout becomes a report and a failed Work; completed
// and queued collectives do not.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "dist/watchdog.h"

namespace lookahead::dist {
namespace {

std::shared_ptr<Work> make_work(uint64_t seq) {
  WorkInfo info;
  info.seq = seq;
  info.op = OpType::kAllGather;
  info.comm_name = "shard";
  info.backend = "mpi";
  info.dtype = at::kBFloat16;
  info.bytes = 2048;
  return std::make_shared<Work>(info);
}

bool eventually(const std::function<bool()>& pred, double seconds) {
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  while (Clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}

TEST(Watchdog, PollsOnTheDeviceItWasGiven) {
  // The World passes its device; on the CPU the thread reports the CPU (on a GPU node, world_test
  // checks that it reports the rank's GPU rather than the thread default, GPU 0).
  Watchdog dog(0.01, std::make_shared<FlightRecorder>(4), Clock::now(), nullptr, c10::Device(c10::kCPU));
  EXPECT_EQ(dog.thread_device(), c10::Device(c10::kCPU));
}

TEST(Watchdog, AStopSignalDuringAStalledCollectiveIsReportedOnce) {
  auto recorder = std::make_shared<FlightRecorder>(8);
  std::atomic<int> timeouts{0};
  std::atomic<bool> stop{false};
  testing::internal::CaptureStderr();
  {
    Watchdog dog(0.01, recorder, Clock::now(), [&](const std::string&) { ++timeouts; });
    dog.report_on_stop(&stop, 0.05);
    auto stuck = make_work(1);
    stuck->mark_running();
    recorder->add(stuck);
    dog.watch(stuck, {}, 0);  // no timeout: only the stop signal makes it speak
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    stop.store(true);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    // The signal does not fail the collective: a preempted job's collectives still complete.
    EXPECT_EQ(stuck->state(), WorkState::kRunning);
    stuck->mark_done();
  }
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(timeouts.load(), 0);
  const std::string line = "stop signal received while this rank has waited";
  ASSERT_NE(err.find(line), std::string::npos) << err;
  EXPECT_EQ(err.find(line, err.find(line) + 1), std::string::npos) << "reported more than once:\n" << err;
  EXPECT_NE(err.find("for all_gather #1 (bfloat16, 2048 bytes) on communicator 'shard'"), std::string::npos) << err;
  EXPECT_NE(err.find("#1 shard/mpi all_gather bfloat16 2048 B"), std::string::npos) << err;  // the history
}

TEST(Watchdog, AStopSignalWithNothingStalledSaysNothing) {
  std::atomic<bool> stop{true};
  testing::internal::CaptureStderr();
  {
    Watchdog dog(0.01, std::make_shared<FlightRecorder>(4), Clock::now(), nullptr);
    dog.report_on_stop(&stop, 0.05);
    auto quick = make_work(0);
    dog.watch(quick, {}, 0);  // queued, never running
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    quick->mark_running();
    quick->mark_done();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
}

TEST(Watchdog, TimesOutARunningCollectiveWithAReport) {
  auto recorder = std::make_shared<FlightRecorder>(8);
  std::mutex mutex;
  std::string report;
  std::atomic<int> fired{0};
  Watchdog dog(0.01, recorder, Clock::now(), [&](const std::string& r) {
    std::lock_guard<std::mutex> lock(mutex);
    report = r;
    ++fired;
  });
  auto done = make_work(0);
  done->mark_running();
  done->mark_done();
  recorder->add(done);
  auto stuck = make_work(1);
  stuck->mark_running();
  recorder->add(stuck);
  dog.watch(stuck, {}, 0.1);

  ASSERT_TRUE(eventually([&] { return stuck->state() == WorkState::kFailed; }, 5.0));
  EXPECT_EQ(fired.load(), 1);
  EXPECT_EQ(stuck->error_kind(), ErrorKind::kTimeout);
  std::lock_guard<std::mutex> lock(mutex);
  EXPECT_NE(report.find("collective timeout: all_gather #1 (bfloat16, 2048 bytes) on communicator 'shard'"),
            std::string::npos)
      << report;
  EXPECT_NE(report.find("#0 shard/mpi all_gather bfloat16 2048 B"), std::string::npos) << report;
  EXPECT_NE(report.find("running"), std::string::npos) << report;
  EXPECT_EQ(report, stuck->error());
}

TEST(Watchdog, IgnoresCompletedAndQueuedCollectives) {
  auto recorder = std::make_shared<FlightRecorder>(8);
  std::atomic<int> fired{0};
  Watchdog dog(0.01, recorder, Clock::now(), [&](const std::string&) { ++fired; });
  auto quick = make_work(0);
  quick->mark_running();
  dog.watch(quick, {}, 0.05);
  quick->mark_done();
  auto queued = make_work(1);  // waits behind another op: its clock has not started
  dog.watch(queued, {}, 0.05);
  ASSERT_TRUE(eventually([&] { return dog.in_flight() == 1; }, 5.0));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(fired.load(), 0);
  EXPECT_EQ(queued->state(), WorkState::kQueued);
  queued->mark_done();
  EXPECT_TRUE(eventually([&] { return dog.in_flight() == 0; }, 5.0));
}

TEST(Watchdog, ZeroTimeoutNeverFires) {
  auto recorder = std::make_shared<FlightRecorder>(2);
  std::atomic<int> fired{0};
  Watchdog dog(0.01, recorder, Clock::now(), [&](const std::string&) { ++fired; });
  auto w = make_work(0);
  w->mark_running();
  dog.watch(w, {}, 0.0);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(fired.load(), 0);
  w->mark_done();
}

}  // namespace
}  // namespace lookahead::dist
