// Errors raised by the distributed runtime, and the checking macros that wrap every MPI, NCCL and
// CUDA call so a failure names the call, the rank and the host.
#pragma once

#include <stdexcept>
#include <string>

namespace lookahead::dist {

/// What went wrong, so callers (and `main`) can map an error to an exit code.
enum class ErrorKind {
  kInvalidArgument,  ///< a caller passed something unusable (shape, dtype, device, layout)
  kMismatch,         ///< ranks disagree (collective signature, configuration hash)
  kTimeout,          ///< a collective did not complete within the configured timeout
  kBackend,          ///< MPI / NCCL / CUDA reported an error
  kAborted,          ///< the communicator was aborted after an earlier failure
};

/// Name of an ErrorKind, e.g. "timeout".
const char* to_string(ErrorKind kind);

/// The exception type of the distributed runtime. `what()` is a complete, human-readable report.
class DistError : public std::runtime_error {
 public:
  DistError(ErrorKind kind, const std::string& message);
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

/// "rank R of N on host H" for the calling process, once the World exists ("rank ? (no world)"
/// before). Used in every error message.
std::string where();

namespace detail {
/// Set by World so that error messages can name the rank and host without reaching for globals.
void set_identity(int rank, int size, const std::string& host);
[[noreturn]] void throw_call_error(const char* library, const char* call, const std::string& detail,
                                   const char* file, int line);
std::string mpi_error_string(int code);
}  // namespace detail

}  // namespace lookahead::dist

/// Checks an MPI return code; throws DistError(kBackend) naming the call, the rank and the host.
#define LA_MPI_CHECK(call)                                                                        \
  do {                                                                                            \
    int la_mpi_rc_ = (call);                                                                      \
    if (la_mpi_rc_ != 0) /* MPI_SUCCESS is 0 by the standard */                                   \
      ::lookahead::dist::detail::throw_call_error(                                                \
          "MPI", #call, ::lookahead::dist::detail::mpi_error_string(la_mpi_rc_), __FILE__, __LINE__); \
  } while (0)
