// Checkpoint save / load / validation (see checkpoint.h and docs/checkpoints.md).
#include "checkpoints/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <regex>
#include <set>
#include <sstream>

#include "checkpoints/h5_io.h"
#include "dist/error.h"

namespace lookahead::ckpt {

namespace fs = std::filesystem;
using dist::CommunicatorPtr;
using dist::FlatParamGroup;
using dist::ReduceOp;

namespace {

constexpr const char* kMetaChecksumAttr = "meta_xxh64";

bool is_multi(const CommunicatorPtr& comm) { return comm && comm->size() > 1; }
int rank_of(const CommunicatorPtr& comm) { return comm ? comm->rank() : 0; }
int size_of(const CommunicatorPtr& comm) { return comm ? comm->size() : 1; }

// --- agreement over the world communicator ------------------------------------------------------

/// Broadcasts `text` from `root`.
void broadcast_string(const CommunicatorPtr& comm, int root, std::string& text) {
  if (is_multi(comm)) dist::broadcast_string(*comm, root, text);
}

/// Collective: every rank learns whether any rank failed, and if so throws CheckpointError with
/// the message of the lowest failing rank. This is what keeps a failure on one rank (typically
/// rank 0, the only writer) from leaving the others waiting in the next collective.
void agree(const CommunicatorPtr& comm, const std::optional<std::string>& error) {
  if (!is_multi(comm)) {
    if (error) throw CheckpointError(*error);
    return;
  }
  at::Tensor first = at::tensor({static_cast<int64_t>(error ? comm->rank() : comm->size())}, at::kLong);
  comm->all_reduce(first, ReduceOp::kMin)->wait();
  const int failing = static_cast<int>(first.item<int64_t>());
  if (failing == comm->size()) return;
  std::string message = error ? *error : std::string();
  broadcast_string(comm, failing, message);
  if (failing != comm->rank()) message += " [reported by rank " + std::to_string(failing) + "]";
  throw CheckpointError(message);
}

/// Runs `fn`, turning any exception into its message (for agree()).
std::optional<std::string> capture(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return std::string(e.what());
  }
  return std::nullopt;
}

/// Collective: throws the same CheckpointError on every rank unless all ranks pass `value`.
void check_same(const CommunicatorPtr& comm, const std::string& what, uint64_t value) {
  if (!is_multi(comm)) return;
  int64_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  at::Tensor lo = at::tensor({bits}, at::kLong), hi = at::tensor({bits}, at::kLong);
  comm->all_reduce(lo, ReduceOp::kMin)->wait();
  comm->all_reduce(hi, ReduceOp::kMax)->wait();
  if (lo.item<int64_t>() != hi.item<int64_t>())
    throw CheckpointError("checkpoint: ranks disagree on " + what +
                          " (every rank must pass the same groups, in the same order)");
}

// --- names and files ---------------------------------------------------------------------------

void check_name(const std::string& name, const char* what) {
  TORCH_CHECK(!name.empty() && name.find('/') == std::string::npos && name != "." && name != "..",
              "checkpoint: ", what, " name '", name, "' is empty or contains '/'");
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

std::optional<int64_t> parse_step(const fs::path& file) {
  static const std::regex pattern(R"(step-(\d+)\.h5)");
  std::smatch match;
  const std::string name = file.filename().string();
  if (!std::regex_match(name, match, pattern)) return std::nullopt;
  return std::stoll(match[1].str());
}

void fsync_path(const fs::path& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) throw CheckpointError("checkpoint: cannot open '" + path.string() + "' to fsync: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw CheckpointError("checkpoint: fsync of '" + path.string() + "' failed: " + std::strerror(err));
}

/// Writes `text` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
void write_text_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.parent_path() / ("." + path.filename().string() + ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw CheckpointError("checkpoint: cannot write '" + tmp.string() + "'");
  }
  fsync_path(tmp, false);
  fs::rename(tmp, path);
  fsync_path(path.parent_path(), true);
}

std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& line : lines) out += line + "\n";
  return out;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// --- metadata checksum -------------------------------------------------------------------------

struct AttrWalk {
  std::string object;
  std::string* out;
};

