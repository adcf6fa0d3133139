// safetensors reader and writer. The header is validated by a streaming (SAX) JSON handler, so a
// hostile header costs no memory beyond its own size and duplicate keys are caught (a DOM parser
// would keep the last one silently); the reader copies tensors out of an mmap; the writer lays
// files out exactly as the reference Python/Rust writer does.
#include "model/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <unordered_set>

namespace lookahead::model::io {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host would need byte swaps");

using json = nlohmann::json;

struct DtypeEntry {
  const char* name;
  at::ScalarType type;
  size_t itemsize;
};

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

// Prefix of every error message, so each names the file it is about.
std::string in_file(const std::string& origin) { return "safetensors file '" + origin + "': "; }
std::string in_tensor(const std::string& origin, const std::string& name) {
  return in_file(origin) + "tensor '" + name + "': ";
}

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  std::memcpy(&v, p, sizeof(v));  // little-endian host (asserted above)
  return v;
}

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

// Closes a file descriptor on scope exit.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

std::string errno_text() { return std::strerror(errno); }

void write_all(int fd, const void* data, size_t size, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    // A single write() moves at most ~2 GiB on Linux; ask for 1 GiB at a time.
    ssize_t n = ::write(fd, p, std::min<size_t>(size, size_t{1} << 30));
    if (n < 0 && errno == EINTR) continue;
    TORCH_CHECK(n > 0, "cannot write safetensors file '", path, "': ", errno_text());
    p += n;
    size -= static_cast<size_t>(n);
  }
}

// JSON string literal for `s`, escaped as the reference (serde_json) escapes it: ", \ and control
// characters only, other UTF-8 written as is. Throws json::type_error for invalid UTF-8.
std::string json_string(const std::string& s) { return json(s).dump(-1, ' ', false, json::error_handler_t::strict); }

// Removes the temporary file unless the write completed and it was renamed into place.
struct TempFile {
  std::string path;
  int fd = -1;
  bool committed = false;
  ~TempFile() {
    if (fd >= 0) ::close(fd);
    if (!committed && !path.empty()) ::unlink(path.c_str());
  }
};

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && std::string_view(s).substr(s.size() - suffix.size()) == suffix;
}

std::map<std::string, at::Tensor> load_index(const std::string& index_path) {
  namespace fs = std::filesystem;
  std::ifstream in(index_path, std::ios::binary);
  TORCH_CHECK(in.good(), "cannot open safetensors index '", index_path, "': ", errno_text());
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();

  // Duplicate keys would silently keep the last one; track keys per open object to reject them.
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  json::parser_callback_t on_event = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == json::parse_event_t::key && !open_objects.empty() && duplicate.empty()) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(k).second) duplicate = k;
    }
    return true;
  };
  json index;
  try {
    index = json::parse(text, on_event);
  } catch (const json::exception& e) {
    TORCH_CHECK(false, "safetensors index '", index_path, "' is not valid JSON: ", e.what());
  }
  TORCH_CHECK(duplicate.empty(), "safetensors index '", index_path, "': duplicate key '", duplicate, "'");
  TORCH_CHECK(index.is_object(), "safetensors index '", index_path, "' must be a JSON object");
  auto wm = index.find("weight_map");
  TORCH_CHECK(wm != index.end() && wm->is_object(), "safetensors index '", index_path,
              "' has no 'weight_map' object");
  TORCH_CHECK(!wm->empty(), "safetensors index '", index_path, "': 'weight_map' lists no tensors");

  std::map<std::string, std::string> shard_of;           // tensor -> shard file name
  std::map<std::string, std::set<std::string>> listed;  // shard file name -> its tensors
  for (const auto& [name, shard] : wm->items()) {
    TORCH_CHECK(shard.is_string(), "safetensors index '", index_path, "': tensor '", name,
                "': shard must be a file name string");
    // Normalized, so that "a.safetensors" and "./a.safetensors" name one shard.
    const auto& given = shard.get_ref<const std::string&>();
    const fs::path rel = fs::path(given).lexically_normal();
    const std::string file = rel.string();
    bool escapes = given.empty() || rel.is_absolute() ||
                   std::any_of(rel.begin(), rel.end(), [](const fs::path& part) { return part == ".."; });
    // Shards live beside the index; a path leaving that folder is a corrupt or hostile index.
    TORCH_CHECK(!escapes, "safetensors index '", index_path, "': tensor '", name, "': shard '", given,
                "' must be a relative path inside the index's folder");
    shard_of[name] = file;
    listed[file].insert(name);
  }

  const fs::path folder = fs::path(index_path).parent_path();
  std::map<std::string, at::Tensor> out;
  for (const auto& [file, names] : listed) {
    const std::string shard_path = (folder / file).string();
    auto shard = SafetensorsFile::open(shard_path);
    for (const auto& name : names) {
      TORCH_CHECK(shard->contains(name), "safetensors index '", index_path, "': tensor '", name,
                  "' is listed in shard '", shard_path, "', which does not contain it");
    }
    for (const auto& t : shard->tensors()) {
      auto it = shard_of.find(t.name);
      TORCH_CHECK(it != shard_of.end(), "safetensors index '", index_path, "': tensor '", t.name, "' in shard '",
                  shard_path, "' is not listed in the weight_map");
      TORCH_CHECK(it->second == file, "safetensors index '", index_path, "': tensor '", t.name,
                  "' appears in two shards: '", shard_path, "' and '", (folder / it->second).string(), "'");
      out.emplace(t.name, shard->get(t.name));
    }
  }
  return out;
}

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
                ") extend beyond the data section of ", data_size, " bytes");
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
  const uint64_t n = read_le64(bytes);
  TORCH_CHECK(n <= kMaxHeaderBytes, in_file(origin), "header length ", n, " exceeds the limit of ", kMaxHeaderBytes);
  TORCH_CHECK(n <= size - 8, in_file(origin), "header length ", n, " extends beyond the file's ", size, " bytes");
  std::string_view text(reinterpret_cast<const char*>(bytes) + 8, n);
  return parse_header(text, size - 8 - n, origin);
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  TORCH_CHECK(fd.fd >= 0, "cannot open safetensors file '", path, "': ", errno_text());
  struct stat st {};
  TORCH_CHECK(::fstat(fd.fd, &st) == 0, "cannot stat safetensors file '", path, "': ", errno_text());
  TORCH_CHECK(S_ISREG(st.st_mode), in_file(path), "not a regular file");
  const auto size = static_cast<size_t>(st.st_size);
  TORCH_CHECK(size >= 8, in_file(path), "file of ", size, " bytes is shorter than the 8-byte header length");

  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.fd, 0);
  TORCH_CHECK(map != MAP_FAILED, "cannot map safetensors file '", path, "': ", errno_text());
  file->map_ = map;  // unmapped by the destructor, also when validation below throws
  file->map_size_ = size;
  const auto* bytes = static_cast<const uint8_t*>(map);
  file->header_ = parse_image(bytes, size, path);
  file->data_ = bytes + file->header_.data_offset;
  for (size_t i = 0; i < file->header_.tensors.size(); ++i) file->index_.emplace(file->header_.tensors[i].name, i);
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

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

