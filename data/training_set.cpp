// TrainingSet: the training-set reader. Layout and rationale: docs/data.md.
#include "data/training_set.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "common/h5_handle.h"
#include "data/image_io.h"
#include "data/manifest.h"
#include "data/training_set_format.h"

namespace lookahead::data {

using common::H5Handle;
using namespace detail;

// A bulk dataset read per record: pread() at `address` when stored contiguously with the native
// little-endian type, HDF5 hyperslab reads under the mutex otherwise (e.g. a chunked file written
// by h5py).
struct TrainingSet::Extra {
  std::string name;
  H5Handle dataset;
  std::vector<int64_t> row_shape;
  at::ScalarType dtype = at::kByte;
  int64_t row_bytes = 0;
  int64_t address = -1;  // file offset of element 0, or -1
  hid_t mem_type = H5I_INVALID_HID;  // predefined native type, or the f16 handle below
  H5Handle f16;
};

TrainingSet::~TrainingSet() {
  if (fd_ >= 0) ::close(fd_);
}

int64_t TrainingSet::check(int64_t index) const {
  if (index < 0 || index >= size())
    throw DataError(path_, index,
                    std::string("index out of range (the ") + (manifest_ ? "set" : "file") + " has " +
                        std::to_string(size()) + " records)");
  return index;
}

std::pair<const TrainingSet*, int64_t> TrainingSet::locate(int64_t index) const {
  if (parts_.empty()) return {this, index};
  // The last shard starting at or before `index`: empty shards share their begin with the next one.
  const auto it = std::upper_bound(part_begin_.begin(), part_begin_.end(), index);
  const size_t k = static_cast<size_t>(it - part_begin_.begin()) - 1;
  return {parts_[k].get(), index - part_begin_[k]};
}

namespace {

// What a DataError says after its "<file>: record <i>: " prefix.
std::string message_of(const DataError& e) {
  std::string prefix = e.file().empty() ? std::string("data") : e.file();
  if (e.record() >= 0) prefix += ": record " + std::to_string(e.record());
  prefix += ": ";
  const std::string what = e.what();
  return what.compare(0, prefix.size(), prefix) == 0 ? what.substr(prefix.size()) : what;
}

}  // namespace

template <class F>
auto TrainingSet::in_file(int64_t index, F&& read) const {
  const auto [file, local] = locate(index);
  if (file == this) return read(*this, local);
  try {
    return read(*file, local);
  } catch (const DataError& e) {
    // The shard file and the index within it locate the record for whoever fixes it; the global
    // index and the manifest say which record of the set the caller asked for.
    throw DataError(e.file(), e.record(),
                    message_of(e) + " (global record " + std::to_string(index) + " of manifest " + path_ + ")");
  }
}

namespace {

// The data reader's view of an HDF5 call: every failure names the file (see h5_data_error).
std::vector<int64_t> dims(hid_t dataset, const std::string& file) {
  const std::vector<hsize_t> d = common::h5_shape(dataset, file);
  return std::vector<int64_t>(d.begin(), d.end());
}

void read_dataset(hid_t dataset, hid_t type, void* out, const std::string& file) {
  LA_H5_CHECK(H5Dread(dataset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out), file);
}

/// Throws DataError naming the attribute when missing or of the wrong class.
std::string read_attr_string(hid_t loc, const std::string& name, const std::string& file) {
  if (H5Aexists(loc, name.c_str()) <= 0) throw DataError(file, -1, "missing attribute '" + name + "'");
  H5Handle attr(H5Aopen(loc, name.c_str(), H5P_DEFAULT), "H5Aopen", file);
  H5Handle ftype(H5Aget_type(attr.get()), "H5Aget_type", file);
  if (H5Tget_class(ftype.get()) != H5T_STRING) throw DataError(file, -1, "attribute '" + name + "' is not a string");
  if (H5Tis_variable_str(ftype.get()) > 0) {
    H5Handle mtype(H5Tcopy(H5T_C_S1), "H5Tcopy", file);
    LA_H5_CHECK(H5Tset_size(mtype.get(), H5T_VARIABLE), file);
    char* s = nullptr;
    LA_H5_CHECK(H5Aread(attr.get(), mtype.get(), &s), file);
    std::string out = s ? s : "";
    H5free_memory(s);
    return out;
  }
  size_t size = H5Tget_size(ftype.get());
  std::string out(size, '\0');
  LA_H5_CHECK(H5Aread(attr.get(), ftype.get(), out.data()), file);
  out.resize(out.find('\0') == std::string::npos ? out.size() : out.find('\0'));
  return out;
}

/// Throws DataError naming the attribute when missing or not an integer.
int64_t read_attr_int(hid_t loc, const std::string& name, const std::string& file) {
  if (H5Aexists(loc, name.c_str()) <= 0) throw DataError(file, -1, "missing attribute '" + name + "'");
  {
    H5Handle attr(H5Aopen(loc, name.c_str(), H5P_DEFAULT), "H5Aopen", file);
    H5Handle ftype(H5Aget_type(attr.get()), "H5Aget_type", file);
    if (H5Tget_class(ftype.get()) != H5T_INTEGER)
      throw DataError(file, -1, "attribute '" + name + "' is not an integer");
  }
  return common::h5_attr_i64(loc, name, file);
}

/// Names of the links in `group`, in name order.
std::vector<std::string> link_names(hid_t group, const std::string& file) {
  H5G_info_t info;
  LA_H5_CHECK(H5Gget_info(group, &info), file);
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t len =
        LA_H5_CHECK(H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT), file);
    std::string name(static_cast<size_t>(len), '\0');
    LA_H5_CHECK(H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), static_cast<size_t>(len) + 1,
                                   H5P_DEFAULT),
                file);
    names.push_back(std::move(name));
  }
  return names;
}

