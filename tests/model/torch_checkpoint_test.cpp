// model/io/torch_checkpoint: torch.save files written by the installed torch (zip and legacy
// formats; state dicts with _metadata, nested dicts, every supported dtype, strided / offset /
// shared-storage views), facenet-pytorch's shipped MTCNN weights and an IP-Adapter layout, each
// compared bit for bit with what torch.load returns (tests/parity/torch_checkpoint_oracle.py);
// MTCNN loaded straight from the .pt files against the converted weights; and hostile or broken
// inputs (a pickle calling os.system, truncations at many offsets, bytes flipped, corrupt zips, views past their
// storage, unknown dtypes and opcodes), each of which must be a c10::Error naming the file.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "model/adapters/ip_adapter.h"
#include "model/face/mtcnn_detect.h"
#include "model/io/safetensors.h"
#include "model/io/torch_checkpoint.h"

namespace lookahead::model::io {
namespace {

std::string g_dir;  // fixtures written by the oracle

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const char* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data, static_cast<std::streamsize>(size));
  ASSERT_TRUE(out.good()) << path;
}

/// Same keys, dtypes, shapes and bytes.
void expect_identical(const std::map<std::string, at::Tensor>& got, const std::map<std::string, at::Tensor>& want,
                      const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (const auto& [key, w] : want) {
    const auto it = got.find(key);
    ASSERT_NE(it, got.end()) << what << ": missing " << key;
    const at::Tensor& g = it->second;
    EXPECT_EQ(g.scalar_type(), w.scalar_type()) << what << ": " << key;
    ASSERT_EQ(g.sizes(), w.sizes()) << what << ": " << key;
    EXPECT_TRUE(g.is_contiguous()) << what << ": " << key;
    const auto wc = w.contiguous();
    EXPECT_EQ(std::memcmp(g.data_ptr(), wc.data_ptr(), static_cast<size_t>(w.nbytes())), 0) << what << ": " << key;
  }
}

/// Runs `load` expecting a c10::Error whose message names `path` and contains `needle`.
template <typename F>
void expect_error(F&& load, const std::string& path, const std::string& needle, bool print = false) {
  try {
    load();
    ADD_FAILURE() << path << ": loaded, expected an error containing '" << needle << "'";
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    if (print) std::printf("refused: %s\n", msg.c_str());
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << "expected '" << needle << "' in: " << msg;
  }
}

void expect_load_error(const std::string& path, const std::string& needle) {
  expect_error([&] { load_torch_file(path); }, path, needle, /*print=*/true);
}

std::vector<std::string> facenet_paths() {
  std::ifstream in(g_dir + "/facenet_paths.txt");
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  EXPECT_EQ(out.size(), 3u);
  return out;
}

TEST(TorchCheckpoint, StateDictZipAndLegacy) {
  const auto want = load_file(g_dir + "/state.expected.safetensors");
  EXPECT_EQ(want.count("bn.num_batches_tracked"), 1u);
  for (const std::string fmt : {"zip", "legacy"}) expect_identical(load_torch_file(g_dir + "/state_" + fmt + ".pt"), want, fmt);
}

TEST(TorchCheckpoint, NestedDtypesViewsZipAndLegacy) {
  const auto want = load_file(g_dir + "/mixed.expected.safetensors");
  for (const std::string key : {"image_proj.proj_in.weight", "dtypes.bf16", "dtypes.bool", "dtypes.u8", "views.strided",
                                "views.shared_row", "views.expanded", "views.scalar", "views.empty", "param", "ints.0",
                                "list.0"})
    EXPECT_EQ(want.count(key), 1u) << key;
  for (const std::string fmt : {"zip", "legacy"}) {
    const auto got = load_torch_file(g_dir + "/mixed_" + fmt + ".pt");
    expect_identical(got, want, fmt);
    EXPECT_EQ(got.count("meta.step"), 0u);  // plain values are not tensors
    EXPECT_EQ(got.at("views.strided").sizes(), (std::vector<int64_t>{4, 3})) << fmt;
  }
}

TEST(TorchCheckpoint, FacenetMtcnnLegacyFiles) {
  const auto paths = facenet_paths();
  const char* names[] = {"pnet", "rnet", "onet"};
  for (size_t i = 0; i < paths.size(); ++i) {
    const auto want = load_file(g_dir + "/facenet_" + names[i] + ".expected.safetensors");
    expect_identical(load_torch_file(paths[i]), want, paths[i]);
    expect_identical(load_weights_file(paths[i]), want, paths[i]);
  }
}

