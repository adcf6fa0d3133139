// torch.save reader. The file is mapped once; the pickle is run by a machine that knows only the
// opcodes torch.save emits and only four kinds of GLOBAL (OrderedDict, the two tensor rebuild
// functions and the typed storage classes), so nothing in a file can reach code. Tensors are kept as
// (storage key, offset, sizes, strides) until the whole pickle is read, because the legacy format
// stores the raw storages after the pickle that references them.
#include "model/io/torch_checkpoint.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "model/io/safetensors.h"

namespace lookahead::model::io {
namespace {

static_assert(std::endian::native == std::endian::little, "torch_checkpoint reads little-endian files natively");

uint16_t le16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
uint32_t le32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t le64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Values of the pickle machine.

/// A tensor before its storage bytes are known.
struct TensorSpec {
  std::string storage;  // storage key
  int64_t offset = 0;   // in elements
  std::vector<int64_t> sizes, strides;
};

struct Value;
using Ref = std::shared_ptr<Value>;

struct Value {
  enum class Kind { kNone, kBool, kInt, kFloat, kString, kTuple, kList, kDict, kGlobal, kStorage, kTensor };
  Kind kind = Kind::kNone;
  int64_t i = 0;
  double f = 0;
  std::string s;  // string / bytes; "module.name" of a global; key of a storage
  std::vector<Ref> items;                  // tuple, list
  std::vector<std::pair<Ref, Ref>> entries;  // dict, in insertion order
  TensorSpec tensor;
};

Ref make(Value::Kind kind) {
  auto v = std::make_shared<Value>();
  v->kind = kind;
  return v;
}

const char* kind_name(Value::Kind k) {
  switch (k) {
    case Value::Kind::kNone: return "None";
    case Value::Kind::kBool: return "bool";
    case Value::Kind::kInt: return "int";
    case Value::Kind::kFloat: return "float";
    case Value::Kind::kString: return "str";
    case Value::Kind::kTuple: return "tuple";
    case Value::Kind::kList: return "list";
    case Value::Kind::kDict: return "dict";
    case Value::Kind::kGlobal: return "global";
    case Value::Kind::kStorage: return "storage";
    case Value::Kind::kTensor: return "tensor";
  }
  return "?";
}

/// dtype of a typed storage class name ("FloatStorage"); nullopt for anything else.
std::optional<at::ScalarType> storage_dtype(const std::string& name) {
  static const std::pair<const char*, at::ScalarType> table[] = {
      {"FloatStorage", at::kFloat}, {"DoubleStorage", at::kDouble}, {"HalfStorage", at::kHalf},
      {"BFloat16Storage", at::kBFloat16}, {"LongStorage", at::kLong}, {"IntStorage", at::kInt},
      {"ShortStorage", at::kShort}, {"CharStorage", at::kChar}, {"ByteStorage", at::kByte},
      {"BoolStorage", at::kBool}};
  for (const auto& [n, t] : table)
    if (name == n) return t;
  return std::nullopt;
}

/// What BINPERSID records about one storage.
struct StorageInfo {
  at::ScalarType dtype = at::kFloat;
  int64_t numel = 0;
};

// ---------------------------------------------------------------------------------------------
// The pickle machine.

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, size_t pos, const std::string& path, const char* what,
            std::map<std::string, StorageInfo>& storages)
      : d_(data), n_(size), pos_(pos), path_(path), what_(what), storages_(storages) {}

  /// Runs to STOP and returns the pickled object; pos() is then just past the STOP opcode.
  Ref run();
  size_t pos() const { return pos_; }

