// What the kernel says this process holds: resident memory now and its peak, a resettable peak
// (so a training step can report its own), and the process's age (launch-to-first-step time).
#pragma once

#include <cstdint>

namespace lookahead::common {

/// Resident set sizes from /proc/self/status, in bytes (0 where the file is unreadable).
struct ResidentMemory {
  int64_t current = 0;  ///< VmRSS
  int64_t peak = 0;     ///< VmHWM: the high-water mark since start or the last reset_peak_resident()
};

ResidentMemory resident_memory();

/// Restarts the VmHWM high-water mark at the current RSS (Linux ≥ 4.0: "5" to
/// /proc/self/clear_refs). False where the kernel refuses; the peak then stays the process's.
bool reset_peak_resident();

/// Seconds since this process started (from /proc/self/stat and /proc/uptime; negative where
/// unreadable): includes the dynamic loader's and libtorch's start-up, which no clock started in
/// main() sees.
double process_age_s();

}  // namespace lookahead::common