TEST(TorchCheckpoint, MtcnnFromPtFilesDetectsLikeConverted) {
  // The .pt files straight into Mtcnn::load_weights, against the same weights converted by torch.load.
  const auto paths = facenet_paths();
  face::Mtcnn from_pt, from_st;
  from_pt->load_weights(paths[0], paths[1], paths[2]);
  from_st->load_weights(g_dir + "/facenet_pnet.expected.safetensors", g_dir + "/facenet_rnet.expected.safetensors",
                        g_dir + "/facenet_onet.expected.safetensors");
  std::map<std::string, at::Tensor> a, b;
  for (const auto& p : from_pt->named_parameters()) a[p.key()] = p.value();
  for (const auto& p : from_st->named_parameters()) b[p.key()] = p.value();
  expect_identical(a, b, "mtcnn parameters");
  const auto image = load_file(g_dir + "/photo.safetensors").at("image");
  const auto d1 = from_pt->detect(image);
  const auto d2 = from_st->detect(image);
  ASSERT_GE(d1.boxes.size(0), 1);
  EXPECT_TRUE(at::equal(d1.boxes, d2.boxes));
  EXPECT_TRUE(at::equal(d1.probs, d2.probs));
  EXPECT_TRUE(at::equal(d1.landmarks, d2.landmarks));
}

TEST(TorchCheckpoint, IpAdapterBin) {
  const auto want = load_file(g_dir + "/ip_adapter.expected.safetensors");
  expect_identical(adapters::load_ip_adapter_file(g_dir + "/ip_adapter.bin"), want, "ip_adapter.bin");
  EXPECT_EQ(want.count("image_proj.latents"), 1u);
  EXPECT_EQ(want.count("ip_adapter.1.to_k_ip.weight"), 1u);
  // A .bin that is a torch.save dict but not of the IP-Adapter layout is refused.
  const std::string other = g_dir + "/not_ip_adapter.bin";
  std::filesystem::copy_file(g_dir + "/state_zip.pt", other, std::filesystem::copy_options::overwrite_existing);
  expect_error([&] { adapters::load_ip_adapter_file(other); }, other, "unexpected top-level key");
}

TEST(TorchCheckpoint, WeightsFileDispatchesOnExtension) {
  const std::string st = g_dir + "/state.expected.safetensors";
  expect_identical(load_weights_file(st), load_file(st), st);
  expect_identical(load_weights_file(g_dir + "/state_zip.pt"), load_file(st), "pt");
  const std::string bin = g_dir + "/state_copy.pth";
  std::filesystem::copy_file(g_dir + "/state_legacy.pt", bin, std::filesystem::copy_options::overwrite_existing);
  expect_identical(load_weights_file(bin), load_file(st), "pth");
}

TEST(TorchCheckpoint, ShapesFromThePickleAlone) {
  // load_torch_shapes: the keys, dtypes and shapes load_torch_file returns, without the data.
  for (const std::string name :
       {"state_zip.pt", "state_legacy.pt", "mixed_zip.pt", "mixed_legacy.pt", "ip_adapter.bin"}) {
    SCOPED_TRACE(name);
    const auto tensors = load_torch_file(g_dir + "/" + name);
    const auto shapes = load_torch_shapes(g_dir + "/" + name);
    ASSERT_EQ(shapes.size(), tensors.size());
    for (const auto& s : shapes) {
      const auto it = tensors.find(s.name);
      ASSERT_NE(it, tensors.end()) << s.name;
      EXPECT_EQ(s.dtype, it->second.scalar_type()) << s.name;
      EXPECT_EQ(s.shape, it->second.sizes().vec()) << s.name;
    }
  }
  expect_error([&] { load_torch_shapes(g_dir + "/evil_zip.pt"); }, g_dir + "/evil_zip.pt", "os.system");
}

TEST(TorchCheckpoint, RefusesArbitraryGlobals) {
  for (const std::string name : {"evil_zip.pt", "evil_legacy.pt"}) expect_load_error(g_dir + "/" + name, "os.system");
  // The opcodes run before the dict is built, so nothing else can be reached either.
  expect_load_error(g_dir + "/bad_dtype.pt", "torch.ComplexFloatStorage");
}

TEST(TorchCheckpoint, MalformedInputs) {
  expect_load_error(g_dir + "/bad_view.pt", "'w'");
  expect_load_error(g_dir + "/bad_view.pt", "beyond its storage");
  expect_load_error(g_dir + "/bad_opcode.pt", "opcode");
  expect_load_error(g_dir + "/bad_compressed.pt", "compressed");
  expect_load_error(g_dir + "/does_not_exist.pt", "cannot open");
  const std::string empty = g_dir + "/empty.pt";
  write_bytes(empty, "", 0);
  expect_load_error(empty, "empty file");
  const std::string text = g_dir + "/text.pt";
  write_bytes(text, "hello, not a pickle at all", 26);
  expect_load_error(text, "not a torch.save checkpoint");
}

