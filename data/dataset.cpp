// Training-set reader and writer. Layout and rationale: docs/data.md.
#include "data/dataset.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "data/h5.h"
#include "data/image_io.h"

namespace lookahead::data {

namespace {

const char* const kExtraNames[] = {kLatents, kPromptEmbeds, kPooledPromptEmbeds, kClipFeatures};
// Per-record rank of each optional tensor, in kExtraNames order.
const int64_t kExtraRanks[] = {3, 2, 1, 2};

int64_t extra_rank(const std::string& name) {
  for (size_t i = 0; i < 4; ++i)
    if (name == kExtraNames[i]) return kExtraRanks[i];
  TORCH_CHECK(false, "unknown optional tensor '", name, "'");
}

// IEEE half, little endian, as h5py spells it (HDF5 1.10 predefines no float16 type).
h5::Handle make_f16(const std::string& file) {
  h5::Handle t(H5Tcopy(H5T_IEEE_F32LE), "H5Tcopy", file);
  LA_DATA_H5_CHECK(H5Tset_fields(t.get(), 15, 10, 5, 0, 10), file);
  LA_DATA_H5_CHECK(H5Tset_size(t.get(), 2), file);
  LA_DATA_H5_CHECK(H5Tset_ebias(t.get(), 15), file);
  return t;
}

uint64_t checksum(const void* data, size_t size) { return XXH64(data, size, 0); }

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

// ---- reader ------------------------------------------------------------------------------------

// A bulk dataset read per record: pread() at `address` when stored contiguously with the native
// little-endian type, HDF5 hyperslab reads under the mutex otherwise (e.g. a chunked file written
// by h5py).
struct TrainingSet::Extra {
  std::string name;
  h5::Handle dataset;
  std::vector<int64_t> row_shape;
  at::ScalarType dtype = at::kByte;
  int64_t row_bytes = 0;
  int64_t address = -1;  // file offset of element 0, or -1
  hid_t mem_type = H5I_INVALID_HID;  // predefined native type, or the f16 handle below
  h5::Handle f16;
};

TrainingSet::~TrainingSet() {
  if (fd_ >= 0) ::close(fd_);
}

int64_t TrainingSet::check(int64_t index) const {
  if (index < 0 || index >= size())
    throw DataError(path_, index, "index out of range (the file has " + std::to_string(size()) + " records)");
  return index;
}

std::shared_ptr<TrainingSet> TrainingSet::open(const std::string& path) {
  std::shared_ptr<TrainingSet> set(new TrainingSet());
  set->path_ = path;
  if (!std::filesystem::exists(path)) throw DataError(path, -1, "no such file");
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    throw DataError(path, -1, "not an HDF5 file (or its header is damaged)");
  }
  h5::Handle file;
  {
    // HDF5 prints its error stack by default; we report it ourselves.
    H5E_auto2_t func = nullptr;
    void* data = nullptr;
    H5Eget_auto2(H5E_DEFAULT, &func, &data);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    H5Eset_auto2(H5E_DEFAULT, func, data);
    if (id < 0) {
      try {
        h5::throw_error("H5Fopen", path);
      } catch (const DataError& e) {
        throw DataError(path, -1, std::string("cannot open (truncated or damaged file?): ") + e.what());
      }
    }
    file = h5::Handle(id, "H5Fopen", path);
  }
  hid_t f = file.get();
  const std::string format = h5::read_attr_string(f, "format", path);
  if (format != kFormatName)
    throw DataError(path, -1, "attribute 'format' is '" + format + "', expected '" + kFormatName + "'");
  const int64_t version = h5::read_attr_int(f, "version", path);
  if (version < 1 || version > kFormatVersion)
    throw DataError(path, -1, "format version " + std::to_string(version) + " is not supported (this build reads 1.." +
                                  std::to_string(kFormatVersion) + ")");
  const int64_t n = h5::read_attr_int(f, "num_records", path);
  if (n < 0) throw DataError(path, -1, "attribute 'num_records' is negative");

  auto open_ds = [&](const std::string& name, const std::vector<int64_t>& want) {
    if (!h5::exists(f, name)) throw DataError(path, -1, "missing dataset '" + name + "'");
    h5::Handle ds(H5Dopen2(f, name.c_str(), H5P_DEFAULT), "H5Dopen2", path);
    auto d = h5::dims(ds.get(), path);
    bool ok = d.size() == want.size();
    for (size_t i = 0; ok && i < d.size(); ++i) ok = want[i] < 0 || d[i] == want[i];
    if (!ok)
      throw DataError(path, -1, "dataset '" + name + "' has shape " + shape_str(d) + ", expected " + shape_str(want) +
                                    " (-1 = any)");
    return ds;
  };
  auto read_all = [&](const std::string& name, const std::vector<int64_t>& shape, hid_t type, void* out) {
    h5::Handle ds = open_ds(name, shape);
    if (n > 0) h5::read_dataset(ds.get(), type, out, path);
  };

