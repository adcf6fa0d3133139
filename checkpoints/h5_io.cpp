// HDF5 helpers for checkpoint files (see h5_io.h).
#include "checkpoints/h5_io.h"

#include <xxhash.h>

#include <algorithm>

#include <c10/util/Exception.h>

namespace lookahead::ckpt::h5 {

QuietErrors::QuietErrors() {
  H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

QuietErrors::~QuietErrors() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }

H5Handle create_file(const std::string& path) {
  return H5Handle(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "H5Fcreate");
}

H5Handle open_file(const std::string& path) {
  return H5Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), "H5Fopen");
}

namespace {

H5Handle intermediate_link_plist() {
  H5Handle lcpl(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate(H5P_LINK_CREATE)");
  LA_H5_CHECK(H5Pset_create_intermediate_group(lcpl.get(), 1));
  return lcpl;
}

H5Handle simple_space(const std::vector<hsize_t>& dims) {
  if (dims.empty()) return H5Handle(H5Screate(H5S_SCALAR), "H5Screate(H5S_SCALAR)");
  return H5Handle(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), "H5Screate_simple");
}

H5Handle open_attr(hid_t obj, const std::string& name) {
  return H5Handle(H5Aopen(obj, name.c_str(), H5P_DEFAULT), "H5Aopen");
}

void write_attr(hid_t obj, const std::string& name, hid_t type, const void* value) {
  if (LA_H5_CHECK(H5Aexists(obj, name.c_str())) > 0) LA_H5_CHECK(H5Adelete(obj, name.c_str()));
  H5Handle space(H5Screate(H5S_SCALAR), "H5Screate(H5S_SCALAR)");
  H5Handle attr(H5Acreate2(obj, name.c_str(), type, space.get(), H5P_DEFAULT, H5P_DEFAULT), "H5Acreate2");
  LA_H5_CHECK(H5Awrite(attr.get(), type, value));
}

template <typename T>
T read_scalar_attr(hid_t obj, const std::string& name, hid_t type) {
  H5Handle attr = open_attr(obj, name);
  T value{};
  LA_H5_CHECK(H5Aread(attr.get(), type, &value));
  return value;
}

}  // namespace

H5Handle create_group(hid_t loc, const std::string& name) {
  H5Handle lcpl = intermediate_link_plist();
  return H5Handle(H5Gcreate2(loc, name.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), "H5Gcreate2");
}

H5Handle open_group(hid_t loc, const std::string& name) {
  return H5Handle(H5Gopen2(loc, name.c_str(), H5P_DEFAULT), "H5Gopen2");
}

H5Handle open_dataset(hid_t loc, const std::string& name) {
  return H5Handle(H5Dopen2(loc, name.c_str(), H5P_DEFAULT), "H5Dopen2");
}

bool exists(hid_t loc, const std::string& path) {
  // H5Lexists fails (rather than answering false) when an intermediate component is missing, so
  // walk the path one component at a time.
  size_t pos = 0;
  while (true) {
    const size_t slash = path.find('/', pos);
    const std::string prefix = path.substr(0, slash);
    if (LA_H5_CHECK(H5Lexists(loc, prefix.c_str(), H5P_DEFAULT)) <= 0) return false;
    if (slash == std::string::npos) return true;
    pos = slash + 1;
  }
}

void write_dataset(hid_t loc, const std::string& name, hid_t mem_type, const std::vector<hsize_t>& dims,
                   const void* data, size_t nbytes) {
  hsize_t count = 1;
  for (hsize_t d : dims) count *= d;
  TORCH_CHECK(count * H5Tget_size(mem_type) == nbytes, "h5::write_dataset '", name, "': ", nbytes,
              " bytes for ", count, " elements");
  H5Handle lcpl = intermediate_link_plist();
  H5Handle space = simple_space(dims);
  // Contiguous, unfiltered storage: checksums cover exactly the bytes on disk, and readers can
  // select row blocks without decompressing chunks.
  H5Handle dset(H5Dcreate2(loc, name.c_str(), mem_type, space.get(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT),
                "H5Dcreate2");
  if (count > 0) LA_H5_CHECK(H5Dwrite(dset.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
  set_attr(dset.get(), kChecksumAttr, static_cast<uint64_t>(XXH64(data, nbytes, 0)));
}

std::vector<hsize_t> shape(hid_t dataset) {
  H5Handle space(H5Dget_space(dataset), "H5Dget_space");
  const int rank = LA_H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  if (rank > 0) LA_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr));
  return dims;
}

void read_dataset(hid_t dataset, hid_t mem_type, void* out, size_t nbytes) {
  hsize_t count = 1;
  for (hsize_t d : shape(dataset)) count *= d;
  TORCH_CHECK(count * H5Tget_size(mem_type) == nbytes, "h5::read_dataset: ", nbytes, " bytes for ", count,
              " elements");
  if (count > 0) LA_H5_CHECK(H5Dread(dataset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out));
}

void read_rows(hid_t dataset, hid_t mem_type, hsize_t row_begin, hsize_t row_end, void* out) {
  std::vector<hsize_t> dims = shape(dataset);
  TORCH_CHECK(!dims.empty() && row_begin <= row_end && row_end <= dims[0], "h5::read_rows: rows [", row_begin,
              ", ", row_end, ") of a dataset with ", dims.empty() ? 0 : dims[0], " rows");
  if (row_begin == row_end) return;
  std::vector<hsize_t> start(dims.size(), 0), count = dims;
  start[0] = row_begin;
  count[0] = row_end - row_begin;
  H5Handle file_space(H5Dget_space(dataset), "H5Dget_space");
  LA_H5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr));
  H5Handle mem_space = simple_space(count);
  LA_H5_CHECK(H5Dread(dataset, mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, out));
}