herr_t append_attr(hid_t obj, const char* name, const H5A_info_t*, void* data) {
  auto* walk = static_cast<AttrWalk*>(data);
  if (walk->object == "." && std::strcmp(name, kMetaChecksumAttr) == 0) return 0;
  ckpt::H5Handle attr(H5Aopen(obj, name, H5P_DEFAULT), "H5Aopen");
  ckpt::H5Handle type(H5Aget_type(attr.get()), "H5Aget_type");
  ckpt::H5Handle space(H5Aget_space(attr.get()), "H5Aget_space");
  const hssize_t count = LA_H5_CHECK(H5Sget_simple_extent_npoints(space.get()));
  std::string bytes(static_cast<size_t>(count) * H5Tget_size(type.get()), '\0');
  LA_H5_CHECK(H5Aread(attr.get(), type.get(), bytes.data()));
  *walk->out += walk->object + "@" + name + "=" + std::to_string(bytes.size()) + ":" + bytes + ";";
  return 0;
}

/// XXH64 over every attribute of every object (names and raw values, in name order), except the
/// root's meta checksum itself. Catches damage to the scalars that live in attributes (step,
/// cursor, alpha, per-dataset checksums), which the per-dataset checksums cannot see.
uint64_t metadata_hash(hid_t file) {
  std::vector<std::string> objects = h5::list_objects(file);
  objects.insert(objects.begin(), ".");
  std::string text;
  for (const auto& object : objects) {
    H5Handle obj(H5Oopen(file, object.c_str(), H5P_DEFAULT), "H5Oopen");
    AttrWalk walk{object, &text};
    hsize_t index = 0;
    LA_H5_CHECK(H5Aiterate2(obj.get(), H5_INDEX_NAME, H5_ITER_INC, &index, append_attr, &walk));
  }
  return XXH64(text.data(), text.size(), 0);
}

// --- gathering shards --------------------------------------------------------------------------

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

const dist::ShardedAdamWGroupState* find_state(const std::vector<dist::ShardedAdamWGroupState>& states,
                                               const std::string& group) {
  for (const auto& s : states)
    if (s.group == group) return &s;
  return nullptr;
}

/// A checkpoint dataset path for a parameter: "<root>/<group>/<param>".
std::string param_path(const std::string& root, const std::string& group, const std::string& param) {
  return root + "/" + group + "/" + param;
}

std::string rng_path(int64_t rank) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "rng/rank_%06lld", static_cast<long long>(rank));
  return buf;
}

std::vector<hsize_t> dims_of(const std::vector<int64_t>& shape) {
  return std::vector<hsize_t>(shape.begin(), shape.end());
}

void write_bytes(hid_t file, const std::string& name, const std::string& bytes) {
  h5::write_dataset(file, name, H5T_NATIVE_UINT8, {static_cast<hsize_t>(bytes.size())}, bytes.data(), bytes.size());
}

std::string read_bytes(hid_t file, const std::string& name) {
  H5Handle dset = h5::open_dataset(file, name);
  std::vector<hsize_t> dims = h5::shape(dset.get());
  TORCH_CHECK(dims.size() == 1, "dataset '/", name, "' is not one-dimensional");
  std::string bytes(dims[0], '\0');
  h5::read_dataset(dset.get(), H5T_NATIVE_UINT8, bytes.data(), bytes.size());
  return bytes;
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
  h5::set_attr(f, "format", std::string(kFormatName));
  h5::set_attr(f, "format_version", kFormatVersion);
  h5::set_attr(f, "step", req.step);
  h5::set_attr(f, "world_size", static_cast<int64_t>(world_size));
  h5::set_attr(f, "cursor_epoch", req.cursor.epoch);
  h5::set_attr(f, "cursor_global_index", req.cursor.global_index);
  h5::set_attr(f, "alpha_value", req.alpha.value);
  h5::set_attr(f, "alpha_step_drawn", req.alpha.step_drawn);
  h5::set_attr(f, "hdf5_version", hdf5_version());
  h5::set_attr(f, "created_unix", static_cast<int64_t>(std::time(nullptr)));
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
    H5Handle optim = h5::exists(f, "optim") ? h5::open_group(f, "optim") : h5::create_group(f, "optim");
    h5::set_attr(optim.get(), "step_count", req.optimizer->step_count());
    for (const auto& entry : g.groups) {
      if (!entry.state) continue;
      H5Handle og = h5::create_group(f, "optim/groups/" + entry.group->name());
      h5::set_attr(og.get(), "step", entry.state->step);
      h5::set_attr(og.get(), "lr_group", entry.state->lr_group);
    }
  }
  {
    H5Handle rng = h5::create_group(f, "rng");
    h5::set_attr(rng.get(), "world_size", static_cast<int64_t>(world_size));
  }
  for (size_t r = 0; r < g.rng.size(); ++r) write_bytes(f, rng_path(static_cast<int64_t>(r)), g.rng[r]);
  for (size_t i = 0; i < req.frozen.size(); ++i) {
    const FlatParamGroup& group = *req.frozen[i].group;
    H5Handle fg = h5::create_group(f, "frozen/" + group.name());
    h5::set_attr(fg.get(), "values_xxh64", g.frozen_hashes[i]);
    h5::set_attr(fg.get(), "numel", group.layout().numel);
    h5::set_attr(fg.get(), "dtype", std::string(c10::toString(group.storage_dtype())));
    write_bytes(f, "frozen/" + group.name() + "/sources", join_lines(req.frozen[i].sources));
  }
  h5::set_attr(f, kMetaChecksumAttr, metadata_hash(f));
  LA_H5_CHECK(H5Fflush(f, H5F_SCOPE_GLOBAL));
}