  set->identity_.resize(n);
  set->photo_.resize(n);
  set->landmarks_.resize(n * 10);
  set->offsets_.resize(n + 1);
  set->xxh64_.resize(n);
  set->hw_.resize(n * 2);
  read_all("identity", {n}, H5T_NATIVE_INT64, set->identity_.data());
  read_all("photo", {n}, H5T_NATIVE_UINT8, set->photo_.data());
  read_all("landmarks", {n, 5, 2}, H5T_NATIVE_FLOAT, set->landmarks_.data());
  read_all("image_xxh64", {n}, H5T_NATIVE_UINT64, set->xxh64_.data());
  read_all("image_size", {n, 2}, H5T_NATIVE_INT32, set->hw_.data());
  {
    h5::Handle ds = open_ds("image_offsets", {n + 1});
    h5::read_dataset(ds.get(), H5T_NATIVE_INT64, set->offsets_.data(), path);
  }
  if (set->offsets_[0] != 0) throw DataError(path, -1, "dataset 'image_offsets' must start at 0");
  for (int64_t i = 0; i < n; ++i)
    if (set->offsets_[i + 1] <= set->offsets_[i])
      throw DataError(path, i, "dataset 'image_offsets' is not increasing (empty or negative-size image)");
  {
    h5::Handle ds = open_ds("prompt", {n});
    h5::Handle ftype(H5Dget_type(ds.get()), "H5Dget_type", path);
    if (H5Tget_class(ftype.get()) != H5T_STRING || H5Tis_variable_str(ftype.get()) <= 0)
      throw DataError(path, -1, "dataset 'prompt' must hold variable-length strings");
    h5::Handle mtype(H5Tcopy(H5T_C_S1), "H5Tcopy", path);
    LA_DATA_H5_CHECK(H5Tset_size(mtype.get(), H5T_VARIABLE), path);
    LA_DATA_H5_CHECK(H5Tset_cset(mtype.get(), H5T_CSET_UTF8), path);
    std::vector<char*> raw(n, nullptr);
    if (n > 0) {
      h5::read_dataset(ds.get(), mtype.get(), raw.data(), path);
      set->prompt_.reserve(n);
      for (char* s : raw) set->prompt_.emplace_back(s ? s : "");
      h5::Handle space(H5Dget_space(ds.get()), "H5Dget_space", path);
      H5Dvlen_reclaim(mtype.get(), space.get(), H5P_DEFAULT, raw.data());
    }
  }

  auto open_bulk = [&](const std::string& name, const std::vector<int64_t>& want) {
    auto ex = std::make_unique<Extra>();
    ex->name = name;
    ex->dataset = open_ds(name, want);
    auto d = h5::dims(ex->dataset.get(), path);
    ex->row_shape.assign(d.begin() + 1, d.end());
    h5::Handle ftype(H5Dget_type(ex->dataset.get()), "H5Dget_type", path);
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
    return ex;
  };
  set->images_ = open_bulk("image_bytes", {set->offsets_[n]});
  for (size_t i = 0; i < 4; ++i) {
    if (!h5::exists(f, kExtraNames[i])) continue;
    std::vector<int64_t> want(static_cast<size_t>(kExtraRanks[i]) + 1, -1);
    want[0] = n;
    set->extras_.push_back(open_bulk(kExtraNames[i], want));
  }

