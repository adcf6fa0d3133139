// NCCL communicator faults at world 1, without a second rank to stall or kill: an explicit abort
// fails the pending and every later collective with its reason, and a collective held back past
// CommConfig::timeout_s is reported by the watchdog as a timeout and aborts the communicator. The
// stall is a host function sleeping on the caller's stream: the communicator orders its stream
// after the caller's with an event, so the collective cannot start before the sleep ends. Skipped
// without a CUDA device or without NCCL in the build (tests/dist/fault_test.sh covers the MPI
// faults across ranks).
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "lookahead/build_config.h"
#include "tests/test_main.h"
#if LA_HAVE_NCCL
#include <ATen/ops/ones.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "dist/mpi_communicator.h"
#include "dist/nccl_communicator.h"
#endif

namespace lookahead::dist {
namespace {

using test::world;

bool eventually(const std::function<bool()>& pred, double seconds) {
  const auto deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  while (Clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}

/// The error a Work reports once done, or "" when it succeeded or never finished within `seconds`
/// (a hang fails the test instead of hanging it).
std::string error_of(const WorkHandle& work, double seconds, ErrorKind* kind) {
  if (!eventually([&] { return work->is_done(); }, seconds)) return "";
  try {
    work->synchronize();
  } catch (const DistError& e) {
    *kind = e.kind();
    return e.what();
  }
  return "";
}

#if LA_HAVE_NCCL

/// Seconds the host function holds the caller's stream: longer than the timeout below by a wide
/// margin, short enough that the test ends soon after.
constexpr double kStallS = 2.0;
constexpr double kTimeoutS = 0.5;

void sleep_on_stream(void* /*unused*/) {
  // Runs on a CUDA driver thread; it must not call CUDA itself.
  std::this_thread::sleep_for(std::chrono::duration<double>(kStallS));
}

class NcclFault : public testing::Test {
 protected:
  void SetUp() override {
    if (!world().device().is_cuda()) GTEST_SKIP() << "no CUDA device bound to this rank: NCCL faults need a GPU";
    // A side stream made current by the stall, so that it holds back only this test's work.
    stream_ = std::make_unique<c10::cuda::CUDAStream>(c10::cuda::getStreamFromPool(false, world().device().index()));
  }

  /// The communicator under test, with services of its own: the World's watchdog handler ends the
  /// job after a timeout (World::on_fatal), which is right for training and wrong for a test that
  /// provokes one. This one records the report.
  void start(double timeout_s) {
    services_ = std::make_shared<CommServices>();
    services_->config.timeout_s = timeout_s;
    services_->config.verify_signatures = false;
    services_->config.watchdog_poll_s = 0.01;
    services_->origin = Clock::now();
    services_->recorder = std::make_shared<FlightRecorder>(16);
    services_->watchdog = std::make_shared<Watchdog>(
        services_->config.watchdog_poll_s, services_->recorder, services_->origin,
        [reports = reports_, mutex = mutex_](const std::string& report) {
          std::lock_guard<std::mutex> lock(*mutex);
          reports->push_back(report);
        },
        world().device());
    comm_ =
        NcclCommunicator::create(static_cast<MpiCommunicator&>(*world().comm()), world().device(), "fault", services_);
  }

  void TearDown() override {
    if (stream_) {
      // Let the sleeping host function finish before the next test, and see that the stream is healthy.
      c10::cuda::CUDAGuard guard(world().device());
      LA_CUDA_CHECK(cudaStreamSynchronize(stream_->stream()));
    }
    comm_.reset();
    services_.reset();  // joins the watchdog
  }

  /// Issues an all_reduce behind a kStallS sleep on the caller's stream.
  WorkHandle stalled_all_reduce() {
    c10::cuda::CUDAStreamGuard guard(*stream_);
    LA_CUDA_CHECK(cudaLaunchHostFunc(stream_->stream(), sleep_on_stream, nullptr));
    return comm_->all_reduce(at::ones({4}, at::TensorOptions().dtype(at::kFloat).device(world().device())));
  }

  std::vector<std::string> reports() const {
    std::lock_guard<std::mutex> lock(*mutex_);
    return *reports_;
  }

  std::shared_ptr<CommServices> services_;
  std::shared_ptr<NcclCommunicator> comm_;
  std::unique_ptr<c10::cuda::CUDAStream> stream_;
  std::shared_ptr<std::mutex> mutex_ = std::make_shared<std::mutex>();
  std::shared_ptr<std::vector<std::string>> reports_ = std::make_shared<std::vector<std::string>>();
};

TEST_F(NcclFault, AbortFailsThePendingAndEveryLaterCollectiveWithItsReason) {
  start(/*timeout_s=*/30);  // far past the test's waits: only the abort can end the collective
  WorkHandle pending = stalled_all_reduce();
  EXPECT_FALSE(pending->is_done()) << "the collective finished before the stall: nothing was pending";
  comm_->abort("test abort: peer lost");
  EXPECT_TRUE(comm_->aborted());
  ErrorKind kind = ErrorKind::kBackend;
  const std::string pending_error = error_of(pending, 10.0, &kind);
  ASSERT_FALSE(pending_error.empty()) << "the pending collective did not fail within 10 s of the abort";
  EXPECT_EQ(kind, ErrorKind::kAborted) << pending_error;
  EXPECT_NE(pending_error.find("test abort: peer lost"), std::string::npos) << pending_error;
  EXPECT_NE(pending_error.find("'fault'"), std::string::npos) << pending_error;

  try {
    comm_->all_reduce(at::ones({4}, at::TensorOptions().dtype(at::kFloat).device(world().device())));
    ADD_FAILURE() << "a collective after the abort was accepted";
  } catch (const DistError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kAborted) << e.what();
    EXPECT_NE(std::string(e.what()).find("test abort: peer lost"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(reports().empty()) << "the watchdog reported a timeout: " << reports().front();
}

TEST_F(NcclFault, ACollectivePastItsTimeoutIsReportedAndAbortsTheCommunicator) {
  start(kTimeoutS);
  WorkHandle stuck = stalled_all_reduce();
  ErrorKind kind = ErrorKind::kBackend;
  const auto t0 = Clock::now();
  const std::string error = error_of(stuck, 10.0, &kind);
  const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
  ASSERT_FALSE(error.empty()) << "the stalled collective neither timed out nor failed within 10 s";
  EXPECT_EQ(kind, ErrorKind::kTimeout) << error;
  // Reported by the watchdog while the stall still held it, not after the collective ran.
  EXPECT_LT(waited, kStallS) << error;
  EXPECT_NE(error.find("collective timeout: all_reduce #0 (float32, 16 bytes) on communicator 'fault' (nccl"),
            std::string::npos)
      << error;
  EXPECT_NE(error.find("did not complete within 0.5 s"), std::string::npos) << error;
  EXPECT_NE(error.find("#0 fault/nccl all_reduce float32 16 B"), std::string::npos) << error;  // the history

  ASSERT_TRUE(eventually([&] { return comm_->aborted(); }, 5.0)) << "the watchdog did not abort the communicator";
  const std::vector<std::string> seen = reports();
  ASSERT_EQ(seen.size(), 1u) << "timeout handler calls";
  EXPECT_EQ(seen[0], error);
  try {
    comm_->all_reduce(at::ones({4}, at::TensorOptions().dtype(at::kFloat).device(world().device())));
    ADD_FAILURE() << "a collective after the timeout was accepted";
  } catch (const DistError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kAborted) << e.what();
    EXPECT_NE(std::string(e.what()).find("collective timeout: all_reduce #0"), std::string::npos) << e.what();
  }
}

#else  // !LA_HAVE_NCCL

TEST(NcclFault, AbortFailsThePendingAndEveryLaterCollectiveWithItsReason) {
  GTEST_SKIP() << "this build has no NCCL communicator (configured without CUDA torch or NCCL)";
}
TEST(NcclFault, ACollectivePastItsTimeoutIsReportedAndAbortsTheCommunicator) {
  GTEST_SKIP() << "this build has no NCCL communicator (configured without CUDA torch or NCCL)";
}

#endif

}  // namespace
}  // namespace lookahead::dist