/// The `n` strings of a 1-D variable-length string dataset (`what` names it in errors).
std::vector<std::string> read_strings(hid_t ds, int64_t n, const std::string& what, const std::string& file) {
  H5Handle ftype(H5Dget_type(ds), "H5Dget_type", file);
  if (H5Tget_class(ftype.get()) != H5T_STRING || H5Tis_variable_str(ftype.get()) <= 0)
    throw DataError(file, -1, what + " must hold variable-length strings");
  H5Handle mtype(H5Tcopy(H5T_C_S1), "H5Tcopy", file);
  LA_H5_CHECK(H5Tset_size(mtype.get(), H5T_VARIABLE), file);
  LA_H5_CHECK(H5Tset_cset(mtype.get(), H5T_CSET_UTF8), file);
  std::vector<std::string> out;
  if (n == 0) return out;
  std::vector<char*> raw(static_cast<size_t>(n), nullptr);
  read_dataset(ds, mtype.get(), raw.data(), file);
  out.reserve(raw.size());
  for (char* s : raw) out.emplace_back(s ? s : "");
  H5Handle space(H5Dget_space(ds), "H5Dget_space", file);
  H5Dvlen_reclaim(mtype.get(), space.get(), H5P_DEFAULT, raw.data());
  return out;
}

herr_t collect_attr_name(hid_t, const char* name, const H5A_info_t*, void* names) {
  static_cast<std::vector<std::string>*>(names)->emplace_back(name);
  return 0;
}

/// Opens the file quietly (HDF5 prints its error stack by default; we report it ourselves).
H5Handle open_file(const std::string& path) {
  hid_t id;
  {
    common::H5QuietErrors quiet;
    id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  }
  if (id < 0) {
    try {
      common::throw_h5_error("H5Fopen", path);
    } catch (const common::H5Error& e) {
      throw DataError(path, -1, std::string("cannot open (truncated or damaged file?): ") + h5_data_error(e, path).what());
    }
  }
  return H5Handle(id, "H5Fopen", path);
}

}  // namespace

// The steps of TrainingSet::open on one open file, filling `set`.
struct TrainingSet::Opener {
  hid_t f;
  const std::string& path;
  TrainingSet& set;

