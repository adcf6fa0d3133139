// H5Handle: RAII owner of an HDF5 identifier (file, group, dataset, dataspace, attribute,
// datatype, property list), and LA_H5_CHECK for every HDF5 call.
#pragma once

#include <hdf5.h>

#include <string>

namespace lookahead::ckpt {

/// Move-only owner of an hid_t; closes it with the function matching its type (H5Iget_type).
class H5Handle {
 public:
  H5Handle() = default;
  /// Takes ownership of `id`; throws DistError-style error naming `what` if id < 0.
  H5Handle(hid_t id, const char* what);
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

/// "1.10.8": the HDF5 library this process runs with.
std::string hdf5_version();

namespace detail {
[[noreturn]] void throw_h5_error(const char* call, const char* file, int line);
}

}  // namespace lookahead::ckpt

/// Checks an HDF5 return value (negative = failure); throws naming the call, rank and host, with
/// the innermost message of HDF5's error stack.
#define LA_H5_CHECK(call)                                                                         \
  ([&]() {                                                                                        \
    auto la_h5_rc_ = (call);                                                                      \
    if (la_h5_rc_ < 0) ::lookahead::ckpt::detail::throw_h5_error(#call, __FILE__, __LINE__);      \
    return la_h5_rc_;                                                                             \
  }())
