// HDF5 identifier ownership, error reporting and the shared shape / attribute helpers.
#include "common/h5_handle.h"

#include <c10/util/Exception.h>

#include <algorithm>

namespace lookahead::common {

namespace {

// Innermost (most specific) message of the current thread's HDF5 error stack.
herr_t take_message(unsigned n, const H5E_error2_t* err, void* out) {
  auto* text = static_cast<std::string*>(out);
  if (n == 0 && err->desc) *text = err->desc;
  return 0;
}

std::string compose(const std::string& call, const std::string& detail, const std::string& context) {
  std::string out = "HDF5 call failed: " + call + ": " + detail;
  if (!context.empty()) out += " (" + context + ")";
  return out;
}

H5Handle open_attr(hid_t obj, const std::string& name, std::string_view context) {
  return H5Handle(H5Aopen(obj, name.c_str(), H5P_DEFAULT), "H5Aopen", context);
}

template <typename T>
T read_scalar_attr(hid_t obj, const std::string& name, hid_t type, std::string_view context) {
  H5Handle attr = open_attr(obj, name, context);
  T value{};
  LA_H5_CHECK(H5Aread(attr.get(), type, &value), context);
  return value;
}

}  // namespace

H5Error::H5Error(std::string call, std::string detail, std::string context)
    : std::runtime_error(compose(call, detail, context)),
      call_(std::move(call)),
      detail_(std::move(detail)),
      context_(std::move(context)) {}

void throw_h5_error(const char* call, std::string_view context) {
  std::string message = "unknown HDF5 error";
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, take_message, &message);
  H5Eclear2(H5E_DEFAULT);
  throw H5Error(call, std::move(message), std::string(context));
}

H5Handle::H5Handle(hid_t id, const char* call, std::string_view context) : id_(id) {
  if (id_ < 0) throw_h5_error(call, context);
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

H5QuietErrors::H5QuietErrors() {
  H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

H5QuietErrors::~H5QuietErrors() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }

std::string hdf5_version() {
  unsigned major = 0, minor = 0, release = 0;
  H5get_libversion(&major, &minor, &release);
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(release);
}

bool h5_exists(hid_t loc, const std::string& path, std::string_view context) {
  size_t pos = 0;
  while (true) {
    const size_t slash = path.find('/', pos);
    const std::string prefix = path.substr(0, slash);
    if (LA_H5_CHECK(H5Lexists(loc, prefix.c_str(), H5P_DEFAULT), context) <= 0) return false;
    if (slash == std::string::npos) return true;
    pos = slash + 1;
  }
}

std::vector<hsize_t> h5_shape(hid_t dataset, std::string_view context) {
  H5Handle space(H5Dget_space(dataset), "H5Dget_space", context);
  const int rank = LA_H5_CHECK(H5Sget_simple_extent_ndims(space.get()), context);
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  if (rank > 0) LA_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), context);
  return dims;
}

void h5_read_rows(hid_t dataset, hid_t mem_type, hsize_t row_begin, hsize_t row_end, void* out,
                  std::string_view context) {
  std::vector<hsize_t> dims = h5_shape(dataset, context);
  TORCH_CHECK(!dims.empty() && row_begin <= row_end && row_end <= dims[0], "h5::read_rows: rows [", row_begin,
              ", ", row_end, ") of a dataset with ", dims.empty() ? 0 : dims[0], " rows");
  if (row_begin == row_end) return;
  std::vector<hsize_t> start(dims.size(), 0), count = dims;
  start[0] = row_begin;
  count[0] = row_end - row_begin;
  H5Handle file_space(H5Dget_space(dataset), "H5Dget_space", context);
  LA_H5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
              context);
  H5Handle mem_space(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr), "H5Screate_simple",
                     context);
  LA_H5_CHECK(H5Dread(dataset, mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, out), context);
}

bool h5_has_attr(hid_t obj, const std::string& name, std::string_view context) {
  return LA_H5_CHECK(H5Aexists(obj, name.c_str()), context) > 0;
}

void h5_write_attr(hid_t obj, const std::string& name, hid_t file_type, hid_t mem_type, const void* value,
                   std::string_view context) {
  if (h5_has_attr(obj, name, context)) LA_H5_CHECK(H5Adelete(obj, name.c_str()), context);
  H5Handle space(H5Screate(H5S_SCALAR), "H5Screate(H5S_SCALAR)", context);
  H5Handle attr(H5Acreate2(obj, name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT), "H5Acreate2",
                context);
  LA_H5_CHECK(H5Awrite(attr.get(), mem_type, value), context);
}

void h5_set_attr(hid_t obj, const std::string& name, int64_t value, std::string_view context) {
  h5_write_attr(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value, context);
}

void h5_set_attr(hid_t obj, const std::string& name, uint64_t value, std::string_view context) {
  h5_write_attr(obj, name, H5T_NATIVE_UINT64, H5T_NATIVE_UINT64, &value, context);
}

void h5_set_attr(hid_t obj, const std::string& name, double value, std::string_view context) {
  h5_write_attr(obj, name, H5T_NATIVE_DOUBLE, H5T_NATIVE_DOUBLE, &value, context);
}

void h5_set_attr(hid_t obj, const std::string& name, const std::string& value, std::string_view context,
                 H5T_cset_t cset, H5T_str_t pad) {
  H5Handle type(H5Tcopy(H5T_C_S1), "H5Tcopy(H5T_C_S1)", context);
  LA_H5_CHECK(H5Tset_size(type.get(), std::max<size_t>(value.size(), 1)), context);
  LA_H5_CHECK(H5Tset_cset(type.get(), cset), context);
  LA_H5_CHECK(H5Tset_strpad(type.get(), pad), context);
  std::string padded = value;
  padded.resize(std::max<size_t>(value.size(), 1), '\0');
  h5_write_attr(obj, name, type.get(), type.get(), padded.data(), context);
}

int64_t h5_attr_i64(hid_t obj, const std::string& name, std::string_view context) {
  return read_scalar_attr<int64_t>(obj, name, H5T_NATIVE_INT64, context);
}

uint64_t h5_attr_u64(hid_t obj, const std::string& name, std::string_view context) {
  return read_scalar_attr<uint64_t>(obj, name, H5T_NATIVE_UINT64, context);
}

double h5_attr_f64(hid_t obj, const std::string& name, std::string_view context) {
  return read_scalar_attr<double>(obj, name, H5T_NATIVE_DOUBLE, context);
}

}  // namespace lookahead::common
