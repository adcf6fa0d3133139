// HDF5 helpers for checkpoint files (see h5_io.h).
#include "checkpoints/h5_io.h"

#include <xxhash.h>

#include <algorithm>

#include <c10/util/Exception.h>

namespace lookahead::ckpt::h5 {

namespace {

std::string object(const std::string& name) { return "object '/" + name + "'"; }

H5Handle intermediate_link_plist() {
  H5Handle lcpl(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate(H5P_LINK_CREATE)");
  LA_H5_CHECK(H5Pset_create_intermediate_group(lcpl.get(), 1));
  return lcpl;
}

H5Handle simple_space(const std::vector<hsize_t>& dims) {
  if (dims.empty()) return H5Handle(H5Screate(H5S_SCALAR), "H5Screate(H5S_SCALAR)");
  return H5Handle(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), "H5Screate_simple");
}

}  // namespace

H5Handle create_file(const std::string& path) {
  return H5Handle(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "H5Fcreate", path);
}

H5Handle open_file(const std::string& path) {
  return H5Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), "H5Fopen", path);
}

H5Handle create_group(hid_t loc, const std::string& name) {
  H5Handle lcpl = intermediate_link_plist();
  return H5Handle(H5Gcreate2(loc, name.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), "H5Gcreate2", object(name));
}

H5Handle open_group(hid_t loc, const std::string& name) {
  return H5Handle(H5Gopen2(loc, name.c_str(), H5P_DEFAULT), "H5Gopen2", object(name));
}

H5Handle open_dataset(hid_t loc, const std::string& name) {
  return H5Handle(H5Dopen2(loc, name.c_str(), H5P_DEFAULT), "H5Dopen2", object(name));
}

void write_dataset(hid_t loc, const std::string& name, hid_t mem_type, const std::vector<hsize_t>& dims,
                   const void* data, size_t nbytes) {
  hsize_t count = 1;
  for (hsize_t d : dims) count *= d;
  TORCH_CHECK(count * H5Tget_size(mem_type) == nbytes, "h5::write_dataset '", name, "': ", nbytes,
              " bytes for ", count, " elements");
  const std::string where = object(name);
  H5Handle lcpl = intermediate_link_plist();
  H5Handle space = simple_space(dims);
  // Contiguous, unfiltered storage: checksums cover exactly the bytes on disk, and readers can
  // select row blocks without decompressing chunks.
  H5Handle dset(H5Dcreate2(loc, name.c_str(), mem_type, space.get(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT),
                "H5Dcreate2", where);
  if (count > 0) LA_H5_CHECK(H5Dwrite(dset.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), where);
  common::h5_set_attr(dset.get(), kChecksumAttr, static_cast<uint64_t>(XXH64(data, nbytes, 0)), where);
}

void read_dataset(hid_t dataset, hid_t mem_type, void* out, size_t nbytes) {
  hsize_t count = 1;
  for (hsize_t d : common::h5_shape(dataset)) count *= d;
  TORCH_CHECK(count * H5Tget_size(mem_type) == nbytes, "h5::read_dataset: ", nbytes, " bytes for ", count,
              " elements");
  if (count > 0) LA_H5_CHECK(H5Dread(dataset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out));
}

std::vector<uint8_t> raw_bytes(hid_t dataset) {
  H5Handle type(H5Dget_type(dataset), "H5Dget_type");
  hsize_t count = 1;
  for (hsize_t d : common::h5_shape(dataset)) count *= d;
  std::vector<uint8_t> bytes(count * H5Tget_size(type.get()));
  if (count > 0) LA_H5_CHECK(H5Dread(dataset, type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()));
  return bytes;
}

std::string attr_str(hid_t obj, const std::string& name) {
  const std::string where = "attribute '" + name + "'";
  H5Handle attr(H5Aopen(obj, name.c_str(), H5P_DEFAULT), "H5Aopen", where);
  H5Handle type(H5Aget_type(attr.get()), "H5Aget_type", where);
  TORCH_CHECK(H5Tget_class(type.get()) == H5T_STRING, "attribute '", name, "' is not a string");
  TORCH_CHECK(LA_H5_CHECK(H5Tis_variable_str(type.get()), where) == 0, "attribute '", name,
              "' is a variable-length string (not written by this library)");
  std::string value(H5Tget_size(type.get()), '\0');
  H5Handle mem(H5Tcopy(type.get()), "H5Tcopy", where);
  LA_H5_CHECK(H5Aread(attr.get(), mem.get(), value.data()), where);
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
    H5Handle obj(H5Oopen(file, name.c_str(), H5P_DEFAULT), "H5Oopen", object(name));
    if (H5Iget_type(obj.get()) == H5I_DATASET) datasets.push_back(name);
  }
  return datasets;
}

}  // namespace lookahead::ckpt::h5
