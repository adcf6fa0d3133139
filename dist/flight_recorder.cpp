// Ring buffer of recent collectives and its text dump.
#include "dist/flight_recorder.h"

#include <c10/core/ScalarType.h>

#include <cstdio>
#include <sstream>

namespace lookahead::dist {

FlightRecorder::FlightRecorder(size_t capacity) : ring_(capacity == 0 ? 1 : capacity) {}

void FlightRecorder::add(WorkHandle work) {
  std::lock_guard<std::mutex> lock(mutex_);
  ring_[total_ % ring_.size()] = std::move(work);
  ++total_;
}

std::vector<WorkHandle> FlightRecorder::entries() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<WorkHandle> out;
  uint64_t n = std::min<uint64_t>(total_, ring_.size());
  out.reserve(n);
  for (uint64_t i = total_ - n; i < total_; ++i) out.push_back(ring_[i % ring_.size()]);
  return out;
}

uint64_t FlightRecorder::total() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return total_;
}

std::string describe(const Work& work, Clock::time_point origin) {
  const WorkInfo& info = work.info();
  auto rel = [&](Clock::time_point t) { return std::chrono::duration<double>(t - origin).count(); };
  WorkState state = work.state();
  bool started = state != WorkState::kQueued;
  bool finished = state == WorkState::kDone || state == WorkState::kFailed;
  char start[32] = "-", end[32] = "-";
  if (started) std::snprintf(start, sizeof start, "%+.3fs", rel(work.start_time()));
  if (finished) std::snprintf(end, sizeof end, "%+.3fs", rel(work.end_time()));
  char line[512];
  std::snprintf(line, sizeof line, "#%llu %s/%s %s %s %lld B issued %+.3fs start %s end %s %s",
                static_cast<unsigned long long>(info.seq), info.comm_name.c_str(), info.backend.c_str(),
                to_string(info.op), dtype_name(info.dtype), static_cast<long long>(info.bytes),
                rel(work.enqueue_time()), start, end, to_string(state));
  return line;
}

std::string FlightRecorder::dump(Clock::time_point origin) const {
  std::ostringstream out;
  for (const auto& w : entries()) out << "  " << describe(*w, origin) << "\n";
  return out.str();
}

}  // namespace lookahead::dist