std::map<std::string, at::Tensor> load_file(const std::string& path) {
  if (ends_with(path, ".index.json")) return load_index(path);
  auto file = SafetensorsFile::open(path);
  std::map<std::string, at::Tensor> out;
  for (const auto& t : file->tensors()) out.emplace(t.name, file->get(t.name));
  return out;
}

void save_file(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
               const std::map<std::string, std::string>& metadata) {
  struct Item {
    const std::string* name;
    const at::Tensor* tensor;
    size_t rank;
    uint64_t bytes;
  };
  std::vector<Item> items;
  items.reserve(tensors.size());
  std::unordered_set<std::string> names;
  for (const auto& [name, tensor] : tensors) {
    TORCH_CHECK(name != "__metadata__", in_tensor(path, name), "the name is reserved for the metadata");
    TORCH_CHECK(names.insert(name).second, in_tensor(path, name), "duplicate tensor name");
    TORCH_CHECK(tensor.defined(), in_tensor(path, name), "undefined tensor");
    TORCH_CHECK(tensor.layout() == at::kStrided, in_tensor(path, name), "only dense tensors can be saved, not ",
                tensor.layout());
    TORCH_CHECK(find_dtype(tensor.scalar_type()) != nullptr, in_tensor(path, name), "dtype ", tensor.scalar_type(),
                " has no supported safetensors equivalent (supported: ", supported_dtypes(), ")");
    items.push_back({&name, &tensor, dtype_rank(tensor.scalar_type()),
                     static_cast<uint64_t>(tensor.numel()) * find_dtype(tensor.scalar_type())->itemsize});
  }
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.rank != b.rank ? a.rank > b.rank : *a.name < *b.name;
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
      escaping = item.name;
      if (i != 0) header += ',';
      header += json_string(*item.name);
      header += ":{\"dtype\":\"";
      header += dtype_to_string(item.tensor->scalar_type());
      header += "\",\"shape\":[";
      for (int64_t d = 0; d < item.tensor->dim(); ++d) {
        if (d != 0) header += ',';
        header += std::to_string(item.tensor->size(d));
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

  // A unique name beside the target, so the rename stays within one file system.
  static std::atomic<uint64_t> counter{0};
  TempFile tmp;
  for (int attempt = 0; tmp.fd < 0; ++attempt) {
    tmp.path = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
    tmp.fd = ::open(tmp.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (tmp.fd < 0 && (errno != EEXIST || attempt > 100)) {
      const std::string reason = errno_text();
      tmp.path.clear();  // nothing was created
      TORCH_CHECK(false, "cannot create safetensors file '", path, "': ", reason);
    }
  }
  uint8_t length[8];
  const uint64_t n = header.size();
  std::memcpy(length, &n, sizeof(n));
  write_all(tmp.fd, length, sizeof(length), path);
  write_all(tmp.fd, header.data(), header.size(), path);
  for (const Item& item : items) {
    if (item.bytes == 0) continue;
    // One dense CPU copy at a time, so saving never holds a second copy of the whole set.
    at::Tensor t = item.tensor->to(at::kCPU).contiguous();
    write_all(tmp.fd, t.data_ptr(), item.bytes, path);
  }
  TORCH_CHECK(::fsync(tmp.fd) == 0, "cannot sync safetensors file '", path, "': ", errno_text());
  const int fd = tmp.fd;
  tmp.fd = -1;
  TORCH_CHECK(::close(fd) == 0, "cannot close safetensors file '", path, "': ", errno_text());
  TORCH_CHECK(::rename(tmp.path.c_str(), path.c_str()) == 0, "cannot rename '", tmp.path, "' to '", path,
              "': ", errno_text());
  tmp.committed = true;
  // Make the rename itself durable; a failure here leaves a complete file, so it is not an error.
  std::string folder = std::filesystem::path(path).parent_path().string();
  Fd dir(::open(folder.empty() ? "." : folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.fd >= 0) ::fsync(dir.fd);
}

}  // namespace lookahead::model::io
