// EpochOrder: N ranks together see exactly what one rank sees; resume from a cursor,
// also at another world size.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "data/epoch_order.h"

namespace lookahead::data {
namespace {

// The concatenation over ranks of one global batch each, for `steps` steps.
std::vector<std::vector<int64_t>> run_ranks(int64_t n, int64_t batch, int world, uint64_t seed, int64_t steps,
                                            Cursor start = {}) {
  std::vector<EpochOrder> s;
  for (int r = 0; r < world; ++r) {
    s.emplace_back(n, batch, r, world, seed);
    s.back().set_cursor(start);
  }
  std::vector<std::vector<int64_t>> out;
  for (int64_t k = 0; k < steps; ++k) {
    std::vector<int64_t> global;
    for (auto& x : s) {
      auto b = x.next();
      global.insert(global.end(), b.indices.begin(), b.indices.end());
    }
    out.push_back(global);
  }
  return out;
}

TEST(DataEpochOrder, RankSlicesConcatenateToTheOneRankBatch) {
  for (int64_t batch : {12, 10}) {  // 10 over 4 ranks: uneven slices 2,3,2,3
    auto one = run_ranks(101, batch, 1, 3, 25);  // crosses two epoch boundaries
    for (int world = 2; world <= 4; ++world)
      EXPECT_EQ(run_ranks(101, batch, world, 3, 25), one) << "world " << world << " batch " << batch;
  }
  EpochOrder s(10, 10, 3, 4, 0);
  EXPECT_EQ(s.slice_begin(), 7);
  EXPECT_EQ(s.slice_end(), 10);
}

TEST(DataEpochOrder, EpochIsAPermutationWithDropLast) {
  EpochOrder s(50, 8, 0, 1, 9);
  EXPECT_EQ(s.batches_per_epoch(), 6);
  std::set<int64_t> seen;
  for (int k = 0; k < 6; ++k) {
    auto b = s.next();
    EXPECT_EQ(b.epoch, 0);
    EXPECT_EQ(b.step, k);
    for (int64_t i : b.indices) EXPECT_TRUE(seen.insert(i).second) << "index " << i << " twice in an epoch";
  }
  EXPECT_EQ(seen.size(), 48u);
  auto b = s.next();  // the 2-sample tail is dropped
  EXPECT_EQ(b.epoch, 1);
  EXPECT_EQ(b.start, (Cursor{1, 0}));
  EXPECT_NE(s.permutation(0), s.permutation(1));
  EXPECT_EQ(s.permutation(1), EpochOrder(50, 8, 0, 1, 9).permutation(1));
}

TEST(DataEpochOrder, ResumeFromCursorGivesTheSameContinuation) {
  EpochOrder a(40, 4, 1, 2, 5);
  for (int k = 0; k < 7; ++k) a.next();
  Cursor c = a.cursor();
  EpochOrder b(40, 4, 1, 2, 5);
  b.set_cursor(c);
  for (int k = 0; k < 12; ++k) {
    auto x = a.next(), y = b.next();
    EXPECT_EQ(x.indices, y.indices);
    EXPECT_EQ(x.start, y.start);
  }
}

TEST(DataEpochOrder, CursorIsValidAcrossWorldSizes) {
  // 2 ranks run 4 steps; 3 ranks resume from their cursor; the result equals 1 rank running on.
  auto one = run_ranks(60, 6, 1, 2, 15);
  std::vector<EpochOrder> two{{60, 6, 0, 2, 2}, {60, 6, 1, 2, 2}};
  for (int k = 0; k < 4; ++k)
    for (auto& s : two) s.next();
  Cursor c = two[0].cursor();
  EXPECT_EQ(c, two[1].cursor());
  EXPECT_EQ(c, (Cursor{0, 24}));
  auto three = run_ranks(60, 6, 3, 2, 11, c);
  EXPECT_EQ(std::vector<std::vector<int64_t>>(one.begin() + 4, one.end()), three);
}

TEST(DataEpochOrder, RejectsImpossibleConfigurations) {
  EXPECT_THROW(EpochOrder(10, 4, 2, 2, 0), c10::Error);   // rank out of range
  EXPECT_THROW(EpochOrder(10, 2, 0, 4, 0), c10::Error);   // batch < world
  EXPECT_THROW(EpochOrder(3, 4, 0, 1, 0), c10::Error);    // fewer samples than a batch
  EpochOrder s(10, 2, 0, 1, 0);
  EXPECT_THROW(s.set_cursor(0, 11), c10::Error);
}

}  // namespace
}  // namespace lookahead::data