  /// Format name, version and record count (root attributes).
  int64_t check_layout() const {
    const std::string format = read_attr_string(f, "format", path);
    if (format != kFormatName)
      throw DataError(path, -1, "attribute 'format' is '" + format + "', expected '" + kFormatName + "'");
    const int64_t version = read_attr_int(f, "version", path);
    if (version < 1 || version > kFormatVersion)
      throw DataError(path, -1, "format version " + std::to_string(version) +
                                    " is not supported (this build reads 1.." + std::to_string(kFormatVersion) + ")");
    const int64_t n = read_attr_int(f, "num_records", path);
    if (n < 0) throw DataError(path, -1, "attribute 'num_records' is negative");
    return n;
  }

  /// Dataset `name`, whose shape must match `want` (-1 = any size).
  H5Handle open_dataset(const std::string& name, const std::vector<int64_t>& want) const {
    if (!common::h5_exists(f, name, path)) throw DataError(path, -1, "missing dataset '" + name + "'");
    H5Handle ds(H5Dopen2(f, name.c_str(), H5P_DEFAULT), "H5Dopen2", path);
    auto d = dims(ds.get(), path);
    bool ok = d.size() == want.size();
    for (size_t i = 0; ok && i < d.size(); ++i) ok = want[i] < 0 || d[i] == want[i];
    if (!ok)
      throw DataError(path, -1, "dataset '" + name + "' has shape " + shape_str(d) + ", expected " + shape_str(want) +
                                    " (-1 = any)");
    return ds;
  }

  void read_all(const std::string& name, const std::vector<int64_t>& shape, hid_t type, void* out, int64_t n) const {
    H5Handle ds = open_dataset(name, shape);
    if (n > 0) read_dataset(ds.get(), type, out, path);
  }

  /// The per-record metadata loaded at open: identities, flags, landmarks, checksums, sizes,
  /// image offsets and prompts.
  void read_index(int64_t n) const {
    set.identity_.resize(n);
    set.photo_.resize(n);
    set.landmarks_.resize(n * 10);
    set.offsets_.resize(n + 1);
    set.xxh64_.resize(n);
    set.hw_.resize(n * 2);
    read_all("identity", {n}, H5T_NATIVE_INT64, set.identity_.data(), n);
    read_all("photo", {n}, H5T_NATIVE_UINT8, set.photo_.data(), n);
    read_all("landmarks", {n, 5, 2}, H5T_NATIVE_FLOAT, set.landmarks_.data(), n);
    read_all("image_xxh64", {n}, H5T_NATIVE_UINT64, set.xxh64_.data(), n);
    read_all("image_size", {n, 2}, H5T_NATIVE_INT32, set.hw_.data(), n);
    {
      H5Handle ds = open_dataset("image_offsets", {n + 1});
      read_dataset(ds.get(), H5T_NATIVE_INT64, set.offsets_.data(), path);
    }
    if (set.offsets_[0] != 0) throw DataError(path, -1, "dataset 'image_offsets' must start at 0");
    for (int64_t i = 0; i < n; ++i)
      if (set.offsets_[i + 1] <= set.offsets_[i])
        throw DataError(path, i, "dataset 'image_offsets' is not increasing (empty or negative-size image)");
    H5Handle ds = open_dataset("prompt", {n});
    set.prompt_ = read_strings(ds.get(), n, "dataset 'prompt'", path);
  }

