// Target <-> reference pairing properties.
#include <gtest/gtest.h>

#include <set>

#include "data/pairing.h"

namespace lookahead::data {
namespace {

TEST(DataPairing, ReferencesAreOtherRecordsOfTheSameIdentityPreferringPhotos) {
  //                       0  1  2  3  4  5  6  7  8
  std::vector<int64_t> id{5, 5, 5, 7, 9, 9, 9, 9, 3};
  std::vector<uint8_t> ph{0, 1, 0, 1, 0, 0, 0, 0, 1};
  for (int64_t epoch = 0; epoch < 20; ++epoch) {
    Pairing p = make_pairs(id, ph, 11, epoch);
    EXPECT_EQ(p.excluded_identities, 2);  // 7 and 3
    EXPECT_EQ(p.excluded_records, 2);
    EXPECT_EQ(p.excluded_sole_photos, 1);  // record 1, identity 5's only photo
    ASSERT_EQ(p.pairs.size(), 6u);
    for (const Pair& q : p.pairs) {
      EXPECT_NE(q.target, q.reference);
      EXPECT_EQ(id[q.target], id[q.reference]);
      EXPECT_NE(q.target, 3);
      EXPECT_NE(q.target, 8);
      // Identity 5: record 1 is the only photo, so 0 and 2 must use it; 1 is no target (its
      // reference could only be stylized). Identity 9 has no photo: any other record.
      EXPECT_NE(q.target, 1);
      if (q.target == 0 || q.target == 2) {
        EXPECT_EQ(q.reference, 1);
      }
    }
    EXPECT_EQ(p.pairs[0].target, 0) << "targets in index order";
  }
}

TEST(DataPairing, DeterministicInSeedAndEpochAndVariesAcrossEpochs) {
  std::vector<int64_t> id;
  std::vector<uint8_t> ph;
  for (int64_t i = 0; i < 200; ++i) {
    id.push_back(i / 10);
    ph.push_back(i % 3 != 0);
  }
  EXPECT_EQ(make_pairs(id, ph, 1, 4).pairs, make_pairs(id, ph, 1, 4).pairs);
  EXPECT_NE(make_pairs(id, ph, 1, 4).pairs, make_pairs(id, ph, 1, 5).pairs);
  EXPECT_NE(make_pairs(id, ph, 1, 4).pairs, make_pairs(id, ph, 2, 4).pairs);
  // Every photo of an identity gets used as a reference over a few epochs (uniform choice).
  std::set<int64_t> refs;
  for (int64_t e = 0; e < 20; ++e)
    for (const Pair& q : make_pairs(id, ph, 1, e).pairs)
      if (id[q.target] == 0) refs.insert(q.reference);
  EXPECT_EQ(refs, (std::set<int64_t>{1, 2, 4, 5, 7, 8}));
}

TEST(DataPairing, RejectsMismatchedInputs) {
  EXPECT_THROW(make_pairs({1, 2}, {1}, 0, 0), c10::Error);
}

}  // namespace
}  // namespace lookahead::data
