// safetensors reader and writer: round trips of every dtype and layout, the exact file layout, one
// error per kind of malformed file (each naming the file and tensor), sharded indexes, and parity
// with the Python `safetensors` package (SafetensorsParity.*, run by ctest with the interpreter
// and tests/parity/safetensors_oracle.py named in LA_SAFETENSORS_PYTHON / LA_SAFETENSORS_ORACLE).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>

#include "model/io/safetensors.h"
#include "model/io/safetensors_index.h"
#include "model/io/weight_shapes.h"

namespace lookahead::model::io {
namespace {

namespace fs = std::filesystem;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string le64(uint64_t v) {
  std::string out(8, '\0');
  std::memcpy(out.data(), &v, 8);
  return out;
}

// A file image from raw parts, with no validation, so malformed files can be built.
std::string image(const std::string& header, const std::string& data, std::optional<uint64_t> length = {}) {
  return le64(length.value_or(header.size())) + header + data;
}

// Same dtype, shape and bytes (NaN payloads and -0.0 included).
::testing::AssertionResult same_tensor(const at::Tensor& got, const at::Tensor& want) {
  if (got.scalar_type() != want.scalar_type() || got.sizes() != want.sizes()) {
    return ::testing::AssertionFailure() << "got " << got.scalar_type() << " " << got.sizes() << ", want "
                                         << want.scalar_type() << " " << want.sizes();
  }
  at::Tensor a = got.contiguous().cpu();
  at::Tensor b = want.contiguous().cpu();
  if (a.nbytes() != 0 && std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) != 0) {
    return ::testing::AssertionFailure() << "values differ:\n" << got << "\nvs\n" << want;
  }
  return ::testing::AssertionSuccess();
}

// Deterministic values of any supported dtype.
at::Tensor sample(at::ScalarType dtype, at::IntArrayRef shape) {
  const int64_t n = c10::multiply_integers(shape);
  at::Tensor base = at::arange(n, at::kLong);
  at::Tensor t;
  if (dtype == at::kBool) {
    t = base.remainder(3).eq(0);
  } else if (dtype == at::kByte) {
    t = base.mul(37).remainder(256).to(dtype);
  } else if (at::isFloatingType(dtype)) {
    t = base.to(at::kDouble).mul(0.75).sub(3.0).to(dtype);
  } else {
    t = base.sub(3).to(dtype);
  }
  return t.reshape(shape);
}

const std::vector<at::ScalarType> kAllDtypes = {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16, at::kLong,
                                                at::kInt,    at::kShort, at::kChar, at::kByte,     at::kBool};

// Expects `fn` to throw c10::Error whose message contains each of `parts`.
template <class Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning '" << parts.front() << "'";
  } catch (const c10::Error& e) {
    for (const auto& part : parts) {
      EXPECT_NE(e.msg().find(part), std::string::npos) << "message lacks '" << part << "':\n" << e.msg();
    }
  }
}

// Each test gets its own folder, removed afterwards.
class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("la_safetensors_" + std::to_string(::getpid()) + "_" + test->test_suite_name() + "_" + test->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::vector<std::string> listing() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
  fs::path dir_;
};

TEST(SafetensorsDtype, NamesMapBothWays) {
  const std::vector<std::pair<std::string, at::ScalarType>> names = {
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16}, {"I64", at::kLong},
      {"I32", at::kInt},    {"I16", at::kShort}, {"I8", at::kChar},  {"U8", at::kByte},       {"BOOL", at::kBool}};
  for (const auto& [name, dtype] : names) {
    EXPECT_EQ(dtype_to_string(dtype), name);
    EXPECT_EQ(dtype_from_string(name), dtype);
  }
  for (const char* unsupported : {"F8_E4M3", "F8_E5M2", "U16", "U32", "U64", "f32", ""}) {
    expect_error([&] { dtype_from_string(unsupported); }, {"unsupported safetensors dtype"});
  }
  expect_error([] { dtype_to_string(at::kComplexFloat); }, {"no supported safetensors equivalent"});
}

TEST_F(Safetensors, RoundTripsEveryDtype) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (auto dtype : kAllDtypes) tensors.emplace_back(dtype_to_string(dtype), sample(dtype, {2, 3}));
  save_file(path("all.safetensors"), tensors);
  auto file = SafetensorsFile::open(path("all.safetensors"));
  ASSERT_EQ(file->tensors().size(), tensors.size());
  for (const auto& [name, want] : tensors) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(file->contains(name));
    EXPECT_EQ(file->info(name).dtype, want.scalar_type());
    EXPECT_EQ(file->info(name).shape, want.sizes().vec());
    at::Tensor got = file->get(name);
    EXPECT_TRUE(same_tensor(got, want));
    EXPECT_TRUE(got.is_contiguous());
    EXPECT_TRUE(got.is_cpu());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(got.data_ptr()) % 16, 0u);
  }
  EXPECT_TRUE(file->metadata().empty());
  auto all = load_file(path("all.safetensors"));
  ASSERT_EQ(all.size(), tensors.size());
  for (const auto& [name, want] : tensors) EXPECT_TRUE(same_tensor(all.at(name), want)) << name;
}

