// TrainingSetWriter: spools records to temporary files and writes the training-set file in one
// go at finish(). Layout and rationale: docs/data.md.
#include "data/training_set_writer.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "common/h5_handle.h"
#include "data/image_io.h"
#include "data/training_set_format.h"

namespace lookahead::data {

using common::H5Handle;
using namespace detail;

namespace {

// Fixed-length UTF-8 string attribute, NUL-terminated padding (the format's attribute type since
// version 1).
void write_attr_string(hid_t loc, const std::string& name, const std::string& value, const std::string& file) {
  common::h5_set_attr(loc, name, value, file, H5T_CSET_UTF8, H5T_STR_NULLTERM);
}

void write_attr_int(hid_t loc, const std::string& name, int64_t value, const std::string& file) {
  common::h5_set_attr(loc, name, value, file);
}

// Creates a contiguous dataset `name` of `type` with `shape` and writes `data` (may be null when the
// dataset has zero elements). Contiguous layout on purpose: readers pread() records directly.
void write_dataset(hid_t loc, const std::string& name, hid_t type, const std::vector<int64_t>& shape,
                   const void* data, const std::string& file) {
  std::vector<hsize_t> d;
  int64_t numel = 1;
  for (int64_t s : shape) {
    d.push_back(static_cast<hsize_t>(s));
    numel *= s;
  }
  H5Handle space(H5Screate_simple(static_cast<int>(d.size()), d.data(), nullptr), "H5Screate_simple", file);
  H5Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate", file);
  LA_H5_CHECK(H5Pset_layout(dcpl.get(), H5D_CONTIGUOUS), file);
  // Allocate at creation so that a zero-record dataset still has an address and readers can rely on it.
  LA_H5_CHECK(H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_EARLY), file);
  H5Handle ds(H5Dcreate2(loc, name.c_str(), type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), "H5Dcreate2",
              file);
  if (numel > 0) LA_H5_CHECK(H5Dwrite(ds.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), file);
}

// Variable-length UTF-8: the type of prompts, string columns and attributes.
H5Handle utf8_string_type(const std::string& file) {
  H5Handle st(H5Tcopy(H5T_C_S1), "H5Tcopy", file);
  LA_H5_CHECK(H5Tset_size(st.get(), H5T_VARIABLE), file);
  LA_H5_CHECK(H5Tset_cset(st.get(), H5T_CSET_UTF8), file);
  return st;
}

// A 1-D dataset of variable-length UTF-8 strings.
void write_strings(hid_t loc, const std::string& name, const std::vector<std::string>& values,
                   const std::string& file) {
  H5Handle st = utf8_string_type(file);
  std::vector<const char*> ptrs;
  for (const auto& v : values) ptrs.push_back(v.c_str());
  hsize_t dn = values.size();
  H5Handle space(H5Screate_simple(1, &dn, nullptr), "H5Screate_simple", file);
  H5Handle ds(H5Dcreate2(loc, name.c_str(), st.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "H5Dcreate2",
              file);
  if (!values.empty()) LA_H5_CHECK(H5Dwrite(ds.get(), st.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()), file);
}

// The file type a numeric column is stored as (little endian, as the rest of the format).
hid_t column_file_type(at::ScalarType t) {
  switch (t) {
    case at::kLong: return H5T_STD_I64LE;
    case at::kInt: return H5T_STD_I32LE;
    case at::kByte: return H5T_STD_U8LE;
    default: return H5T_IEEE_F32LE;
  }
}

}  // namespace

// Bulk data of one dataset, appended to a temporary file until finish().
struct TrainingSetWriter::Spool {
  std::string name, file;
  std::FILE* fp = nullptr;
  std::vector<int64_t> row_shape;
  at::ScalarType dtype = at::kByte;
  int64_t bytes = 0;

