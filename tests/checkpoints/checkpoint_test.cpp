// Checkpoints under mpiexec -n 1..4 (MPI, CPU): bit-identical round trips at the same world size,
// damaged files (flipped bytes, truncation) with and without fallback, retention and `latest`,
// leftover temporaries, frozen-weight verification and failure agreement (no hangs).
#include <gtest/gtest.h>

#include <fstream>

#include "checkpoints/h5_io.h"
#include "tests/checkpoints/ckpt_test_util.h"

namespace lookahead::ckpt {
namespace {

namespace fs = std::filesystem;
using namespace testing_util;
using test::world;

/// Runs `fn` and returns the CheckpointError message ("" and a test failure if none was thrown).
template <typename F>
std::string error_of(F&& fn) {
  try {
    fn();
  } catch (const CheckpointError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected CheckpointError, got: " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected CheckpointError, nothing was thrown";
  return "";
}

/// Rank 0 inverts `count` bytes in the middle of dataset `name` of `file`; then a barrier.
void flip_bytes(const fs::path& file, const std::string& name, int count) {
  auto comm = world().comm();
  if (comm->rank() == 0) {
    haddr_t offset;
    hsize_t size;
    {
      H5Handle f = h5::open_file(file.string());
      H5Handle d = h5::open_dataset(f.get(), name);
      offset = H5Dget_offset(d.get());
      size = H5Dget_storage_size(d.get());
    }
    ASSERT_NE(offset, HADDR_UNDEF);
    ASSERT_GE(size, static_cast<hsize_t>(count));
    std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
    const auto at = static_cast<std::streamoff>(offset + size / 2 - count / 2);
    std::string bytes(count, '\0');
    io.seekg(at);
    io.read(bytes.data(), count);
    for (char& c : bytes) c = static_cast<char>(~c);
    io.seekp(at);
    io.write(bytes.data(), count);
  }
  comm->barrier()->wait();
}

TEST(Checkpoint, SameWorldSizeRoundTripIsBitIdentical) {
  auto comm = world().comm();
  const fs::path dir = shared_dir(comm, "roundtrip");
  auto saved = make_model(comm, 0.0);
  train(*saved, comm, 3);
  const auto want = full_state(*saved);
  SaveResult sr = save_checkpoint(save_request(*saved, comm, dir, 3));
  EXPECT_EQ(sr.path, dir / "step-000003.h5");
  EXPECT_TRUE(fs::is_regular_file(sr.path));
  if (comm->rank() == 0) {
    EXPECT_GT(sr.bytes, 0);
  }

  auto loaded = make_model(comm, 100.0);
  LoadResult lr = load_checkpoint(load_request(*loaded, comm, dir));
  EXPECT_EQ(lr.path, sr.path);
  EXPECT_EQ(lr.step, 3);
  EXPECT_EQ(lr.saved_world_size, comm->size());
  EXPECT_EQ(lr.config_text, "lr: 1e-5\nsteps: 3\n");
  ASSERT_TRUE(lr.rng_state.has_value());
  EXPECT_EQ(*lr.rng_state, rng_of(comm->rank()));
  EXPECT_FALSE(lr.rng_rederived);
  EXPECT_EQ(lr.cursor.epoch, 2);
  EXPECT_EQ(lr.cursor.index, 1003);
  EXPECT_EQ(lr.alpha.value, 3.25);
  EXPECT_EQ(lr.alpha.step_drawn, 2);
  EXPECT_TRUE(lr.skipped.empty());
  ASSERT_EQ(lr.frozen_sources.count("base"), 1u);
  EXPECT_EQ(lr.frozen_sources["base"].size(), 2u);

  // Local shards and optimizer state, element for element.
  EXPECT_TRUE(loaded->heads->local_shard().equal(saved->heads->local_shard()));
  EXPECT_TRUE(loaded->aux->local_shard().equal(saved->aux->local_shard()));
  EXPECT_EQ(loaded->opt->step_count(), saved->opt->step_count());
  const auto a = saved->opt->state(), b = loaded->opt->state();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].group, b[i].group);
    EXPECT_EQ(a[i].step, b[i].step) << a[i].group;
    EXPECT_TRUE(a[i].master.equal(b[i].master)) << a[i].group;
    EXPECT_TRUE(a[i].exp_avg.equal(b[i].exp_avg)) << a[i].group;
    EXPECT_TRUE(a[i].exp_avg_sq.equal(b[i].exp_avg_sq)) << a[i].group;
  }
  EXPECT_EQ(a[0].step, 3);  // heads: every step
  EXPECT_EQ(a[1].step, 2);  // aux: steps 0 and 2
  expect_equal_state(full_state(*loaded), want);