TEST_F(Safetensors, RoundTripsRankZeroEmptyAndNonContiguous) {
  at::Tensor base = sample(at::kFloat, {4, 6});
  std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"scalar", at::scalar_tensor(2.5, at::kDouble)},
      {"scalar_bool", at::scalar_tensor(1, at::kBool)},
      {"empty", at::empty({0}, at::kFloat)},
      {"empty_3d", at::empty({2, 0, 3}, at::kBFloat16)},
      {"transposed", base.t()},
      {"strided", base.slice(1, 0, 6, 2)},
      {"expanded", sample(at::kInt, {3, 1}).expand({3, 4})},
      {"column", base.select(1, 3)},
  };
  save_file(path("views.safetensors"), tensors);
  auto file = SafetensorsFile::open(path("views.safetensors"));
  for (const auto& [name, want] : tensors) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(same_tensor(file->get(name), want));
  }
  EXPECT_EQ(file->info("scalar").shape, std::vector<int64_t>{});
  EXPECT_EQ(file->info("scalar").numel(), 1);
  EXPECT_EQ(file->info("empty_3d").numel(), 0);
  EXPECT_EQ(file->info("empty_3d").begin, file->info("empty_3d").end);
}

TEST_F(Safetensors, CopiesLargeTensorsInChunks) {
  // Past the reader's 16 MiB chunk, which it copies from several threads, with a ragged last chunk.
  at::Tensor big = at::arange(10'000'003, at::kFloat);
  at::Tensor small = at::ones({3}, at::kByte);
  save_file(path("big.safetensors"), {{"big", big}, {"small", small}});
  auto file = SafetensorsFile::open(path("big.safetensors"));
  EXPECT_TRUE(same_tensor(file->get("big"), big));
  EXPECT_TRUE(same_tensor(file->get("small"), small));
}

TEST_F(Safetensors, SavesCudaTensorsThroughTheCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::Tensor want = sample(at::kHalf, {5, 7});
  save_file(path("cuda.safetensors"), {{"w", want.cuda().t()}});
  EXPECT_TRUE(same_tensor(SafetensorsFile::open(path("cuda.safetensors"))->get("w"), want.t()));
}

TEST_F(Safetensors, RoundTripsMetadataAndUnusualNames) {
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"note", "ünïcode \"quoted\" \\ \n\t\x01 ✓"}, {"", "empty key"}, {"empty value", ""}};
  const std::vector<std::string> names = {"", " ", "a.b/c", "quote\"back\\slash", "ctl\n\t\x01\x1f\x7f", "é✓𝄞"};
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (size_t i = 0; i < names.size(); ++i) tensors.emplace_back(names[i], at::full({1}, static_cast<int64_t>(i)));
  save_file(path("meta.safetensors"), tensors, metadata);
  auto file = SafetensorsFile::open(path("meta.safetensors"));
  EXPECT_EQ(file->metadata(), metadata);
  for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ(file->get(names[i]).item<int64_t>(), static_cast<int64_t>(i));
}

TEST_F(Safetensors, WritesTheReferenceLayout) {
  save_file(path("layout.safetensors"),
            {{"b", at::tensor({1.0f, 2.0f})}, {"c", at::tensor({1, 2, 3}, at::kByte)}, {"a", at::scalar_tensor(5, at::kLong)}},
            {{"format", "pt"}});
  const std::string bytes = read_bytes(path("layout.safetensors"));
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  const std::string header = bytes.substr(8, n);
  const std::string json =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"I64","shape":[],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"c":{"dtype":"U8","shape":[3],"data_offsets":[16,19]}})";
  EXPECT_EQ(header.substr(0, json.size()), json);
  EXPECT_EQ(header.find_first_not_of(' ', json.size()), std::string::npos) << "padding is spaces only";
  EXPECT_LT(header.size() - json.size(), 8u);
  ASSERT_EQ(bytes.size(), 8 + n + 19);
  int64_t a = 0;
  std::memcpy(&a, bytes.data() + 8 + n, 8);
  EXPECT_EQ(a, 5);
  EXPECT_EQ(bytes.substr(8 + n + 16), std::string("\x01\x02\x03", 3));
}

