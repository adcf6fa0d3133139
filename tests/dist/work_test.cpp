// Work state machine and FlightRecorder ring, in one process.
#include <gtest/gtest.h>

#include <thread>

#include "dist/flight_recorder.h"
#include "dist/work.h"

namespace lookahead::dist {
namespace {

WorkInfo info_for(uint64_t seq, OpType op = OpType::kAllReduce) {
  WorkInfo info;
  info.seq = seq;
  info.op = op;
  info.comm_name = "test";
  info.backend = "mpi";
  info.dtype = at::kFloat;
  info.numel = 16;
  info.bytes = 64;
  return info;
}

TEST(Work, LifecycleAndTiming) {
  Work work(info_for(7));
  EXPECT_EQ(work.state(), WorkState::kQueued);
  EXPECT_FALSE(work.is_done());
  work.mark_running();
  EXPECT_EQ(work.state(), WorkState::kRunning);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  work.mark_done();
  EXPECT_TRUE(work.is_done());
  EXPECT_GE(work.seconds(), 0.015);
  EXPECT_LE(work.start_time(), work.end_time());
  EXPECT_EQ(work.bytes(), 64);
  work.wait();  // returns at once
}

TEST(Work, WaitBlocksUntilDoneFromAnotherThread) {
  auto work = std::make_shared<Work>(info_for(1));
  work->mark_running();
  std::thread completer([work] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    work->mark_done();
  });
  auto t0 = Clock::now();
  work->wait();
  EXPECT_GE(std::chrono::duration<double>(Clock::now() - t0).count(), 0.02);
  completer.join();
}

TEST(Work, FailureIsRethrownWithItsKind) {
  Work work(info_for(2));
  work.mark_running();
  work.mark_failed(ErrorKind::kTimeout, "stuck all_reduce");
  EXPECT_EQ(work.state(), WorkState::kFailed);
  try {
    work.wait();
    FAIL() << "wait() must throw";
  } catch (const DistError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kTimeout);
    EXPECT_STREQ(e.what(), "stuck all_reduce");
  }
  work.mark_done();  // terminal states are final
  EXPECT_EQ(work.state(), WorkState::kFailed);
}

TEST(Work, HeldTensorsAreReleasedOnCompletion) {
  at::Tensor t = at::ones({4});
  Work work(info_for(3));
  work.hold({t});
  EXPECT_EQ(t.use_count(), 2);
  work.mark_done();
  EXPECT_EQ(t.use_count(), 1);
}

TEST(FlightRecorder, KeepsTheMostRecentInOrder) {
  FlightRecorder rec(4);
  for (uint64_t i = 0; i < 10; ++i) {
    auto w = std::make_shared<Work>(info_for(i, i % 2 ? OpType::kAllGather : OpType::kReduceScatter));
    if (i < 9) w->mark_done();
    rec.add(w);
  }
  auto entries = rec.entries();
  ASSERT_EQ(entries.size(), 4u);
  EXPECT_EQ(rec.total(), 10u);
  for (size_t i = 0; i < entries.size(); ++i) EXPECT_EQ(entries[i]->info().seq, 6 + i);
  std::string dump = rec.dump(Clock::now());
  EXPECT_NE(dump.find("#6 test/mpi reduce_scatter float32 64 B"), std::string::npos) << dump;
  EXPECT_NE(dump.find("#9 test/mpi all_gather float32 64 B"), std::string::npos) << dump;
  EXPECT_NE(dump.find("queued"), std::string::npos) << dump;  // #9 never started
  EXPECT_EQ(dump.find("#5 "), std::string::npos) << dump;
}

TEST(DtypeName, TorchStyle) {
  EXPECT_STREQ(dtype_name(at::kBFloat16), "bfloat16");
  EXPECT_STREQ(dtype_name(at::kLong), "int64");
  EXPECT_STREQ(to_string(OpType::kReduceScatter), "reduce_scatter");
  EXPECT_STREQ(to_string(ReduceOp::kAvg), "avg");
}

}  // namespace
}  // namespace lookahead::dist
