// Reference selection for each target.
#include "data/pairing.h"

#include <c10/util/Exception.h>

#include <unordered_map>

#include "data/random.h"

namespace lookahead::data {

Pairing make_pairs(const std::vector<int64_t>& identities, const std::vector<uint8_t>& photo, uint64_t seed,
                   int64_t epoch) {
  TORCH_CHECK(identities.size() == photo.size(), "make_pairs: ", identities.size(), " identities but ", photo.size(),
              " photo flags");
  const int64_t n = static_cast<int64_t>(identities.size());
  // Records of each identity, in index order (so the result does not depend on hash-map order).
  std::unordered_map<int64_t, std::vector<int64_t>> members;
  for (int64_t i = 0; i < n; ++i) members[identities[i]].push_back(i);
  Pairing out;
  for (const auto& [id, recs] : members)
    if (recs.size() < 2) {
      ++out.excluded_identities;
      out.excluded_records += static_cast<int64_t>(recs.size());
    }
  std::vector<int64_t> candidates;
  for (int64_t t = 0; t < n; ++t) {
    const auto& recs = members.at(identities[t]);
    if (recs.size() < 2) continue;
    candidates.clear();
    for (int64_t r : recs)
      if (r != t && photo[r]) candidates.push_back(r);
    if (candidates.empty()) {
      if (photo[t]) {
        ++out.excluded_sole_photos;  // its identity's only photo: the others are stylized
        continue;
      }
      for (int64_t r : recs)
        if (r != t) candidates.push_back(r);
    }
    // One independent stream per (seed, epoch, target): a target's reference does not depend on
    // how many records precede it, so appending records does not reshuffle earlier pairs.
    SplitMix rng(derive_seed(seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(t)));
    out.pairs.push_back({t, candidates[rng.uniform(candidates.size())]});
  }
  return out;
}

}  // namespace lookahead::data
