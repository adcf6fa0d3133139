// FlightRecorder: the last N collectives this rank issued (op, dtype, bytes, start, end, state),
// dumped into every timeout or failure report so a hang can be traced to the rank that diverged.
#pragma once

#include <cstddef>
#include <mutex>
#include <string>
#include <vector>

#include "dist/work.h"

namespace lookahead::dist {

/// Fixed-capacity ring of the most recent collectives of this process (all communicators).
class FlightRecorder {
 public:
  explicit FlightRecorder(size_t capacity);

  /// Records a newly issued collective; the oldest entry is dropped when the ring is full.
  void add(WorkHandle work);
  /// Entries oldest first (at most capacity).
  std::vector<WorkHandle> entries() const;
  /// Total collectives recorded since start (including those dropped from the ring).
  uint64_t total() const;
  /// One line per entry, oldest first, times relative to `origin`:
  ///   "#17 world/mpi all_reduce float32 4096 B start +1.234s end +1.240s done"
  std::string dump(Clock::time_point origin) const;
  size_t capacity() const { return ring_.size(); }

 private:
  mutable std::mutex mutex_;
  std::vector<WorkHandle> ring_;
  uint64_t total_ = 0;
};

/// One flight-recorder line for a single collective (same format as dump()).
std::string describe(const Work& work, Clock::time_point origin);

}  // namespace lookahead::dist
