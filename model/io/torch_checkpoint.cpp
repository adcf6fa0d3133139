// torch.save reader: maps the file, runs the restricted pickle machine (pickle.h) over the zip
// archive's data.pkl (zip_archive.h) or the legacy format's sequence of pickles, and builds
// tensors from the storages. Tensors are kept as (storage key, offset, sizes, strides) until the
// whole pickle is read, because the legacy format stores the raw storages after the pickle that
// references them.
#include "model/io/torch_checkpoint.h"

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "common/mapped_file.h"
#include "model/io/little_endian.h"
#include "model/io/pickle.h"
#include "model/io/safetensors.h"
#include "model/io/safetensors_index.h"
#include "model/io/zip_archive.h"

namespace lookahead::model::io {
namespace {

using pickle::Ref;
using pickle::StorageInfo;
using pickle::TensorSpec;
using pickle::Unpickler;
using pickle::Value;
using pickle::kind_name;

/// Raw bytes of one storage inside the mapping.
using StorageBytes = ByteRange;

// ---------------------------------------------------------------------------------------------
// Flattening and materialization.

void flatten(const Ref& v, const std::string& prefix, int depth, const std::string& path,
             std::map<std::string, TensorSpec>& out) {
  TORCH_CHECK(depth < 64, path, ": containers nested deeper than 64 levels (or a cycle) at '", prefix, "'");
  const auto join = [&](const std::string& k) { return prefix.empty() ? k : prefix + "." + k; };
  switch (v->kind) {
    case Value::Kind::kDict:
      for (const auto& [k, x] : v->entries) {
        TORCH_CHECK(k->kind == Value::Kind::kString || k->kind == Value::Kind::kInt, path, ": dict key of type ",
                    kind_name(k->kind), " under '", prefix, "'");
        flatten(x, join(k->kind == Value::Kind::kString ? k->s : std::to_string(k->i)), depth + 1, path, out);
      }
      break;
    case Value::Kind::kList:
    case Value::Kind::kTuple:
      for (size_t j = 0; j < v->items.size(); ++j) flatten(v->items[j], join(std::to_string(j)), depth + 1, path, out);
      break;
    case Value::Kind::kTensor: {
      const bool inserted = out.emplace(prefix, v->tensor).second;
      TORCH_CHECK(inserted, path, ": duplicate tensor key '", prefix, "'");
      break;
    }
    default: break;  // scalars, strings, None: metadata, not weights
  }
}

/// A parsed file: every tensor as a view spec, every storage's dtype, size and bytes in the mapping.
struct Parsed {
  std::map<std::string, TensorSpec> specs;
  std::map<std::string, StorageInfo> infos;
  std::map<std::string, StorageBytes> bytes;
};

/// Checks that tensor `key`'s storage is in the file with enough bytes and that its view lies
/// inside it, without touching the bytes; returns whether the view is empty.
bool check_tensor(const std::string& key, const TensorSpec& spec, const Parsed& p, const std::string& path) {
  const auto& info = p.infos.at(spec.storage);
  const auto b = p.bytes.find(spec.storage);
  TORCH_CHECK(b != p.bytes.end(), path, ": tensor '", key, "' refers to storage '", spec.storage,
              "' which the file does not contain");
  const size_t need = static_cast<size_t>(info.numel) * c10::elementSize(info.dtype);
  TORCH_CHECK(static_cast<uint64_t>(info.numel) <= (uint64_t{1} << 56) && need <= b->second.size, path, ": storage '",
              spec.storage, "' of tensor '", key, "' holds ", b->second.size, " bytes, ", need, " needed for ",
              info.numel, " elements of ", info.dtype);
  // The view's last element must lie inside the storage; every step checked for int64 overflow.
  TORCH_CHECK(spec.offset >= 0, path, ": tensor '", key, "' has a negative storage offset");
  int64_t last = spec.offset;
  bool empty = false, overflow = false;
  for (size_t d = 0; d < spec.sizes.size(); ++d) {
    TORCH_CHECK(spec.sizes[d] >= 0 && spec.strides[d] >= 0, path, ": tensor '", key, "' has a negative size or stride");
    if (spec.sizes[d] == 0) empty = true;
    int64_t step = 0;
    overflow |= __builtin_mul_overflow(spec.sizes[d] > 0 ? spec.sizes[d] - 1 : 0, spec.strides[d], &step);
    overflow |= __builtin_add_overflow(last, step, &last);
  }
  TORCH_CHECK(empty || (!overflow && last < info.numel), path, ": tensor '", key, "' (offset ", spec.offset, ", size ",
              c10::IntArrayRef(spec.sizes), ", stride ", c10::IntArrayRef(spec.strides),
              ") reaches beyond its storage '", spec.storage, "' of ", info.numel, " elements");
  return empty;
}

std::map<std::string, at::Tensor> materialize(const Parsed& p, const std::string& path) {
  std::map<std::string, at::Tensor> storages;  // one aligned, owned copy per storage
  std::map<std::string, at::Tensor> out;
  for (const auto& [key, spec] : p.specs) {
    const bool empty = check_tensor(key, spec, p, path);
    const auto& info = p.infos.at(spec.storage);
    auto it = storages.find(spec.storage);
    if (it == storages.end()) {
      const size_t need = static_cast<size_t>(info.numel) * c10::elementSize(info.dtype);
      at::Tensor s = at::empty({info.numel}, at::TensorOptions().dtype(info.dtype));
      if (need > 0) std::memcpy(s.data_ptr(), p.bytes.at(spec.storage).data, need);
      if (info.dtype == at::kBool) {
        const auto* q = static_cast<const uint8_t*>(s.data_ptr());
        for (size_t j = 0; j < need; ++j)
          TORCH_CHECK(q[j] <= 1, path, ": bool storage '", spec.storage, "' of tensor '", key, "' holds byte ",
                      int(q[j]), " (torch needs 0 or 1)");
      }
      it = storages.emplace(spec.storage, std::move(s)).first;
    }
    if (empty) {
      out.emplace(key, at::empty(spec.sizes, at::TensorOptions().dtype(info.dtype)));
    } else {
      out.emplace(key, it->second.as_strided(spec.sizes, spec.strides, spec.offset).contiguous());
    }
  }
  return out;
}

/// `read_storages` false: the storages' places and sizes only (no CRC, no byte read).
Parsed parse_zip(const uint8_t* d, size_t n, const std::string& path, bool read_storages) {
  const auto dir = zip_directory(d, n, path);
  // The archive's top folder is named after the file at save time ("archive" in recent torch).
  std::string prefix;
  int found = 0;
  for (const auto& [name, m] : dir) {
    if (name.ends_with("/data.pkl") && name.find('/') == name.size() - 9) {
      prefix = name.substr(0, name.size() - 8);
      ++found;
    }
  }
  TORCH_CHECK(found == 1, path, ": zip archive without exactly one '<archive>/data.pkl' (", found,
              " found); not a torch.save checkpoint");
  if (const auto bo = dir.find(prefix + "byteorder"); bo != dir.end()) {
    const auto b = zip_read(d, n, bo->first, bo->second, path);
    TORCH_CHECK(std::string_view(reinterpret_cast<const char*>(b.data), b.size) == "little", path,
                ": big-endian checkpoint, not supported");
  }
  const auto pkl = zip_read(d, n, prefix + "data.pkl", dir.at(prefix + "data.pkl"), path);
  Parsed p;
  Unpickler u(pkl.data, pkl.size, 0, path, "data.pkl", p.infos);
  const Ref root = u.run();
  TORCH_CHECK(root->kind == Value::Kind::kDict, path, ": top-level object is a ", kind_name(root->kind),
              ", expected a dict (state dict)");
  flatten(root, "", 0, path, p.specs);
  for (const auto& [key, info] : p.infos) {
    const std::string member = prefix + "data/" + key;
    const auto it = dir.find(member);
    TORCH_CHECK(it != dir.end(), path, ": storage '", key, "' missing from the archive ('", member, "')");
    p.bytes[key] = zip_read(d, n, member, it->second, path, /*verify_crc=*/read_storages);
  }
  return p;
}

// PROTO 2, LONG1 of 10 bytes: 0x1950a86a20f9469cfc6c little-endian, STOP.
constexpr uint8_t kLegacyMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                    0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e};

/// The legacy format's storages follow its pickles: finding them reads only their 8-byte sizes.
Parsed parse_legacy(const uint8_t* d, size_t n, const std::string& path) {
  Parsed p;
  std::map<std::string, StorageInfo>& infos = p.infos;
  size_t pos = sizeof(kLegacyMagic);
  const auto next = [&](const char* what) {
    Unpickler u(d, n, pos, path, what, infos);
    Ref v = u.run();
    pos = u.pos();
    return v;
  };
  const Ref version = next("protocol version");
  TORCH_CHECK(version->kind == Value::Kind::kInt && version->i == 1001, path,
              ": unsupported legacy torch.save protocol version");
  const Ref sys_info = next("sys_info");
  TORCH_CHECK(sys_info->kind == Value::Kind::kDict, path, ": malformed sys_info record");
  for (const auto& [k, v] : sys_info->entries)
    if (k->kind == Value::Kind::kString && k->s == "little_endian")
      TORCH_CHECK(v->kind == Value::Kind::kBool && v->i == 1, path, ": big-endian checkpoint, not supported");
  const Ref root = next("main");
  TORCH_CHECK(root->kind == Value::Kind::kDict, path, ": top-level object is a ", kind_name(root->kind),
              ", expected a dict (state dict)");
  flatten(root, "", 0, path, p.specs);
  const Ref keys = next("storage key list");
  TORCH_CHECK(keys->kind == Value::Kind::kList, path, ": malformed storage key list");
  // Each storage: its element count (int64) and then its raw bytes, in the order of the key list.
  std::map<std::string, StorageBytes>& bytes = p.bytes;
  for (const auto& k : keys->items) {
    TORCH_CHECK(k->kind == Value::Kind::kString, path, ": malformed storage key list");
    const auto info = infos.find(k->s);
    TORCH_CHECK(info != infos.end(), path, ": storage '", k->s, "' stored but never referenced");
    TORCH_CHECK(n - pos >= 8, path, ": truncated file (size of storage '", k->s, "' at byte ", pos, ")");
    const int64_t numel = static_cast<int64_t>(le64(d + pos));
    pos += 8;
    TORCH_CHECK(numel == info->second.numel, path, ": storage '", k->s, "' holds ", numel, " elements, ",
                info->second.numel, " expected");
    const uint64_t nbytes = static_cast<uint64_t>(numel) * c10::elementSize(info->second.dtype);
    TORCH_CHECK(nbytes <= n - pos, path, ": truncated file (storage '", k->s, "' needs ", nbytes, " bytes at byte ",
                pos, ", file has ", n, ")");
    bytes[k->s] = {d + pos, static_cast<size_t>(nbytes)};
    pos += nbytes;
  }
  return p;
}

/// The file at `path` parsed (zip or legacy); `read_storages` as for parse_zip.
Parsed parse_file(const common::MappedFile& file, const std::string& path, bool read_storages) {
  const uint8_t* d = file.data();
  const size_t n = file.size();
  TORCH_CHECK(n > 0, path, ": empty file, not a torch checkpoint");
  if (n >= 4 && le32(d) == 0x04034b50u) return parse_zip(d, n, path, read_storages);
  TORCH_CHECK(n >= sizeof(kLegacyMagic) && std::memcmp(d, kLegacyMagic, sizeof(kLegacyMagic)) == 0, path,
              ": not a torch.save checkpoint (neither a zip archive nor the legacy magic number)");
  return parse_legacy(d, n, path);
}

}  // namespace

std::map<std::string, at::Tensor> load_torch_file(const std::string& path) {
  const common::MappedFile file(path, "torch checkpoint");
  return materialize(parse_file(file, path, /*read_storages=*/true), path);
}

std::vector<TensorInfo> load_torch_shapes(const std::string& path) {
  const common::MappedFile file(path, "torch checkpoint");
  const Parsed p = parse_file(file, path, /*read_storages=*/false);
  std::vector<TensorInfo> out;
  for (const auto& [key, spec] : p.specs) {
    check_tensor(key, spec, p, path);
    TensorInfo t;
    t.name = key;
    t.dtype = p.infos.at(spec.storage).dtype;
    t.shape = spec.sizes;
    out.push_back(std::move(t));
  }
  return out;
}

std::map<std::string, at::Tensor> load_weights_file(const std::string& path) {
  if (path.ends_with(".safetensors") || is_index_path(path)) return load_file(path);
  return load_torch_file(path);
}

}  // namespace lookahead::model::io
