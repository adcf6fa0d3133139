// Phase boundaries of a training step, timed where the work runs: the host clock on the CPU; on a
// GPU, CUDA events on the device's current stream, so that a phase's seconds are its kernels'
// and not the time the host took to launch them (the host runs ahead of an asynchronous device).
// Marks cost nothing on the host; the times are read once, after the step has synchronized.
#pragma once

#include <c10/core/Device.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <vector>

namespace lookahead::trainer {

/// Example:
///   PhaseClock clock(device);
///   const size_t a = clock.mark();
///   ... branch 1 ...
///   const size_t b = clock.mark();
///   ... (the step's host reads synchronize the device) ...
///   double branch1_s = clock.seconds(a, b);
class PhaseClock {
 public:
  explicit PhaseClock(c10::Device device);
  ~PhaseClock();
  PhaseClock(const PhaseClock&) = delete;
  PhaseClock& operator=(const PhaseClock&) = delete;

  /// A boundary now; returns its index.
  size_t mark();
  /// Seconds from mark `from` to mark `to` (a GPU: waits until the device reached `to`).
  double seconds(size_t from, size_t to);
  /// Whether marks are device events (a CUDA device) rather than host times.
  bool on_device() const { return device_.is_cuda(); }

 private:
  struct DeviceEvents;  // the CUDA events of the marks (CUDA headers stay in the .cpp)
  c10::Device device_;
  std::vector<std::chrono::steady_clock::time_point> host_;
  std::unique_ptr<DeviceEvents> events_;
};

}  // namespace lookahead::trainer
