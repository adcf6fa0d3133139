// Checkpoints: one HDF5 file per checkpoint holding every trainable parameter and its AdamW state
// with GLOBAL, unpadded shapes (so any world size can load it), the frozen weights only by hash,
// and the run's bookkeeping (step, config, per-rank RNG, data cursor, alpha state). Files are
// written atomically (temporary name, fsync, rename, then `latest`) and checksummed per dataset.
// The file layout is documented in docs/checkpoints.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/stream_cursor.h"
#include "dist/communicator.h"
#include "dist/flat_param.h"
#include "dist/sharded_adamw.h"

namespace lookahead::ckpt {

/// A checkpoint could not be written, found, validated or applied. `what()` names the file and,
/// for damaged content, the dataset.
class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline constexpr const char* kFormatName = "lookahead-checkpoint";
inline constexpr int64_t kFormatVersion = 1;

/// State of the lookahead mixing weight alpha.
struct AlphaState {
  double value = 0.0;
  int64_t step_drawn = 0;  ///< training step at which `value` was drawn
};

/// A frozen group recorded by hash (its values are not copied into the checkpoint).
struct FrozenGroupRef {
  std::shared_ptr<dist::FlatParamGroup> group;
  /// Where the weights come from (e.g. the base model's safetensors files), for humans and tools.
  std::vector<std::string> sources;
};

/// Everything save_checkpoint writes. All ranks pass the same groups (same names, same order).
struct SaveRequest {
  std::filesystem::path dir;  ///< created if missing (by rank 0)
  int64_t step = 0;           ///< names the file: step-000123.h5
  /// Communicator over every rank (CPU / MPI): error agreement, barrier, RNG gather. Groups use
  /// their own communicators to gather their shards.
  dist::CommunicatorPtr comm;
  /// Trainable groups to store. Groups managed by `optimizer` are stored from its fp32 master
  /// weights (exact also for bf16 storage), the others from their shard cast to fp32.
  std::vector<std::shared_ptr<dist::FlatParamGroup>> trainable;
  /// Optional: its moments and step counts are stored for every group it manages; each of them
  /// must also be listed in `trainable`.
  const dist::ShardedAdamW* optimizer = nullptr;
  std::vector<FrozenGroupRef> frozen;
  std::string config_text;  ///< resolved configuration
  std::string rng_state;    ///< THIS rank's RNG state (opaque bytes); gathered to rank 0
  common::StreamCursor cursor;  ///< where the data loader stands (resumes the sampler)
  AlphaState alpha;
  /// Checkpoints kept in `dir` after this one is committed (newest first); 0 keeps all.
  int keep_last = 3;
};

struct SaveResult {
  std::filesystem::path path;                  ///< the committed file
  int64_t bytes = 0;                           ///< its size
  double seconds = 0.0;                        ///< wall time of the whole save (rank 0's view)
  std::vector<std::filesystem::path> removed;  ///< old checkpoints deleted by retention (rank 0)
};

/// Collective over `request.comm` (and each group's communicator): gathers every trainable group
/// and its optimizer state, hashes the frozen groups and gathers the RNG states, then rank 0
/// alone writes DIR/.step-N.h5.tmp with serial HDF5, flushes and fsyncs it, renames it to
/// DIR/step-N.h5, rewrites DIR/latest (tmp + rename) and applies `keep_last`. Returns on every rank
/// only after rank 0 finished; a failure anywhere throws CheckpointError on EVERY rank (never a
/// hang), and leaves the previous checkpoint and `latest` untouched.
SaveResult save_checkpoint(const SaveRequest& request);

/// What load_checkpoint restores into.
struct LoadRequest {
  /// A checkpoint file, a checkpoint directory (its `latest`, else its newest step-*.h5), or
  /// DIR/latest.
  std::filesystem::path source;
  dist::CommunicatorPtr comm;  ///< every rank (CPU / MPI)
  /// Groups whose shards are overwritten, matched by group and parameter name; shard layouts may
  /// differ from the saving run's (resharding).
  std::vector<std::shared_ptr<dist::FlatParamGroup>> trainable;
  /// When set, its state is restored (moments, per-group steps, step count and master weights)
  /// for every group it manages; each of them must be listed in `trainable`.
  dist::ShardedAdamW* optimizer = nullptr;
  /// Frozen groups to verify against the stored hashes when `verify_frozen`.
  std::vector<std::shared_ptr<dist::FlatParamGroup>> frozen;
  bool verify_frozen = true;
  /// When the chosen checkpoint is damaged, try the older ones in the same directory, newest
  /// first (each rejection is logged on rank 0 and listed in LoadResult::skipped).
  bool fallback_to_previous = false;
  /// Called on every rank with the chosen checkpoint's resolved configuration before anything is
  /// read from it: a non-empty return refuses the load with that message (no fallback: an older
  /// checkpoint of the same run has the same configuration).
  std::function<std::string(const std::string& config_text)> check_config;
};

struct LoadResult {
  std::filesystem::path path;  ///< the file actually loaded
  int64_t step = 0;
  int64_t saved_world_size = 0;
  std::string config_text;
  /// This rank's saved RNG state; empty when the world size changed (see rng_rederived).
  std::optional<std::string> rng_state;
  /// The world size differs from the saving run's, so per-rank RNG states cannot be matched to
  /// ranks: the caller must re-derive them from the seed.
  bool rng_rederived = false;
  std::string rng_note;  ///< human-readable reason when rng_rederived
  common::StreamCursor cursor;  ///< where the data loader stands (resumes the sampler)
  AlphaState alpha;
  /// Frozen group name -> source paths recorded at save time.
  std::map<std::string, std::vector<std::string>> frozen_sources;
  /// "file: reason" for every newer checkpoint rejected before `path` (fallback).
  std::vector<std::string> skipped;
};

/// Collective over `request.comm`: rank 0 picks and fully validates the checkpoint (format,
/// version, every checksum) and broadcasts its choice; then every rank reads only the row blocks
/// of the global datasets its shards need (no large broadcasts, no N-fold validation), all ranks
/// agree that reading succeeded, the frozen hashes are verified, and only then is any state
/// modified. Throws CheckpointError on every rank on failure; the groups and optimizer are then
/// left as they were.
LoadResult load_checkpoint(const LoadRequest& request);

/// load_checkpoint of `dir` with fallback_to_previous on: the newest valid checkpoint.
LoadResult load_latest_valid(const std::filesystem::path& dir, LoadRequest request);

// --- local helpers (no collectives) -------------------------------------------------------------

/// "step-000123.h5".
std::string checkpoint_file_name(int64_t step);
/// Committed checkpoints (step-*.h5; never temporaries) in `dir`, newest (highest step) first.
std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& dir);
/// The checkpoint `path_or_dir` denotes: a file is itself; a directory (or DIR/latest) is the file
/// named in DIR/latest when that exists, else the newest step-*.h5. Leftover .tmp files are never
/// chosen. Throws CheckpointError when there is none.
std::filesystem::path resolve_checkpoint(const std::filesystem::path& path_or_dir);
/// Opens `file` and checks format name, version and every dataset's checksum; throws
/// CheckpointError naming the file (and the dataset) otherwise.
void validate_checkpoint(const std::filesystem::path& file);

/// Collective over `group.comm()`: XXH64 of the group's full, unpadded values in its storage dtype
/// (layout order). Independent of the shard count, so a checkpoint saved at one world size can
/// be verified at another.
uint64_t frozen_group_hash(dist::FlatParamGroup& group);

}  // namespace lookahead::ckpt