 private:
  const uint8_t* take(size_t k) {
    TORCH_CHECK(k <= n_ - pos_, path_, ": truncated ", what_, " pickle (", k, " bytes needed at byte ", pos_,
                ", file has ", n_, ")");
    const uint8_t* p = d_ + pos_;
    pos_ += k;
    return p;
  }
  std::string take_line() {
    const auto* begin = d_ + pos_;
    const auto* nl = static_cast<const uint8_t*>(std::memchr(begin, '\n', n_ - pos_));
    TORCH_CHECK(nl != nullptr, path_, ": truncated ", what_, " pickle (unterminated GLOBAL at byte ", pos_, ")");
    pos_ += static_cast<size_t>(nl - begin) + 1;
    return std::string(reinterpret_cast<const char*>(begin), static_cast<size_t>(nl - begin));
  }
  Ref pop() {
    TORCH_CHECK(stack_.size() > floor(), path_, ": malformed ", what_, " pickle (stack underflow at byte ", op_pos_,
                ")");
    Ref v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  Ref& top() {
    TORCH_CHECK(stack_.size() > floor(), path_, ": malformed ", what_, " pickle (empty stack at byte ", op_pos_, ")");
    return stack_.back();
  }
  // Values below the innermost MARK belong to an enclosing container, not to the current opcode.
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  std::vector<Ref> pop_mark() {
    TORCH_CHECK(!marks_.empty(), path_, ": malformed ", what_, " pickle (no MARK at byte ", op_pos_, ")");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Ref> out(std::make_move_iterator(stack_.begin() + static_cast<std::ptrdiff_t>(m)),
                         std::make_move_iterator(stack_.end()));
    stack_.resize(m);
    return out;
  }
  void push(Ref v) { stack_.push_back(std::move(v)); }
  Ref& expect(Ref& v, Value::Kind kind, const char* role) {
    TORCH_CHECK(v->kind == kind, path_, ": malformed ", what_, " pickle (", role, " is a ", kind_name(v->kind),
                ", expected a ", kind_name(kind), ", at byte ", op_pos_, ")");
    return v;
  }
  void push_string(size_t len) {
    auto v = make(Value::Kind::kString);
    const auto* p = take(len);
    v->s.assign(reinterpret_cast<const char*>(p), len);
    push(std::move(v));
  }
  void push_int(int64_t i) {
    auto v = make(Value::Kind::kInt);
    v->i = i;
    push(std::move(v));
  }
  void memo_put(uint32_t index) { memo_[index] = top(); }
  void memo_get(uint32_t index) {
    const auto it = memo_.find(index);
    TORCH_CHECK(it != memo_.end(), path_, ": malformed ", what_, " pickle (memo ", index, " unset at byte ", op_pos_,
                ")");
    push(it->second);
  }
  void global(const std::string& module, const std::string& name);
  void call(Ref callable, Ref args);
  void persistent_id(Ref pid);
  std::vector<int64_t> int_tuple(const Ref& v, const char* role);

  const uint8_t* d_;
  size_t n_;
  size_t pos_;
  size_t op_pos_ = 0;
  const std::string& path_;
  const char* what_;
  std::map<std::string, StorageInfo>& storages_;
  std::vector<Ref> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, Ref> memo_;
};

void Unpickler::global(const std::string& module, const std::string& name) {
  const bool allowed = (module == "collections" && name == "OrderedDict") ||
                       (module == "torch._utils" && (name == "_rebuild_tensor_v2" || name == "_rebuild_parameter")) ||
                       (module == "torch" && storage_dtype(name).has_value());
  TORCH_CHECK(allowed, path_, ": refusing pickle global '", module, ".", name, "' at byte ", op_pos_,
              " (only dicts, tensors and plain values are read from torch checkpoints)");
  auto v = make(Value::Kind::kGlobal);
  v->s = module + "." + name;
  push(std::move(v));
}

std::vector<int64_t> Unpickler::int_tuple(const Ref& v, const char* role) {
  TORCH_CHECK(v->kind == Value::Kind::kTuple, path_, ": malformed tensor ", role, " (a ", kind_name(v->kind),
              ") at byte ", op_pos_);
  std::vector<int64_t> out;
  out.reserve(v->items.size());
  for (const auto& x : v->items) {
    TORCH_CHECK(x->kind == Value::Kind::kInt, path_, ": malformed tensor ", role, " at byte ", op_pos_);
    out.push_back(x->i);
  }
  return out;
}

void Unpickler::call(Ref callable, Ref args) {
  expect(callable, Value::Kind::kGlobal, "REDUCE callable");
  expect(args, Value::Kind::kTuple, "REDUCE arguments");
  const auto& a = args->items;
  const std::string& fn = callable->s;
  if (fn == "collections.OrderedDict") {
    // Pickle protocol 2 rebuilds an OrderedDict empty, then fills it with SETITEMS.
    TORCH_CHECK(a.empty(), path_, ": OrderedDict with constructor arguments at byte ", op_pos_);
    push(make(Value::Kind::kDict));
  } else if (fn == "torch._utils._rebuild_tensor_v2") {
    // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    TORCH_CHECK(a.size() == 6 || a.size() == 7, path_, ": _rebuild_tensor_v2 with ", a.size(), " arguments at byte ",
                op_pos_);
    TORCH_CHECK(a[0]->kind == Value::Kind::kStorage, path_, ": _rebuild_tensor_v2 of a ", kind_name(a[0]->kind),
                " instead of a storage at byte ", op_pos_);
    TORCH_CHECK(a[1]->kind == Value::Kind::kInt, path_, ": malformed tensor storage offset at byte ", op_pos_);
    auto t = make(Value::Kind::kTensor);
    t->tensor.storage = a[0]->s;
    t->tensor.offset = a[1]->i;
    t->tensor.sizes = int_tuple(a[2], "size");
    t->tensor.strides = int_tuple(a[3], "stride");
    TORCH_CHECK(t->tensor.sizes.size() == t->tensor.strides.size(), path_, ": tensor with ", t->tensor.sizes.size(),
                " sizes but ", t->tensor.strides.size(), " strides at byte ", op_pos_);
    push(std::move(t));
  } else if (fn == "torch._utils._rebuild_parameter") {
    // (data, requires_grad, backward_hooks): an nn.Parameter is its tensor here.
    TORCH_CHECK(a.size() == 3 && a[0]->kind == Value::Kind::kTensor, path_, ": malformed _rebuild_parameter at byte ",
                op_pos_);
    push(a[0]);
  } else {
    TORCH_CHECK(false, path_, ": refusing to call pickle global '", fn, "' at byte ", op_pos_);
  }
}

