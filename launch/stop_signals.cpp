// Signal handlers may only touch lock-free atomics and call async-signal-safe functions (write,
// getppid, clock_gettime): messages are preformatted before the handlers are installed.
#include "launch/stop_signals.h"

#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <stdexcept>

namespace lookahead::launch {
namespace {

std::atomic<bool>* g_flag = nullptr;

// A SIGCONT that resumes a stopped process (Ctrl-Z: mpirun turns the forwarded SIGTSTP into
// SIGSTOP, which no handler sees) must not stop the run. A stopped process's threads do not run, so
// a heartbeat thread ticking every 100 ms sees a gap after a stop. On the resume, the SIGCONT
// handler and the heartbeat thread wake together, in either order: the handler finds either a
// stale heartbeat or the heartbeat's note of a gap that just ended. Misjudging a heavily loaded
// machine's late heartbeat as a stop only delays the stop to the launcher's SIGTERM.
std::atomic<int64_t> g_heartbeat_ns{0};
std::atomic<int64_t> g_gap_ended_ns{0};  // when the heartbeat last saw a gap (a stop ended)
constexpr int64_t kHeartbeat_ns = 100'000'000;
constexpr int64_t kGap_ns = 1'000'000'000;

int64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);  // async-signal-safe
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

constexpr size_t kMessageSize = 512;
char g_msg_term[kMessageSize], g_msg_usr1[kMessageSize], g_msg_cont[kMessageSize];
size_t g_len_term = 0, g_len_usr1 = 0, g_len_cont = 0;

void say(const char* msg, size_t len) {
  // Nothing to do about a failed write to stderr in a signal handler.
  [[maybe_unused]] const ssize_t n = write(STDERR_FILENO, msg, len);
}

extern "C" void on_stop(int sig) {
  if (g_flag != nullptr) g_flag->store(true);
  if (sig == SIGTERM) say(g_msg_term, g_len_term);
  if (sig == SIGUSR1) say(g_msg_usr1, g_len_usr1);
}

extern "C" void on_cont(int, siginfo_t* info, void*) {
  const int64_t now = monotonic_ns();
  if (now - g_heartbeat_ns.load() > kGap_ns || now - g_gap_ended_ns.load() < kGap_ns) return;  // a resume
  if (info == nullptr || info->si_code != SI_USER || info->si_pid != getppid()) return;
  if (g_flag != nullptr) g_flag->store(true);
  say(g_msg_cont, g_len_cont);
}

size_t format(char* out, const std::string& text) {
  const size_t n = std::min(text.size(), kMessageSize - 1);
  std::memcpy(out, text.data(), n);
  out[n] = '\0';
  return n;
}

void install(int sig, void (*handler)(int)) {
  struct sigaction sa {};
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  if (sigaction(sig, &sa, nullptr) != 0) throw std::runtime_error("sigaction failed for signal " + std::to_string(sig));
}

}  // namespace

void install_stop_signals(std::atomic<bool>* flag, const std::string& who) {
  const std::string prefix = "[lookahead " + who + "] ";
  const std::string tail = ": checkpointing at the next step boundary, then exiting\n";
  g_len_term = format(g_msg_term, prefix + "SIGTERM" + tail);
  g_len_usr1 = format(g_msg_usr1, prefix + "SIGUSR1" + tail);
  g_len_cont = format(g_msg_cont, prefix + "SIGCONT from the launcher (it is ending the job; SIGKILL follows after "
                                           "2 x odls_base_sigkill_timeout s)" + tail);
  g_flag = flag;
  install(SIGTERM, on_stop);
  install(SIGUSR1, on_stop);
  static_assert(std::atomic<int64_t>::is_always_lock_free);
  g_heartbeat_ns.store(monotonic_ns());
  g_gap_ended_ns.store(-kGap_ns);
  std::thread([] {
    for (;;) {
      const int64_t now = monotonic_ns();
      if (now - g_heartbeat_ns.load() > kGap_ns) g_gap_ended_ns.store(now);
      g_heartbeat_ns.store(now);
      std::this_thread::sleep_for(std::chrono::nanoseconds(kHeartbeat_ns));
    }
  }).detach();
  struct sigaction sa {};
  sa.sa_sigaction = on_cont;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART | SA_SIGINFO;
  if (sigaction(SIGCONT, &sa, nullptr) != 0) throw std::runtime_error("sigaction failed for SIGCONT");
}

}  // namespace lookahead::launch
