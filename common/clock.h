// The clock the step timings use, and elapsed seconds on it.
#pragma once

#include <chrono>

namespace lookahead::common {

using Clock = std::chrono::steady_clock;

/// Seconds from `t0` to now.
inline double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace lookahead::common