  /// A bulk dataset read per record (image bytes, optional tensors): its type, row size and, when
  /// stored contiguously little-endian, the file offset that pread() reads at.
  std::unique_ptr<Extra> open_bulk(const std::string& name, const std::vector<int64_t>& want) const {
    auto ex = std::make_unique<Extra>();
    ex->name = name;
    ex->dataset = open_dataset(name, want);
    auto d = dims(ex->dataset.get(), path);
    ex->row_shape.assign(d.begin() + 1, d.end());
    H5Handle ftype(H5Dget_type(ex->dataset.get()), "H5Dget_type", path);
    const H5T_class_t cls = H5Tget_class(ftype.get());
    const size_t tsize = H5Tget_size(ftype.get());
    bool native = H5Tget_order(ftype.get()) == H5T_ORDER_LE || tsize == 1;
    if (name == "image_bytes") {
      if (cls != H5T_INTEGER || tsize != 1) throw DataError(path, -1, "dataset 'image_bytes' must be uint8");
      ex->dtype = at::kByte;
      ex->mem_type = H5T_NATIVE_UINT8;
    } else if (cls == H5T_FLOAT && tsize == 4) {
      ex->dtype = at::kFloat;
      ex->mem_type = H5T_NATIVE_FLOAT;
    } else if (cls == H5T_FLOAT && tsize == 2) {
      ex->dtype = at::kHalf;
      ex->f16 = make_f16(path);
      ex->mem_type = ex->f16.get();
    } else {
      throw DataError(path, -1, "dataset '" + name + "' must be float16 or float32");
    }
    int64_t row = 1;
    for (int64_t s : ex->row_shape) row *= s;
    ex->row_bytes = row * static_cast<int64_t>(at::elementSize(ex->dtype));
    haddr_t addr = H5Dget_offset(ex->dataset.get());
    H5Eclear2(H5E_DEFAULT);  // HADDR_UNDEF for chunked/compact layouts pushes an error; that is fine
    if (addr != HADDR_UNDEF && native) ex->address = static_cast<int64_t>(addr);
    // pread() needs no HDF5 handle, nor does an empty dataset (never read); closing it lets HDF5
    // close the file after open(), so a manifest holds one descriptor per shard rather than two.
    if (ex->address >= 0 || d[0] == 0) ex->dataset = H5Handle();
    return ex;
  }

  /// image_bytes and whichever optional tensors the file holds.
  void open_extras(int64_t n) const {
    set.images_ = open_bulk("image_bytes", {set.offsets_[n]});
    for (size_t i = 0; i < kExtraCount; ++i) {
      if (!common::h5_exists(f, kExtraNames[i], path)) continue;
      std::vector<int64_t> want(static_cast<size_t>(kExtraRanks[i]) + 1, -1);
      want[0] = n;
      set.extras_.push_back(open_bulk(kExtraNames[i], want));
    }
  }

  /// The file-level tensors under kGlobalsGroup, read whole.
  void read_globals() const {
    if (!common::h5_exists(f, kGlobalsGroup, path)) return;
    H5Handle group(H5Gopen2(f, kGlobalsGroup, H5P_DEFAULT), "H5Gopen2", path);
    for (const std::string& name : link_names(group.get(), path)) {
      const std::string where = std::string(kGlobalsGroup) + "/" + name;
      H5Handle ds(H5Oopen(group.get(), name.c_str(), H5P_DEFAULT), "H5Oopen", path);
      if (H5Iget_type(ds.get()) != H5I_DATASET) throw DataError(path, -1, "'" + where + "' is not a dataset");
      H5Handle ftype(H5Dget_type(ds.get()), "H5Dget_type", path);
      const size_t tsize = H5Tget_size(ftype.get());
      if (H5Tget_class(ftype.get()) != H5T_FLOAT || (tsize != 4 && tsize != 2))
        throw DataError(path, -1, "global dataset '" + where + "' must be float16 or float32");
      at::Tensor t = at::empty(dims(ds.get(), path), tsize == 4 ? at::kFloat : at::kHalf);
      if (tsize == 4) {
        if (t.numel() > 0) read_dataset(ds.get(), H5T_NATIVE_FLOAT, t.data_ptr(), path);
      } else {
        H5Handle f16 = make_f16(path);
        if (t.numel() > 0) read_dataset(ds.get(), f16.get(), t.data_ptr(), path);
      }
      set.globals_.emplace(name, std::move(t));
    }
  }

