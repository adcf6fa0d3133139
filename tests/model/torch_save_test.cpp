// model/io/torch_save (and the streamed safetensors writer it shares TensorSource with): files
// written here read back bit for bit with our reader (load_torch_file) and, where a Python is
// configured (LA_PYTHON), with torch.load(weights_only=True), flat and nested; storages are 64-byte
// aligned; the source is asked once per tensor in order; bad input throws naming the file.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "common/mapped_file.h"
#include "model/io/safetensors.h"
#include "model/io/torch_checkpoint.h"
#include "model/io/torch_save.h"
#include "model/io/zip_archive.h"

namespace lookahead::model::io {
namespace {

namespace fs = std::filesystem;

TensorInfo decl(std::string name, at::ScalarType dtype, std::vector<int64_t> shape) {
  TensorInfo e;
  e.name = std::move(name);
  e.dtype = dtype;
  e.shape = std::move(shape);
  return e;
}

/// Tensors of every dtype the writer supports, of ranks 0 to 4 and an empty one.
std::map<std::string, at::Tensor> sample_tensors(const std::string& prefix = "") {
  at::manual_seed(7);
  std::map<std::string, at::Tensor> t;
  t[prefix + "conv.weight"] = at::randn({4, 3, 3, 3});
  t[prefix + "conv.bias"] = at::randn({4}).to(at::kHalf);
  t[prefix + "norm.weight"] = at::randn({5}).to(at::kBFloat16);
  t[prefix + "bn.num_batches_tracked"] = at::full({}, 123456789012LL, at::kLong);
  t[prefix + "ids"] = at::arange(-3, 3, at::kInt).view({2, 3});
  t[prefix + "mask"] = at::rand({7}) > 0.5;
  t[prefix + "empty"] = at::empty({0, 3});
  t[prefix + "scalar"] = at::full({}, 2.5, at::kDouble);
  t[prefix + "bytes"] = at::randint(0, 255, {9}, at::kByte);
  return t;
}

std::vector<TensorInfo> decls(const std::map<std::string, at::Tensor>& t) {
  std::vector<TensorInfo> out;
  for (const auto& [k, v] : t) out.push_back(decl(k, v.scalar_type(), v.sizes().vec()));
  return out;
}

void expect_same(const std::map<std::string, at::Tensor>& got, const std::map<std::string, at::Tensor>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [k, w] : want) {
    ASSERT_TRUE(got.count(k)) << k;
    const at::Tensor& g = got.at(k);
    EXPECT_EQ(g.scalar_type(), w.scalar_type()) << k;
    ASSERT_EQ(g.sizes(), w.sizes()) << k;
    EXPECT_EQ(std::memcmp(g.data_ptr(), w.contiguous().data_ptr(), static_cast<size_t>(w.nbytes())), 0) << k;
  }
}

class TorchSave : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("torch_save_test." + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(TorchSave, FlatRoundTripThroughOurReader) {
  const auto t = sample_tensors();
  std::vector<std::string> asked;
  save_torch_file(path("flat.pt"), decls(t), [&](const TensorInfo& e) {
    asked.push_back(e.name);
    return t.at(e.name);
  });
  std::vector<std::string> order;
  for (const auto& [k, v] : t) order.push_back(k);
  EXPECT_EQ(asked, order);  // once each, in entry order
  expect_same(load_torch_file(path("flat.pt")), t);
}

TEST_F(TorchSave, NestedGroupsFlattenToTheSameNames) {
  auto t = sample_tensors("image_proj.");
  for (const auto& [k, v] : sample_tensors("ip_adapter.1.")) t[k] = v;
  save_torch_file(
      path("nested.bin"), decls(t), [&](const TensorInfo& e) { return t.at(e.name); }, TorchSaveNesting::kTopLevel);
  expect_same(load_torch_file(path("nested.bin")), t);
}

TEST_F(TorchSave, MembersAreAlignedAndChecksummed) {
  const auto t = sample_tensors();
  save_torch_file(path("a.pt"), decls(t), [&](const TensorInfo& e) { return t.at(e.name); });
  const common::MappedFile f(path("a.pt"), "test");
  const auto dir = zip_directory(f.data(), f.size(), path("a.pt"));
  std::vector<std::string> names;
  for (const auto& [name, m] : dir) {
    names.push_back(name);
    const ByteRange r = zip_read(f.data(), f.size(), name, m, path("a.pt"));  // CRC-32 checked
    EXPECT_EQ((r.data - f.data()) % 64, 0) << name;
  }
  EXPECT_EQ(dir.size(), t.size() + 3);
  EXPECT_TRUE(dir.count("archive/data.pkl") && dir.count("archive/byteorder") && dir.count("archive/version"));
  const ByteRange v = zip_read(f.data(), f.size(), "archive/version", dir.at("archive/version"), path("a.pt"));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(v.data), v.size), "3\n");
}

