#include "common/process_memory.h"

#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

namespace lookahead::common {

namespace {

/// A "Name:   1234 kB" line's value in bytes.
int64_t status_kib(const std::string& line) {
  std::istringstream in(line.substr(line.find(':') + 1));
  int64_t kib = 0;
  in >> kib;
  return kib * 1024;
}

}  // namespace

ResidentMemory resident_memory() {
  ResidentMemory m;
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) m.current = status_kib(line);
    if (line.rfind("VmHWM:", 0) == 0) m.peak = status_kib(line);
  }
  return m;
}

bool reset_peak_resident() {
  std::ofstream clear("/proc/self/clear_refs");
  if (!clear) return false;
  clear << "5";
  clear.flush();
  return static_cast<bool>(clear);
}

double process_age_s() {
  std::ifstream stat_file("/proc/self/stat");
  std::string stat;
  std::getline(stat_file, stat);
  // Field 2 (comm) may hold spaces and parentheses; the fields after the last ')' are plain.
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return -1.0;
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  // Fields 3..21 precede starttime (field 22), in clock ticks since boot.
  for (int i = 3; i < 22 && fields >> field;) ++i;
  unsigned long long start_ticks = 0;
  if (!(fields >> start_ticks)) return -1.0;
  double uptime = -1.0;
  std::ifstream("/proc/uptime") >> uptime;
  const long hz = sysconf(_SC_CLK_TCK);
  if (uptime < 0 || hz <= 0) return -1.0;
  return uptime - static_cast<double>(start_ticks) / static_cast<double>(hz);
}

}  // namespace lookahead::common
