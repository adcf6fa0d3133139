// torch.save writer (see torch_save.h): the pickle is built in memory (it only names storages), then
// the archive is streamed member by member, each storage drawn from the source, checksummed and
// written before the next one is asked for.
#include "model/io/torch_save.h"

#include <zlib.h>

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/atomic_file.h"

namespace lookahead::model::io {
namespace {

/// torch's storage class of a dtype (the GLOBAL the pickle names).
const char* storage_class(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return "FloatStorage";
    case at::kDouble: return "DoubleStorage";
    case at::kHalf: return "HalfStorage";
    case at::kBFloat16: return "BFloat16Storage";
    case at::kLong: return "LongStorage";
    case at::kInt: return "IntStorage";
    case at::kShort: return "ShortStorage";
    case at::kChar: return "CharStorage";
    case at::kByte: return "ByteStorage";
    case at::kBool: return "BoolStorage";
    default: return nullptr;
  }
}

/// The opcodes of pickle protocol 2 that a state dict needs.
class PickleWriter {
 public:
  PickleWriter() { bytes_ += "\x80\x02"; }  // PROTO 2
  void op(char c) { bytes_ += c; }
  void global(const std::string& module, const std::string& name) { bytes_ += "c" + module + "\n" + name + "\n"; }
  void string(const std::string& s) {
    TORCH_CHECK(s.size() <= std::numeric_limits<uint32_t>::max(), "pickle string too long");
    op('X');  // BINUNICODE: 4-byte length, UTF-8
    u32(static_cast<uint32_t>(s.size()));
    bytes_ += s;
  }
  void integer(int64_t v) {
    if (v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max()) {
      op('J');  // BININT: 4-byte signed
      u32(static_cast<uint32_t>(static_cast<int32_t>(v)));
    } else {
      op('\x8a');  // LONG1: 8 bytes two's complement, little-endian
      bytes_ += '\x08';
      for (int k = 0; k < 8; ++k) bytes_ += static_cast<char>((static_cast<uint64_t>(v) >> (8 * k)) & 0xff);
    }
  }
  void int_tuple(const std::vector<int64_t>& v) {
    op('(');
    for (int64_t x : v) integer(x);
    op('t');
  }
  /// An empty OrderedDict on the stack (protocol 2 rebuilds it by REDUCE with no arguments).
  void ordered_dict() {
    global("collections", "OrderedDict");
    op(')');
    op('R');
  }
  /// torch._utils._rebuild_tensor_v2(storage, 0, shape, contiguous strides, False, OrderedDict()).
  void tensor(const TensorInfo& e, const std::string& key) {
    global("torch._utils", "_rebuild_tensor_v2");
    op('(');
    op('(');
    string("storage");
    global("torch", storage_class(e.dtype));
    string(key);
    string("cpu");
    integer(e.numel());
    op('t');
    op('Q');  // BINPERSID
    integer(0);
    int_tuple(e.shape);
    std::vector<int64_t> strides(e.shape.size());
    int64_t stride = 1;
    for (size_t d = e.shape.size(); d-- > 0;) {
      strides[d] = stride;
      stride *= e.shape[d];
    }
    int_tuple(strides);
    op('\x89');      // NEWFALSE: requires_grad
    ordered_dict();  // backward hooks
    op('t');
    op('R');
  }
  const std::string& bytes() const { return bytes_; }

 private:
  void u32(uint32_t v) {
    for (int k = 0; k < 4; ++k) bytes_ += static_cast<char>((v >> (8 * k)) & 0xff);
  }
  std::string bytes_;
};

/// Stored zip members written in sequence, each member's data aligned to kAlignment.
class ZipWriter {
 public:
  static constexpr uint64_t kAlignment = 64;
  explicit ZipWriter(const std::string& path) : path_(path), out_(path, "torch checkpoint") {}

  void member(const std::string& name, const void* data, uint64_t size) {
    const auto crc = static_cast<uint32_t>(
        crc32_z(crc32_z(0L, Z_NULL, 0), static_cast<const Bytef*>(data), static_cast<z_size_t>(size)));
    // The data must start on an aligned offset: an extra field of padding follows the name.
    const uint64_t fixed = offset_ + 30 + name.size() + 4;
    const uint64_t pad = (kAlignment - fixed % kAlignment) % kAlignment;
    TORCH_CHECK(fixed + pad + size <= kMaxOffset, path_, ": archive beyond 4 GiB at member '", name,
                "' (zip64 is not written; use .safetensors for files this large)");
    std::string h;
    put32(h, 0x04034b50u);
    put16(h, 20);  // version needed: 2.0
    put16(h, 0);   // flags
    put16(h, 0);   // stored
    put16(h, 0);   // time
    put16(h, kDosDate);
    put32(h, crc);
    put32(h, static_cast<uint32_t>(size));
    put32(h, static_cast<uint32_t>(size));
    put16(h, static_cast<uint16_t>(name.size()));
    put16(h, static_cast<uint16_t>(4 + pad));
    h += name;
    put16(h, 0x4246);  // padding extra field, as torch writes it
    put16(h, static_cast<uint16_t>(pad));
    h.append(pad, 'Z');
    central_.push_back({name, crc, size, offset_});
    write(h.data(), h.size());
    if (size > 0) write(data, size);
  }

