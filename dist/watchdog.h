// Watchdog: one thread per process that polls every in-flight collective and turns one that runs
// past its timeout, or that its backend reports failed, into an error report instead of a hang.
#pragma once

#include <c10/core/Device.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dist/abortable.h"
#include "dist/flight_recorder.h"
#include "dist/work.h"

namespace lookahead::dist {

/// Polls watched collectives. On a timeout it marks the Work failed (kTimeout) with a report
/// naming the op, the rank, the communicator and the flight-recorder history, aborts the
/// communicator (an Abortable: the watchdog needs no more of it, and communicator.h includes this
/// header), and calls the timeout handler (the World's: log, then end the job).
///
/// The polling thread runs on the process's device: polling an NCCL work queries CUDA events and
/// frees the tensors it held, and a thread that never selected a device would do both on GPU 0,
/// creating a CUDA context there for every rank of the node.
class Watchdog {
 public:
  using TimeoutHandler = std::function<void(const std::string& report)>;

  /// @param poll_s   seconds between polls
  /// @param recorder history included in reports
  /// @param origin   time zero of the reports
  /// @param device   the device the polling thread selects before its first poll (the World's)
  Watchdog(double poll_s, std::shared_ptr<const FlightRecorder> recorder, Clock::time_point origin,
           TimeoutHandler on_timeout, c10::Device device = c10::Device(c10::kCPU));
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  /// Starts watching `work` (issued on `comm`, aborted on a timeout); timeout_s <= 0 watches for
  /// backend errors only.
  void watch(WorkHandle work, std::weak_ptr<Abortable> comm, double timeout_s);
  /// Number of collectives currently watched (tests, diagnostics).
  size_t in_flight() const;
  /// Watches `flag` (set by a SIGTERM / SIGUSR1 handler; must outlive the watchdog). Once it is set
  /// while a collective has been running for more than `stalled_s`, the watchdog prints, once, what
  /// this rank is waiting for and its collective history. A launcher that ends the job because a
  /// rank died (mpirun signals the survivors, then kills them about a second later) would
  /// otherwise leave no word from the survivors about the collective that hung.
  void report_on_stop(const std::atomic<bool>* flag, double stalled_s = 0.2);
  /// The device the polling thread reports as its current one, read on that thread after it
  /// selected `device` (equal to it; tests check the binding through this).
  c10::Device thread_device() const;

 private:
  struct Entry {
    WorkHandle work;
    std::weak_ptr<Abortable> comm;
    double timeout_s;
  };
  void loop();
  void fire(const Entry& entry, double elapsed_s);
  std::string describe(const Entry& entry) const;

  double poll_s_;
  std::shared_ptr<const FlightRecorder> recorder_;
  Clock::time_point origin_;
  TimeoutHandler on_timeout_;
  c10::Device device_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<Entry> entries_;
  bool stop_ = false;
  bool bound_ = false;                       // the thread selected device_
  const std::atomic<bool>* stop_flag_ = nullptr;
  double stop_stalled_s_ = 0.2;
  bool stop_reported_ = false;
  c10::Device thread_device_{c10::kCPU};
  std::thread thread_;
};

}  // namespace lookahead::dist
