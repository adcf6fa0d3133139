// Resharding across world sizes: `Reshard.Save` (run at N ranks) trains, saves a checkpoint into
// $LA_CKPT_RESHARD_DIR and writes the expected full state to a side file; `Reshard.Load` (run
// at M != N ranks, a later ctest entry) loads it into freshly sharded groups and requires the
// full parameters and optimizer state to be bit-identical, then trains on. Both skip without the
// variable (ctest sets it; see tests/checkpoints/CMakeLists.txt).
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "tests/checkpoints/ckpt_test_util.h"

namespace lookahead::ckpt {
namespace {

namespace fs = std::filesystem;
using namespace testing_util;
using test::world;

constexpr int kSteps = 3;

std::optional<fs::path> reshard_dir() {
  const char* dir = std::getenv("LA_CKPT_RESHARD_DIR");
  if (!dir || !*dir) return std::nullopt;
  return fs::path(dir);
}

// Side file: per tensor "name\n<numel>\n" then numel raw float32, plus the saving world size.
void write_expected(const fs::path& file, const std::map<std::string, at::Tensor>& state, int world_size) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out << world_size << "\n" << state.size() << "\n";
  for (const auto& [name, t] : state) {
    at::Tensor c = t.contiguous().to(at::kFloat);
    out << name << "\n" << c.numel() << "\n";
    out.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
  }
  ASSERT_TRUE(out.good());
}

std::map<std::string, at::Tensor> read_expected(const fs::path& file, int& world_size) {
  std::ifstream in(file, std::ios::binary);
  size_t count = 0;
  in >> world_size >> count;
  in.get();
  std::map<std::string, at::Tensor> state;
  for (size_t i = 0; i < count; ++i) {
    std::string name;
    int64_t numel = 0;
    std::getline(in, name);
    in >> numel;
    in.get();
    at::Tensor t = at::empty({numel}, at::kFloat);
    in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
    state[name] = t;
  }
  EXPECT_TRUE(in.good()) << file;
  return state;
}

std::map<std::string, at::Tensor> flattened(const std::map<std::string, at::Tensor>& state) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, t] : state) out[name] = t.reshape({-1});
  return out;
}

TEST(Reshard, Save) {
  auto dir = reshard_dir();
  if (!dir) GTEST_SKIP() << "LA_CKPT_RESHARD_DIR not set";
  auto comm = world().comm();
  if (comm->rank() == 0) {
    fs::remove_all(*dir);
    fs::create_directories(*dir);
  }
  comm->barrier()->wait();
  auto m = make_model(comm, 0.0);
  train(*m, comm, kSteps);
  const auto state = full_state(*m);
  save_checkpoint(save_request(*m, comm, *dir, kSteps));
  if (comm->rank() == 0) write_expected(*dir / "expected.bin", flattened(state), comm->size());
  comm->barrier()->wait();
}

TEST(Reshard, Load) {
  auto dir = reshard_dir();
  if (!dir) GTEST_SKIP() << "LA_CKPT_RESHARD_DIR not set";
  auto comm = world().comm();
  int saved_size = 0;
  const auto want = read_expected(*dir / "expected.bin", saved_size);
  ASSERT_FALSE(want.empty());

  auto m = make_model(comm, 50.0);
  LoadResult lr = load_checkpoint(load_request(*m, comm, *dir));
  EXPECT_EQ(lr.step, kSteps);
  EXPECT_EQ(lr.saved_world_size, saved_size);
  EXPECT_EQ(lr.rng_rederived, saved_size != comm->size());
  EXPECT_EQ(lr.rng_state.has_value(), saved_size == comm->size());
  if (lr.rng_rederived) {
    EXPECT_NE(lr.rng_note.find("world size changed"), std::string::npos);
  }
  EXPECT_EQ(m->opt->step_count(), kSteps);
  for (const auto& st : m->opt->state()) EXPECT_EQ(st.step, st.group == "heads" ? kSteps : (kSteps + 1) / 2);

  // Full (unpadded) parameters, masters and both moments equal what the other world size saved;
  // the bf16 shards are the masters rounded, as they were.
  expect_equal_state(flattened(full_state(*m)), want);

  // Padding of the new layout is zero in every shard and state tensor.
  const int64_t rank = comm->rank();
  for (const auto& st : m->opt->state()) {
    const auto& g = st.group == "heads" ? *m->heads : *m->aux;
    const auto& l = g.layout();
    const int64_t valid = std::clamp<int64_t>(l.numel - rank * l.shard_numel, 0, l.shard_numel);
    for (const at::Tensor& t : {st.master, st.exp_avg, st.exp_avg_sq, g.local_shard().to(at::kFloat)})
      EXPECT_EQ(t.narrow(0, valid, l.shard_numel - valid).abs().sum().item<double>(), 0.0) << st.group;
  }
  // And training goes on from it.
  train(*m, comm, 1, kSteps);
  for (const auto& [name, t] : flattened(full_state(*m))) EXPECT_TRUE(t.isfinite().all().item<bool>()) << name;
}

}  // namespace
}  // namespace lookahead::ckpt