  Spool(std::string n, std::string f) : name(std::move(n)), file(std::move(f)) {
    fp = std::fopen(file.c_str(), "w+b");
    if (!fp) throw DataError(file, -1, std::string("cannot create temporary file: ") + std::strerror(errno));
  }
  ~Spool() {
    if (fp) std::fclose(fp);
    std::error_code ec;
    std::filesystem::remove(file, ec);
  }
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  void append(const void* data, size_t size) {
    if (size && std::fwrite(data, 1, size, fp) != size)
      throw DataError(file, -1, std::string("write failed: ") + std::strerror(errno));
    bytes += static_cast<int64_t>(size);
  }
};

TrainingSetWriter::TrainingSetWriter(std::string path) : path_(std::move(path)) {
  TORCH_CHECK(!path_.empty(), "TrainingSetWriter: empty path");
  images_ = std::make_unique<Spool>("image_bytes", path_ + ".tmp.image_bytes");
}

TrainingSetWriter::~TrainingSetWriter() {
  if (!finished_) {
    std::error_code ec;
    std::filesystem::remove(path_ + ".tmp", ec);
  }
}

int64_t TrainingSetWriter::add(const RecordData& rec) {
  TORCH_CHECK(!finished_, "TrainingSetWriter: add() after finish()");
  const int64_t index = size();
  if (rec.image.empty()) throw DataError(path_, index, "empty image bytes");
  int64_t h = rec.height, w = rec.width;
  if (h <= 0 || w <= 0) {
    at::Tensor img = decode_image(rec.image.data(), rec.image.size(), path_, index);
    h = img.size(0);
    w = img.size(1);
  } else if (sniff_codec(rec.image.data(), rec.image.size()) == ImageCodec::kUnknown) {
    throw DataError(path_, index, "image bytes are neither JPEG nor PNG");
  }
  float lm[10];
  if (rec.landmarks.defined()) {
    TORCH_CHECK(rec.landmarks.numel() == 10, path_, ": record ", index, ": landmarks must be [5,2], got ",
                rec.landmarks.sizes());
    at::Tensor l = rec.landmarks.to(at::kFloat).contiguous().cpu();
    std::memcpy(lm, l.data_ptr<float>(), sizeof lm);
  } else {
    for (float& v : lm) v = std::nanf("");
  }
  // Optional tensors: the first record fixes which exist; every later record must agree.
  const at::Tensor* extras[] = {&rec.latents, &rec.prompt_embeds, &rec.pooled_prompt_embeds, &rec.clip_features};
  for (size_t i = 0; i < kExtraCount; ++i) {
    Spool* spool = nullptr;
    for (auto& s : extras_)
      if (s->name == kExtraNames[i]) spool = s.get();
    const at::Tensor& t = *extras[i];
    if (index == 0 && t.defined()) {
      TORCH_CHECK(t.dim() == kExtraRanks[i], path_, ": ", kExtraNames[i], " must have ", kExtraRanks[i],
                  " dimensions per record, got ", t.sizes());
      TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kHalf, path_, ": ", kExtraNames[i],
                  " must be float16 or float32, got ", t.scalar_type());
      extras_.push_back(std::make_unique<Spool>(kExtraNames[i], path_ + ".tmp." + kExtraNames[i]));
      spool = extras_.back().get();
      spool->row_shape = t.sizes().vec();
      spool->dtype = t.scalar_type();
    }
    TORCH_CHECK(t.defined() == (spool != nullptr), path_, ": record ", index, ": ", kExtraNames[i],
                t.defined() ? " given but record 0 had none" : " missing but record 0 had one");
    if (!spool) continue;
    TORCH_CHECK(t.sizes().vec() == spool->row_shape && t.scalar_type() == spool->dtype, path_, ": record ", index,
                ": ", kExtraNames[i], " is ", t.scalar_type(), " ", t.sizes(), ", record 0 had ", spool->dtype, " ",
                spool->row_shape);
  }
  images_->append(rec.image.data(), rec.image.size());
  for (size_t i = 0; i < kExtraCount; ++i) {
    if (!extras[i]->defined()) continue;
    for (auto& s : extras_)
      if (s->name == kExtraNames[i]) {
        at::Tensor c = extras[i]->contiguous().cpu();
        s->append(c.data_ptr(), c.nbytes());
      }
  }
  identity_.push_back(rec.identity);
  photo_.push_back(rec.photo ? 1 : 0);
  prompt_.push_back(rec.prompt);
  landmarks_.insert(landmarks_.end(), lm, lm + 10);
  offsets_.push_back(offsets_.back() + static_cast<int64_t>(rec.image.size()));
  xxh64_.push_back(checksum(rec.image.data(), rec.image.size()));
  hw_.push_back(static_cast<int32_t>(h));
  hw_.push_back(static_cast<int32_t>(w));
  return index;
}

void TrainingSetWriter::set_global(const std::string& name, const at::Tensor& t) {
  TORCH_CHECK(!finished_, "TrainingSetWriter: set_global() after finish()");
  TORCH_CHECK(!name.empty() && name.find('/') == std::string::npos && name != ".", path_,
              ": global tensor name '", name, "' must be non-empty and contain no '/'");
  TORCH_CHECK(t.defined(), path_, ": global tensor '", name, "' is undefined");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kHalf, path_, ": global tensor '", name,
              "' must be float16 or float32, got ", t.scalar_type());
  globals_[name] = t.detach().to(at::kCPU).contiguous().clone();
}