TEST_F(Safetensors, OrdersTensorsByDtypeThenName) {
  // The reference orders dtypes I64 > F64 > F32 > I32 > BF16 > F16 > I16 > I8 > U8 > BOOL: wider
  // first, and within a width by its own dtype order rather than by name.
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (auto dtype : kAllDtypes) {
    tensors.emplace_back("z_" + dtype_to_string(dtype), sample(dtype, {3}));
    tensors.emplace_back("a_" + dtype_to_string(dtype), sample(dtype, {1}));
  }
  save_file(path("order.safetensors"), tensors);
  auto file = SafetensorsFile::open(path("order.safetensors"));
  std::vector<std::string> order;
  uint64_t cursor = 0;
  for (const auto& t : file->tensors()) {
    order.push_back(t.name);
    EXPECT_EQ(t.begin, cursor);
    cursor = t.end;
  }
  const std::vector<std::string> want = {"a_I64",  "z_I64", "a_F64", "z_F64", "a_F32", "z_F32", "a_I32",
                                         "z_I32",  "a_BF16", "z_BF16", "a_F16", "z_F16", "a_I16", "z_I16",
                                         "a_I8",   "z_I8",  "a_U8",  "z_U8",  "a_BOOL", "z_BOOL"};
  EXPECT_EQ(order, want);
}

TEST_F(Safetensors, WritesEmptyFilesAndOverwritesAtomically) {
  save_file(path("empty.safetensors"), {});
  EXPECT_EQ(read_bytes(path("empty.safetensors")), image("{}      ", ""));
  EXPECT_TRUE(SafetensorsFile::open(path("empty.safetensors"))->tensors().empty());

  save_file(path("w.safetensors"), {{"x", at::ones({4})}});
  auto old = SafetensorsFile::open(path("w.safetensors"));
  save_file(path("w.safetensors"), {{"y", at::zeros({2}, at::kHalf)}});
  // The open mapping still sees the replaced file; a fresh open sees the new one.
  EXPECT_TRUE(same_tensor(old->get("x"), at::ones({4})));
  auto now = SafetensorsFile::open(path("w.safetensors"));
  EXPECT_FALSE(now->contains("x"));
  EXPECT_TRUE(same_tensor(now->get("y"), at::zeros({2}, at::kHalf)));
  EXPECT_EQ(listing(), (std::vector<std::string>{"empty.safetensors", "w.safetensors"})) << "no temporary files left";
}

TEST_F(Safetensors, WriterRejectsBadInput) {
  const std::string p = path("bad_write.safetensors");
  expect_error([&] { save_file(p, {{"w", at::ones({1})}, {"w", at::ones({1})}}); }, {p, "'w'", "duplicate"});
  expect_error([&] { save_file(p, {{"__metadata__", at::ones({1})}}); }, {p, "reserved"});
  expect_error([&] { save_file(p, {{"c", at::ones({2}, at::kComplexFloat)}}); }, {p, "'c'", "ComplexFloat"});
  expect_error([&] { save_file(p, {{"u", at::ones({2}, at::kUInt16)}}); }, {p, "'u'", "UInt16"});
  expect_error([&] { save_file(p, {{"s", at::ones({2, 2}).to_sparse()}}); }, {p, "'s'", "dense"});
  expect_error([&] { save_file(p, {{"undef", at::Tensor()}}); }, {p, "'undef'", "undefined"});
  expect_error([&] { save_file(p, {{"bad\xff", at::ones({1})}}); }, {p, "not valid UTF-8"});
  expect_error([&] { save_file(p, {{"w", at::ones({1})}}, {{"k", "\xc3"}}); }, {p, "not valid UTF-8"});
  const std::string missing = path("no/such/folder/x.safetensors");
  expect_error([&] { save_file(missing, {{"w", at::ones({1})}}); }, {missing, "cannot create"});
  EXPECT_TRUE(listing().empty()) << "failed writes leave nothing behind";
}

TEST_F(Safetensors, ReadsOldFilesWithUnalignedDataAndLooseHeaders) {
  // A header of odd length (data section at an odd offset), whitespace, escapes, unknown fields,
  // a null __metadata__, and tensors listed out of offset order.
  std::string header =
      "{ \"__metadata__\" : null,\n \"d\\u00e9\": {\"shape\": [2], \"extra\": {\"nested\": [1, [2, {}]], \"x\": null},"
      " \"dtype\": \"F64\", \"data_offsets\": [4, 20]},\n \"s\": {\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[0,4],"
      "\"also\":\"ignored\"}}   ";
  std::string data(20, '\0');
  const int16_t s[2] = {-7, 300};
  const double d[2] = {1.5, -2.25};
  std::memcpy(data.data(), s, 4);
  std::memcpy(data.data() + 4, d, 16);
  if ((8 + header.size()) % 2 == 0) header += ' ';  // the data section must start unaligned
  write_bytes(path("old.safetensors"), image(header, data));
  auto file = SafetensorsFile::open(path("old.safetensors"));
  EXPECT_TRUE(file->metadata().empty());
  ASSERT_EQ(file->tensors().size(), 2u);
  EXPECT_EQ(file->tensors()[0].name, "s") << "tensors() is in offset order";
  at::Tensor got = file->get("d\xc3\xa9");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(got.data_ptr()) % alignof(double), 0u);
  EXPECT_TRUE(same_tensor(got, at::tensor({1.5, -2.25}, at::kDouble)));
  EXPECT_TRUE(same_tensor(file->get("s"), at::tensor({-7, 300}, at::kShort)));
}

