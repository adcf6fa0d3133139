// save_checkpoint and frozen_group_hash (see checkpoint.h and docs/checkpoints.md): gather every
// shard to rank 0, which alone writes the file under a temporary name and publishes it atomically.
#include "checkpoints/checkpoint.h"

#include <xxhash.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <chrono>
#include <ctime>
#include <set>

#include "checkpoints/agreement.h"
#include "checkpoints/checkpoint_files.h"
#include "checkpoints/h5_io.h"
#include "common/atomic_file.h"

namespace lookahead::ckpt {

namespace fs = std::filesystem;
using dist::CommunicatorPtr;
using dist::FlatParamGroup;
using namespace detail;

namespace {

/// Collective over `group.comm()`: rows of `local` [k, shard_numel] (on the group's device) of
/// every shard, concatenated into [k, padded_numel] on the CPU.
at::Tensor gather_rows(const FlatParamGroup& group, const at::Tensor& local) {
  const auto& comm = group.comm();
  if (!comm || comm->size() == 1) return local.cpu();
  const int64_t k = local.size(0), shard = local.size(1), n = comm->size();
  at::Tensor input = local.contiguous().view({-1});
  at::Tensor output = at::empty({n * k * shard}, input.options());
  comm->all_gather(output, input)->wait();
  return output.view({n, k, shard}).permute({1, 0, 2}).reshape({k, n * shard}).cpu();
}


/// Everything rank 0 writes, gathered from the ranks.
struct Gathered {
  struct Group {
    const FlatParamGroup* group = nullptr;
    at::Tensor rows;  // [1 or 3, padded_numel] fp32 CPU: values, (exp_avg, exp_avg_sq)
    const dist::ShardedAdamWGroupState* state = nullptr;
  };
  std::vector<Group> groups;
  std::vector<uint64_t> frozen_hashes;
  std::vector<std::string> rng;  // per rank
};

std::vector<std::string> gather_rng(const CommunicatorPtr& comm, const std::string& mine) {
  if (!is_multi(comm)) return {mine};
  return dist::all_gather_strings(*comm, mine);
}

void write_file(const SaveRequest& req, const Gathered& g, int world_size, const fs::path& tmp) {
  h5::QuietErrors quiet;
  H5Handle file = h5::create_file(tmp.string());
  const hid_t f = file.get();
  common::h5_set_attr(f, "format", std::string(kFormatName));
  common::h5_set_attr(f, "format_version", kFormatVersion);
  common::h5_set_attr(f, "step", req.step);
  common::h5_set_attr(f, "world_size", static_cast<int64_t>(world_size));
  common::h5_set_attr(f, "cursor_epoch", req.cursor.epoch);
  common::h5_set_attr(f, "cursor_global_index", req.cursor.index);
  common::h5_set_attr(f, "alpha_value", req.alpha.value);
  common::h5_set_attr(f, "alpha_step_drawn", req.alpha.step_drawn);
  common::h5_set_attr(f, "hdf5_version", common::hdf5_version());
  common::h5_set_attr(f, "created_unix", static_cast<int64_t>(std::time(nullptr)));
  write_bytes(f, "meta/config", req.config_text);

  for (const auto& entry : g.groups) {
    const FlatParamGroup& group = *entry.group;
    for (const auto& e : group.layout().entries) {
      const auto write = [&](const std::string& root, int64_t row) {
        at::Tensor values = entry.rows[row].narrow(0, e.offset, e.numel).contiguous();
        h5::write_dataset(f, param_path(root, group.name(), e.name), H5T_NATIVE_FLOAT, dims_of(e.shape),
                          values.data_ptr(), static_cast<size_t>(values.nbytes()));
      };
      write("params", 0);
      if (entry.state) {
        write("optim/exp_avg", 1);
        write("optim/exp_avg_sq", 2);
      }
    }
  }
  if (req.optimizer) {
    H5Handle optim = common::h5_exists(f, "optim") ? h5::open_group(f, "optim") : h5::create_group(f, "optim");
    common::h5_set_attr(optim.get(), "step_count", req.optimizer->step_count());
    for (const auto& entry : g.groups) {
      if (!entry.state) continue;
      H5Handle og = h5::create_group(f, "optim/groups/" + entry.group->name());
      common::h5_set_attr(og.get(), "step", entry.state->step);
      common::h5_set_attr(og.get(), "lr_group", entry.state->lr_group);
    }
  }
  {
    H5Handle rng = h5::create_group(f, "rng");
    common::h5_set_attr(rng.get(), "world_size", static_cast<int64_t>(world_size));
  }
  for (size_t r = 0; r < g.rng.size(); ++r) write_bytes(f, rng_path(static_cast<int64_t>(r)), g.rng[r]);
  for (size_t i = 0; i < req.frozen.size(); ++i) {
    const FlatParamGroup& group = *req.frozen[i].group;
    H5Handle fg = h5::create_group(f, "frozen/" + group.name());
    common::h5_set_attr(fg.get(), "values_xxh64", g.frozen_hashes[i]);
    common::h5_set_attr(fg.get(), "numel", group.layout().numel);
    common::h5_set_attr(fg.get(), "dtype", std::string(c10::toString(group.storage_dtype())));
    write_bytes(f, "frozen/" + group.name() + "/sources", join_lines(req.frozen[i].sources));
  }
  common::h5_set_attr(f, kMetaChecksumAttr, metadata_hash(f));
  LA_H5_CHECK(H5Fflush(f, H5F_SCOPE_GLOBAL));
}

}  // namespace

uint64_t frozen_group_hash(FlatParamGroup& group) {
  const auto& layout = group.layout();
  const auto& comm = group.comm();
  at::Tensor full;
  if (!comm || comm->size() == 1) {
    full = group.local_shard();
  } else {
    full = at::empty({layout.padded_numel}, group.local_shard().options());
    comm->all_gather(full, group.local_shard())->wait();
  }
  at::Tensor values = full.narrow(0, 0, layout.numel).cpu().contiguous();
  return XXH64(values.data_ptr(), static_cast<size_t>(values.nbytes()), 0);
}

SaveResult save_checkpoint(const SaveRequest& req) {
  const auto start = std::chrono::steady_clock::now();
  TORCH_CHECK(req.comm, "save_checkpoint: no communicator");
  const CommunicatorPtr& comm = req.comm;
  std::vector<dist::ShardedAdamWGroupState> states;
  uint64_t structure = 0;
  agree(comm, capture([&] {
          TORCH_CHECK(req.step >= 0, "save_checkpoint: negative step ", req.step);
          TORCH_CHECK(req.keep_last >= 0, "save_checkpoint: negative keep_last");
          std::string text = "step=" + std::to_string(req.step) + ";";
          std::set<std::string> names;
          for (const auto& g : req.trainable) {
            TORCH_CHECK(g && g->trainable(), "save_checkpoint: group '", g ? g->name() : "(null)",
                        "' is not trainable");
            check_name(g->name(), "group");
            TORCH_CHECK(names.insert(g->name()).second, "save_checkpoint: group '", g->name(), "' listed twice");
            text += "T:" + g->name() + ";";
            for (const auto& e : g->layout().entries) {
              check_name(e.name, "parameter");
              text += e.name + shape_text(e.shape) + ";";
            }
          }
          for (const auto& fr : req.frozen) {
            TORCH_CHECK(fr.group, "save_checkpoint: null frozen group");
            check_name(fr.group->name(), "frozen group");
            text += "F:" + fr.group->name() + ";";
          }
          if (req.optimizer) {
            states = req.optimizer->state();
            for (const auto& s : states) {
              TORCH_CHECK(names.count(s.group), "save_checkpoint: optimizer group '", s.group,
                          "' is not in the trainable groups");
              text += "O:" + s.group + ";";
            }
          }
          structure = XXH64(text.data(), text.size(), 0);
        }));
  check_same(comm, "the checkpoint contents (step, groups, parameters)", structure);

  // Collectives, in the same order on every rank.
  Gathered gathered;
  for (const auto& g : req.trainable) {
    const auto* state = find_state(states, g->name());
    at::Tensor local = state ? at::stack({state->master, state->exp_avg, state->exp_avg_sq})
                             : g->local_shard().to(at::kFloat).unsqueeze(0);
    at::Tensor rows = gather_rows(*g, local);
    gathered.groups.push_back({g.get(), rank_of(comm) == 0 ? rows : at::Tensor(), state});
  }
  for (const auto& fr : req.frozen) gathered.frozen_hashes.push_back(frozen_group_hash(*fr.group));
  gathered.rng = gather_rng(comm, req.rng_state);

  SaveResult result;
  result.path = req.dir / checkpoint_file_name(req.step);
  std::optional<std::string> error;
  if (rank_of(comm) == 0) {
    // c10::str rather than "." + name: GCC 12 reports a false stringop-overflow for the latter.
    const fs::path tmp = req.dir / c10::str(".", checkpoint_file_name(req.step), ".tmp");
    error = capture([&] {
      try {
        fs::create_directories(req.dir);
        write_file(req, gathered, size_of(comm), tmp);
        common::publish_file(tmp, result.path);
        common::write_file_atomically(req.dir / "latest", result.path.filename().string() + "\n");
        result.bytes = static_cast<int64_t>(fs::file_size(result.path));
        result.removed = prune(req.dir, req.keep_last, result.path);
      } catch (const std::exception& e) {
        std::error_code ec;
        fs::remove(tmp, ec);  // never leave a half-written file behind
        throw CheckpointError("save_checkpoint: writing '" + result.path.string() + "' failed: " + e.what());
      }
    });
  }
  agree(comm, error);  // also the barrier: nobody returns before rank 0 committed
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace lookahead::ckpt
