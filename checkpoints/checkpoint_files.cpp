// Checkpoint file names, layout helpers, the metadata checksum and retention (see
// checkpoint_files.h), and the public name / listing / resolution functions of checkpoint.h.
#include "checkpoints/checkpoint_files.h"

#include <xxhash.h>

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

#include "checkpoints/checkpoint.h"
#include "checkpoints/h5_io.h"

namespace lookahead::ckpt {

namespace fs = std::filesystem;

namespace detail {

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

namespace {

struct AttrWalk {
  std::string object;
  std::string* out;
};

herr_t append_attr(hid_t obj, const char* name, const H5A_info_t*, void* data) {
  auto* walk = static_cast<AttrWalk*>(data);
  if (walk->object == "." && std::strcmp(name, kMetaChecksumAttr) == 0) return 0;
  H5Handle attr(H5Aopen(obj, name, H5P_DEFAULT), "H5Aopen");
  H5Handle type(H5Aget_type(attr.get()), "H5Aget_type");
  H5Handle space(H5Aget_space(attr.get()), "H5Aget_space");
  const hssize_t count = LA_H5_CHECK(H5Sget_simple_extent_npoints(space.get()));
  std::string bytes(static_cast<size_t>(count) * H5Tget_size(type.get()), '\0');
  LA_H5_CHECK(H5Aread(attr.get(), type.get(), bytes.data()));
  *walk->out += walk->object + "@" + name + "=" + std::to_string(bytes.size()) + ":" + bytes + ";";
  return 0;
}

}  // namespace

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
  std::vector<hsize_t> dims = common::h5_shape(dset.get());
  TORCH_CHECK(dims.size() == 1, "dataset '/", name, "' is not one-dimensional");
  std::string bytes(dims[0], '\0');
  h5::read_dataset(dset.get(), H5T_NATIVE_UINT8, bytes.data(), bytes.size());
  return bytes;
}

const dist::ShardedAdamWGroupState* find_state(const std::vector<dist::ShardedAdamWGroupState>& states,
                                               const std::string& group) {
  for (const auto& s : states)
    if (s.group == group) return &s;
  return nullptr;
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

}  // namespace detail

std::string checkpoint_file_name(int64_t step) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "step-%06lld.h5", static_cast<long long>(step));
  return buf;
}

std::vector<fs::path> list_checkpoints(const fs::path& dir) {
  std::vector<std::pair<int64_t, fs::path>> found;
  std::error_code ec;
  for (const auto& item : fs::directory_iterator(dir, ec)) {
    if (auto step = detail::parse_step(item.path()); step && item.is_regular_file()) found.emplace_back(*step, item.path());
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

}  // namespace lookahead::ckpt