  if (h5::exists(f, kGlobalsGroup)) {
    h5::Handle group(H5Gopen2(f, kGlobalsGroup, H5P_DEFAULT), "H5Gopen2", path);
    H5G_info_t info;
    LA_DATA_H5_CHECK(H5Gget_info(group.get(), &info), path);
    for (hsize_t i = 0; i < info.nlinks; ++i) {
      const ssize_t len = LA_DATA_H5_CHECK(
          H5Lget_name_by_idx(group.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT), path);
      std::string name(static_cast<size_t>(len), '\0');
      LA_DATA_H5_CHECK(H5Lget_name_by_idx(group.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(),
                                          static_cast<size_t>(len) + 1, H5P_DEFAULT),
                       path);
      const std::string where = std::string(kGlobalsGroup) + "/" + name;
      h5::Handle ds(H5Oopen(group.get(), name.c_str(), H5P_DEFAULT), "H5Oopen", path);
      if (H5Iget_type(ds.get()) != H5I_DATASET) throw DataError(path, -1, "'" + where + "' is not a dataset");
      h5::Handle ftype(H5Dget_type(ds.get()), "H5Dget_type", path);
      const size_t tsize = H5Tget_size(ftype.get());
      if (H5Tget_class(ftype.get()) != H5T_FLOAT || (tsize != 4 && tsize != 2))
        throw DataError(path, -1, "global dataset '" + where + "' must be float16 or float32");
      at::Tensor t = at::empty(h5::dims(ds.get(), path), tsize == 4 ? at::kFloat : at::kHalf);
      if (tsize == 4) {
        if (t.numel() > 0) h5::read_dataset(ds.get(), H5T_NATIVE_FLOAT, t.data_ptr(), path);
      } else {
        h5::Handle f16 = make_f16(path);
        if (t.numel() > 0) h5::read_dataset(ds.get(), f16.get(), t.data_ptr(), path);
      }
      set->globals_.emplace(name, std::move(t));
    }
  }

