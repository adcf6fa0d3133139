// Under mpiexec: each rank's batches, gathered in rank order, are the 1-rank batches.
#include <gtest/gtest.h>

#include <filesystem>

#include "data/loader.h"
#include "data/tools.h"
#include "tests/test_main.h"

namespace lookahead::data {
namespace {

TEST(DataLoaderMpi, RankBatchesConcatenateToTheOneRankBatch) {
  auto& world = lookahead::test::world();
  auto comm = world.comm();
  const int rank = world.rank(), size = world.size();
  const int64_t B = 6;  // divisible by 1, 2 and 3
  if (B % size != 0) GTEST_SKIP() << "global batch " << B << " is not divisible by " << size << " ranks";
  // One file for all ranks: rank 0 writes it, the rest wait (same machine under ctest).
  at::Tensor tag = at::tensor({static_cast<int64_t>(::getpid())}, at::kLong);
  comm->broadcast(tag, 0)->wait();
  const std::string path =
      (std::filesystem::temp_directory_path() / ("la_data_mpi_" + std::to_string(tag.item<int64_t>()) + ".h5")).string();
  if (rank == 0) {
    SynthOptions o;
    o.out = path;
    o.identities = 5;
    o.per_identity = 4;
    o.size = 24;
    o.latent_size = 3;
    write_synthetic(o);
  }
  comm->barrier()->wait();
  auto set = TrainingSet::open(path);
  LoaderOptions o;
  o.resolution = 16;
  o.global_batch = B;
  o.seed = 12;
  o.threads = 2;
  Loader one(set, o);
  o.rank = rank;
  o.world_size = size;
  o.threads = 1 + rank;  // thread count must not matter
  Loader mine(set, o);
  for (int step = 0; step < 8; ++step) {  // 3 batches per epoch: crosses epochs
    LoadedBatch full = one.next(), part = mine.next();
    ASSERT_EQ(part.size(), B / size);
    at::Tensor gathered = at::empty({B, 3, 16, 16});
    comm->all_gather(gathered, part.target_images.contiguous())->wait();
    EXPECT_TRUE(at::equal(gathered, full.target_images)) << "step " << step;
    at::Tensor lat = at::empty({B, 4, 3, 3});
    comm->all_gather(lat, part.reference_latents.contiguous())->wait();
    EXPECT_TRUE(at::equal(lat, full.reference_latents)) << "step " << step;
    at::Tensor idx = at::empty({B, 2}, at::kLong), my = at::empty({B / size, 2}, at::kLong);
    for (int64_t i = 0; i < part.size(); ++i) {
      my[i][0] = part.pairs[i].target;
      my[i][1] = part.pairs[i].reference;
    }
    comm->all_gather(idx, my)->wait();
    for (int64_t i = 0; i < B; ++i) {
      EXPECT_EQ(idx[i][0].item<int64_t>(), full.pairs[i].target);
      EXPECT_EQ(idx[i][1].item<int64_t>(), full.pairs[i].reference);
    }
    EXPECT_EQ(part.next, full.next) << "the cursor counts global samples";
  }
  comm->barrier()->wait();
  if (rank == 0) std::filesystem::remove(path);
}

}  // namespace
}  // namespace lookahead::data
