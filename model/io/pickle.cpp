// The restricted pickle machine (see pickle.h).
#include "model/io/pickle.h"

#include "model/io/little_endian.h"

namespace lookahead::model::io::pickle {

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


}  // namespace lookahead::model::io::pickle