TEST(TorchCheckpoint, HandmadeLegacyFileIsValid) {
  // The fixture the malformed variants derive from loads (and torch.load agreed in the oracle).
  const auto t = load_torch_file(g_dir + "/handmade.pt");
  EXPECT_TRUE(at::equal(t.at("w"), at::tensor({1.f, 2.f, 3.f, 4.f}).reshape({2, 2})));
}

TEST(TorchCheckpoint, TruncatedFilesAtManyOffsets) {
  for (const std::string name : {"state_legacy.pt", "state_zip.pt", "mixed_legacy.pt", "mixed_zip.pt"}) {
    const auto bytes = read_bytes(g_dir + "/" + name);
    const std::string cut = g_dir + "/truncated_" + name;
    // Every offset of the small files would be slow for the zips' storages; a stride still
    // crosses every structure (headers, pickle opcodes, storages, the central directory).
    const size_t step = std::max<size_t>(1, bytes.size() / 700);
    int checked = 0;
    for (size_t n = 1; n < bytes.size(); n += step) {
      write_bytes(cut, bytes.data(), n);
      expect_error([&] { load_torch_file(cut); }, cut, "");
      // The header-only reader sees every truncation too: storages are located, not read.
      expect_error([&] { load_torch_shapes(cut); }, cut, "");
      ++checked;
    }
    std::printf("%s: %d truncations refused\n", name.c_str(), checked);
  }
}

TEST(TorchCheckpoint, EveryByteFlippedInLegacyFiles) {
  // The legacy format has no checksum, so every flipped byte reaches the pickle machine or the
  // storage table: each must load (a changed value) or be refused, never crash.
  for (const std::string name : {"state_legacy.pt", "mixed_legacy.pt"}) {
    const auto bytes = read_bytes(g_dir + "/" + name);
    const std::string bad = g_dir + "/flipped_" + name;
    int errors = 0;
    for (size_t p = 0; p < bytes.size(); ++p) {
      auto data = bytes;
      data[p] ^= 0xff;
      write_bytes(bad, data.data(), data.size());
      try {
        load_torch_file(bad);
      } catch (const c10::Error& e) {
        EXPECT_NE(std::string(e.what_without_backtrace()).find(bad), std::string::npos) << e.what_without_backtrace();
        ++errors;
      }
    }
    std::printf("%s: %d of %zu flips refused\n", name.c_str(), errors, bytes.size());
    EXPECT_GT(errors, 0);
  }
}

TEST(TorchCheckpoint, CorruptZip) {
  const auto bytes = read_bytes(g_dir + "/mixed_zip.pt");
  const std::string bad = g_dir + "/corrupt.pt";
  // A flipped byte inside a storage (the one holding arange(24) for views.shared_*): CRC-32 mismatch.
  auto data = bytes;
  const std::string file(data.begin(), data.end());
  const float tail[] = {20.f, 21.f, 22.f, 23.f};
  const auto storage = file.find(std::string(reinterpret_cast<const char*>(tail), sizeof(tail)));
  ASSERT_NE(storage, std::string::npos);
  data[storage + 5] ^= 0x5a;
  write_bytes(bad, data.data(), data.size());
  expect_load_error(bad, "CRC-32 mismatch");
  const auto cd = file.rfind("PK\x01\x02");
  ASSERT_NE(cd, std::string::npos);
  // Last central directory entry's signature destroyed.
  data = bytes;
  data[cd] = 'X';
  write_bytes(bad, data.data(), data.size());
  expect_load_error(bad, "central directory");
  // End-of-central-directory offset pointing past the file.
  data = bytes;
  const auto eocd = std::string(data.begin(), data.end()).rfind("PK\x05\x06");
  ASSERT_NE(eocd, std::string::npos);
  std::memset(&data[eocd + 16], 0x7f, 3);
  write_bytes(bad, data.data(), data.size());
  expect_load_error(bad, "central directory");
  // Every byte of the central directory and EOCD flipped in turn: always an error or the same tensors.
  const auto want = load_torch_file(g_dir + "/mixed_zip.pt");
  int errors = 0;
  for (size_t p = cd; p < bytes.size(); ++p) {
    data = bytes;
    data[p] ^= 0xff;
    write_bytes(bad, data.data(), data.size());
    try {
      const auto got = load_torch_file(bad);
      EXPECT_EQ(got.size(), want.size()) << "flip at " << p;
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what_without_backtrace()).find(bad), std::string::npos) << e.what_without_backtrace();
      ++errors;
    }
  }
  EXPECT_GT(errors, 0);
}

}  // namespace
}  // namespace lookahead::model::io

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s FIXTURE_DIR (written by tests/parity/torch_checkpoint_oracle.py)\n", argv[0]);
    return 2;
  }
  lookahead::model::io::g_dir = argv[1];
  return RUN_ALL_TESTS();
}
