// Helpers shared by the data tests: scratch files and corrupting a record in place.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "data/tools.h"
#include "data/training_set.h"
#include "data/training_set_writer.h"

namespace lookahead::data::test {

/// A fresh scratch directory for the running test, removed at the end of the scope.
struct ScratchDir {
  std::filesystem::path dir;
  explicit ScratchDir(const std::string& tag = "") {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string(info ? info->test_suite_name() : "t") + "_" + (info ? info->name() : "t") + tag;
    std::replace(name.begin(), name.end(), '/', '_');
    dir = std::filesystem::temp_directory_path() / ("la_data_" + std::to_string(::getpid()) + "_" + name);
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  std::string path(const std::string& name) const { return (dir / name).string(); }
};

inline std::vector<char> slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void spit(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// Flips a few bytes in the middle of record `index`'s encoded image, in the file itself.
inline void corrupt_record(const std::string& path, int64_t index) {
  std::vector<uint8_t> img;
  {
    auto set = TrainingSet::open(path);
    img = set->image_bytes(index);
  }
  std::vector<char> file = slurp(path);
  auto it = std::search(file.begin(), file.end(), img.begin(), img.end(),
                        [](char a, uint8_t b) { return static_cast<uint8_t>(a) == b; });
  ASSERT_NE(it, file.end()) << "record " << index << " bytes not found in " << path;
  const size_t mid = static_cast<size_t>(it - file.begin()) + img.size() / 2;
  for (size_t k = 0; k < 4; ++k) file[mid + k] = static_cast<char>(~file[mid + k]);
  spit(path, file);
}

/// A small synthetic set: `ids` identities x `per` records, `size` px, optional extras.
inline std::string make_synth(const ScratchDir& d, int64_t ids, int64_t per, int64_t size, bool extras = false,
                              const std::string& name = "set.h5") {
  SynthOptions o;
  o.out = d.path(name);
  o.identities = ids;
  o.per_identity = per;
  o.size = size;
  o.seed = 7;
  if (extras) {
    o.latent_size = size / 8;
    o.prompt_embeds = {3, 24};
    o.pooled = 16;
    o.clip_features = {5, 12};
  }
  write_synthetic(o);
  return o.out;
}

}  // namespace lookahead::data::test
