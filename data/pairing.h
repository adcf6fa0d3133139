// Target <-> reference pairing: every target record gets a *different* record of the same
// identity as its reference (the encoder's input and the ID loss's reference), a photo whenever
// the identity has photos (generated sets: references only from vanilla images).
#pragma once

#include <cstdint>
#include <vector>

namespace lookahead::data {

/// One training sample: indices of records in the training set.
struct Pair {
  int64_t target = -1;
  int64_t reference = -1;
  bool operator==(const Pair&) const = default;
};

/// Pairs of one epoch and what was left out.
struct Pairing {
  std::vector<Pair> pairs;          ///< one per usable target, in target index order
  int64_t excluded_identities = 0;  ///< identities with a single record (no possible reference)
  int64_t excluded_records = 0;     ///< their records
  /// Targets left out because they are their identity's only photo while it has other records:
  /// their reference could only be a stylized image, and references are photos when any exists.
  int64_t excluded_sole_photos = 0;
};

/// Builds the pairs for `epoch`. For each record whose identity has >= 2 records, the reference is
/// drawn uniformly among the *other* photo-flagged records of that identity; when the identity has
/// no photo at all, among all its other records; a record that is its identity's only photo is no
/// target (excluded_sole_photos), so a reference is never a stylized image of an identity that has
/// photos. Deterministic in (seed, epoch) and platform-independent; the list
/// of targets (and so its length) does not depend on the epoch, only the references do.
/// `identities` and `photo` have one entry per record.
Pairing make_pairs(const std::vector<int64_t>& identities, const std::vector<uint8_t>& photo, uint64_t seed,
                   int64_t epoch);

}  // namespace lookahead::data