TEST_F(Safetensors, RejectsBoolBytesOtherThanZeroAndOne) {
  write_bytes(path("bool.safetensors"),
              image(R"({"flags":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})", std::string("\x01\x00\x02", 3)));
  auto file = SafetensorsFile::open(path("bool.safetensors"));
  expect_error([&] { file->get("flags"); }, {path("bool.safetensors"), "'flags'", "BOOL"});
}

TEST_F(Safetensors, LookupOfAbsentTensorNamesFileAndTensor) {
  save_file(path("one.safetensors"), {{"w", at::ones({1})}});
  auto file = SafetensorsFile::open(path("one.safetensors"));
  EXPECT_FALSE(file->contains("nope"));
  expect_error([&] { file->info("nope"); }, {path("one.safetensors"), "'nope'", "no such tensor"});
  expect_error([&] { file->get("nope"); }, {path("one.safetensors"), "'nope'"});
}

TEST_F(Safetensors, RejectsUnreadableAndTruncatedFiles) {
  expect_error([&] { SafetensorsFile::open(path("missing.safetensors")); }, {path("missing.safetensors"), "cannot open"});
  expect_error([&] { SafetensorsFile::open(dir_.string()); }, {dir_.string(), "not a regular file"});
  for (size_t size : {0, 1, 7}) {
    const std::string p = path("short" + std::to_string(size) + ".safetensors");
    write_bytes(p, std::string(size, '\0'));
    expect_error([&] { SafetensorsFile::open(p); }, {p, "shorter than the 8-byte header length"});
  }
  const std::string beyond = path("beyond.safetensors");
  write_bytes(beyond, image("{}", "", 100));
  expect_error([&] { SafetensorsFile::open(beyond); }, {beyond, "header length 100 extends beyond the file's 10 bytes"});
  const std::string huge = path("huge.safetensors");
  for (uint64_t n : {kMaxHeaderBytes + 1, std::numeric_limits<uint64_t>::max()}) {
    write_bytes(huge, image("{}", "", n));
    expect_error([&] { SafetensorsFile::open(huge); }, {huge, "exceeds the limit of 100000000"});
  }
  const std::string cut = path("cut.safetensors");
  save_file(cut, {{"w", at::ones({4})}});
  std::string bytes = read_bytes(cut);
  write_bytes(cut, bytes.substr(0, bytes.size() - 1));
  expect_error([&] { SafetensorsFile::open(cut); }, {cut, "'w'", "beyond the data section of 15 bytes"});
}

struct BadHeader {
  const char* label;
  std::string header;
  std::string data;
  std::string tensor;  // named in the message; empty when no tensor is involved
  std::string message;
};

