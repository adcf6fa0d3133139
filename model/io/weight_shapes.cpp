// Header-only shapes of weight files (see weight_shapes.h).
#include "model/io/weight_shapes.h"

#include "model/io/safetensors.h"
#include "model/io/safetensors_index.h"
#include "model/io/torch_checkpoint.h"

namespace lookahead::model::io {

namespace {

void append(WeightShapes& out, const SafetensorsFile& file) {
  for (const auto& t : file.tensors()) out.tensors.push_back(WeightShape{t.name, t.dtype, t.shape, file.path()});
}

}  // namespace

WeightShapes load_shapes(const std::string& path) {
  WeightShapes out;
  if (is_index_path(path)) {
    for (const auto& shard : open_index(path)) append(out, *shard);
  } else if (path.ends_with(".safetensors")) {
    const auto file = SafetensorsFile::open(path);
    append(out, *file);
    out.metadata = file->metadata();
  } else {
    for (auto& t : load_torch_shapes(path))
      out.tensors.push_back(WeightShape{t.name, t.dtype, std::move(t.shape), path});
  }
  return out;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace lookahead::model::io
