// common/: SplitMix64 against its reference outputs (every seeded stream of the project depends on
// them staying bit-identical), H5Error naming the call and the file, read-only mappings and atomic
// replacement (no temporary left behind, before or after a commit).
#include <gtest/gtest.h>
#include <unistd.h>

#include <c10/util/Exception.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>

#include "common/atomic_file.h"
#include "common/h5_handle.h"
#include "common/mapped_file.h"
#include "common/seed.h"

namespace lookahead::common {
namespace {

namespace fs = std::filesystem;

// A fresh folder per test, removed afterwards.
class CommonFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("la_common_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string slurp(const std::string& p) const {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  size_t entries() const { return static_cast<size_t>(std::distance(fs::directory_iterator(dir_), {})); }
  fs::path dir_;
};

std::string message_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  ADD_FAILURE() << "no c10::Error";
  return "";
}

TEST(CommonSeed, MatchesSplitMix64Reference) {
  // The first outputs of the reference generator seeded with 0 (Vigna's splitmix64.c).
  SplitMix rng(0);
  EXPECT_EQ(rng.next(), 0xE220A8397B1DCDAFull);
  EXPECT_EQ(rng.next(), 0x6E789E6AA1B965F4ull);
  EXPECT_EQ(rng.next(), 0x06C45D188009454Full);
  EXPECT_EQ(splitmix64(0), 0xE220A8397B1DCDAFull);
  // The mixers are compositions of that one step.
  EXPECT_EQ(mix_seed(7, 9), splitmix64(splitmix64(7) ^ 9));
  EXPECT_EQ(derive_seed(7, 9, 11), splitmix64(mix_seed(7, 9) ^ 11));
  EXPECT_EQ(derive_seed(7, 9), splitmix64(mix_seed(7, 9)));
  SplitMix a(42), b(42);
  for (int i = 0; i < 100; ++i) {
    const uint64_t u = a.uniform(10);
    EXPECT_LT(u, 10u);
    EXPECT_EQ(u, b.uniform(10));
  }
}

TEST_F(CommonFiles, H5ErrorNamesCallAndFile) {
  const std::string missing = path("missing.h5");
  H5QuietErrors quiet;
  try {
    H5Handle f(H5Fopen(missing.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), "H5Fopen", missing);
    FAIL() << "opened a missing file";
  } catch (const H5Error& e) {
    EXPECT_EQ(e.call(), "H5Fopen");
    EXPECT_EQ(e.context(), missing);
    EXPECT_FALSE(e.detail().empty());
    const std::string what = e.what();
    EXPECT_NE(what.find("HDF5 call failed: H5Fopen"), std::string::npos) << what;
    EXPECT_NE(what.find(missing), std::string::npos) << what;
  }
  // The macro names the call as written, with or without a context.
  try {
    LA_H5_CHECK(H5Fflush(H5I_INVALID_HID, H5F_SCOPE_GLOBAL));
    FAIL();
  } catch (const H5Error& e) {
    EXPECT_NE(e.call().find("H5Fflush"), std::string::npos) << e.what();
    EXPECT_TRUE(e.context().empty());
  }
}

TEST_F(CommonFiles, H5AttributesRoundTrip) {
  const std::string p = path("attrs.h5");
  H5Handle f(H5Fcreate(p.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "H5Fcreate", p);
  h5_set_attr(f.get(), "i", int64_t{-5}, p);
  h5_set_attr(f.get(), "u", uint64_t{1} << 63, p);
  h5_set_attr(f.get(), "d", 0.25, p);
  h5_set_attr(f.get(), "i", int64_t{6}, p);  // replaces
  EXPECT_TRUE(h5_has_attr(f.get(), "i", p));
  EXPECT_FALSE(h5_has_attr(f.get(), "absent", p));
  EXPECT_EQ(h5_attr_i64(f.get(), "i", p), 6);
  EXPECT_EQ(h5_attr_u64(f.get(), "u", p), uint64_t{1} << 63);
  EXPECT_EQ(h5_attr_f64(f.get(), "d", p), 0.25);
  EXPECT_FALSE(h5_exists(f.get(), "a/b", p));
}

TEST_F(CommonFiles, MappedFileReadsAndNamesThePath) {
  const std::string p = path("data.bin");
  std::ofstream(p, std::ios::binary) << "hello";
  MappedFile m(p, "test file");
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(m.data()), m.size()), "hello");
  MappedFile moved(std::move(m));
  EXPECT_EQ(moved.size(), 5u);

  const std::string empty = path("empty.bin");
  std::ofstream(empty, std::ios::binary).flush();
  EXPECT_EQ(MappedFile(empty, "test file").size(), 0u);

  const std::string missing = path("missing.bin");
  std::string msg = message_of([&] { MappedFile(missing, "test file"); });
  EXPECT_NE(msg.find("cannot open test file '" + missing + "'"), std::string::npos) << msg;
  msg = message_of([&] { MappedFile(dir_.string(), "test file"); });
  EXPECT_NE(msg.find("not a regular file"), std::string::npos) << msg;
}

TEST_F(CommonFiles, AtomicFileReplacesOnlyOnCommit) {
  const std::string p = path("out.bin");
  std::ofstream(p, std::ios::binary) << "old";
  {
    AtomicFile out(p, "test file");
    out.write("new contents", 12);
    EXPECT_EQ(slurp(p), "old") << "the target is untouched until commit";
  }
  EXPECT_EQ(slurp(p), "old");
  EXPECT_EQ(entries(), 1u) << "an abandoned write leaves no temporary";
  {
    AtomicFile out(p, "test file");
    out.write("new contents", 12);
    out.commit();
  }
  EXPECT_EQ(slurp(p), "new contents");
  EXPECT_EQ(entries(), 1u);

  write_file_atomically(path("latest"), "step-000003.h5\n");
  EXPECT_EQ(slurp(path("latest")), "step-000003.h5\n");
  EXPECT_EQ(entries(), 2u);

  const std::string missing = path("no/such/folder/x.bin");
  const std::string msg = message_of([&] { AtomicFile(missing, "test file"); });
  EXPECT_NE(msg.find("cannot create test file '" + missing + "'"), std::string::npos) << msg;
}

}  // namespace
}  // namespace lookahead::common