std::vector<fs::path> prune(const fs::path& dir, int keep_last, const fs::path& keep) {
  std::vector<fs::path> removed;
  // Temporaries left by a crashed save are garbage: no reader ever looks at them.
  for (const auto& item : fs::directory_iterator(dir)) {
    const std::string name = item.path().filename().string();
    if (name.starts_with(".step-") && name.ends_with(".h5.tmp")) {
      std::error_code ec;
      fs::remove(item.path(), ec);
    }
  }
  if (keep_last <= 0) return removed;
  const auto all = list_checkpoints(dir);
  for (size_t i = static_cast<size_t>(keep_last); i < all.size(); ++i) {
    if (all[i] == keep) continue;  // the one just written (a run resumed from an older step)
    std::error_code ec;
    if (fs::remove(all[i], ec)) removed.push_back(all[i]);
  }
  return removed;
}

// --- loading -----------------------------------------------------------------------------------

/// Elements [offset, offset + numel) of the flattened dataset `path`, read as a block of whole
/// rows of dimension 0 (a rectangular hyperslab) and cut down.
at::Tensor read_flat_range(hid_t file, const std::string& path, const std::vector<int64_t>& shape, int64_t offset,
                           int64_t numel) {
  H5Handle dset = h5::open_dataset(file, path);
  std::vector<hsize_t> dims = h5::shape(dset.get());
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
  h5::read_rows(dset.get(), H5T_NATIVE_FLOAT, static_cast<hsize_t>(first), static_cast<hsize_t>(last),
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
    if (!h5::exists(file, path))
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
  result.step = h5::attr_i64(f, "step");
  result.saved_world_size = h5::attr_i64(f, "world_size");
  result.cursor = {h5::attr_i64(f, "cursor_epoch"), h5::attr_i64(f, "cursor_global_index")};
  result.alpha = {h5::attr_f64(f, "alpha_value"), h5::attr_i64(f, "alpha_step_drawn")};
  result.config_text = read_bytes(f, "meta/config");
  const int world = size_of(req.comm);
  if (result.saved_world_size == world) {
    result.rng_state = read_bytes(f, rng_path(rank_of(req.comm)));
  } else {
    result.rng_rederived = true;
    result.rng_note = "world size changed (" + std::to_string(result.saved_world_size) + " -> " +
                      std::to_string(world) + "): RNG states re-derived from seed";
  }
  if (h5::exists(f, "frozen")) {
    for (const auto& name : h5::list_datasets(f)) {
      if (!name.starts_with("frozen/") || !name.ends_with("/sources")) continue;
      const std::string group = name.substr(7, name.size() - 7 - 8);
      result.frozen_sources[group] = split_lines(read_bytes(f, name));
    }
  }
  if (req.verify_frozen) {
    for (const auto& group : req.frozen) {
      const std::string path_in = "frozen/" + group->name();
      if (!h5::exists(f, path_in))
        throw CheckpointError("frozen group '" + group->name() + "' is not recorded in the checkpoint");
      H5Handle fg = h5::open_group(f, path_in);
      if (h5::attr_i64(fg.get(), "numel") != group->layout().numel ||
          h5::attr_str(fg.get(), "dtype") != c10::toString(group->storage_dtype()))
        throw CheckpointError("frozen group '" + group->name() + "' has a different size or dtype than at save time");
      staged.frozen_hashes[group->name()] = h5::attr_u64(fg.get(), "values_xxh64");
    }
  }
  for (const auto& group : req.trainable) staged.params.push_back(read_shard(f, "params", *group));
  if (req.optimizer) {
    if (!h5::exists(f, "optim"))
      throw CheckpointError("the checkpoint holds no optimizer state (saved without an optimizer)");
    staged.step_count = h5::attr_i64(h5::open_group(f, "optim").get(), "step_count");
    for (const auto& live : req.optimizer->state()) {
      size_t index = req.trainable.size();
      for (size_t i = 0; i < req.trainable.size(); ++i)
        if (req.trainable[i]->name() == live.group) index = i;
      const FlatParamGroup& group = *req.trainable[index];  // checked before
      const std::string og = "optim/groups/" + live.group;
      if (!h5::exists(f, og)) throw CheckpointError("the checkpoint has no optimizer state for group '" + live.group + "'");
      H5Handle handle = h5::open_group(f, og);
      const c10::Device device = group.device();
      dist::ShardedAdamWGroupState s;
      s.group = live.group;
      s.lr_group = h5::attr_str(handle.get(), "lr_group");
      s.step = h5::attr_i64(handle.get(), "step");
      s.master = staged.params[index].to(device);
      s.exp_avg = read_shard(f, "optim/exp_avg", group).to(device);
      s.exp_avg_sq = read_shard(f, "optim/exp_avg_sq", group).to(device);
      staged.optim.push_back(std::move(s));
    }
  }
}

}  // namespace