TEST_F(Safetensors, RejectsMalformedHeaders) {
  auto entry = [](const std::string& dtype, const std::string& shape, const std::string& offsets) {
    return R"({"dtype":)" + dtype + R"(,"shape":)" + shape + R"(,"data_offsets":)" + offsets + "}";
  };
  const std::string w4 = entry(R"("F32")", "[1]", "[0,4]");
  const std::string four(4, '\0'), eight(8, '\0'), twelve(12, '\0');
  const std::vector<BadHeader> cases = {
      {"array", "[1]", "", "", "header must start with '{'"},
      {"leading_space", " {}", "", "", "header must start with '{'"},
      {"empty_header", "", "", "", "header must start with '{'"},
      {"truncated_json", R"({"w":)", "", "", "header is not valid JSON"},
      {"trailing_garbage", "{} x", "", "", "header is not valid JSON"},
      {"nul_padding", std::string("{}\0\0", 4), "", "", "header is not valid JSON: NUL byte at offset 2"},
      {"nul_then_garbage", std::string("{}\0garbage", 10), "", "", "NUL byte at offset 2"},
      {"invalid_utf8", "{\"w\xff\":" + w4 + "}", four, "", "header is not valid JSON"},
      {"entry_number", R"({"w":5})", "", "w", "entry must be a JSON object"},
      {"entry_array", R"({"w":[]})", "", "w", "entry must be a JSON object"},
      {"missing_dtype", R"({"w":{"shape":[1],"data_offsets":[0,4]}})", four, "w", "missing field 'dtype'"},
      {"missing_shape", R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", four, "w", "missing field 'shape'"},
      {"missing_offsets", R"({"w":{"dtype":"F32","shape":[1]}})", "", "w", "missing field 'data_offsets'"},
      {"dtype_number", "{\"w\":" + entry("5", "[1]", "[0,4]") + "}", four, "w", "'dtype' must be a string"},
      {"dtype_f8", "{\"w\":" + entry(R"("F8_E4M3")", "[1]", "[0,1]") + "}", "x", "w", "unsupported dtype 'F8_E4M3'"},
      {"dtype_u16", "{\"w\":" + entry(R"("U16")", "[1]", "[0,2]") + "}", "xx", "w", "unsupported dtype 'U16'"},
      {"dtype_u32", "{\"w\":" + entry(R"("U32")", "[1]", "[0,4]") + "}", four, "w", "unsupported dtype 'U32'"},
      {"dtype_u64", "{\"w\":" + entry(R"("U64")", "[1]", "[0,8]") + "}", eight, "w", "unsupported dtype 'U64'"},
      {"dtype_lowercase", "{\"w\":" + entry(R"("f32")", "[1]", "[0,4]") + "}", four, "w", "unsupported dtype 'f32'"},
      {"shape_string", "{\"w\":" + entry(R"("F32")", R"("1")", "[0,4]") + "}", four, "w", "'shape' must be an array"},
      {"shape_negative", "{\"w\":" + entry(R"("F32")", "[-1]", "[0,4]") + "}", four, "w", "non-negative integers"},
      {"shape_float", "{\"w\":" + entry(R"("F32")", "[1.5]", "[0,4]") + "}", four, "w", "non-integer"},
      {"shape_float_integral", "{\"w\":" + entry(R"("F32")", "[1.0]", "[0,4]") + "}", four, "w", "non-integer"},
      {"shape_nested", "{\"w\":" + entry(R"("F32")", "[[1]]", "[0,4]") + "}", four, "w", "non-negative integers"},
      {"shape_too_large", "{\"w\":" + entry(R"("F32")", "[9223372036854775808]", "[0,4]") + "}", four, "w",
       "too large"},
      {"shape_beyond_u64", "{\"w\":" + entry(R"("F32")", "[18446744073709551616]", "[0,4]") + "}", four, "w",
       "non-integer"},
      {"shape_overflow", "{\"w\":" + entry(R"("F32")", "[4294967296,4294967296,4]", "[0,4]") + "}", four, "w",
       "overflows"},
      {"bytes_overflow", "{\"w\":" + entry(R"("F64")", "[4611686018427387904]", "[0,4]") + "}", four, "w",
       "overflows"},
      {"empty_dim_overflow", "{\"w\":" + entry(R"("F32")", "[0,4294967296,4294967296]", "[0,0]") + "}", "", "w",
       "overflows"},
      {"offsets_one", "{\"w\":" + entry(R"("F32")", "[1]", "[0]") + "}", four, "w", "exactly 2"},
      {"offsets_three", "{\"w\":" + entry(R"("F32")", "[1]", "[0,4,4]") + "}", four, "w", "exactly 2"},
      {"offsets_negative", "{\"w\":" + entry(R"("F32")", "[1]", "[-4,0]") + "}", four, "w", "non-negative integers"},
      {"offsets_string", "{\"w\":" + entry(R"("F32")", "[1]", R"(["0",4])") + "}", four, "w", "non-negative"},
      {"offsets_object", "{\"w\":" + entry(R"("F32")", "[1]", "{}") + "}", four, "w", "must be an array"},
      {"end_before_begin", "{\"w\":" + entry(R"("F32")", "[0]", "[4,0]") + "}", four, "w", "is before begin"},
      {"byte_count", "{\"w\":" + entry(R"("F32")", "[2]", "[0,4]") + "}", four, "w", "needs 8"},
      {"beyond_data", "{\"w\":" + entry(R"("F32")", "[2]", "[0,8]") + "}", four, "w", "beyond the data section"},
      {"overlap", "{\"a\":" + entry(R"("F32")", "[2]", "[0,8]") + ",\"b\":" + entry(R"("F32")", "[2]", "[4,12]") + "}",
       twelve, "b", "overlap tensor 'a'"},
      {"same_offsets", "{\"a\":" + w4 + ",\"b\":" + w4 + "}", four, "b", "overlap tensor 'a'"},
      {"empty_inside", "{\"a\":" + entry(R"("F32")", "[2]", "[0,8]") + ",\"e\":" + entry(R"("F32")", "[0]", "[4,4]") + "}",
       eight, "e", "overlap tensor 'a'"},
      {"hole", "{\"a\":" + w4 + ",\"b\":" + entry(R"("F32")", "[1]", "[8,12]") + "}", twelve, "b",
       "bytes [4, 8) before it belong to no tensor"},
      {"leading_hole", "{\"a\":" + entry(R"("F32")", "[1]", "[4,8]") + "}", eight, "a", "bytes [0, 4)"},
      {"trailing_bytes", "{\"a\":" + w4 + "}", eight, "", "data section has 8 bytes but the tensors cover only 4"},
      {"data_without_tensors", "{}", four, "", "cover only 0"},
      {"duplicate_name", "{\"w\":" + w4 + ",\"w\":" + w4 + "}", four, "w", "duplicate tensor name"},
      {"duplicate_field", R"({"w":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}})", four, "w",
       "duplicate field 'dtype'"},
      {"duplicate_metadata_key", R"({"__metadata__":{"k":"1","k":"2"}})", "", "", "duplicate __metadata__ key 'k'"},
      {"duplicate_metadata", R"({"__metadata__":{},"__metadata__":{}})", "", "", "duplicate '__metadata__'"},
      {"metadata_array", R"({"__metadata__":["a"]})", "", "", "'__metadata__' must be an object of strings"},
      {"metadata_string", R"({"__metadata__":"a"})", "", "", "'__metadata__' must be an object of strings"},
      {"metadata_number_value", R"({"__metadata__":{"k":1}})", "", "", "value of 'k' must be a string"},
      {"metadata_object_value", R"({"__metadata__":{"k":{}}})", "", "", "value of 'k' must be a string"},
      {"metadata_null_value", R"({"__metadata__":{"k":null}})", "", "", "value of 'k' must be a string"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.label);
    const std::string p = path(std::string("bad_") + c.label + ".safetensors");
    write_bytes(p, image(c.header, c.data));
    std::vector<std::string> parts = {p, c.message};
    if (!c.tensor.empty()) parts.push_back("tensor '" + c.tensor + "'");
    expect_error([&] { SafetensorsFile::open(p); }, parts);
  }
}

TEST_F(Safetensors, ParseHeaderWorksOnMemory) {
  const std::string json = R"({"__metadata__":{"k":"v"},"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})";
  Header h = parse_header(json, 4, "mem");
  ASSERT_EQ(h.tensors.size(), 1u);
  EXPECT_EQ(h.tensors[0].dtype, at::kBFloat16);
  EXPECT_EQ(h.metadata.at("k"), "v");
  EXPECT_EQ(h.data_offset, 8u + json.size());
  expect_error([] { parse_header("{}", 1, "mem.safetensors"); }, {"mem.safetensors", "cover only 0"});
  const std::string img = image("{}", "");
  EXPECT_TRUE(parse_image(reinterpret_cast<const uint8_t*>(img.data()), img.size(), "img").tensors.empty());
  const std::string trailing = image("{}", "x");
  expect_error([&] { parse_image(reinterpret_cast<const uint8_t*>(trailing.data()), trailing.size(), "img"); },
               {"img", "cover only 0"});
  expect_error([&] { parse_image(reinterpret_cast<const uint8_t*>(img.data()), 9, "img"); }, {"img", "extends beyond"});
}