namespace {

// Group-member names of the format: the name becomes an HDF5 link, so no '/' (a path) and not '.'.
void check_member_name(const std::string& name, const char* what, const std::string& file) {
  TORCH_CHECK(!name.empty() && name.find('/') == std::string::npos && name != ".", file, ": ", what, " name '", name,
              "' must be non-empty and contain no '/'");
}

}  // namespace

void TrainingSetWriter::set_column(const std::string& name, const at::Tensor& values) {
  TORCH_CHECK(!finished_, "TrainingSetWriter: set_column() after finish()");
  check_member_name(name, "column", path_);
  TORCH_CHECK(values.defined() && values.dim() >= 1, path_, ": column '", name,
              "' must be a tensor of at least one dimension (records first)");
  const at::ScalarType t = values.scalar_type();
  TORCH_CHECK(t == at::kLong || t == at::kInt || t == at::kFloat || t == at::kByte, path_, ": column '", name,
              "' must be int64, int32, float32 or uint8, got ", t);
  string_columns_.erase(name);
  columns_[name] = values.detach().to(at::kCPU).contiguous().clone();
}

void TrainingSetWriter::set_string_column(const std::string& name, const std::vector<std::string>& values) {
  TORCH_CHECK(!finished_, "TrainingSetWriter: set_string_column() after finish()");
  check_member_name(name, "column", path_);
  columns_.erase(name);
  string_columns_[name] = values;
}

void TrainingSetWriter::set_attribute(const std::string& name, const std::string& value) {
  TORCH_CHECK(!finished_, "TrainingSetWriter: set_attribute() after finish()");
  TORCH_CHECK(!name.empty(), path_, ": attribute name must be non-empty");
  attributes_[name] = value;
}

namespace {

// Creates a contiguous dataset from a spool file, copying in pieces so memory stays bounded.
void write_spool(hid_t loc, const std::string& name, hid_t ftype, hid_t mtype, const std::vector<int64_t>& shape,
                 std::FILE* fp, int64_t bytes, int64_t elem_size, const std::string& file) {
  std::vector<hsize_t> d(shape.begin(), shape.end());
  H5Handle space(H5Screate_simple(static_cast<int>(d.size()), d.data(), nullptr), "H5Screate_simple", file);
  H5Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate", file);
  LA_H5_CHECK(H5Pset_layout(dcpl.get(), H5D_CONTIGUOUS), file);
  LA_H5_CHECK(H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_EARLY), file);
  H5Handle ds(H5Dcreate2(loc, name.c_str(), ftype, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), "H5Dcreate2",
                file);
  if (bytes == 0) return;
  std::fflush(fp);
  std::rewind(fp);
  const int64_t total = bytes / elem_size;
  int64_t row = 1;  // elements per first-dimension index
  for (size_t i = 1; i < shape.size(); ++i) row *= shape[i];
  // Pieces of whole rows (about 64 MiB), written as hyperslabs over the first dimension.
  const int64_t piece = std::max<int64_t>(1, ((int64_t{64} << 20) / elem_size) / row) * row;
  std::vector<char> buf(static_cast<size_t>(std::min(total, piece) * elem_size));
  for (int64_t start = 0; start < total; start += piece) {
    const int64_t count = std::min(piece, total - start);
    if (std::fread(buf.data(), static_cast<size_t>(elem_size), static_cast<size_t>(count), fp) !=
        static_cast<size_t>(count))
      throw DataError(file, -1, "reading back the temporary spool of '" + name + "' failed");
    H5Handle fspace(H5Dget_space(ds.get()), "H5Dget_space", file);
    std::vector<hsize_t> off(shape.size(), 0), cnt(d);
    off[0] = static_cast<hsize_t>(start / row);
    cnt[0] = static_cast<hsize_t>(count / row);
    LA_H5_CHECK(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, off.data(), nullptr, cnt.data(), nullptr),
                     file);
    H5Handle mspace(H5Screate_simple(static_cast<int>(cnt.size()), cnt.data(), nullptr), "H5Screate_simple", file);
    LA_H5_CHECK(H5Dwrite(ds.get(), mtype, mspace.get(), fspace.get(), H5P_DEFAULT, buf.data()), file);
  }
}

}  // namespace

