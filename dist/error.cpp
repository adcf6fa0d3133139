// Error formatting for the distributed runtime.
#include "dist/error.h"

#include <mpi.h>

#include <mutex>
#include <sstream>

namespace lookahead::dist {

namespace {
std::mutex g_identity_mutex;
std::string g_identity = "rank ? (no world)";
}  // namespace

const char* to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument: return "invalid argument";
    case ErrorKind::kMismatch: return "rank mismatch";
    case ErrorKind::kTimeout: return "timeout";
    case ErrorKind::kBackend: return "backend error";
    case ErrorKind::kAborted: return "aborted";
  }
  return "unknown";
}

DistError::DistError(ErrorKind kind, const std::string& message)
    : std::runtime_error(message), kind_(kind) {}

std::string where() {
  std::lock_guard<std::mutex> lock(g_identity_mutex);
  return g_identity;
}

namespace detail {

void set_identity(int rank, int size, const std::string& host) {
  std::lock_guard<std::mutex> lock(g_identity_mutex);
  g_identity = "rank " + std::to_string(rank) + " of " + std::to_string(size) + " on host " + host;
}

void throw_call_error(const char* library, const char* call, const std::string& detail, const char* file,
                      int line) {
  std::ostringstream msg;
  msg << library << " call failed: " << call << ": " << detail << " (" << where() << ", " << file << ":"
      << line << ")";
  throw DistError(ErrorKind::kBackend, msg.str());
}

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<size_t>(len));
}

}  // namespace detail
}  // namespace lookahead::dist
