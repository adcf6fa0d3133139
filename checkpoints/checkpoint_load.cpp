// load_checkpoint, load_latest_valid and validate_checkpoint (see checkpoint.h and
// docs/checkpoints.md): rank 0 chooses and validates the file, every rank reads its own shards
// into staging tensors, and nothing is modified until every rank has succeeded.
#include "checkpoints/checkpoint.h"

#include <xxhash.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <iostream>
#include <set>
#include <sstream>

#include "checkpoints/agreement.h"
#include "checkpoints/checkpoint_files.h"
#include "checkpoints/h5_io.h"

namespace lookahead::ckpt {

namespace fs = std::filesystem;
using dist::CommunicatorPtr;
using dist::FlatParamGroup;
using namespace detail;

namespace {

/// Elements [offset, offset + numel) of the flattened dataset `path`, read as a block of whole
/// rows of dimension 0 (a rectangular hyperslab) and cut down.
at::Tensor read_flat_range(hid_t file, const std::string& path, const std::vector<int64_t>& shape, int64_t offset,
                           int64_t numel) {
  H5Handle dset = h5::open_dataset(file, path);
  std::vector<hsize_t> dims = common::h5_shape(dset.get());
  if (dims != dims_of(shape)) {
    std::vector<int64_t> got(dims.begin(), dims.end());
    throw CheckpointError("dataset '/" + path + "' has shape " + shape_text(got) + ", the parameter " +
                          shape_text(shape));
  }
  {
    H5Handle type(H5Dget_type(dset.get()), "H5Dget_type");
    if (LA_H5_CHECK(H5Tequal(type.get(), H5T_NATIVE_FLOAT)) <= 0)
      throw CheckpointError("dataset '/" + path + "' is not float32");
  }
  if (numel == 0) return at::empty({0}, at::kFloat);
  if (shape.empty()) {
    at::Tensor one = at::empty({1}, at::kFloat);
    h5::read_dataset(dset.get(), H5T_NATIVE_FLOAT, one.data_ptr(), sizeof(float));
    return one.narrow(0, offset, numel);
  }
  int64_t row = 1;  // elements per index of dimension 0 (> 0: numel > 0 here)
  for (size_t d = 1; d < shape.size(); ++d) row *= shape[d];
  const int64_t first = offset / row, last = (offset + numel + row - 1) / row;
  at::Tensor rows = at::empty({(last - first) * row}, at::kFloat);
  common::h5_read_rows(dset.get(), H5T_NATIVE_FLOAT, static_cast<hsize_t>(first), static_cast<hsize_t>(last),
                rows.data_ptr());
  return rows.narrow(0, offset - first * row, numel);
}

/// This rank's shard [shard_numel] (fp32 CPU, zero padding) of `group` assembled from the global
/// per-parameter datasets under `root`.
at::Tensor read_shard(hid_t file, const std::string& root, const FlatParamGroup& group) {
  at::Tensor shard = at::zeros({group.layout().shard_numel}, at::kFloat);
  for (const auto& range : group.shard_ranges()) {
    const auto& e = group.layout().entries[group.layout().index(range.name)];
    const std::string path = param_path(root, group.name(), range.name);
    if (!common::h5_exists(file, path))
      throw CheckpointError("checkpoint has no dataset '/" + path + "' (parameter '" + range.name + "' of group '" +
                            group.name() + "')");
    shard.narrow(0, range.shard_offset, range.numel)
        .copy_(read_flat_range(file, path, e.shape, range.param_offset, range.numel));
  }
  return shard;
}

/// What one rank read, applied only after every rank succeeded.
struct Staged {
  std::vector<at::Tensor> params;  // per request.trainable, [shard_numel] fp32 CPU
  std::vector<dist::ShardedAdamWGroupState> optim;
  int64_t step_count = 0;
  std::map<std::string, uint64_t> frozen_hashes;  // stored, per requested frozen group
};

void read_checkpoint(const LoadRequest& req, const fs::path& path, LoadResult& result, Staged& staged) {
  h5::QuietErrors quiet;
  H5Handle file = h5::open_file(path.string());
  const hid_t f = file.get();
  result.path = path;
  result.step = common::h5_attr_i64(f, "step");
  result.saved_world_size = common::h5_attr_i64(f, "world_size");
  result.cursor = {common::h5_attr_i64(f, "cursor_epoch"), common::h5_attr_i64(f, "cursor_global_index")};
  result.alpha = {common::h5_attr_f64(f, "alpha_value"), common::h5_attr_i64(f, "alpha_step_drawn")};
  result.config_text = read_bytes(f, "meta/config");
  if (req.check_config)
    if (const std::string refusal = req.check_config(result.config_text); !refusal.empty())
      throw CheckpointError(refusal);
  const int world = size_of(req.comm);
  if (result.saved_world_size == world) {
    result.rng_state = read_bytes(f, rng_path(rank_of(req.comm)));
  } else {
    result.rng_rederived = true;
    result.rng_note = "world size changed (" + std::to_string(result.saved_world_size) + " -> " +
                      std::to_string(world) + "): RNG states re-derived from seed";
  }
  if (common::h5_exists(f, "frozen")) {
    for (const auto& name : h5::list_datasets(f)) {
      if (!name.starts_with("frozen/") || !name.ends_with("/sources")) continue;
      const std::string group = name.substr(7, name.size() - 7 - 8);
      result.frozen_sources[group] = split_lines(read_bytes(f, name));
    }
  }
  if (req.verify_frozen) {
    for (const auto& group : req.frozen) {
      const std::string path_in = "frozen/" + group->name();
      if (!common::h5_exists(f, path_in))
        throw CheckpointError("frozen group '" + group->name() + "' is not recorded in the checkpoint");
      H5Handle fg = h5::open_group(f, path_in);
      if (common::h5_attr_i64(fg.get(), "numel") != group->layout().numel ||
          h5::attr_str(fg.get(), "dtype") != c10::toString(group->storage_dtype()))
        throw CheckpointError("frozen group '" + group->name() + "' has a different size or dtype than at save time");
      staged.frozen_hashes[group->name()] = common::h5_attr_u64(fg.get(), "values_xxh64");
    }
  }
  for (const auto& group : req.trainable) staged.params.push_back(read_shard(f, "params", *group));
  if (req.optimizer) {
    if (!common::h5_exists(f, "optim"))
      throw CheckpointError("the checkpoint holds no optimizer state (saved without an optimizer)");
    staged.step_count = common::h5_attr_i64(h5::open_group(f, "optim").get(), "step_count");
    for (const auto& live : req.optimizer->state()) {
      size_t index = req.trainable.size();
      for (size_t i = 0; i < req.trainable.size(); ++i)
        if (req.trainable[i]->name() == live.group) index = i;
      const FlatParamGroup& group = *req.trainable[index];  // checked before
      const std::string og = "optim/groups/" + live.group;
      if (!common::h5_exists(f, og)) throw CheckpointError("the checkpoint has no optimizer state for group '" + live.group + "'");
      H5Handle handle = h5::open_group(f, og);
      const c10::Device device = group.device();
      dist::ShardedAdamWGroupState s;
      s.group = live.group;
      s.lr_group = h5::attr_str(handle.get(), "lr_group");
      s.step = common::h5_attr_i64(handle.get(), "step");
      s.master = staged.params[index].to(device);
      s.exp_avg = read_shard(f, "optim/exp_avg", group).to(device);
      s.exp_avg_sq = read_shard(f, "optim/exp_avg_sq", group).to(device);
      staged.optim.push_back(std::move(s));
    }
  }
}


}  // namespace

void validate_checkpoint(const fs::path& path) {
  const std::string file_name = path.string();
  std::string current = "(file)";
  try {
    h5::QuietErrors quiet;
    if (!fs::is_regular_file(path)) throw CheckpointError("no such file");
    H5Handle file;
    try {
      file = h5::open_file(file_name);
    } catch (const common::H5Error& e) {
      throw CheckpointError(std::string("cannot open as HDF5 (truncated or not a checkpoint): ") + e.what());
    }
    const hid_t f = file.get();
    current = "(root attributes)";
    if (!common::h5_has_attr(f, "format") || h5::attr_str(f, "format") != kFormatName)
      throw CheckpointError(std::string("not a ") + kFormatName + " file");
    const int64_t version = common::h5_attr_i64(f, "format_version");
    if (version != kFormatVersion)
      throw CheckpointError("format version " + std::to_string(version) + ", this build reads " +
                            std::to_string(kFormatVersion));
    current = "(attributes)";
    if (!common::h5_has_attr(f, kMetaChecksumAttr) || common::h5_attr_u64(f, kMetaChecksumAttr) != metadata_hash(f))
      throw CheckpointError("attribute checksum mismatch (metadata damaged)");
    for (const auto& name : h5::list_datasets(f)) {
      current = "dataset '/" + name + "'";
      H5Handle dset = h5::open_dataset(f, name);
      if (!common::h5_has_attr(dset.get(), h5::kChecksumAttr)) throw CheckpointError("no checksum");
      const std::vector<uint8_t> bytes = h5::raw_bytes(dset.get());
      const uint64_t want = common::h5_attr_u64(dset.get(), h5::kChecksumAttr);
      const uint64_t got = XXH64(bytes.data(), bytes.size(), 0);
      if (got != want) {
        std::ostringstream msg;
        msg << "checksum mismatch (stored " << std::hex << want << ", computed " << got << ")";
        throw CheckpointError(msg.str());
      }
    }
  } catch (const std::exception& e) {
    throw CheckpointError("checkpoint '" + file_name + "' is damaged: " + current + ": " + e.what());
  }
}

LoadResult load_checkpoint(const LoadRequest& req) {
  TORCH_CHECK(req.comm, "load_checkpoint: no communicator");
  const CommunicatorPtr& comm = req.comm;
  const bool root = rank_of(comm) == 0;
  LoadResult result;

  // 1. Local argument checks everywhere; rank 0 chooses and validates the file.
  std::string chosen, skipped;
  agree(comm, capture([&] {
          std::set<std::string> names;
          for (const auto& g : req.trainable) {
            TORCH_CHECK(g, "load_checkpoint: null trainable group");
            TORCH_CHECK(names.insert(g->name()).second, "load_checkpoint: group '", g->name(), "' listed twice");
          }
          if (req.optimizer)
            for (const auto& s : req.optimizer->state())
              TORCH_CHECK(names.count(s.group), "load_checkpoint: optimizer group '", s.group,
                          "' is not in the trainable groups");
          if (!root) return;
          const fs::path first = resolve_checkpoint(req.source);
          std::vector<fs::path> candidates{first};
          if (req.fallback_to_previous) {
            const auto first_step = parse_step(first);
            for (const auto& c : list_checkpoints(first.parent_path()))
              if (c != first && (!first_step || parse_step(c).value_or(0) < *first_step)) candidates.push_back(c);
          }
          std::vector<std::string> reasons;
          for (const auto& c : candidates) {
            try {
              validate_checkpoint(c);
              chosen = c.string();
              break;
            } catch (const CheckpointError& e) {
              if (!req.fallback_to_previous) throw;
              std::cerr << "[checkpoint] skipping " << c.string() << ": " << e.what() << std::endl;
              reasons.push_back(c.string() + ": " + e.what());
            }
          }
          if (chosen.empty())
            throw CheckpointError("no valid checkpoint for '" + req.source.string() + "'; rejected:\n" +
                                  join_lines(reasons));
          skipped = join_lines(reasons);
        }));
  broadcast_string(comm, 0, chosen);
  broadcast_string(comm, 0, skipped);
  result.skipped = split_lines(skipped);

  // 2. Every rank reads what it needs into staging tensors.
  Staged staged;
  agree(comm, capture([&] {
          try {
            read_checkpoint(req, chosen, result, staged);
          } catch (const std::exception& e) {
            throw CheckpointError("load_checkpoint '" + chosen + "': " + e.what());
          }
        }));

  // 3. Frozen weights must be the ones the checkpoint was trained against.
  if (req.verify_frozen) {
    std::optional<std::string> mismatch;
    for (const auto& g : req.frozen) {
      const uint64_t hash = frozen_group_hash(*g);
      if (!mismatch && hash != staged.frozen_hashes.at(g->name()))
        mismatch = "load_checkpoint '" + chosen + "': frozen group '" + g->name() +
                   "' differs from the weights the checkpoint was trained with (values hash mismatch)";
    }
    agree(comm, mismatch);
  }

  // 4. Commit: nothing above modified the groups or the optimizer.
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < req.trainable.size(); ++i) {
    const auto& g = req.trainable[i];
    if (req.optimizer && find_state(staged.optim, g->name())) continue;  // load_state writes the shard
    g->local_shard().copy_(staged.params[i].to(g->local_shard().options()));
  }
  if (req.optimizer) req.optimizer->load_state(staged.step_count, staged.optim);
  return result;
}

LoadResult load_latest_valid(const fs::path& dir, LoadRequest request) {
  request.source = dir;
  request.fallback_to_previous = true;
  return load_checkpoint(request);
}


}  // namespace lookahead::ckpt