  // The restored state is usable: both continue identically.
  train(*saved, comm, 2, 3);
  train(*loaded, comm, 2, 3);
  expect_equal_state(full_state(*loaded), full_state(*saved));
  comm->barrier()->wait();
  if (comm->rank() == 0) fs::remove_all(dir);
}

TEST(Checkpoint, FlippedBytesAreReportedWithTheDatasetName) {
  auto comm = world().comm();
  const fs::path dir = shared_dir(comm, "flip");
  auto m = make_model(comm, 0.0);
  train(*m, comm, 1);
  const fs::path file = save_checkpoint(save_request(*m, comm, dir, 1)).path;
  flip_bytes(file, "optim/exp_avg/heads/E", 4);
  const std::string msg = error_of([&] { load_checkpoint(load_request(*make_model(comm, 5.0), comm, dir)); });
  EXPECT_NE(msg.find("/optim/exp_avg/heads/E"), std::string::npos) << msg;
  EXPECT_NE(msg.find(file.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("checksum mismatch"), std::string::npos) << msg;
  if (comm->rank() == 0) {
    const std::string local = error_of([&] { validate_checkpoint(file); });
    EXPECT_NE(local.find("/optim/exp_avg/heads/E"), std::string::npos) << local;
  }
  comm->barrier()->wait();
  if (comm->rank() == 0) fs::remove_all(dir);
}

TEST(Checkpoint, TruncatedFileIsRejectedAndFallbackUsesThePreviousOne) {
  auto comm = world().comm();
  const fs::path dir = shared_dir(comm, "truncate");
  auto m = make_model(comm, 0.0);
  train(*m, comm, 1);
  save_checkpoint(save_request(*m, comm, dir, 1));
  const auto at_step1 = full_state(*m);
  train(*m, comm, 2, 1);
  const fs::path file2 = save_checkpoint(save_request(*m, comm, dir, 3)).path;
  if (comm->rank() == 0) fs::resize_file(file2, fs::file_size(file2) * 2 / 3);
  comm->barrier()->wait();

  auto fresh = make_model(comm, 7.0);
  const std::string msg = error_of([&] { load_checkpoint(load_request(*fresh, comm, dir)); });
  EXPECT_NE(msg.find(file2.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  // The failed load modified nothing.
  EXPECT_EQ(fresh->opt->step_count(), 0);

  LoadResult lr = load_latest_valid(dir, load_request(*fresh, comm, dir));
  EXPECT_EQ(lr.path, dir / "step-000001.h5");
  EXPECT_EQ(lr.step, 1);
  ASSERT_EQ(lr.skipped.size(), 1u);
  EXPECT_NE(lr.skipped[0].find("step-000003.h5"), std::string::npos);
  expect_equal_state(full_state(*fresh), at_step1);

  // Damaged data (not just a truncated file) falls back the same way.
  flip_bytes(dir / "step-000001.h5", "params/aux/U", 2);
  const std::string none = error_of([&] { load_latest_valid(dir, load_request(*fresh, comm, dir)); });
  EXPECT_NE(none.find("no valid checkpoint"), std::string::npos) << none;
  EXPECT_NE(none.find("/params/aux/U"), std::string::npos) << none;
  comm->barrier()->wait();
  if (comm->rank() == 0) fs::remove_all(dir);
}

TEST(Checkpoint, KeepsTheLastKAndUpdatesLatestIgnoringTemporaries) {
  auto comm = world().comm();
  const fs::path dir = shared_dir(comm, "retention");
  auto m = make_model(comm, 0.0);
  for (int step = 1; step <= 4; ++step) {
    auto req = save_request(*m, comm, dir, step * 10);
    req.keep_last = 2;
    save_checkpoint(req);
    std::ifstream latest(dir / "latest");
    std::string name;
    std::getline(latest, name);
    EXPECT_EQ(name, checkpoint_file_name(step * 10));
  }
  EXPECT_EQ(list_checkpoints(dir), (std::vector<fs::path>{dir / "step-000040.h5", dir / "step-000030.h5"}));
  EXPECT_EQ(resolve_checkpoint(dir), dir / "step-000040.h5");
  EXPECT_EQ(resolve_checkpoint(dir / "latest"), dir / "step-000040.h5");
  EXPECT_EQ(resolve_checkpoint(dir / "step-000030.h5"), dir / "step-000030.h5");
  comm->barrier()->wait();

  // A crash during a save leaves a temporary: never chosen, with or without `latest`.
  if (comm->rank() == 0) {
    std::ofstream(dir / ".step-000050.h5.tmp") << "half a file";
  }
  comm->barrier()->wait();
  EXPECT_EQ(resolve_checkpoint(dir), dir / "step-000040.h5");
  comm->barrier()->wait();
  if (comm->rank() == 0) fs::remove(dir / "latest");
  comm->barrier()->wait();
  EXPECT_EQ(resolve_checkpoint(dir), dir / "step-000040.h5");
  LoadResult lr = load_checkpoint(load_request(*make_model(comm, 1.0), comm, dir));
  EXPECT_EQ(lr.step, 40);
  // The next save cleans the temporary up.
  comm->barrier()->wait();
  auto req = save_request(*m, comm, dir, 60);
  req.keep_last = 2;
  save_checkpoint(req);
  EXPECT_FALSE(fs::exists(dir / ".step-000050.h5.tmp"));
  EXPECT_EQ(list_checkpoints(dir), (std::vector<fs::path>{dir / "step-000060.h5", dir / "step-000040.h5"}));
  comm->barrier()->wait();
  if (comm->rank() == 0) fs::remove_all(dir);
}

TEST(Checkpoint, ChangedFrozenWeightsAreRefused) {
  auto comm = world().comm();
  const fs::path dir = shared_dir(comm, "frozen");
  auto m = make_model(comm, 0.0);
  save_checkpoint(save_request(*m, comm, dir, 5));
  // Same frozen values: accepted.
  load_checkpoint(load_request(*make_model(comm, 1.0), comm, dir));
  // Different frozen values (every rank builds them the same way): refused, naming the group.
  auto other = make_model(comm, 1.0, /*frozen_shift=*/1e-3);
  const std::string msg = error_of([&] { load_checkpoint(load_request(*other, comm, dir)); });
  EXPECT_NE(msg.find("frozen group 'base'"), std::string::npos) << msg;
  EXPECT_EQ(other->opt->step_count(), 0);
  // Explicitly not verified: loads.
  auto req = load_request(*other, comm, dir);
  req.verify_frozen = false;
  EXPECT_EQ(load_checkpoint(req).step, 5);
  comm->barrier()->wait();
  if (comm->rank() == 0) fs::remove_all(dir);
}

TEST(Checkpoint, FailuresAreAgreedOnEveryRank) {
  auto comm = world().comm();
  const fs::path dir = shared_dir(comm, "fail");
  auto m = make_model(comm, 0.0);
  // The directory is a regular file: rank 0 cannot write; every rank gets the error.
  if (comm->rank() == 0) std::ofstream(dir / "not_a_dir") << "x";
  comm->barrier()->wait();
  const std::string msg = error_of([&] { save_checkpoint(save_request(*m, comm, dir / "not_a_dir", 1)); });
  EXPECT_NE(msg.find("not_a_dir"), std::string::npos) << msg;
  // Nothing to load: every rank gets the error.
  const std::string none = error_of([&] { load_checkpoint(load_request(*m, comm, dir / "empty")); });
  EXPECT_NE(none.find("does not exist"), std::string::npos) << none;
  // The communicator still works (nobody is stuck in a collective).
  comm->barrier()->wait();
  if (comm->rank() == 0) fs::remove_all(dir);
}

}  // namespace
}  // namespace lookahead::ckpt
