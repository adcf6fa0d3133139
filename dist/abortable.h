// Abortable: what the watchdog needs of the communicator a watched collective runs on. The
// watchdog names the caller's place in the group in its report and aborts the group so that no
// rank stays blocked; it needs nothing else, so it depends on this interface and not on
// communicator.h (which includes the watchdog).
#pragma once

#include <string>

namespace lookahead::dist {

/// A process group that can be aborted as a whole (implemented by Communicator).
class Abortable {
 public:
  virtual ~Abortable() = default;

  /// This process's rank in the group, and the group's size (for reports).
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// Fails every pending and future operation of the group with `reason`. Idempotent.
  virtual void abort(const std::string& reason) = 0;

 protected:
  Abortable() = default;
  Abortable(const Abortable&) = default;
  Abortable& operator=(const Abortable&) = default;
};

}  // namespace lookahead::dist