  /// The per-record metadata columns under kColumnsGroup, read whole: [n, ...] numeric datasets
  /// and 1-D variable-length string datasets.
  void read_columns(int64_t n) const {
    if (!common::h5_exists(f, kColumnsGroup, path)) return;
    H5Handle group(H5Gopen2(f, kColumnsGroup, H5P_DEFAULT), "H5Gopen2", path);
    for (const std::string& name : link_names(group.get(), path)) {
      const std::string what = "column '" + name + "'";
      H5Handle ds(H5Oopen(group.get(), name.c_str(), H5P_DEFAULT), "H5Oopen", path);
      if (H5Iget_type(ds.get()) != H5I_DATASET) throw DataError(path, -1, what + " is not a dataset");
      const std::vector<int64_t> d = dims(ds.get(), path);
      if (d.empty() || d[0] != n)
        throw DataError(path, -1,
                        what + " has shape " + shape_str(d) + ": its first dimension must be the " + std::to_string(n) +
                            " records of the file");
      H5Handle ftype(H5Dget_type(ds.get()), "H5Dget_type", path);
      const H5T_class_t cls = H5Tget_class(ftype.get());
      if (cls == H5T_STRING) {
        if (d.size() != 1) throw DataError(path, -1, what + " of strings must be 1-D, has shape " + shape_str(d));
        set.string_columns_.emplace(name, read_strings(ds.get(), n, what, path));
        continue;
      }
      const size_t tsize = H5Tget_size(ftype.get());
      const bool is_signed = cls == H5T_INTEGER && H5Tget_sign(ftype.get()) == H5T_SGN_2;
      at::ScalarType dtype;
      hid_t mem;
      if (cls == H5T_INTEGER && tsize == 8 && is_signed) {
        dtype = at::kLong, mem = H5T_NATIVE_INT64;
      } else if (cls == H5T_INTEGER && tsize == 4 && is_signed) {
        dtype = at::kInt, mem = H5T_NATIVE_INT32;
      } else if (cls == H5T_INTEGER && tsize == 1 && !is_signed) {
        dtype = at::kByte, mem = H5T_NATIVE_UINT8;
      } else if (cls == H5T_FLOAT && tsize == 4) {
        dtype = at::kFloat, mem = H5T_NATIVE_FLOAT;
      } else {
        throw DataError(path, -1, what + " must be int64, int32, uint8, float32 or variable-length strings");
      }
      at::Tensor t = at::empty(d, dtype);
      if (t.numel() > 0) read_dataset(ds.get(), mem, t.data_ptr(), path);
      set.columns_.emplace(name, std::move(t));
    }
  }

  /// The string attributes of kAttributesGroup.
  void read_attributes() const {
    if (!common::h5_exists(f, kAttributesGroup, path)) return;
    H5Handle group(H5Gopen2(f, kAttributesGroup, H5P_DEFAULT), "H5Gopen2", path);
    std::vector<std::string> names;
    LA_H5_CHECK(H5Aiterate2(group.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr, collect_attr_name, &names), path);
    for (const std::string& name : names) set.attributes_.emplace(name, read_attr_string(group.get(), name, path));
  }
};

std::shared_ptr<TrainingSet> TrainingSet::open(const std::string& path) {
  return data::is_manifest(path) ? open_manifest(path) : open_hdf5(path);
}

std::shared_ptr<TrainingSet> TrainingSet::open_hdf5(const std::string& path) {
  std::shared_ptr<TrainingSet> set(new TrainingSet());
  set->path_ = path;
  if (!std::filesystem::exists(path)) throw DataError(path, -1, "no such file");
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    throw DataError(path, -1, "not an HDF5 file (or its header is damaged)");
  }
  try {
    H5Handle file = open_file(path);
    const Opener opener{file.get(), path, *set};
    const int64_t n = opener.check_layout();
    set->size_ = n;
    opener.read_index(n);
    opener.open_extras(n);
    opener.read_globals();
    opener.read_columns(n);
    opener.read_attributes();
    // `file` closes here; HDF5 keeps the file itself open while the bulk datasets (fallback reads) are.
  } catch (const common::H5Error& e) {
    throw h5_data_error(e, path);
  }
  set->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (set->fd_ < 0) throw DataError(path, -1, std::string("open: ") + std::strerror(errno));
  return set;
}

// The steps of opening a manifest: each shard opened and checked against its entry, then the
// shards' metadata concatenated into `set`.
struct TrainingSet::Merger {
  const std::string& path;  // the manifest
  TrainingSet& set;

  static std::string label(size_t k, const ShardEntry& s) {
    return "shard " + std::to_string(k) + " ('" + s.path + "')";
  }