// --- public ------------------------------------------------------------------------------------

std::string checkpoint_file_name(int64_t step) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "step-%06lld.h5", static_cast<long long>(step));
  return buf;
}

std::vector<fs::path> list_checkpoints(const fs::path& dir) {
  std::vector<std::pair<int64_t, fs::path>> found;
  std::error_code ec;
  for (const auto& item : fs::directory_iterator(dir, ec)) {
    if (auto step = parse_step(item.path()); step && item.is_regular_file()) found.emplace_back(*step, item.path());
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<fs::path> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

fs::path resolve_checkpoint(const fs::path& path_or_dir) {
  fs::path p = path_or_dir;
  if (p.filename() == "latest") p = p.parent_path();
  if (fs::is_regular_file(p)) return p;
  if (!fs::is_directory(p)) throw CheckpointError("checkpoint '" + path_or_dir.string() + "' does not exist");
  if (fs::is_regular_file(p / "latest")) {
    std::ifstream in(p / "latest");
    std::string name;
    std::getline(in, name);
    while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.pop_back();
    // `latest` only ever names a file committed by rename, but the file may since have been
    // deleted by hand: then fall back to scanning.
    if (!name.empty() && name.find('/') == std::string::npos && fs::is_regular_file(p / name)) return p / name;
  }
  auto all = list_checkpoints(p);
  if (all.empty()) throw CheckpointError("no checkpoint (step-*.h5) in '" + p.string() + "'");
  return all.front();
}

void validate_checkpoint(const fs::path& path) {
  const std::string file_name = path.string();
  std::string current = "(file)";
  try {
    h5::QuietErrors quiet;
    if (!fs::is_regular_file(path)) throw CheckpointError("no such file");
    H5Handle file;
    try {
      file = h5::open_file(file_name);
    } catch (const dist::DistError& e) {
      throw CheckpointError(std::string("cannot open as HDF5 (truncated or not a checkpoint): ") + e.what());
    }
    const hid_t f = file.get();
    current = "(root attributes)";
    if (!h5::has_attr(f, "format") || h5::attr_str(f, "format") != kFormatName)
      throw CheckpointError(std::string("not a ") + kFormatName + " file");
    const int64_t version = h5::attr_i64(f, "format_version");
    if (version != kFormatVersion)
      throw CheckpointError("format version " + std::to_string(version) + ", this build reads " +
                            std::to_string(kFormatVersion));
    current = "(attributes)";
    if (!h5::has_attr(f, kMetaChecksumAttr) || h5::attr_u64(f, kMetaChecksumAttr) != metadata_hash(f))
      throw CheckpointError("attribute checksum mismatch (metadata damaged)");
    for (const auto& name : h5::list_datasets(f)) {
      current = "dataset '/" + name + "'";
      H5Handle dset = h5::open_dataset(f, name);
      if (!h5::has_attr(dset.get(), h5::kChecksumAttr)) throw CheckpointError("no checksum");
      const std::vector<uint8_t> bytes = h5::raw_bytes(dset.get());
      const uint64_t want = h5::attr_u64(dset.get(), h5::kChecksumAttr);
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
    const fs::path tmp = req.dir / ("." + checkpoint_file_name(req.step) + ".tmp");
    error = capture([&] {
      try {
        fs::create_directories(req.dir);
        write_file(req, gathered, size_of(comm), tmp);
        fsync_path(tmp, false);
        fs::rename(tmp, result.path);
        fsync_path(req.dir, true);
        write_text_atomically(req.dir / "latest", result.path.filename().string() + "\n");
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