int64_t TrainingSetWriter::finish() {
  TORCH_CHECK(!finished_, "TrainingSetWriter: finish() called twice");
  const std::string tmp = path_ + ".tmp";
  const int64_t n = size();
  // Columns are given whole, apart from the records: their length is checkable only now.
  for (const auto& [name, t] : columns_)
    if (t.size(0) != n)
      throw DataError(path_, -1,
                      "column '" + name + "' has " + std::to_string(t.size(0)) + " rows, the file has " +
                          std::to_string(n) + " records");
  for (const auto& [name, v] : string_columns_)
    if (static_cast<int64_t>(v.size()) != n)
      throw DataError(path_, -1,
                      "column '" + name + "' has " + std::to_string(v.size()) + " strings, the file has " +
                          std::to_string(n) + " records");
  try {
    H5Handle file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "H5Fcreate", tmp);
    hid_t f = file.get();
    write_attr_string(f, "format", kFormatName, tmp);
    write_attr_int(f, "version", kFormatVersion, tmp);
    write_attr_int(f, "num_records", n, tmp);
    write_attr_string(f, "checksum", "xxh64 (seed 0) of each record's image bytes: dataset image_xxh64", tmp);
    write_attr_string(f, "landmarks", "5 points (eyes, nose, mouth corners) x (x,y), source pixels, "
                                          "pixel centers at integer coordinates, NaN = unknown", tmp);
    write_dataset(f, "identity", H5T_STD_I64LE, {n}, identity_.data(), tmp);
    write_dataset(f, "photo", H5T_STD_U8LE, {n}, photo_.data(), tmp);
    write_dataset(f, "landmarks", H5T_IEEE_F32LE, {n, 5, 2}, landmarks_.data(), tmp);
    write_dataset(f, "image_offsets", H5T_STD_I64LE, {n + 1}, offsets_.data(), tmp);
    write_dataset(f, "image_xxh64", H5T_STD_U64LE, {n}, xxh64_.data(), tmp);
    write_dataset(f, "image_size", H5T_STD_I32LE, {n, 2}, hw_.data(), tmp);
    write_strings(f, "prompt", prompt_, tmp);
    write_spool(f, "image_bytes", H5T_STD_U8LE, H5T_NATIVE_UINT8, {offsets_.back()}, images_->fp, images_->bytes, 1,
                tmp);
    for (const auto& s : extras_) {
      std::vector<int64_t> shape{n};
      shape.insert(shape.end(), s->row_shape.begin(), s->row_shape.end());
      if (s->dtype == at::kHalf) {
        H5Handle f16 = make_f16(tmp);
        write_spool(f, s->name, f16.get(), f16.get(), shape, s->fp, s->bytes, 2, tmp);
      } else {
        write_spool(f, s->name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, shape, s->fp, s->bytes, 4, tmp);
      }
    }
    if (!globals_.empty()) {
      H5Handle group(H5Gcreate2(f, kGlobalsGroup, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "H5Gcreate2", tmp);
      for (const auto& [name, t] : globals_) {
        const std::vector<int64_t> shape = t.sizes().vec();
        if (t.scalar_type() == at::kHalf) {
          H5Handle f16 = make_f16(tmp);
          write_dataset(group.get(), name, f16.get(), shape, t.data_ptr(), tmp);
        } else {
          write_dataset(group.get(), name, H5T_IEEE_F32LE, shape, t.data_ptr(), tmp);
        }
      }
    }
    if (!columns_.empty() || !string_columns_.empty()) {
      H5Handle group(H5Gcreate2(f, kColumnsGroup, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "H5Gcreate2", tmp);
      for (const auto& [name, t] : columns_)
        write_dataset(group.get(), name, column_file_type(t.scalar_type()), t.sizes().vec(), t.data_ptr(), tmp);
      for (const auto& [name, v] : string_columns_) write_strings(group.get(), name, v, tmp);
    }
    if (!attributes_.empty()) {
      // Variable-length strings live in the global heap, so an attribute is not bound by the 64 KiB
      // limit of an object header (a long settings JSON fits).
      H5Handle group(H5Gcreate2(f, kAttributesGroup, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "H5Gcreate2", tmp);
      H5Handle st = utf8_string_type(tmp);
      for (const auto& [name, value] : attributes_) {
        const char* p = value.c_str();
        common::h5_write_attr(group.get(), name, st.get(), st.get(), &p, tmp);
      }
    }
    LA_H5_CHECK(H5Fflush(f, H5F_SCOPE_GLOBAL), tmp);
  } catch (const common::H5Error& e) {
    throw h5_data_error(e, tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path_, ec);
  if (ec) throw DataError(path_, -1, "cannot rename " + tmp + " into place: " + ec.message());
  images_.reset();
  extras_.clear();
  finished_ = true;
  return n;
}

RecordData record_data(const TrainingSet& set, int64_t index) {
  RecordData d;
  d.image = set.image_bytes(index);
  const auto hw = set.image_size(index);
  d.height = hw[0];
  d.width = hw[1];
  d.identity = set.identity(index);
  d.prompt = set.prompt(index);
  d.photo = set.photo(index);
  d.landmarks = set.landmarks(index);
  return d;
}

}  // namespace lookahead::data