  void finish() {
    const uint64_t cd_offset = offset_;
    std::string cd;
    for (const auto& m : central_) {
      put32(cd, 0x02014b50u);
      put16(cd, 20);  // made by: 2.0
      put16(cd, 20);  // needed: 2.0
      put16(cd, 0);
      put16(cd, 0);
      put16(cd, 0);
      put16(cd, kDosDate);
      put32(cd, m.crc);
      put32(cd, static_cast<uint32_t>(m.size));
      put32(cd, static_cast<uint32_t>(m.size));
      put16(cd, static_cast<uint16_t>(m.name.size()));
      put16(cd, 0);  // extra
      put16(cd, 0);  // comment
      put16(cd, 0);  // disk
      put16(cd, 0);  // internal attributes
      put32(cd, 0);  // external attributes
      put32(cd, static_cast<uint32_t>(m.header));
      cd += m.name;
    }
    TORCH_CHECK(central_.size() < 0xffff && cd_offset + cd.size() <= kMaxOffset, path_,
                ": archive beyond the limits of zip without zip64");
    put32(cd, 0x06054b50u);
    put16(cd, 0);
    put16(cd, 0);
    put16(cd, static_cast<uint16_t>(central_.size()));
    put16(cd, static_cast<uint16_t>(central_.size()));
    put32(cd, static_cast<uint32_t>(cd.size()));
    put32(cd, static_cast<uint32_t>(cd_offset));
    put16(cd, 0);
    write(cd.data(), cd.size());
    out_.commit();
  }

 private:
  static constexpr uint64_t kMaxOffset = 0xffffffffu;
  static constexpr uint16_t kDosDate = (0 << 9) | (1 << 5) | 1;  // 1980-01-01, the DOS epoch
  struct Entry {
    std::string name;
    uint32_t crc;
    uint64_t size, header;
  };
  static void put16(std::string& s, uint16_t v) {
    s += static_cast<char>(v & 0xff);
    s += static_cast<char>(v >> 8);
  }
  static void put32(std::string& s, uint32_t v) {
    for (int k = 0; k < 4; ++k) s += static_cast<char>((v >> (8 * k)) & 0xff);
  }
  void write(const void* data, uint64_t size) {
    out_.write(data, size);
    offset_ += size;
  }
  std::string path_;
  common::AtomicFile out_;
  uint64_t offset_ = 0;
  std::vector<Entry> central_;
};

}  // namespace

void save_torch_file(const std::string& path, const std::vector<TensorInfo>& entries, const TensorSource& source,
                     TorchSaveNesting nesting) {
  std::set<std::string> names;
  for (const auto& e : entries) {
    TORCH_CHECK(names.insert(e.name).second, path, ": duplicate tensor name '", e.name, "'");
    TORCH_CHECK(storage_class(e.dtype) != nullptr, path, ": tensor '", e.name, "' has dtype ", e.dtype,
                ", which has no torch storage class here");
    TORCH_CHECK(nesting == TorchSaveNesting::kFlat || e.name.find('.') != std::string::npos, path, ": tensor '", e.name,
                "' has no '<group>.' prefix for a nested checkpoint");
  }
  // The pickle: storage keys are the entries' positions, in the order the data members follow.
  PickleWriter p;
  if (nesting == TorchSaveNesting::kFlat) {
    p.ordered_dict();
    p.op('(');
    for (size_t i = 0; i < entries.size(); ++i) {
      p.string(entries[i].name);
      p.tensor(entries[i], std::to_string(i));
    }
    p.op('u');  // SETITEMS
  } else {
    // Groups in order of first appearance; each group's tensors in entry order.
    std::vector<std::pair<std::string, std::vector<size_t>>> groups;
    for (size_t i = 0; i < entries.size(); ++i) {
      const std::string group = entries[i].name.substr(0, entries[i].name.find('.'));
      auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == group; });
      if (it == groups.end()) it = groups.insert(groups.end(), {group, {}});
      it->second.push_back(i);
    }
    p.op('}');
    p.op('(');
    for (const auto& [group, members] : groups) {
      p.string(group);
      p.ordered_dict();
      p.op('(');
      for (size_t i : members) {
        p.string(entries[i].name.substr(group.size() + 1));
        p.tensor(entries[i], std::to_string(i));
      }
      p.op('u');
    }
    p.op('u');
  }
  p.op('.');

  ZipWriter zip(path);
  zip.member("archive/data.pkl", p.bytes().data(), p.bytes().size());
  zip.member("archive/byteorder", "little", 6);
  for (size_t i = 0; i < entries.size(); ++i) {
    const TensorInfo& e = entries[i];
    const at::Tensor t = source(e).to(at::kCPU).contiguous();
    TORCH_CHECK(t.scalar_type() == e.dtype && t.sizes().vec() == e.shape, path, ": the source gave a ", t.scalar_type(),
                " tensor of shape ", t.sizes(), " for '", e.name, "', declared ", e.dtype, " ",
                c10::IntArrayRef(e.shape));
    zip.member("archive/data/" + std::to_string(i), t.data_ptr(), static_cast<uint64_t>(t.nbytes()));
  }
  zip.member("archive/version", "3\n", 2);
  zip.finish();
}

}  // namespace lookahead::model::io