// ---- sharded checkpoints -----------------------------------------------------------------------

class SafetensorsSharded : public Safetensors {
 protected:
  void SetUp() override {
    Safetensors::SetUp();
    save_file(path("model-00001-of-00002.safetensors"), {{"a", sample(at::kFloat, {2, 2})}, {"b", sample(at::kLong, {3})}});
    save_file(path("model-00002-of-00002.safetensors"), {{"c", sample(at::kHalf, {4})}});
  }
  std::string index(const std::string& json) {
    const std::string p = path("model.safetensors.index.json");
    write_bytes(p, json);
    return p;
  }
  static constexpr const char* kGood =
      R"({"metadata":{"total_size":44},"weight_map":{"a":"model-00001-of-00002.safetensors",)"
      R"("b":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}})";
};

TEST_F(SafetensorsSharded, LoadsEveryShard) {
  auto all = load_file(index(kGood));
  ASSERT_EQ(all.size(), 3u);
  EXPECT_TRUE(same_tensor(all.at("a"), sample(at::kFloat, {2, 2})));
  EXPECT_TRUE(same_tensor(all.at("b"), sample(at::kLong, {3})));
  EXPECT_TRUE(same_tensor(all.at("c"), sample(at::kHalf, {4})));
}

TEST_F(SafetensorsSharded, FindsShardsInSubfoldersBesideTheIndex) {
  fs::create_directories(dir_ / "unet");
  fs::rename(path("model-00002-of-00002.safetensors"), dir_ / "unet" / "part2.safetensors");
  auto all = load_file(index(R"({"weight_map":{"a":"model-00001-of-00002.safetensors",)"
                             R"("b":"./model-00001-of-00002.safetensors","c":"unet/part2.safetensors"}})"));
  EXPECT_EQ(all.size(), 3u);
}