void Unpickler::persistent_id(Ref pid) {
  // ('storage', storage_type, key, location, numel) — the legacy format appends view_metadata.
  expect(pid, Value::Kind::kTuple, "persistent id");
  const auto& a = pid->items;
  TORCH_CHECK((a.size() == 5 || a.size() == 6) && a[0]->kind == Value::Kind::kString && a[0]->s == "storage",
              path_, ": unsupported persistent id at byte ", op_pos_, " (expected ('storage', type, key, location, numel))");
  TORCH_CHECK(a[1]->kind == Value::Kind::kGlobal && a[1]->s.starts_with("torch."), path_,
              ": persistent id without a storage type at byte ", op_pos_);
  const auto dtype = storage_dtype(a[1]->s.substr(6));
  TORCH_CHECK(dtype.has_value(), path_, ": unknown storage type '", a[1]->s, "' at byte ", op_pos_);
  TORCH_CHECK(a[2]->kind == Value::Kind::kString || a[2]->kind == Value::Kind::kInt, path_,
              ": malformed storage key at byte ", op_pos_);
  const std::string key = a[2]->kind == Value::Kind::kString ? a[2]->s : std::to_string(a[2]->i);
  TORCH_CHECK(a[4]->kind == Value::Kind::kInt && a[4]->i >= 0, path_, ": malformed numel of storage '", key,
              "' at byte ", op_pos_);
  TORCH_CHECK(a.size() == 5 || a[5]->kind == Value::Kind::kNone, path_, ": storage '", key,
              "' is a view of another storage (torch < 0.4 checkpoint), not supported");
  const auto [it, inserted] = storages_.emplace(key, StorageInfo{*dtype, a[4]->i});
  TORCH_CHECK(inserted || (it->second.dtype == *dtype && it->second.numel == a[4]->i), path_, ": storage '", key,
              "' referenced with two different types or sizes");
  auto v = make(Value::Kind::kStorage);
  v->s = key;
  push(std::move(v));
}

