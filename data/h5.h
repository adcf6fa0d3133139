// Minimal RAII for the HDF5 C API inside data/ (data does not depend on checkpoints/): an owning
// handle and LA_DATA_H5_CHECK, which names the failing call and the file it was working on.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace lookahead::data::h5 {

/// Move-only owner of an hid_t; closes it with the function matching its type.
class Handle {
 public:
  Handle() = default;
  /// Takes ownership of `id`; throws DataError naming `call` and `file` if id < 0.
  Handle(hid_t id, const char* call, const std::string& file);
  ~Handle();
  Handle(Handle&& other) noexcept : id_(other.release()) {}
  Handle& operator=(Handle&& other) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

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

[[noreturn]] void throw_error(const char* call, const std::string& file);

/// True if `name` exists directly under `loc`.
bool exists(hid_t loc, const std::string& name);
/// Current dimensions of a dataset.
std::vector<int64_t> dims(hid_t dataset, const std::string& file);
/// Scalar attributes.
void write_attr_string(hid_t loc, const std::string& name, const std::string& value, const std::string& file);
void write_attr_int(hid_t loc, const std::string& name, int64_t value, const std::string& file);
/// Throws DataError naming the attribute when missing or of the wrong class.
std::string read_attr_string(hid_t loc, const std::string& name, const std::string& file);
int64_t read_attr_int(hid_t loc, const std::string& name, const std::string& file);

/// Creates a contiguous dataset `name` of `type` with `shape` and writes `data` (may be null when the
/// dataset has zero elements). Contiguous layout on purpose: readers pread() records directly.
void write_dataset(hid_t loc, const std::string& name, hid_t type, const std::vector<int64_t>& shape,
                   const void* data, const std::string& file);
/// Reads a whole dataset into `out` (memory type `type`), which must hold every element.
void read_dataset(hid_t dataset, hid_t type, void* out, const std::string& file);
/// Reads rows [row, row+count) of a dataset whose first dimension indexes records.
void read_rows(hid_t dataset, hid_t type, int64_t row, int64_t count, void* out, const std::string& file);

}  // namespace lookahead::data::h5

/// Checks an HDF5 return value (negative = failure); throws DataError naming the call and `file`
/// with the innermost message of HDF5's error stack.
#define LA_DATA_H5_CHECK(call, file)                                                 \
  ([&]() {                                                                           \
    auto la_h5_rc_ = (call);                                                         \
    if (la_h5_rc_ < 0) ::lookahead::data::h5::throw_error(#call, (file));            \
    return la_h5_rc_;                                                                \
  }())
