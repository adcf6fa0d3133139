// HDF5 handle ownership, error reporting and the few whole-dataset helpers the data set needs.
#include "data/h5.h"

#include "data/error.h"

namespace lookahead::data::h5 {

namespace {

// Innermost (most specific) message of the current thread's HDF5 error stack.
herr_t take_message(unsigned n, const H5E_error2_t* err, void* out) {
  auto* text = static_cast<std::string*>(out);
  if (n == 0 && err->desc) *text = err->desc;
  return 0;
}

hsize_t to_hsize(int64_t v) { return static_cast<hsize_t>(v); }

}  // namespace

void throw_error(const char* call, const std::string& file) {
  std::string message = "unknown HDF5 error";
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, take_message, &message);
  H5Eclear2(H5E_DEFAULT);
  throw DataError(file, -1, std::string("HDF5 call failed: ") + call + ": " + message);
}

Handle::Handle(hid_t id, const char* call, const std::string& file) : id_(id) {
  if (id_ < 0) throw_error(call, file);
}

Handle::~Handle() {
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

Handle& Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    Handle old(std::move(*this));
    id_ = other.release();
  }
  return *this;
}

bool exists(hid_t loc, const std::string& name) { return H5Lexists(loc, name.c_str(), H5P_DEFAULT) > 0; }

std::vector<int64_t> dims(hid_t dataset, const std::string& file) {
  Handle space(H5Dget_space(dataset), "H5Dget_space", file);
  int rank = LA_DATA_H5_CHECK(H5Sget_simple_extent_ndims(space.get()), file);
  std::vector<hsize_t> d(static_cast<size_t>(rank));
  LA_DATA_H5_CHECK(H5Sget_simple_extent_dims(space.get(), d.data(), nullptr), file);
  return std::vector<int64_t>(d.begin(), d.end());
}

void write_attr_string(hid_t loc, const std::string& name, const std::string& value, const std::string& file) {
  Handle type(H5Tcopy(H5T_C_S1), "H5Tcopy", file);
  LA_DATA_H5_CHECK(H5Tset_size(type.get(), value.empty() ? 1 : value.size()), file);
  LA_DATA_H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8), file);
  Handle space(H5Screate(H5S_SCALAR), "H5Screate", file);
  Handle attr(H5Acreate2(loc, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), "H5Acreate2", file);
  std::string padded = value.empty() ? std::string(1, '\0') : value;
  LA_DATA_H5_CHECK(H5Awrite(attr.get(), type.get(), padded.data()), file);
}

void write_attr_int(hid_t loc, const std::string& name, int64_t value, const std::string& file) {
  Handle space(H5Screate(H5S_SCALAR), "H5Screate", file);
  Handle attr(H5Acreate2(loc, name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), "H5Acreate2",
              file);
  LA_DATA_H5_CHECK(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value), file);
}

std::string read_attr_string(hid_t loc, const std::string& name, const std::string& file) {
  if (H5Aexists(loc, name.c_str()) <= 0) throw DataError(file, -1, "missing attribute '" + name + "'");
  Handle attr(H5Aopen(loc, name.c_str(), H5P_DEFAULT), "H5Aopen", file);
  Handle ftype(H5Aget_type(attr.get()), "H5Aget_type", file);
  if (H5Tget_class(ftype.get()) != H5T_STRING)
    throw DataError(file, -1, "attribute '" + name + "' is not a string");
  if (H5Tis_variable_str(ftype.get()) > 0) {
    Handle mtype(H5Tcopy(H5T_C_S1), "H5Tcopy", file);
    LA_DATA_H5_CHECK(H5Tset_size(mtype.get(), H5T_VARIABLE), file);
    char* s = nullptr;
    LA_DATA_H5_CHECK(H5Aread(attr.get(), mtype.get(), &s), file);
    std::string out = s ? s : "";
    H5free_memory(s);
    return out;
  }
  size_t size = H5Tget_size(ftype.get());
  std::string out(size, '\0');
  LA_DATA_H5_CHECK(H5Aread(attr.get(), ftype.get(), out.data()), file);
  out.resize(out.find('\0') == std::string::npos ? out.size() : out.find('\0'));
  return out;
}

int64_t read_attr_int(hid_t loc, const std::string& name, const std::string& file) {
  if (H5Aexists(loc, name.c_str()) <= 0) throw DataError(file, -1, "missing attribute '" + name + "'");
  Handle attr(H5Aopen(loc, name.c_str(), H5P_DEFAULT), "H5Aopen", file);
  Handle ftype(H5Aget_type(attr.get()), "H5Aget_type", file);
  if (H5Tget_class(ftype.get()) != H5T_INTEGER)
    throw DataError(file, -1, "attribute '" + name + "' is not an integer");
  int64_t v = 0;
  LA_DATA_H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_INT64, &v), file);
  return v;
}

void write_dataset(hid_t loc, const std::string& name, hid_t type, const std::vector<int64_t>& shape,
                   const void* data, const std::string& file) {
  std::vector<hsize_t> d;
  int64_t numel = 1;
  for (int64_t s : shape) {
    d.push_back(to_hsize(s));
    numel *= s;
  }
  Handle space(H5Screate_simple(static_cast<int>(d.size()), d.data(), nullptr), "H5Screate_simple", file);
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate", file);
  LA_DATA_H5_CHECK(H5Pset_layout(dcpl.get(), H5D_CONTIGUOUS), file);
  // Allocate at creation so that a zero-record dataset still has an address and readers can rely on it.
  LA_DATA_H5_CHECK(H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_EARLY), file);
  Handle ds(H5Dcreate2(loc, name.c_str(), type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), "H5Dcreate2",
            file);
  if (numel > 0) LA_DATA_H5_CHECK(H5Dwrite(ds.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), file);
}

void read_dataset(hid_t dataset, hid_t type, void* out, const std::string& file) {
  LA_DATA_H5_CHECK(H5Dread(dataset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out), file);
}

void read_rows(hid_t dataset, hid_t type, int64_t row, int64_t count, void* out, const std::string& file) {
  std::vector<int64_t> d = dims(dataset, file);
  Handle fspace(H5Dget_space(dataset), "H5Dget_space", file);
  std::vector<hsize_t> start(d.size(), 0), cnt(d.begin(), d.end());
  start[0] = to_hsize(row);
  cnt[0] = to_hsize(count);
  LA_DATA_H5_CHECK(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start.data(), nullptr, cnt.data(), nullptr),
                   file);
  Handle mspace(H5Screate_simple(static_cast<int>(cnt.size()), cnt.data(), nullptr), "H5Screate_simple", file);
  LA_DATA_H5_CHECK(H5Dread(dataset, type, mspace.get(), fspace.get(), H5P_DEFAULT, out), file);
}

}  // namespace lookahead::data::h5
