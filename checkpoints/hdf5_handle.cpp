// HDF5 identifier ownership and error reporting.
#include "checkpoints/hdf5_handle.h"

#include <sstream>

#include "dist/error.h"

namespace lookahead::ckpt {

namespace {

// Innermost (most specific) message of the current thread's HDF5 error stack.
herr_t take_message(unsigned n, const H5E_error2_t* err, void* out) {
  auto* text = static_cast<std::string*>(out);
  if (n == 0 && err->desc) *text = err->desc;
  return 0;
}

}  // namespace

H5Handle::H5Handle(hid_t id, const char* what) : id_(id) {
  if (id_ < 0) detail::throw_h5_error(what, __FILE__, __LINE__);
}

H5Handle::~H5Handle() {
  if (id_ < 0) return;
  switch (H5Iget_type(id_)) {
    case H5I_FILE: H5Fclose(id_); break;
    case H5I_GROUP: H5Gclose(id_); break;
    case H5I_DATASET: H5Dclose(id_); break;
    case H5I_DATASPACE: H5Sclose(id_); break;
    case H5I_ATTR: H5Aclose(id_); break;
    case H5I_DATATYPE: H5Tclose(id_); break;
    case H5I_GENPROP_LST: H5Pclose(id_); break;
    default: H5Idec_ref(id_); break;
  }
}

H5Handle& H5Handle::operator=(H5Handle&& other) noexcept {
  if (this != &other) {
    H5Handle old(std::move(*this));
    id_ = other.release();
  }
  return *this;
}

std::string hdf5_version() {
  unsigned major = 0, minor = 0, release = 0;
  H5get_libversion(&major, &minor, &release);
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(release);
}

namespace detail {

void throw_h5_error(const char* call, const char* file, int line) {
  std::string message = "unknown HDF5 error";
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, take_message, &message);
  H5Eclear2(H5E_DEFAULT);
  std::ostringstream msg;
  msg << "HDF5 call failed: " << call << ": " << message << " (" << dist::where() << ", " << file << ":" << line
      << ")";
  throw dist::DistError(dist::ErrorKind::kBackend, msg.str());
}

}  // namespace detail
}  // namespace lookahead::ckpt