  std::shared_ptr<TrainingSet> open_shard(size_t k, const ShardEntry& s) const {
    const std::string file = shard_file(path, s);
    std::error_code ec;
    if (!std::filesystem::is_regular_file(file, ec)) throw DataError(path, -1, label(k, s) + ": no such file " + file);
    const auto bytes = static_cast<int64_t>(std::filesystem::file_size(file, ec));
    if (ec) throw DataError(path, -1, label(k, s) + ": cannot stat " + file + ": " + ec.message());
    // A size check costs nothing and catches a shard rewritten, truncated or swapped after the
    // manifest was written, before any record of it is trusted.
    if (bytes != s.bytes)
      throw DataError(path, -1,
                      label(k, s) + ": " + file + " has " + std::to_string(bytes) + " bytes, the manifest says " +
                          std::to_string(s.bytes));
    std::shared_ptr<TrainingSet> part;
    try {
      part = open_hdf5(file);
    } catch (const DataError& e) {
      throw DataError(path, -1, label(k, s) + ": " + e.what());
    }
    if (part->size() != s.records)
      throw DataError(path, -1,
                      label(k, s) + ": " + file + " has " + std::to_string(part->size()) +
                          " records, the manifest says " + std::to_string(s.records));
    return part;
  }

  /// The optional tensors of every non-empty shard must be those of the first one (an empty
  /// shard has none: the writer's first record decides them).
  void check_extras(const std::vector<std::shared_ptr<TrainingSet>>& parts, const Manifest& m) const {
    auto describe = [](const TrainingSet& t, const char* name) -> std::string {
      for (const auto& ex : t.extras_)
        if (ex->name == name) return shape_str(ex->row_shape) + " " + c10::toString(ex->dtype);
      return "none";
    };
    size_t first = parts.size();
    for (size_t k = 0; k < parts.size(); ++k) {
      if (parts[k]->size() == 0) continue;
      if (first == parts.size()) {
        first = k;
        set.layout_ = parts[k].get();
        continue;
      }
      for (const char* name : kExtraNames) {
        const std::string want = describe(*parts[first], name), got = describe(*parts[k], name);
        if (want != got)
          throw DataError(path, -1,
                          label(k, m.shards[k]) + ": " + name + " is " + got + " per record, " +
                              label(first, m.shards[first]) + " has " + want);
      }
    }
  }

  /// A column is concatenated over the shards: each shard that has it must agree on its kind,
  /// dtype and row shape, and only an empty shard may lack it.
  void merge_columns(const std::vector<std::shared_ptr<TrainingSet>>& parts, const Manifest& m) const {
    std::map<std::string, size_t> first;  // column -> first shard holding it
    for (size_t k = 0; k < parts.size(); ++k)
      for (const std::string& name : parts[k]->column_names()) first.emplace(name, k);
    for (const auto& [name, k0] : first) {
      const bool strings = parts[k0]->string_columns_.count(name) > 0;
      const at::Tensor ref = strings ? at::Tensor() : parts[k0]->columns_.at(name);
      std::vector<at::Tensor> pieces;
      std::vector<std::string> values;
      for (size_t k = 0; k < parts.size(); ++k) {
        const TrainingSet& part = *parts[k];
        const std::string where = label(k, m.shards[k]) + ": column '" + name + "'";
        if (!part.has_column(name)) {
          if (part.size() == 0) continue;
          throw DataError(path, -1, where + " is missing (" + label(k0, m.shards[k0]) + " has it)");
        }
        if ((part.string_columns_.count(name) > 0) != strings)
          throw DataError(path, -1,
                          where + " is " + (strings ? "numeric" : "of strings") + ", in " + label(k0, m.shards[k0]) +
                              " " + (strings ? "of strings" : "numeric"));
        if (strings) {
          const auto& v = part.string_columns_.at(name);
          values.insert(values.end(), v.begin(), v.end());
          continue;
        }
        const at::Tensor& t = part.columns_.at(name);
        if (t.scalar_type() != ref.scalar_type() || t.sizes().slice(1) != ref.sizes().slice(1))
          throw DataError(path, -1,
                          where + " is " + c10::toString(t.scalar_type()) + " " + shape_str(t.sizes().vec()) + ", in " +
                              label(k0, m.shards[k0]) + " " + c10::toString(ref.scalar_type()) + " " +
                              shape_str(ref.sizes().vec()) + " (rows must agree)");
        pieces.push_back(t);
      }
      if (strings)
        set.string_columns_.emplace(name, std::move(values));
      else
        set.columns_.emplace(name, at::cat(pieces, 0));
    }
  }

