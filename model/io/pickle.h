// The restricted pickle machine of torch.save files: it knows only the opcodes torch.save emits
// and only four kinds of GLOBAL (OrderedDict, the two tensor rebuild functions and the typed
// storage classes), so nothing in a file can reach code. Tensors come out as specs (storage key,
// offset, sizes, strides); the caller supplies the storage bytes (torch_checkpoint.cpp).
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lookahead::model::io::pickle {

/// A tensor before its storage bytes are known.
struct TensorSpec {
  std::string storage;  // storage key
  int64_t offset = 0;   // in elements
  std::vector<int64_t> sizes, strides;
};

struct Value;
using Ref = std::shared_ptr<Value>;

/// One value on the machine's stack: a scalar, string, container, allowed global, storage or tensor.
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

/// A new empty value of `kind`.
inline Ref make(Value::Kind kind) {
  auto v = std::make_shared<Value>();
  v->kind = kind;
  return v;
}

/// "None", "dict", "tensor", ... (for error messages).
const char* kind_name(Value::Kind k);

/// dtype of a typed storage class name ("FloatStorage"); nullopt for anything else.
std::optional<at::ScalarType> storage_dtype(const std::string& name);

/// What BINPERSID records about one storage.
struct StorageInfo {
  at::ScalarType dtype = at::kFloat;
  int64_t numel = 0;
};

/// Runs one pickle of a file image in place. Every malformed or refused input throws c10::Error
/// naming `path`, the pickle (`what`: "data.pkl", "sys_info", ...) and the byte offset.
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

}  // namespace lookahead::model::io::pickle