Ref Unpickler::run() {
  using K = Value::Kind;
  for (;;) {
    op_pos_ = pos_;
    const uint8_t op = *take(1);
    switch (op) {
      case 0x80: {  // PROTO
        const uint8_t proto = *take(1);
        TORCH_CHECK(proto >= 2 && proto <= 5, path_, ": unsupported pickle protocol ", int(proto), " at byte ",
                    op_pos_);
        break;
      }
      case 0x95: take(8); break;  // FRAME: a length hint only, the opcodes follow inline
      case '.': {                 // STOP
        Ref v = pop();
        return v;
      }
      case '(': marks_.push_back(stack_.size()); break;  // MARK
      case '}': push(make(K::kDict)); break;             // EMPTY_DICT
      case ']': push(make(K::kList)); break;             // EMPTY_LIST
      case ')': push(make(K::kTuple)); break;            // EMPTY_TUPLE
      case 'N': push(make(K::kNone)); break;             // NONE
      case 0x88:                                         // NEWTRUE
      case 0x89: {                                       // NEWFALSE
        auto v = make(K::kBool);
        v->i = op == 0x88;
        push(std::move(v));
        break;
      }
      case 'X':  // BINUNICODE
      case 'B':  // BINBYTES
        push_string(le32(take(4)));
        break;
      case 0x8c:  // SHORT_BINUNICODE
      case 'C':   // SHORT_BINBYTES
        push_string(*take(1));
        break;
      case 0x8d: {  // BINUNICODE8
        const uint64_t len = le64(take(8));
        TORCH_CHECK(len <= n_ - pos_, path_, ": truncated ", what_, " pickle (string at byte ", op_pos_, ")");
        push_string(static_cast<size_t>(len));
        break;
      }
      case 'J': push_int(static_cast<int32_t>(le32(take(4)))); break;  // BININT
      case 'K': push_int(*take(1)); break;                             // BININT1
      case 'M': push_int(le16(take(2))); break;                        // BININT2
      case 0x8a: {                                                     // LONG1
        const uint8_t len = *take(1);
        TORCH_CHECK(len <= 8, path_, ": integer of ", int(len), " bytes at byte ", op_pos_, " does not fit int64");
        const uint8_t* p = take(len);
        uint64_t u = 0;
        for (int k = len - 1; k >= 0; --k) u = (u << 8) | p[k];
        if (len > 0 && len < 8 && (p[len - 1] & 0x80)) u |= ~uint64_t{0} << (8 * len);  // sign-extend
        push_int(static_cast<int64_t>(u));
        break;
      }
      case 'G': {  // BINFLOAT: big-endian IEEE double
        const uint8_t* p = take(8);
        uint64_t u = 0;
        for (int k = 0; k < 8; ++k) u = (u << 8) | p[k];
        auto v = make(K::kFloat);
        v->f = std::bit_cast<double>(u);
        push(std::move(v));
        break;
      }
      case 't': {  // TUPLE
        auto v = make(K::kTuple);
        v->items = pop_mark();
        push(std::move(v));
        break;
      }
      case 0x85:    // TUPLE1
      case 0x86:    // TUPLE2
      case 0x87: {  // TUPLE3
        const size_t k = op - 0x84u;
        auto v = make(K::kTuple);
        v->items.resize(k);
        for (size_t j = k; j-- > 0;) v->items[j] = pop();
        push(std::move(v));
        break;
      }
      case 'l': {  // LIST
        auto v = make(K::kList);
        v->items = pop_mark();
        push(std::move(v));
        break;
      }
      case 'd': {  // DICT
        auto items = pop_mark();
        TORCH_CHECK(items.size() % 2 == 0, path_, ": odd DICT item count at byte ", op_pos_);
        auto v = make(K::kDict);
        for (size_t j = 0; j < items.size(); j += 2) v->entries.emplace_back(items[j], items[j + 1]);
        push(std::move(v));
        break;
      }
      case 'a': {  // APPEND
        Ref x = pop();
        expect(top(), K::kList, "APPEND target").get()->items.push_back(std::move(x));
        break;
      }
      case 'e': {  // APPENDS
        auto items = pop_mark();
        auto& list = expect(top(), K::kList, "APPENDS target")->items;
        for (auto& x : items) list.push_back(std::move(x));
        break;
      }
      case 's': {  // SETITEM
        Ref value = pop();
        Ref key = pop();
        expect(top(), K::kDict, "SETITEM target")->entries.emplace_back(std::move(key), std::move(value));
        break;
      }
      case 'u': {  // SETITEMS
        auto items = pop_mark();
        TORCH_CHECK(items.size() % 2 == 0, path_, ": odd SETITEMS item count at byte ", op_pos_);
        auto& dict = expect(top(), K::kDict, "SETITEMS target")->entries;
        for (size_t j = 0; j < items.size(); j += 2) dict.emplace_back(items[j], items[j + 1]);
        break;
      }
      case 'q': memo_put(*take(1)); break;                                           // BINPUT
      case 'r': memo_put(le32(take(4))); break;                                      // LONG_BINPUT
      case 0x94: memo_put(static_cast<uint32_t>(memo_.size())); break;               // MEMOIZE
      case 'h': memo_get(*take(1)); break;                                           // BINGET
      case 'j': memo_get(le32(take(4))); break;                                      // LONG_BINGET
      case '0': pop(); break;                                                        // POP
      case '1': pop_mark(); break;                                                   // POP_MARK
      case '2': push(top()); break;                                                  // DUP
      case 'c': {                                                                    // GLOBAL
        const std::string module = take_line();
        const std::string name = take_line();
        global(module, name);
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        Ref name = pop();
        Ref module = pop();
        expect(module, K::kString, "STACK_GLOBAL module");
        expect(name, K::kString, "STACK_GLOBAL name");
        global(module->s, name->s);
        break;
      }
      case 'R':     // REDUCE
      case 0x81: {  // NEWOBJ (cls, args): only OrderedDict gets past call()'s checks
        Ref args = pop();
        Ref callable = pop();
        call(std::move(callable), std::move(args));
        break;
      }
      case 'b': {  // BUILD: OrderedDict attributes such as a state dict's _metadata, not needed here
        Ref state = pop();
        const auto kind = top()->kind;
        TORCH_CHECK(kind == K::kDict, path_, ": BUILD on a ", kind_name(kind), " at byte ", op_pos_);
        break;
      }
      case 'Q': persistent_id(pop()); break;  // BINPERSID
      default:
        TORCH_CHECK(false, path_, ": unsupported pickle opcode ", int(op), " at byte ", op_pos_, " of the ", what_, " pickle");
    }
  }
}

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