  /// The shards' per-record metadata, concatenated into the set. Moved out of the shards, which
  /// from then on serve only image bytes and optional tensors (file_image_bytes, file_extra).
  void concatenate(const std::vector<std::shared_ptr<TrainingSet>>& parts) const {
    set.part_begin_.assign(1, 0);
    for (const auto& p : parts) set.part_begin_.push_back(set.part_begin_.back() + p->size());
    const int64_t n = set.part_begin_.back();
    set.size_ = n;
    set.identity_.reserve(n);
    set.photo_.reserve(n);
    set.prompt_.reserve(n);
    set.landmarks_.reserve(n * 10);
    set.hw_.reserve(n * 2);
    auto append = [](auto& to, auto& from) {
      to.insert(to.end(), std::make_move_iterator(from.begin()), std::make_move_iterator(from.end()));
      std::remove_reference_t<decltype(from)>().swap(from);
    };
    for (const auto& p : parts) {
      append(set.identity_, p->identity_);
      append(set.photo_, p->photo_);
      append(set.prompt_, p->prompt_);
      append(set.landmarks_, p->landmarks_);
      append(set.hw_, p->hw_);
      p->columns_.clear();
      p->string_columns_.clear();
    }
    if (!parts.empty()) {
      set.globals_ = parts[0]->globals_;
      set.attributes_ = parts[0]->attributes_;
    }
    set.parts_.assign(parts.begin(), parts.end());
  }
};

std::shared_ptr<TrainingSet> TrainingSet::open_manifest(const std::string& path) {
  std::shared_ptr<TrainingSet> set(new TrainingSet());
  set->path_ = path;
  set->manifest_ = true;
  const Manifest m = read_manifest(path);
  const Merger merger{path, *set};
  std::vector<std::shared_ptr<TrainingSet>> parts;
  for (size_t k = 0; k < m.shards.size(); ++k) parts.push_back(merger.open_shard(k, m.shards[k]));
  merger.check_extras(parts, m);
  merger.merge_columns(parts, m);
  merger.concatenate(parts);
  return set;
}

void TrainingSet::read_bytes(const Extra* ex, int64_t byte_offset, int64_t count, void* out, int64_t record) const {
  if (count == 0) return;
  if (ex->address >= 0) {
    auto* dst = static_cast<char*>(out);
    int64_t done = 0;
    while (done < count) {
      ssize_t r = ::pread(fd_, dst + done, static_cast<size_t>(count - done), ex->address + byte_offset + done);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0)
        throw DataError(path_, record, "reading '" + ex->name + "' failed: " +
                                           (r < 0 ? std::string(std::strerror(errno)) : "file is truncated"));
      done += r;
    }
    return;
  }
  std::lock_guard<std::mutex> lock(h5_mutex_);
  // Rows of dimension 0: bytes of the 1-D image blob, or whole records of an optional tensor.
  const int64_t row = ex->row_shape.empty() ? 1 : ex->row_bytes;
  try {
    common::h5_read_rows(ex->dataset.get(), ex->mem_type, static_cast<hsize_t>(byte_offset / row),
                         static_cast<hsize_t>((byte_offset + count) / row), out, path_);
  } catch (const common::H5Error& e) {
    throw h5_data_error(e, path_);
  }
}

std::vector<uint8_t> TrainingSet::file_image_bytes(int64_t index) const {
  const int64_t begin = offsets_[index], end = offsets_[index + 1];
  std::vector<uint8_t> bytes(static_cast<size_t>(end - begin));
  read_bytes(images_.get(), begin, end - begin, bytes.data(), index);
  const uint64_t got = checksum(bytes.data(), bytes.size());
  if (got != xxh64_[index]) {
    char msg[128];
    std::snprintf(msg, sizeof msg, "image checksum mismatch (xxh64 %016llx, expected %016llx): corrupt record",
                  static_cast<unsigned long long>(got), static_cast<unsigned long long>(xxh64_[index]));
    throw DataError(path_, index, msg);
  }
  return bytes;
}