  set->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (set->fd_ < 0) throw DataError(path, -1, std::string("open: ") + std::strerror(errno));
  // `file` closes here; HDF5 keeps the file itself open while the bulk datasets (fallback reads) are.
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
  if (ex->row_shape.empty()) {  // 1-D byte blob
    h5::read_rows(ex->dataset.get(), ex->mem_type, byte_offset, count, out, path_);
  } else {
    h5::read_rows(ex->dataset.get(), ex->mem_type, byte_offset / ex->row_bytes, count / ex->row_bytes, out, path_);
  }
}

std::vector<uint8_t> TrainingSet::image_bytes(int64_t index) const {
  check(index);
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

std::vector<int64_t> TrainingSet::extra_shape(const std::string& name) const {
  extra_rank(name);
  for (const auto& ex : extras_)
    if (ex->name == name) return ex->row_shape;
  return {};
}

at::Tensor TrainingSet::extra(const std::string& name, int64_t index) const {
  check(index);
  extra_rank(name);
  for (const auto& ex : extras_) {
    if (ex->name != name) continue;
    at::Tensor out = at::empty(ex->row_shape, ex->dtype);
    read_bytes(ex.get(), index * ex->row_bytes, ex->row_bytes, out.data_ptr(), index);
    return out;
  }
  return {};
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
  Record r;
  r.index = index;
  std::vector<uint8_t> bytes = image_bytes(index);
  r.image = decode_image(bytes.data(), bytes.size(), path_, index);
  const auto hw = image_size(index);
  if (r.image.size(0) != hw[0] || r.image.size(1) != hw[1])
    throw DataError(path_, index, "decoded image is " + std::to_string(r.image.size(0)) + "x" +
                                      std::to_string(r.image.size(1)) + ", the file says " + std::to_string(hw[0]) +
                                      "x" + std::to_string(hw[1]));
  r.identity = identity_[index];
  r.prompt = prompt_[index];
  r.photo = photo_[index] != 0;
  r.landmarks = landmarks(index);
  r.latents = extra(kLatents, index);
  r.prompt_embeds = extra(kPromptEmbeds, index);
  r.pooled_prompt_embeds = extra(kPooledPromptEmbeds, index);
  r.clip_features = extra(kClipFeatures, index);
  return r;
}

// ---- writer ------------------------------------------------------------------------------------

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
  for (size_t i = 0; i < 4; ++i) {
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
  for (size_t i = 0; i < 4; ++i) {
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

// Creates a contiguous dataset from a spool file, copying in pieces so memory stays bounded.
void write_spool(hid_t loc, const std::string& name, hid_t ftype, hid_t mtype, const std::vector<int64_t>& shape,
                 std::FILE* fp, int64_t bytes, int64_t elem_size, const std::string& file) {
  std::vector<hsize_t> d(shape.begin(), shape.end());
  h5::Handle space(H5Screate_simple(static_cast<int>(d.size()), d.data(), nullptr), "H5Screate_simple", file);
  h5::Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate", file);
  LA_DATA_H5_CHECK(H5Pset_layout(dcpl.get(), H5D_CONTIGUOUS), file);
  LA_DATA_H5_CHECK(H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_EARLY), file);
  h5::Handle ds(H5Dcreate2(loc, name.c_str(), ftype, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), "H5Dcreate2",
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
    h5::Handle fspace(H5Dget_space(ds.get()), "H5Dget_space", file);
    std::vector<hsize_t> off(shape.size(), 0), cnt(d);
    off[0] = static_cast<hsize_t>(start / row);
    cnt[0] = static_cast<hsize_t>(count / row);
    LA_DATA_H5_CHECK(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, off.data(), nullptr, cnt.data(), nullptr),
                     file);
    h5::Handle mspace(H5Screate_simple(static_cast<int>(cnt.size()), cnt.data(), nullptr), "H5Screate_simple", file);
    LA_DATA_H5_CHECK(H5Dwrite(ds.get(), mtype, mspace.get(), fspace.get(), H5P_DEFAULT, buf.data()), file);
  }
}

}  // namespace

int64_t TrainingSetWriter::finish() {
  TORCH_CHECK(!finished_, "TrainingSetWriter: finish() called twice");
  const std::string tmp = path_ + ".tmp";
  const int64_t n = size();
  {
    h5::Handle file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "H5Fcreate", tmp);
    hid_t f = file.get();
    h5::write_attr_string(f, "format", kFormatName, tmp);
    h5::write_attr_int(f, "version", kFormatVersion, tmp);
    h5::write_attr_int(f, "num_records", n, tmp);
    h5::write_attr_string(f, "checksum", "xxh64 (seed 0) of each record's image bytes: dataset image_xxh64", tmp);
    h5::write_attr_string(f, "landmarks", "5 points (eyes, nose, mouth corners) x (x,y), source pixels, "
                                          "pixel centers at integer coordinates, NaN = unknown", tmp);
    h5::write_dataset(f, "identity", H5T_STD_I64LE, {n}, identity_.data(), tmp);
    h5::write_dataset(f, "photo", H5T_STD_U8LE, {n}, photo_.data(), tmp);
    h5::write_dataset(f, "landmarks", H5T_IEEE_F32LE, {n, 5, 2}, landmarks_.data(), tmp);
    h5::write_dataset(f, "image_offsets", H5T_STD_I64LE, {n + 1}, offsets_.data(), tmp);
    h5::write_dataset(f, "image_xxh64", H5T_STD_U64LE, {n}, xxh64_.data(), tmp);
    h5::write_dataset(f, "image_size", H5T_STD_I32LE, {n, 2}, hw_.data(), tmp);
    {
      h5::Handle st(H5Tcopy(H5T_C_S1), "H5Tcopy", tmp);
      LA_DATA_H5_CHECK(H5Tset_size(st.get(), H5T_VARIABLE), tmp);
      LA_DATA_H5_CHECK(H5Tset_cset(st.get(), H5T_CSET_UTF8), tmp);
      std::vector<const char*> ptrs;
      for (const auto& p : prompt_) ptrs.push_back(p.c_str());
      hsize_t dn = static_cast<hsize_t>(n);
      h5::Handle space(H5Screate_simple(1, &dn, nullptr), "H5Screate_simple", tmp);
      h5::Handle ds(H5Dcreate2(f, "prompt", st.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                    "H5Dcreate2", tmp);
      if (n > 0) LA_DATA_H5_CHECK(H5Dwrite(ds.get(), st.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()), tmp);
    }
    write_spool(f, "image_bytes", H5T_STD_U8LE, H5T_NATIVE_UINT8, {offsets_.back()}, images_->fp, images_->bytes, 1,
                tmp);
    for (const auto& s : extras_) {
      std::vector<int64_t> shape{n};
      shape.insert(shape.end(), s->row_shape.begin(), s->row_shape.end());
      if (s->dtype == at::kHalf) {
        h5::Handle f16 = make_f16(tmp);
        write_spool(f, s->name, f16.get(), f16.get(), shape, s->fp, s->bytes, 2, tmp);
      } else {
        write_spool(f, s->name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, shape, s->fp, s->bytes, 4, tmp);
      }
    }
    if (!globals_.empty()) {
      h5::Handle group(H5Gcreate2(f, kGlobalsGroup, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "H5Gcreate2", tmp);
      for (const auto& [name, t] : globals_) {
        const std::vector<int64_t> shape = t.sizes().vec();
        if (t.scalar_type() == at::kHalf) {
          h5::Handle f16 = make_f16(tmp);
          h5::write_dataset(group.get(), name, f16.get(), shape, t.data_ptr(), tmp);
        } else {
          h5::write_dataset(group.get(), name, H5T_IEEE_F32LE, shape, t.data_ptr(), tmp);
        }
      }
    }
    LA_DATA_H5_CHECK(H5Fflush(f, H5F_SCOPE_GLOBAL), tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path_, ec);
  if (ec) throw DataError(path_, -1, "cannot rename " + tmp + " into place: " + ec.message());
  images_.reset();
  extras_.clear();
  finished_ = true;
  return n;
}

}  // namespace lookahead::data
