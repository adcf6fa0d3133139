// safetensors header parsing and validation (see safetensors_header.h).
#include "model/io/safetensors_header.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <tuple>
#include <unordered_set>

#include "model/io/little_endian.h"

namespace lookahead::model::io {

namespace detail {

// In the reference implementation's dtype order (its enum order): its writer lays tensors out by
// descending position in this list, then by name, and byte-identical output must do the same. The
// order is also by width, so wider (more strictly aligned) tensors come first.
constexpr DtypeEntry kDtypes[] = {
    {"BOOL", at::kBool, 1}, {"U8", at::kByte, 1},  {"I8", at::kChar, 1},  {"I16", at::kShort, 2},
    {"F16", at::kHalf, 2},  {"BF16", at::kBFloat16, 2}, {"I32", at::kInt, 4}, {"F32", at::kFloat, 4},
    {"F64", at::kDouble, 8}, {"I64", at::kLong, 8}};

const DtypeEntry* find_dtype(std::string_view name) {
  for (const auto& d : kDtypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

const DtypeEntry* find_dtype(at::ScalarType type) {
  for (const auto& d : kDtypes) {
    if (type == d.type) return &d;
  }
  return nullptr;
}

size_t dtype_rank(at::ScalarType type) { return static_cast<size_t>(find_dtype(type) - kDtypes); }

std::string supported_dtypes() {
  std::string out;
  for (const auto& d : kDtypes) {
    if (!out.empty()) out += ", ";
    out += d.name;
  }
  return out;
}

std::string in_file(const std::string& origin) { return "safetensors file '" + origin + "': "; }
std::string in_tensor(const std::string& origin, const std::string& name) {
  return in_file(origin) + "tensor '" + name + "': ";
}

}  // namespace detail

namespace {

using json = nlohmann::json;
using namespace detail;

// Streams the header's JSON events into TensorInfo entries, rejecting anything that is not the
// expected shape at the first offending token. Unknown fields inside a tensor entry are skipped,
// as the reference reader does. On failure `error` holds the message and the parse stops.
class HeaderHandler {
 public:
  explicit HeaderHandler(const std::string& origin) : origin_(origin) {}

  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  std::string error;

  bool null() { return scalar(Token::kNull, 0, "null"); }
  bool boolean(bool) { return scalar(Token::kOther, 0, "a boolean"); }
  bool number_integer(json::number_integer_t v) {
    // nlohmann reports non-negative integers through number_unsigned, so this one is negative.
    return scalar(Token::kNegative, 0, std::to_string(v));
  }
  bool number_unsigned(json::number_unsigned_t v) { return scalar(Token::kUnsigned, v, std::to_string(v)); }
  bool number_float(json::number_float_t, const json::string_t& text) {
    return scalar(Token::kOther, 0, "the non-integer " + text);
  }
  bool string(json::string_t& v) {
    if (state_ == State::kMetaValue) {
      metadata.emplace(key_, v);
      state_ = State::kMetaKey;
      return true;
    }
    if (state_ == State::kDtype) {
      const DtypeEntry* d = find_dtype(v);
      if (d == nullptr) {
        return fail_tensor("unsupported dtype '" + v + "' (supported: " + supported_dtypes() + ")");
      }
      current_.dtype = d->type;
      state_ = State::kField;
      return true;
    }
    return scalar(Token::kOther, 0, "a string");
  }
  bool binary(json::binary_t&) { return scalar(Token::kOther, 0, "binary data"); }

  bool start_object(std::size_t) {
    switch (state_) {
      case State::kTop:
        state_ = State::kTopKey;
        return true;
      case State::kMetaStart:
        state_ = State::kMetaKey;
        return true;
      case State::kEntryStart:
        state_ = State::kField;
        return true;
      case State::kSkip:
        ++skip_depth_;
        return true;
      default:
        return unexpected("an object");
    }
  }
  bool end_object() {
    switch (state_) {
      case State::kTopKey:
        state_ = State::kDone;
        return true;
      case State::kMetaKey:
        state_ = State::kTopKey;
        return true;
      case State::kField:
        return finish_entry();
      case State::kSkip:
        return leave_skipped();
      default:
        return unexpected("the end of an object");
    }
  }
  bool key(json::string_t& k) {
    switch (state_) {
      case State::kTopKey:
        if (!top_keys_.insert(k).second) {
          return fail(k == "__metadata__" ? std::string("duplicate '__metadata__'")
                                          : "tensor '" + k + "': duplicate tensor name");
        }
        if (k == "__metadata__") {
          state_ = State::kMetaStart;
        } else {
          current_ = TensorInfo{};
          current_.name = k;
          seen_ = 0;
          state_ = State::kEntryStart;
        }
        return true;
      case State::kMetaKey:
        if (metadata.count(k) != 0) return fail("duplicate __metadata__ key '" + k + "'");
        key_ = k;
        state_ = State::kMetaValue;
        return true;
      case State::kField: {
        unsigned bit = 0;
        if (k == "dtype") {
          bit = kSeenDtype;
          state_ = State::kDtype;
        } else if (k == "shape") {
          bit = kSeenShape;
          state_ = State::kShapeStart;
        } else if (k == "data_offsets") {
          bit = kSeenOffsets;
          state_ = State::kOffsetsStart;
        } else {
          state_ = State::kSkip;
          skip_depth_ = 0;
          return true;
        }
        if ((seen_ & bit) != 0) return fail_tensor("duplicate field '" + k + "'");
        seen_ |= bit;
        key_ = k;
        return true;
      }
      case State::kSkip:
        return true;
      default:
        return unexpected("a key");
    }
  }
  bool start_array(std::size_t) {
    switch (state_) {
      case State::kShapeStart:
        state_ = State::kShape;
        return true;
      case State::kOffsetsStart:
        state_ = State::kOffsets;
        offset_count_ = 0;
        return true;
      case State::kSkip:
        ++skip_depth_;
        return true;
      default:
        return unexpected("an array");
    }
  }
  bool end_array() {
    switch (state_) {
      case State::kShape:
        state_ = State::kField;
        return true;
      case State::kOffsets:
        if (offset_count_ != 2) return fail_tensor("'data_offsets' must hold exactly 2 integers [begin, end]");
        state_ = State::kField;
        return true;
      case State::kSkip:
        return leave_skipped();
      default:
        return unexpected("the end of an array");
    }
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) {
    if (error.empty()) error = in_file(origin_) + "header is not valid JSON: " + ex.what();
    return false;
  }

 private:
  enum class State {
    kTop,           // before the top-level value
    kTopKey,        // in the top object: a key (tensor name or __metadata__) or its end
    kMetaStart,     // the __metadata__ value: an object or null
    kMetaKey,       // in __metadata__: a key or the end
    kMetaValue,     // a metadata value: a string
    kEntryStart,    // a tensor entry: an object
    kField,         // in an entry: a field name or the end
    kDtype,         // the dtype value
    kShapeStart,    // the shape value: an array
    kShape,         // in the shape array: non-negative integers
    kOffsetsStart,  // the data_offsets value: an array
    kOffsets,       // in data_offsets: two non-negative integers
    kSkip,          // inside an unknown field's value
    kDone,
  };
  enum class Token { kNull, kNegative, kUnsigned, kOther };
  static constexpr unsigned kSeenDtype = 1, kSeenShape = 2, kSeenOffsets = 4;

  bool fail(const std::string& message) {
    if (error.empty()) error = in_file(origin_) + message;
    return false;
  }
  bool fail_tensor(const std::string& message) { return fail("tensor '" + current_.name + "': " + message); }

  bool scalar(Token token, uint64_t value, const std::string& what) {
    switch (state_) {
      case State::kMetaStart:
        if (token == Token::kNull) {  // the reference reader accepts a null __metadata__
          state_ = State::kTopKey;
          return true;
        }
        return fail("'__metadata__' must be an object of strings, not " + what);
      case State::kShape:
        if (token == Token::kUnsigned) {
          if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
            return fail_tensor("shape dimension " + what + " is too large");
          }
          current_.shape.push_back(static_cast<int64_t>(value));
          return true;
        }
        return fail_tensor("'shape' must hold non-negative integers, not " + what);
      case State::kOffsets:
        if (token != Token::kUnsigned) return fail_tensor("'data_offsets' must hold non-negative integers, not " + what);
        if (offset_count_ >= 2) return fail_tensor("'data_offsets' must hold exactly 2 integers [begin, end]");
        (offset_count_ == 0 ? current_.begin : current_.end) = value;
        ++offset_count_;
        return true;
      case State::kSkip:
        if (skip_depth_ == 0) state_ = State::kField;
        return true;
      default:
        return unexpected(what);
    }
  }

  bool leave_skipped() {
    if (--skip_depth_ == 0) state_ = State::kField;
    return true;
  }

  bool finish_entry() {
    if ((seen_ & kSeenDtype) == 0) return fail_tensor("missing field 'dtype'");
    if ((seen_ & kSeenShape) == 0) return fail_tensor("missing field 'shape'");
    if ((seen_ & kSeenOffsets) == 0) return fail_tensor("missing field 'data_offsets'");
    tensors.push_back(std::move(current_));
    current_ = TensorInfo{};
    state_ = State::kTopKey;
    return true;
  }

  // A token that the current position does not allow, phrased for where it occurred.
  bool unexpected(const std::string& what) {
    switch (state_) {
      case State::kTop:
        return fail("header must be a JSON object, found " + what);
      case State::kMetaStart:
        return fail("'__metadata__' must be an object of strings, not " + what);
      case State::kMetaValue:
        return fail("__metadata__ value of '" + key_ + "' must be a string, not " + what);
      case State::kEntryStart:
        return fail_tensor("entry must be a JSON object, not " + what);
      case State::kDtype:
        return fail_tensor("'dtype' must be a string, not " + what);
      case State::kShapeStart:
        return fail_tensor("'shape' must be an array, not " + what);
      case State::kShape:
        return fail_tensor("'shape' must hold non-negative integers, not " + what);
      case State::kOffsetsStart:
        return fail_tensor("'data_offsets' must be an array, not " + what);
      case State::kOffsets:
        return fail_tensor("'data_offsets' must hold non-negative integers, not " + what);
      default:
        return fail("unexpected " + what + " in the header");
    }
  }

  const std::string& origin_;
  State state_ = State::kTop;
  TensorInfo current_;
  unsigned seen_ = 0;
  int offset_count_ = 0;
  size_t skip_depth_ = 0;
  std::string key_;
  std::unordered_set<std::string> top_keys_;
};

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string dtype_to_string(at::ScalarType dtype) {
  const DtypeEntry* d = find_dtype(dtype);
  TORCH_CHECK(d != nullptr, "dtype ", dtype, " has no supported safetensors equivalent (supported: ",
              supported_dtypes(), ")");
  return d->name;
}

at::ScalarType dtype_from_string(const std::string& dtype) {
  const DtypeEntry* d = find_dtype(dtype);
  TORCH_CHECK(d != nullptr, "unsupported safetensors dtype '", dtype, "' (supported: ", supported_dtypes(), ")");
  return d->type;
}

Header parse_header(std::string_view text, uint64_t data_size, const std::string& origin) {
  TORCH_CHECK(text.size() <= kMaxHeaderBytes, in_file(origin), "header of ", text.size(), " bytes exceeds the limit of ",
              kMaxHeaderBytes);
  TORCH_CHECK(!text.empty() && text.front() == '{', in_file(origin), "header must start with '{'");
  // The JSON lexer stops at a NUL byte as if the input ended there, which would let any bytes
  // follow the header; valid JSON text never holds one (strings escape it as \u0000).
  const size_t nul = text.find('\0');
  TORCH_CHECK(nul == std::string_view::npos, in_file(origin), "header is not valid JSON: NUL byte at offset ", nul);

  HeaderHandler handler(origin);
  bool ok = json::sax_parse(text.data(), text.data() + text.size(), &handler);
  if (!ok || !handler.error.empty()) {
    TORCH_CHECK(false, handler.error.empty() ? in_file(origin) + "header is not valid JSON" : handler.error);
  }

  Header header;
  header.metadata = std::move(handler.metadata);
  header.tensors = std::move(handler.tensors);
  header.data_offset = 8 + text.size();

  for (const auto& t : header.tensors) {
    // Torch lays out strides as products of the dimensions, zeros included, so bound the product
    // of the non-zero dimensions rather than numel alone.
    int64_t span = 1;
    bool empty = false;
    for (int64_t d : t.shape) {
      empty = empty || d == 0;
      TORCH_CHECK(!__builtin_mul_overflow(span, std::max<int64_t>(d, 1), &span), in_tensor(origin, t.name),
                  "shape ", c10::IntArrayRef(t.shape), " overflows");
    }
    int64_t bytes = 0;
    TORCH_CHECK(!__builtin_mul_overflow(empty ? 0 : span, static_cast<int64_t>(find_dtype(t.dtype)->itemsize), &bytes),
                in_tensor(origin, t.name), "byte size of shape ", c10::IntArrayRef(t.shape), " overflows");
    TORCH_CHECK(t.end >= t.begin, in_tensor(origin, t.name), "data_offsets end ", t.end, " is before begin ", t.begin);
    TORCH_CHECK(t.end - t.begin == static_cast<uint64_t>(bytes), in_tensor(origin, t.name), "data_offsets [", t.begin,
                ", ", t.end, ") span ", t.end - t.begin, " bytes but ", dtype_to_string(t.dtype), " shape ",
                c10::IntArrayRef(t.shape), " needs ", bytes);
    TORCH_CHECK(t.end <= data_size, in_tensor(origin, t.name), "data_offsets [", t.begin, ", ", t.end,
                ") extend beyond the data section of ", data_size, " bytes (a truncated file?)");
  }

  std::sort(header.tensors.begin(), header.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  // Walk the tensors in offset order: each must start where the previous one ended, and the last
  // must end at the data section's end (the reference rejects holes and trailing bytes).
  uint64_t cursor = 0;
  const TensorInfo* last = nullptr;  // the tensor that ends at `cursor`
  for (const auto& t : header.tensors) {
    TORCH_CHECK(t.begin >= cursor, in_tensor(origin, t.name), "data_offsets [", t.begin, ", ", t.end,
                ") overlap tensor '", last ? last->name : std::string(), "' [", last ? last->begin : 0, ", ", cursor, ")");
    TORCH_CHECK(t.begin == cursor, in_tensor(origin, t.name), "data section bytes [", cursor, ", ", t.begin,
                ") before it belong to no tensor");
    if (t.end > t.begin) last = &t;
    cursor = t.end;
  }
  TORCH_CHECK(cursor == data_size, in_file(origin), "data section has ", data_size, " bytes but the tensors cover only ",
              cursor);
  return header;
}

Header parse_image(const uint8_t* bytes, size_t size, const std::string& origin) {
  TORCH_CHECK(size >= 8, in_file(origin), "file of ", size, " bytes is shorter than the 8-byte header length");
  const uint64_t n = le64(bytes);
  TORCH_CHECK(n <= kMaxHeaderBytes, in_file(origin), "header length ", n, " exceeds the limit of ", kMaxHeaderBytes);
  TORCH_CHECK(n <= size - 8, in_file(origin), "header length ", n, " extends beyond the file's ", size, " bytes");
  std::string_view text(reinterpret_cast<const char*>(bytes) + 8, n);
  return parse_header(text, size - 8 - n, origin);
}
}  // namespace lookahead::model::io