at::Tensor TrainingSet::file_extra(const std::string& name, int64_t index) const {
  for (const auto& ex : extras_) {
    if (ex->name != name) continue;
    at::Tensor out = at::empty(ex->row_shape, ex->dtype);
    read_bytes(ex.get(), index * ex->row_bytes, ex->row_bytes, out.data_ptr(), index);
    return out;
  }
  return {};
}

std::vector<uint8_t> TrainingSet::image_bytes(int64_t index) const {
  check(index);
  return in_file(index, [](const TrainingSet& file, int64_t i) { return file.file_image_bytes(i); });
}

std::vector<int64_t> TrainingSet::extra_shape(const std::string& name) const {
  extra_rank(name);
  for (const auto& ex : layout_->extras_)
    if (ex->name == name) return ex->row_shape;
  return {};
}

at::Tensor TrainingSet::extra(const std::string& name, int64_t index) const {
  check(index);
  extra_rank(name);
  return in_file(index, [&name](const TrainingSet& file, int64_t i) { return file.file_extra(name, i); });
}

at::Tensor TrainingSet::global(const std::string& name) const {
  const auto it = globals_.find(name);
  return it == globals_.end() ? at::Tensor() : it->second.clone();
}

std::vector<std::string> TrainingSet::global_names() const {
  std::vector<std::string> names;
  for (const auto& entry : globals_) names.push_back(entry.first);
  return names;
}

std::vector<std::string> TrainingSet::column_names() const {
  std::vector<std::string> names;
  for (const auto& entry : columns_) names.push_back(entry.first);
  for (const auto& entry : string_columns_) names.push_back(entry.first);
  std::sort(names.begin(), names.end());
  return names;
}

bool TrainingSet::has_column(const std::string& name) const {
  return columns_.count(name) > 0 || string_columns_.count(name) > 0;
}

at::Tensor TrainingSet::column(const std::string& name) const {
  const auto it = columns_.find(name);
  return it == columns_.end() ? at::Tensor() : it->second.clone();
}

std::vector<std::string> TrainingSet::string_column(const std::string& name) const {
  const auto it = string_columns_.find(name);
  return it == string_columns_.end() ? std::vector<std::string>() : it->second;
}

std::string TrainingSet::attribute(const std::string& name) const {
  const auto it = attributes_.find(name);
  return it == attributes_.end() ? std::string() : it->second;
}

std::vector<std::string> TrainingSet::attribute_names() const {
  std::vector<std::string> names;
  for (const auto& entry : attributes_) names.push_back(entry.first);
  return names;
}

at::Tensor TrainingSet::landmarks(int64_t index) const {
  check(index);
  return at::from_blob(const_cast<float*>(landmarks_.data() + index * 10), {5, 2}, at::kFloat).clone();
}

std::array<int64_t, 2> TrainingSet::image_size(int64_t index) const {
  check(index);
  return {hw_[index * 2], hw_[index * 2 + 1]};
}

Record TrainingSet::get(int64_t index) const {
  check(index);
  const auto hw = image_size(index);
  // What is read from the record's file; the metadata below is this set's (a manifest holds its
  // shards' concatenated).
  Record r = in_file(index, [&hw](const TrainingSet& file, int64_t i) {
    Record x;
    std::vector<uint8_t> bytes = file.file_image_bytes(i);
    x.image = decode_image(bytes.data(), bytes.size(), file.path_, i);
    if (x.image.size(0) != hw[0] || x.image.size(1) != hw[1])
      throw DataError(file.path_, i,
                      "decoded image is " + std::to_string(x.image.size(0)) + "x" + std::to_string(x.image.size(1)) +
                          ", the file says " + std::to_string(hw[0]) + "x" + std::to_string(hw[1]));
    x.latents = file.file_extra(kLatents, i);
    x.prompt_embeds = file.file_extra(kPromptEmbeds, i);
    x.pooled_prompt_embeds = file.file_extra(kPooledPromptEmbeds, i);
    x.clip_features = file.file_extra(kClipFeatures, i);
    return x;
  });
  r.index = index;
  r.identity = identity_[index];
  r.prompt = prompt_[index];
  r.photo = photo_[index] != 0;
  r.landmarks = landmarks(index);
  return r;
}

}  // namespace lookahead::data