TEST_F(SafetensorsSharded, RejectsInconsistentIndexes) {
  const std::string shard1 = path("model-00001-of-00002.safetensors");
  const std::string shard2 = path("model-00002-of-00002.safetensors");
  const std::string idx = path("model.safetensors.index.json");
  // A listed tensor that its shard lacks.
  expect_error([&] {
    load_file(index(R"({"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors",)"
                    R"("c":"model-00002-of-00002.safetensors","d":"model-00002-of-00002.safetensors"}})"));
  }, {idx, "'d'", shard2, "does not contain it"});
  // A tensor present in two shards.
  save_file(shard2, {{"c", sample(at::kHalf, {4})}, {"a", sample(at::kFloat, {2, 2})}});
  expect_error([&] { load_file(index(kGood)); }, {idx, "'a'", "appears in two shards", shard1, shard2});
  // A shard tensor the index does not list.
  save_file(shard2, {{"c", sample(at::kHalf, {4})}, {"extra", at::ones({1})}});
  expect_error([&] { load_file(index(kGood)); }, {idx, "'extra'", "not listed"});
  // A missing shard file.
  fs::remove(shard2);
  expect_error([&] { load_file(index(kGood)); }, {shard2, "cannot open"});
}

TEST_F(SafetensorsSharded, DiffusersVariantIndexAndHeaderOnlyShapes) {
  // diffusers names a variant's index "<weights>.safetensors.index.<variant>.json".
  EXPECT_TRUE(is_index_path("unet/diffusion_pytorch_model.safetensors.index.fp16.json"));
  EXPECT_TRUE(is_index_path("model.safetensors.index.json"));
  EXPECT_FALSE(is_index_path("unet/diffusion_pytorch_model.fp16.safetensors"));
  EXPECT_FALSE(is_index_path("config.json"));
  EXPECT_FALSE(is_index_path("x.safetensors.index.a.b.json"));
  const std::string idx = path("diffusion_pytorch_model.safetensors.index.fp16.json");
  write_bytes(idx, kGood);
  EXPECT_EQ(load_file(idx).size(), 3u);
  const WeightShapes shapes = load_shapes(idx);
  ASSERT_EQ(shapes.tensors.size(), 3u);
  std::map<std::string, WeightShape> by_name;
  for (const auto& t : shapes.tensors) by_name[t.name] = t;
  EXPECT_EQ(by_name.at("a").shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(by_name.at("b").dtype, at::kLong);
  EXPECT_EQ(by_name.at("c").file, path("model-00002-of-00002.safetensors"));
  // A truncated shard is refused from its header, naming the shard and the tensor.
  const std::string shard2 = path("model-00002-of-00002.safetensors");
  fs::resize_file(shard2, fs::file_size(shard2) - 2);
  expect_error([&] { load_shapes(idx); }, {shard2, "'c'", "truncated"});
}

TEST_F(SafetensorsSharded, RejectsMalformedIndexes) {
  const std::string idx = path("model.safetensors.index.json");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{", "not valid JSON"},
      {"[]", "must be a JSON object"},
      {R"({"metadata":{}})", "no 'weight_map' object"},
      {R"({"weight_map":[]})", "no 'weight_map' object"},
      {R"({"weight_map":{}})", "lists no tensors"},
      {R"({"weight_map":{"a":1}})", "tensor 'a': shard must be a file name string"},
      {R"({"weight_map":{"a":"/etc/passwd"}})", "relative path inside the index's folder"},
      {R"({"weight_map":{"a":"../x.safetensors"}})", "relative path inside the index's folder"},
      {R"({"weight_map":{"a":""}})", "relative path inside the index's folder"},
      {R"({"weight_map":{"a":"model-00001-of-00002.safetensors","a":"model-00001-of-00002.safetensors"}})",
       "duplicate key 'a'"},
  };
  for (const auto& c : cases) {
    // Named copies: a lambda may not capture a structured binding before C++20 in clang.
    const std::string& json = c.first;
    SCOPED_TRACE(json);
    expect_error([&] { load_file(index(json)); }, {idx, c.second});
  }
  expect_error([&] { load_file(path("absent.safetensors.index.json")); }, {"absent.safetensors.index.json", "cannot open"});
}

// ---- parity with the Python package ------------------------------------------------------------

// Tensors both sides build; keep in step with recipe() in tests/parity/safetensors_oracle.py.
std::vector<std::pair<std::string, at::Tensor>> parity_tensors() {
  std::vector<std::pair<std::string, at::Tensor>> t;
  const std::vector<std::pair<std::string, at::ScalarType>> floats = {
      {"f64", at::kDouble}, {"f32", at::kFloat}, {"f16", at::kHalf}, {"bf16", at::kBFloat16}};
  for (const auto& [name, dtype] : floats) {
    t.emplace_back(name, at::arange(12, at::kDouble).mul(0.75).sub(3.0).to(dtype).reshape({3, 4}));
  }
  const std::vector<std::pair<std::string, at::ScalarType>> ints = {
      {"i64", at::kLong}, {"i32", at::kInt}, {"i16", at::kShort}, {"i8", at::kChar}};
  for (const auto& [name, dtype] : ints) t.emplace_back(name, at::arange(12, at::kLong).sub(3).to(dtype).reshape({2, 6}));
  t.emplace_back("u8", at::arange(12, at::kLong).mul(37).remainder(256).to(at::kByte));
  t.emplace_back("bool", at::arange(10, at::kLong).remainder(3).eq(0).reshape({2, 5}));
  t.emplace_back("scalar", at::scalar_tensor(2.5, at::kFloat));
  t.emplace_back("empty", at::zeros({0, 3}, at::kHalf));
  t.emplace_back("transposed", at::arange(12, at::kFloat).reshape({3, 4}).t());
  const float inf = std::numeric_limits<float>::infinity();
  t.emplace_back("specials", at::tensor({inf, -inf, std::numeric_limits<float>::quiet_NaN(), -0.0f, 1e-45f, 3.4e38f}));
  t.emplace_back("odd \"name\" \\ é ✓\n\t\x01", at::arange(3, at::kInt));
  t.emplace_back("zz.second", at::ones({2}, at::kFloat));
  t.emplace_back("aa.first", at::full({2}, 7.0, at::kFloat));
  return t;
}

const std::map<std::string, std::string> kOneKey = {{"format", "pt"}};
const std::map<std::string, std::string> kManyKeys = {
    {"format", "pt"}, {"note", "ünïcode \"quoted\" \\ \n"}, {"step", "10"}};

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

class SafetensorsParity : public Safetensors {
 protected:
  void SetUp() override {
    const char* python = std::getenv("LA_SAFETENSORS_PYTHON");
    const char* oracle = std::getenv("LA_SAFETENSORS_ORACLE");
    if (python == nullptr || oracle == nullptr) {
      GTEST_SKIP() << "set LA_SAFETENSORS_PYTHON and LA_SAFETENSORS_ORACLE (ctest -L parity does)";
    }
    python_ = python;
    oracle_ = oracle;
    Safetensors::SetUp();
  }
  // Runs the oracle with `args`; returns its exit status.
  int oracle(const std::vector<std::string>& args) {
    std::string cmd = shell_quote(python_) + " " + shell_quote(oracle_);
    for (const auto& a : args) {
      cmd += ' ';
      cmd += shell_quote(a);
    }
    const int status = std::system(cmd.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  void expect_recipe(const SafetensorsFile& file) {
    auto want = parity_tensors();
    ASSERT_EQ(file.tensors().size(), want.size());
    for (const auto& [name, tensor] : want) EXPECT_TRUE(same_tensor(file.get(name), tensor)) << name;
  }
  std::string python_, oracle_;
};

TEST_F(SafetensorsParity, ReadsFilesThePythonPackageWrites) {
  for (const char* metadata : {"one", "many"}) {
    SCOPED_TRACE(metadata);
    const std::string p = path(std::string("python_") + metadata + ".safetensors");
    ASSERT_EQ(oracle({"write", p, "--metadata", metadata}), 0);
    auto file = SafetensorsFile::open(p);
    expect_recipe(*file);
    EXPECT_EQ(file->metadata(), std::string(metadata) == "one" ? kOneKey : kManyKeys);
  }
}

TEST_F(SafetensorsParity, WritesFilesByteIdenticalToThePythonPackage) {
  const std::string ours = path("cpp.safetensors");
  const std::string theirs = path("python.safetensors");
  save_file(ours, parity_tensors(), kOneKey);
  ASSERT_EQ(oracle({"check", ours, theirs, "--metadata", "one"}), 0);
  EXPECT_EQ(read_bytes(ours), read_bytes(theirs));
  expect_recipe(*SafetensorsFile::open(theirs));
}

TEST_F(SafetensorsParity, WritesSeveralMetadataKeysThePythonPackageReads) {
  // The reference writer orders metadata keys by hash, so only parsed content can match here.
  const std::string ours = path("cpp_many.safetensors");
  save_file(ours, parity_tensors(), kManyKeys);
  ASSERT_EQ(oracle({"check", ours, path("python_many.safetensors"), "--metadata", "many"}), 0);
}

}  // namespace
}  // namespace lookahead::model::io