std::vector<uint8_t> raw_bytes(hid_t dataset) {
  H5Handle type(H5Dget_type(dataset), "H5Dget_type");
  hsize_t count = 1;
  for (hsize_t d : shape(dataset)) count *= d;
  std::vector<uint8_t> bytes(count * H5Tget_size(type.get()));
  if (count > 0) LA_H5_CHECK(H5Dread(dataset, type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()));
  return bytes;
}

void set_attr(hid_t obj, const std::string& name, int64_t value) { write_attr(obj, name, H5T_NATIVE_INT64, &value); }
void set_attr(hid_t obj, const std::string& name, uint64_t value) {
  write_attr(obj, name, H5T_NATIVE_UINT64, &value);
}
void set_attr(hid_t obj, const std::string& name, double value) { write_attr(obj, name, H5T_NATIVE_DOUBLE, &value); }

void set_attr(hid_t obj, const std::string& name, const std::string& value) {
  // Fixed-length, NUL-padded: readable by h5dump / h5py as a plain string. HDF5 refuses size 0.
  H5Handle type(H5Tcopy(H5T_C_S1), "H5Tcopy(H5T_C_S1)");
  LA_H5_CHECK(H5Tset_size(type.get(), std::max<size_t>(value.size(), 1)));
  LA_H5_CHECK(H5Tset_strpad(type.get(), H5T_STR_NULLPAD));
  std::string padded = value;
  padded.resize(std::max<size_t>(value.size(), 1), '\0');
  write_attr(obj, name, type.get(), padded.data());
}

bool has_attr(hid_t obj, const std::string& name) { return LA_H5_CHECK(H5Aexists(obj, name.c_str())) > 0; }

int64_t attr_i64(hid_t obj, const std::string& name) {
  return read_scalar_attr<int64_t>(obj, name, H5T_NATIVE_INT64);
}
uint64_t attr_u64(hid_t obj, const std::string& name) {
  return read_scalar_attr<uint64_t>(obj, name, H5T_NATIVE_UINT64);
}
double attr_f64(hid_t obj, const std::string& name) { return read_scalar_attr<double>(obj, name, H5T_NATIVE_DOUBLE); }

std::string attr_str(hid_t obj, const std::string& name) {
  H5Handle attr = open_attr(obj, name);
  H5Handle type(H5Aget_type(attr.get()), "H5Aget_type");
  TORCH_CHECK(H5Tget_class(type.get()) == H5T_STRING, "attribute '", name, "' is not a string");
  TORCH_CHECK(LA_H5_CHECK(H5Tis_variable_str(type.get())) == 0, "attribute '", name,
              "' is a variable-length string (not written by this library)");
  std::string value(H5Tget_size(type.get()), '\0');
  H5Handle mem(H5Tcopy(type.get()), "H5Tcopy");
  LA_H5_CHECK(H5Aread(attr.get(), mem.get(), value.data()));
  value.resize(value.find_last_not_of('\0') == std::string::npos ? 0 : value.find_last_not_of('\0') + 1);
  return value;
}

namespace {

// H5Lvisit and H5L_info_t keep one signature across HDF5 1.10 - 1.14 (H5Ovisit does not).
herr_t collect_link(hid_t, const char* name, const H5L_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}

}  // namespace

std::vector<std::string> list_objects(hid_t file) {
  std::vector<std::string> names;
  LA_H5_CHECK(H5Lvisit(file, H5_INDEX_NAME, H5_ITER_INC, collect_link, &names));
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string> list_datasets(hid_t file) {
  std::vector<std::string> datasets;
  for (const auto& name : list_objects(file)) {
    H5Handle obj(H5Oopen(file, name.c_str(), H5P_DEFAULT), "H5Oopen");
    if (H5Iget_type(obj.get()) == H5I_DATASET) datasets.push_back(name);
  }
  return datasets;
}

}  // namespace lookahead::ckpt::h5
