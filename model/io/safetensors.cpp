// safetensors reader and writer (see safetensors.h): the reader copies tensors out of a read-only
// mapping after validating the header (safetensors_header.h); the writer lays files out exactly as
// the reference Python/Rust writer does and replaces the target atomically.
#include "model/io/safetensors.h"

#include <sys/mman.h>
#include <unistd.h>

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "common/atomic_file.h"
#include "common/mapped_file.h"
#include "model/io/little_endian.h"

namespace lookahead::model::io {
namespace {

using json = nlohmann::json;
using namespace detail;

// JSON string literal for `s`, escaped as the reference (serde_json) escapes it: ", \ and control
// characters only, other UTF-8 written as is. Throws json::type_error for invalid UTF-8.
std::string json_string(const std::string& s) { return json(s).dump(-1, ' ', false, json::error_handler_t::strict); }

}  // namespace

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_ = std::make_unique<common::MappedFile>(path, "safetensors file");
  const uint8_t* bytes = file->map_->data();
  const size_t size = file->map_->size();
  TORCH_CHECK(size >= 8, in_file(path), "file of ", size, " bytes is shorter than the 8-byte header length");
  file->header_ = parse_image(bytes, size, path);
  file->data_ = bytes + file->header_.data_offset;
  for (size_t i = 0; i < file->header_.tensors.size(); ++i) file->index_.emplace(file->header_.tensors[i].name, i);
  return file;
}

SafetensorsFile::~SafetensorsFile() = default;

bool SafetensorsFile::contains(const std::string& name) const { return index_.count(name) != 0; }

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  TORCH_CHECK(it != index_.end(), in_tensor(path_, name), "no such tensor");
  return header_.tensors[it->second];
}

at::Tensor SafetensorsFile::get(const std::string& name) const {
  const TensorInfo& t = info(name);
  const uint8_t* src = data_ + t.begin;
  const size_t bytes = t.end - t.begin;
  if (t.dtype == at::kBool) {
    TORCH_CHECK(std::all_of(src, src + bytes, [](uint8_t b) { return b <= 1; }), in_tensor(path_, name),
                "BOOL data holds bytes other than 0 and 1");
  }
  // A fresh allocation is aligned for every dtype, unlike the tensor's place in the file.
  at::Tensor out = at::empty(t.shape, at::TensorOptions().dtype(t.dtype));
  if (bytes == 0) return out;
  auto* dst = static_cast<uint8_t*>(out.data_ptr());
  constexpr size_t kChunk = size_t{16} << 20;
  if (bytes <= kChunk) {
    std::memcpy(dst, src, bytes);
    return out;
  }
  // Large tensors: ask the kernel to read ahead, and fault pages in from several threads.
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t first = reinterpret_cast<uintptr_t>(src) & ~(page - 1);
  ::madvise(reinterpret_cast<void*>(first), reinterpret_cast<uintptr_t>(src) + bytes - first, MADV_WILLNEED);
  const auto chunks = static_cast<int64_t>((bytes + kChunk - 1) / kChunk);
  at::parallel_for(0, chunks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; ++c) {
      const size_t off = static_cast<size_t>(c) * kChunk;
      std::memcpy(dst + off, src + off, std::min(kChunk, bytes - off));
    }
  });
  return out;
}

void save_file(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
               const std::map<std::string, std::string>& metadata) {
  std::vector<TensorInfo> entries;
  entries.reserve(tensors.size());
  std::map<std::string, const at::Tensor*> by_name;
  for (const auto& [name, tensor] : tensors) {
    TORCH_CHECK(tensor.defined(), in_tensor(path, name), "undefined tensor");
    TORCH_CHECK(tensor.layout() == at::kStrided, in_tensor(path, name), "only dense tensors can be saved, not ",
                tensor.layout());
    TensorInfo e;
    e.name = name;
    e.dtype = tensor.scalar_type();
    e.shape = tensor.sizes().vec();
    entries.push_back(std::move(e));
    by_name.emplace(name, &tensor);
  }
  save_file_streamed(
      path, entries, [&](const TensorInfo& e) { return *by_name.at(e.name); }, metadata);
}

void save_file_streamed(const std::string& path, const std::vector<TensorInfo>& entries, const TensorSource& source,
                        const std::map<std::string, std::string>& metadata) {
  struct Item {
    const TensorInfo* entry;
    size_t rank;
    uint64_t bytes;
  };
  std::vector<Item> items;
  items.reserve(entries.size());
  std::unordered_set<std::string> names;
  for (const TensorInfo& e : entries) {
    TORCH_CHECK(e.name != "__metadata__", in_tensor(path, e.name), "the name is reserved for the metadata");
    TORCH_CHECK(names.insert(e.name).second, in_tensor(path, e.name), "duplicate tensor name");
    TORCH_CHECK(find_dtype(e.dtype) != nullptr, in_tensor(path, e.name), "dtype ", e.dtype,
                " has no supported safetensors equivalent (supported: ", supported_dtypes(), ")");
    items.push_back({&e, dtype_rank(e.dtype), static_cast<uint64_t>(e.numel()) * find_dtype(e.dtype)->itemsize});
  }
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.entry->name < b.entry->name;
  });

  std::string header = "{";
  const std::string* escaping = nullptr;  // what is being escaped, for the UTF-8 error
  try {
    if (!metadata.empty()) {
      header += "\"__metadata__\":{";
      bool first = true;
      for (const auto& [k, v] : metadata) {
        escaping = &k;
        if (!first) header += ',';
        header += json_string(k);
        header += ':';
        escaping = &v;
        header += json_string(v);
        first = false;
      }
      header += "}";
      if (!items.empty()) header += ",";
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      const Item& item = items[i];
      escaping = &item.entry->name;
      if (i != 0) header += ',';
      header += json_string(item.entry->name);
      header += ":{\"dtype\":\"";
      header += dtype_to_string(item.entry->dtype);
      header += "\",\"shape\":[";
      for (size_t d = 0; d < item.entry->shape.size(); ++d) {
        if (d != 0) header += ',';
        header += std::to_string(item.entry->shape[d]);
      }
      header += "],\"data_offsets\":[";
      header += std::to_string(offset);
      header += ',';
      header += std::to_string(offset + item.bytes);
      header += "]}";
      offset += item.bytes;
    }
  } catch (const json::exception&) {
    TORCH_CHECK(false, in_file(path), "'", *escaping, "' is not valid UTF-8");
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  TORCH_CHECK(header.size() <= kMaxHeaderBytes, in_file(path), "header of ", header.size(),
              " bytes exceeds the limit of ", kMaxHeaderBytes);

  common::AtomicFile out(path, "safetensors file");
  uint8_t length[8];
  const uint64_t n = header.size();
  std::memcpy(length, &n, sizeof(n));
  out.write(length, sizeof(length));
  out.write(header.data(), header.size());
  for (const Item& item : items) {
    if (item.bytes == 0) continue;
    // One dense CPU tensor at a time, so saving never holds a second copy of the whole set.
    const at::Tensor t = source(*item.entry).to(at::kCPU).contiguous();
    TORCH_CHECK(t.scalar_type() == item.entry->dtype && t.sizes().vec() == item.entry->shape,
                in_tensor(path, item.entry->name), "the source gave a ", t.scalar_type(), " tensor of shape ",
                t.sizes(), " for a declared ", item.entry->dtype, " tensor of shape ",
                c10::IntArrayRef(item.entry->shape));
    out.write(t.data_ptr(), item.bytes);
  }
  out.commit();
}

}  // namespace lookahead::model::io
