// The one HDF5 layer under data/ and checkpoints/: an owning handle for every kind of HDF5
// identifier, LA_H5_CHECK for every HDF5 call, H5Error naming the failed call and what it was
// working on, and the few shape / attribute helpers both formats need.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace lookahead::common {

/// A failed HDF5 call. what() is "HDF5 call failed: <call>: <HDF5's innermost message>" followed
/// by " (<context>)" when the caller named the file or object it was working on. The owning layer
/// decides what it means (data rethrows it as DataError, checkpoints as CheckpointError).
class H5Error : public std::runtime_error {
 public:
  H5Error(std::string call, std::string detail, std::string context);
  /// The HDF5 call as written at the call site ("H5Fopen", "H5Dread(...)").
  const std::string& call() const { return call_; }
  /// Innermost (most specific) message of HDF5's error stack.
  const std::string& detail() const { return detail_; }
  /// File or object named by the caller; may be empty.
  const std::string& context() const { return context_; }

 private:
  std::string call_, detail_, context_;
};

/// Throws H5Error for `call`, reading (and clearing) the thread's HDF5 error stack.
[[noreturn]] void throw_h5_error(const char* call, std::string_view context = {});

/// Move-only owner of an hid_t; closes it with the function matching its type (H5Iget_type).
class H5Handle {
 public:
  H5Handle() = default;
  /// Takes ownership of `id`; throws H5Error naming `call` and `context` if id < 0.
  H5Handle(hid_t id, const char* call, std::string_view context = {});
  ~H5Handle();
  H5Handle(H5Handle&& other) noexcept : id_(other.release()) {}
  H5Handle& operator=(H5Handle&& other) noexcept;
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;

  hid_t get() const { return id_; }
  explicit operator bool() const { return id_ >= 0; }
  hid_t release() {
    hid_t id = id_;
    id_ = H5I_INVALID_HID;
    return id;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

/// Silences HDF5's automatic error-stack printing for its lifetime. Failures still surface as
/// H5Error (which reads the stack); the printout would only duplicate them, and a deliberately
/// probed corrupt file must not spray pages of HDF5 internals over the log.
class H5QuietErrors {
 public:
  H5QuietErrors();
  ~H5QuietErrors();
  H5QuietErrors(const H5QuietErrors&) = delete;
  H5QuietErrors& operator=(const H5QuietErrors&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

/// "1.10.8": the HDF5 library this process runs with.
std::string hdf5_version();

/// True when the link `path` ("a/b/c", relative to `loc`) exists, checking every component
/// (H5Lexists fails, rather than answering false, when an intermediate component is missing).
bool h5_exists(hid_t loc, const std::string& path, std::string_view context = {});

/// Dimensions of a dataset (empty for a scalar).
std::vector<hsize_t> h5_shape(hid_t dataset, std::string_view context = {});

/// Reads rows [row_begin, row_end) of dimension 0 (all of the other dimensions) as `mem_type`.
/// A range outside the dataset is a caller error (c10::Error).
void h5_read_rows(hid_t dataset, hid_t mem_type, hsize_t row_begin, hsize_t row_end, void* out,
                  std::string_view context = {});

/// True when `obj` carries attribute `name`.
bool h5_has_attr(hid_t obj, const std::string& name, std::string_view context = {});

/// Writes scalar attribute `name` (replacing one of that name) of file type `file_type` from
/// `value` in memory type `mem_type`.
void h5_write_attr(hid_t obj, const std::string& name, hid_t file_type, hid_t mem_type, const void* value,
                   std::string_view context = {});
/// Scalar attributes: int64 (stored as little-endian int64), uint64, double.
void h5_set_attr(hid_t obj, const std::string& name, int64_t value, std::string_view context = {});
void h5_set_attr(hid_t obj, const std::string& name, uint64_t value, std::string_view context = {});
void h5_set_attr(hid_t obj, const std::string& name, double value, std::string_view context = {});
/// A fixed-length string attribute (HDF5 refuses size 0: an empty value is stored as one NUL).
/// The character set and padding are the file format's choice; both are kept as each format wrote
/// them so that existing files and their readers (h5py, h5dump) see the same types.
void h5_set_attr(hid_t obj, const std::string& name, const std::string& value, std::string_view context = {},
                 H5T_cset_t cset = H5T_CSET_ASCII, H5T_str_t pad = H5T_STR_NULLPAD);

/// Reads scalar attribute `name` converted to the type asked for.
int64_t h5_attr_i64(hid_t obj, const std::string& name, std::string_view context = {});
uint64_t h5_attr_u64(hid_t obj, const std::string& name, std::string_view context = {});
double h5_attr_f64(hid_t obj, const std::string& name, std::string_view context = {});

}  // namespace lookahead::common

/// Checks an HDF5 return value (negative = failure); throws common::H5Error naming the call, the
/// optional context (the file or object being worked on) and the innermost message of HDF5's
/// error stack. LA_H5_CHECK(H5Fflush(f, H5F_SCOPE_GLOBAL)) or LA_H5_CHECK(H5Dread(...), path).
#define LA_H5_CHECK(call, ...)                                                                      \
  ([&]() {                                                                                          \
    auto la_h5_rc_ = (call);                                                                        \
    if (la_h5_rc_ < 0) ::lookahead::common::throw_h5_error(#call __VA_OPT__(, ) __VA_ARGS__);       \
    return la_h5_rc_;                                                                               \
  }())
