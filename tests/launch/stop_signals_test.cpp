// launch/stop_signals: which signals stop a run. Each case runs in a forked child (the handlers
// are process-wide, and the child's parent must be this test, as mpirun is the ranks' parent);
// the child reports through its exit code whether the stop flag went up.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include "launch/stop_signals.h"

namespace lookahead::launch {
namespace {

constexpr int kStopped = 10, kRunning = 20;

/// Forks a child that installs the handlers, signals readiness through a pipe and then waits
/// 3 s for the flag; `drive(pid)` signals it from here. Returns kStopped or kRunning.
int child_outcome(const std::function<void(pid_t)>& drive) {
  int ready[2];
  EXPECT_EQ(pipe(ready), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    static std::atomic<bool> flag{false};
    install_stop_signals(&flag, "test child");
    // The heartbeat must have ticked once before the parent's signals: no stale-heartbeat resume.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const char byte = 1;
    if (write(ready[1], &byte, 1) != 1) _exit(1);
    for (int k = 0; k < 300 && !flag.load(); ++k) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    _exit(flag.load() ? kStopped : kRunning);
  }
  char byte = 0;
  EXPECT_EQ(read(ready[0], &byte, 1), 1);
  close(ready[0]);
  close(ready[1]);
  drive(pid);
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status)) << "the child did not exit normally (status " << status << ")";
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(StopSignals, TermAndUsr1Stop) {
  EXPECT_EQ(child_outcome([](pid_t pid) { kill(pid, SIGTERM); }), kStopped);
  EXPECT_EQ(child_outcome([](pid_t pid) { kill(pid, SIGUSR1); }), kStopped);
}

TEST(StopSignals, ContinueFromTheParentStops) {
  // What mpirun / orted send first when they end a job.
  EXPECT_EQ(child_outcome([](pid_t pid) { kill(pid, SIGCONT); }), kStopped);
}

TEST(StopSignals, ContinueThatEndsAStopDoesNot) {
  // Ctrl-Z to mpirun stops the ranks (SIGSTOP); `fg` makes mpirun send SIGCONT.
  EXPECT_EQ(child_outcome([](pid_t pid) {
              kill(pid, SIGSTOP);
              std::this_thread::sleep_for(std::chrono::milliseconds(1500));
              kill(pid, SIGCONT);
            }),
            kRunning);
}

TEST(StopSignals, ContinueFromAnotherProcessDoesNot) {
  // A scheduler resuming a suspended job, or anyone but the parent: sent from a grandchild here.
  EXPECT_EQ(child_outcome([](pid_t pid) {
              const pid_t other = fork();
              if (other == 0) {
                kill(pid, SIGCONT);
                _exit(0);
              }
              waitpid(other, nullptr, 0);
            }),
            kRunning);
}

}  // namespace
}  // namespace lookahead::launch
