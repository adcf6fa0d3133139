// Names and layout of checkpoint files, shared by save, load and validation: file names and step
// numbers, dataset paths, the metadata checksum, byte datasets, retention. Internal to
// checkpoints/ (the public API is checkpoint.h).
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "dist/sharded_adamw.h"

namespace lookahead::ckpt::detail {

/// Root attribute: XXH64 over every other attribute of the file (see metadata_hash).
inline constexpr const char* kMetaChecksumAttr = "meta_xxh64";

/// Refuses group / parameter names that cannot be one path component.
void check_name(const std::string& name, const char* what);
/// "[2, 3]".
std::string shape_text(const std::vector<int64_t>& shape);
/// The step of "step-000123.h5"; nullopt for any other name.
std::optional<int64_t> parse_step(const std::filesystem::path& file);

std::string join_lines(const std::vector<std::string>& lines);
std::vector<std::string> split_lines(const std::string& text);

/// XXH64 over every attribute of every object (names and raw values, in name order), except the
/// root's meta checksum itself. Catches damage to the scalars that live in attributes (step,
/// cursor, alpha, per-dataset checksums), which the per-dataset checksums cannot see.
uint64_t metadata_hash(hid_t file);

/// A checkpoint dataset path for a parameter: "<root>/<group>/<param>".
std::string param_path(const std::string& root, const std::string& group, const std::string& param);
/// "rng/rank_000003".
std::string rng_path(int64_t rank);
std::vector<hsize_t> dims_of(const std::vector<int64_t>& shape);

/// A one-dimensional uint8 dataset holding `bytes` (config text, RNG state, frozen sources).
void write_bytes(hid_t file, const std::string& name, const std::string& bytes);
std::string read_bytes(hid_t file, const std::string& name);

/// The optimizer state of `group` in `states`, or null.
const dist::ShardedAdamWGroupState* find_state(const std::vector<dist::ShardedAdamWGroupState>& states,
                                               const std::string& group);

/// Removes temporaries of crashed saves and all but the newest `keep_last` checkpoints (0: keep
/// all), never `keep`; returns the checkpoints removed.
std::vector<std::filesystem::path> prune(const std::filesystem::path& dir, int keep_last,
                                         const std::filesystem::path& keep);

}  // namespace lookahead::ckpt::detail
