// The manifest of a sharded training set: a JSON file listing training-set files (shards) whose
// concatenation, in manifest order, is the set. TrainingSet::open accepts a manifest wherever it
// accepts a file (docs/data.md, "Sharded sets").
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace lookahead::data {

/// Value of the manifest's "format" key and the newest "version" this build reads.
inline constexpr const char* kManifestFormatName = "lookahead-trainingset-manifest";
inline constexpr int64_t kManifestVersion = 1;

/// One shard: a training-set file, its record count and its size in bytes (both checked at open,
/// so a shard rewritten or truncated after the manifest was written is caught).
struct ShardEntry {
  std::string path;  ///< relative to the manifest's folder, or absolute
  int64_t records = 0;
  int64_t bytes = 0;
  bool operator==(const ShardEntry&) const = default;
};

struct Manifest {
  std::vector<ShardEntry> shards;
  /// Every other top-level key, the writer's own (e.g. the generation settings): kept by
  /// read_manifest and written back by write_manifest, ignored by the reader. A JSON object (or
  /// null = none).
  nlohmann::json extra;
};

/// Reads and validates a manifest: format name, version, and every shard entry's keys. Throws
/// DataError naming the manifest and the bad key (and the shard, by number and path).
Manifest read_manifest(const std::string& path);

/// Writes `m` to `path` atomically (a temporary beside it, renamed into place). Throws DataError
/// naming the file for an entry that could not be read back (empty path, negative counts) or for
/// `extra` that is not an object or holds one of the manifest's own keys.
void write_manifest(const std::string& path, const Manifest& m);

/// True when `path` looks like a manifest rather than an HDF5 file: its name ends in ".json" or its
/// first non-blank byte is '{'. False for a missing file.
bool is_manifest(const std::string& path);

/// The file of `shard`: its path when absolute, otherwise relative to `manifest_path`'s folder.
std::string shard_file(const std::string& manifest_path, const ShardEntry& shard);

}  // namespace lookahead::data