TEST_F(TorchSave, TorchLoadWeightsOnlyReadsFlatAndNested) {
  const char* py = std::getenv("LA_PYTHON");
  if (py == nullptr || *py == '\0') GTEST_SKIP() << "LA_PYTHON not set";
  const auto t = sample_tensors();
  save_torch_file(path("flat.pt"), decls(t), [&](const TensorInfo& e) { return t.at(e.name); });
  auto nested = sample_tensors("image_proj.");
  for (const auto& [k, v] : sample_tensors("ip_adapter.")) nested[k] = v;
  save_torch_file(
      path("nested.bin"), decls(nested), [&](const TensorInfo& e) { return nested.at(e.name); },
      TorchSaveNesting::kTopLevel);
  // The same tensors in safetensors, as the reference the Python side compares against (bool and
  // uint8 included; both files written by our code, read by two third-party libraries).
  std::vector<std::pair<std::string, at::Tensor>> flat(t.begin(), t.end()), flat_nested(nested.begin(), nested.end());
  save_file(path("flat.safetensors"), flat);
  save_file(path("nested.safetensors"), flat_nested);
  const std::string script = path("check.py");
  {
    std::ofstream s(script);
    s << R"(import collections, sys, torch
from safetensors.torch import load_file
d = sys.argv[1]
flat = torch.load(d + "/flat.pt", weights_only=True)
assert type(flat) is collections.OrderedDict, type(flat)
ref = load_file(d + "/flat.safetensors")
assert list(flat) == sorted(ref), (list(flat), sorted(ref))
for k, v in ref.items():
    assert flat[k].dtype == v.dtype and flat[k].shape == v.shape and torch.equal(flat[k], v), k
nested = torch.load(d + "/nested.bin", weights_only=True)
assert type(nested) is dict and sorted(nested) == ["image_proj", "ip_adapter"], nested.keys()
ref = load_file(d + "/nested.safetensors")
got = {g + "." + k: v for g, sd in nested.items() for k, v in sd.items()}
assert got.keys() == ref.keys()
for k, v in ref.items():
    assert got[k].dtype == v.dtype and torch.equal(got[k], v), k
mm = torch.load(d + "/flat.pt", weights_only=True, mmap=True)
assert torch.equal(mm["conv.weight"], load_file(d + "/flat.safetensors")["conv.weight"])
print("torch.load(weights_only=True) ok:", len(flat), "flat,", len(got), "nested")
)";
  }
  const std::string cmd = std::string(py) + " " + script + " " + dir_.string();
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

TEST_F(TorchSave, BadInputThrowsNamingTheFile) {
  const auto src = [](const TensorInfo& e) { return at::zeros(e.shape, at::TensorOptions().dtype(e.dtype)); };
  const std::string p = path("bad.pt");
  auto throws = [&](const std::vector<TensorInfo>& d, TorchSaveNesting n, const std::string& needle,
                    const TensorSource& s) {
    try {
      save_torch_file(p, d, s, n);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const c10::Error& e) {
      const std::string msg = e.what_without_backtrace();
      EXPECT_NE(msg.find(p), std::string::npos) << msg;
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    }
    EXPECT_FALSE(fs::exists(p));  // nothing left under the target name
  };
  throws({decl("a", at::kFloat, {2}), decl("a", at::kFloat, {2})}, TorchSaveNesting::kFlat, "duplicate", src);
  throws({decl("flat", at::kFloat, {2})}, TorchSaveNesting::kTopLevel, "'<group>.' prefix", src);
  throws({decl("c", at::kComplexFloat, {2})}, TorchSaveNesting::kFlat, "storage class", src);
  throws({decl("w", at::kFloat, {2, 3})}, TorchSaveNesting::kFlat, "declared", [](const TensorInfo&) {
    return at::zeros({3, 2});
  });
}

TEST(SafetensorsStreamed, WritesWhatSaveFileWritesAndChecksTheSource) {
  const fs::path d = fs::temp_directory_path() / ("streamed_test." + std::to_string(::getpid()));
  fs::create_directories(d);
  const auto t = sample_tensors();
  std::vector<std::pair<std::string, at::Tensor>> flat(t.begin(), t.end());
  save_file((d / "a.safetensors").string(), flat, {{"format", "pt"}});
  int calls = 0;
  save_file_streamed((d / "b.safetensors").string(), decls(t),
                     [&](const TensorInfo& e) {
                       ++calls;
                       return t.at(e.name);
                     },
                     {{"format", "pt"}});
  EXPECT_EQ(calls, static_cast<int>(t.size()) - 1);  // the empty tensor has no bytes to ask for
  const common::MappedFile a((d / "a.safetensors").string(), "a"), b((d / "b.safetensors").string(), "b");
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size()), 0);
  EXPECT_THROW(save_file_streamed((d / "c.safetensors").string(), {decl("w", at::kHalf, {2})},
                                  [](const TensorInfo&) { return at::zeros({2}); }),
               c10::Error);  // float32 for a declared float16
  EXPECT_FALSE(fs::exists(d / "c.safetensors"));
  fs::remove_all(d);
}

}  // namespace
}  // namespace lookahead::model::io