/// Raw bytes of one storage inside the mapping (not necessarily aligned for its dtype).
struct StorageBytes {
  const uint8_t* data = nullptr;
  size_t size = 0;
};

std::map<std::string, at::Tensor> materialize(const std::map<std::string, TensorSpec>& specs,
                                              const std::map<std::string, StorageInfo>& infos,
                                              const std::map<std::string, StorageBytes>& bytes,
                                              const std::string& path) {
  std::map<std::string, at::Tensor> storages;  // one aligned, owned copy per storage
  std::map<std::string, at::Tensor> out;
  for (const auto& [key, spec] : specs) {
    const auto& info = infos.at(spec.storage);
    auto it = storages.find(spec.storage);
    if (it == storages.end()) {
      const auto b = bytes.find(spec.storage);
      TORCH_CHECK(b != bytes.end(), path, ": tensor '", key, "' refers to storage '", spec.storage,
                  "' which the file does not contain");
      const size_t need = static_cast<size_t>(info.numel) * c10::elementSize(info.dtype);
      TORCH_CHECK(static_cast<uint64_t>(info.numel) <= (uint64_t{1} << 56) && need <= b->second.size, path,
                  ": storage '", spec.storage, "' of tensor '", key, "' holds ", b->second.size, " bytes, ", need,
                  " needed for ", info.numel, " elements of ", info.dtype);
      at::Tensor s = at::empty({info.numel}, at::TensorOptions().dtype(info.dtype));
      if (need > 0) std::memcpy(s.data_ptr(), b->second.data, need);
      if (info.dtype == at::kBool) {
        const auto* p = static_cast<const uint8_t*>(s.data_ptr());
        for (size_t j = 0; j < need; ++j)
          TORCH_CHECK(p[j] <= 1, path, ": bool storage '", spec.storage, "' of tensor '", key, "' holds byte ",
                      int(p[j]), " (torch needs 0 or 1)");
      }
      it = storages.emplace(spec.storage, std::move(s)).first;
    }
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
                c10::IntArrayRef(spec.sizes), ", stride ", c10::IntArrayRef(spec.strides), ") reaches beyond its storage '",
                spec.storage, "' of ", info.numel, " elements");
    if (empty) {
      out.emplace(key, at::empty(spec.sizes, at::TensorOptions().dtype(info.dtype)));
    } else {
      out.emplace(key, it->second.as_strided(spec.sizes, spec.strides, spec.offset).contiguous());
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Containers.

struct Mapping {
  const uint8_t* data = nullptr;
  size_t size = 0;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  explicit Mapping(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    TORCH_CHECK(fd >= 0, "cannot open torch checkpoint '", path, "': ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      TORCH_CHECK(false, "cannot stat torch checkpoint '", path, "': ", std::strerror(err));
    }
    size = static_cast<size_t>(st.st_size);
    if (size == 0) {
      ::close(fd);
      TORCH_CHECK(false, path, ": empty file, not a torch checkpoint");
    }
    void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    TORCH_CHECK(m != MAP_FAILED, "cannot map torch checkpoint '", path, "': ", std::strerror(err));
    data = static_cast<const uint8_t*>(m);
  }
  ~Mapping() {
    if (data) ::munmap(const_cast<uint8_t*>(data), size);
  }
};

/// One stored (uncompressed) member of a zip archive.
struct ZipMember {
  uint64_t header = 0;  // offset of the local file header
  uint64_t size = 0;
  uint32_t crc = 0;
  uint16_t method = 0;
};

/// Central directory of a zip archive (zip64 included), every offset checked against the file.
std::map<std::string, ZipMember> zip_directory(const uint8_t* d, size_t n, const std::string& path) {
  TORCH_CHECK(n >= 22, path, ": truncated zip archive");
  size_t eocd = n;
  for (size_t p = n - 22;; --p) {
    if (le32(d + p) == 0x06054b50u) {
      eocd = p;
      break;
    }
    if (p == 0 || n - p > 22 + 65535) break;
  }
  TORCH_CHECK(eocd < n, path, ": corrupt zip archive (no end of central directory record; truncated file?)");
  uint64_t entries = le16(d + eocd + 10);
  uint64_t cd_size = le32(d + eocd + 12);
  uint64_t cd_offset = le32(d + eocd + 16);
  if (entries == 0xffff || cd_size == 0xffffffffu || cd_offset == 0xffffffffu) {
    TORCH_CHECK(eocd >= 20 && le32(d + eocd - 20) == 0x07064b50u, path, ": corrupt zip64 archive (no locator)");
    const uint64_t z = le64(d + eocd - 20 + 8);
    TORCH_CHECK(n >= 56 && z <= n - 56 && le32(d + z) == 0x06064b50u, path, ": corrupt zip64 end of central directory");
    entries = le64(d + z + 32);
    cd_size = le64(d + z + 40);
    cd_offset = le64(d + z + 48);
  }
  TORCH_CHECK(cd_offset <= n && cd_size <= n - cd_offset, path, ": corrupt zip archive (central directory at ",
              cd_offset, " + ", cd_size, " beyond the file's ", n, " bytes)");
  std::map<std::string, ZipMember> out;
  size_t p = cd_offset;
  const size_t end = cd_offset + cd_size;
  for (uint64_t e = 0; e < entries; ++e) {
    TORCH_CHECK(p + 46 <= end && le32(d + p) == 0x02014b50u, path, ": corrupt zip central directory entry ", e);
    ZipMember m;
    m.method = le16(d + p + 10);
    m.crc = le32(d + p + 16);
    uint64_t csize = le32(d + p + 20);
    m.size = le32(d + p + 24);
    const size_t name_len = le16(d + p + 28), extra_len = le16(d + p + 30), comment_len = le16(d + p + 32);
    m.header = le32(d + p + 42);
    TORCH_CHECK(p + 46 + name_len + extra_len + comment_len <= end, path, ": corrupt zip central directory entry ", e);
    std::string name(reinterpret_cast<const char*>(d + p + 46), name_len);
    // zip64 extended information: the 8-byte values of the fields saturated above, in this order.
    const uint8_t* x = d + p + 46 + name_len;
    for (size_t q = 0; q + 4 <= extra_len;) {
      const uint16_t id = le16(x + q), len = le16(x + q + 2);
      TORCH_CHECK(q + 4 + len <= extra_len, path, ": corrupt zip extra field of '", name, "'");
      if (id == 0x0001) {
        size_t r = q + 4;
        auto field = [&](uint64_t& v) {
          TORCH_CHECK(r + 8 <= q + 4 + len, path, ": corrupt zip64 field of '", name, "'");
          v = le64(x + r);
          r += 8;
        };
        if (m.size == 0xffffffffu) field(m.size);
        if (csize == 0xffffffffu) field(csize);
        if (m.header == 0xffffffffu) field(m.header);
      }
      q += 4 + len;
    }
    TORCH_CHECK(csize == m.size || m.method != 0, path, ": corrupt zip entry '", name, "' (sizes differ)");
    out[std::move(name)] = m;
    p += 46 + name_len + extra_len + comment_len;
  }
  return out;
}

/// The bytes of one member, checked: stored, inside the file, CRC-32 as recorded.
StorageBytes zip_read(const uint8_t* d, size_t n, const std::string& name, const ZipMember& m, const std::string& path) {
  TORCH_CHECK(m.method == 0, path, ": zip entry '", name, "' is compressed (method ", m.method,
              "); torch.save stores entries uncompressed");
  TORCH_CHECK(m.header <= n && n - m.header >= 30 && le32(d + m.header) == 0x04034b50u, path,
              ": corrupt zip local header of '", name, "'");
  const uint64_t begin = m.header + 30 + le16(d + m.header + 26) + le16(d + m.header + 28);
  TORCH_CHECK(begin <= n && m.size <= n - begin, path, ": zip entry '", name, "' (", m.size, " bytes at ", begin,
              ") lies beyond the file's ", n, " bytes (truncated file?)");
  const uLong crc = crc32_z(crc32_z(0L, Z_NULL, 0), d + begin, static_cast<z_size_t>(m.size));
  TORCH_CHECK(crc == m.crc, path, ": CRC-32 mismatch in zip entry '", name, "' (corrupt file)");
  return {d + begin, static_cast<size_t>(m.size)};
}

std::map<std::string, at::Tensor> load_zip(const uint8_t* d, size_t n, const std::string& path) {
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
  std::map<std::string, StorageInfo> infos;
  Unpickler u(pkl.data, pkl.size, 0, path, "data.pkl", infos);
  const Ref root = u.run();
  TORCH_CHECK(root->kind == Value::Kind::kDict, path, ": top-level object is a ", kind_name(root->kind),
              ", expected a dict (state dict)");
  std::map<std::string, TensorSpec> specs;
  flatten(root, "", 0, path, specs);
  std::map<std::string, StorageBytes> bytes;
  for (const auto& [key, info] : infos) {
    const std::string member = prefix + "data/" + key;
    const auto it = dir.find(member);
    TORCH_CHECK(it != dir.end(), path, ": storage '", key, "' missing from the archive ('", member, "')");
    bytes[key] = zip_read(d, n, member, it->second, path);
  }
  return materialize(specs, infos, bytes, path);
}

// PROTO 2, LONG1 of 10 bytes: 0x1950a86a20f9469cfc6c little-endian, STOP.
constexpr uint8_t kLegacyMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                    0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e};

std::map<std::string, at::Tensor> load_legacy(const uint8_t* d, size_t n, const std::string& path) {
  std::map<std::string, StorageInfo> infos;
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
  std::map<std::string, TensorSpec> specs;
  flatten(root, "", 0, path, specs);
  const Ref keys = next("storage key list");
  TORCH_CHECK(keys->kind == Value::Kind::kList, path, ": malformed storage key list");
  // Each storage: its element count (int64) and then its raw bytes, in the order of the key list.
  std::map<std::string, StorageBytes> bytes;
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
  return materialize(specs, infos, bytes, path);
}

}  // namespace

std::map<std::string, at::Tensor> load_torch_file(const std::string& path) {
  const Mapping file(path);
  const uint8_t* d = file.data;
  const size_t n = file.size;
  if (n >= 4 && le32(d) == 0x04034b50u) return load_zip(d, n, path);
  TORCH_CHECK(n >= sizeof(kLegacyMagic) && std::memcmp(d, kLegacyMagic, sizeof(kLegacyMagic)) == 0, path,
              ": not a torch.save checkpoint (neither a zip archive nor the legacy magic number)");
  return load_legacy(d, n, path);
}

std::map<std::string, at::Tensor> load_weights_file(const std::string& path) {
  if (path.ends_with(".safetensors") || path.ends_with(".index.json")) return load_file(path);
  return load_torch_file(path);
}

}  // namespace lookahead::model::io
