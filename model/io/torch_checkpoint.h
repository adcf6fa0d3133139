// torch.save checkpoints (`.pt`, `.pth`, `.bin`) read without Python and without libtorch's
// general unpickler: a restricted pickle machine that builds dicts, scalars and tensors only, so a
// hostile file can describe data but never name code to run.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "model/io/safetensors_header.h"

namespace lookahead::model::io {

/// Tensors of a torch.save file (zip format, or the legacy format of torch < 1.6), flattened with
/// '.' between nested dict keys: {"image_proj": {"latents": t}} -> "image_proj.latents".
/// Handles dict / OrderedDict (incl. state_dict _metadata), nested dicts, tensors of any common dtype
/// (float32/64/16, bfloat16, int64/32/16/8, uint8, bool) via torch._utils._rebuild_tensor_v2 with
/// storage offset and strides, and plain Python scalars/strings/None/tuples/lists where they appear
/// (skipped in the output). Refuses anything else (other GLOBALs, e.g. arbitrary classes) with an error
/// naming the file and the global — this is also the safety property: no arbitrary code objects.
///
/// Integer dict keys are written in decimal ("state.0.exp_avg"); tensors inside lists or tuples
/// get their index as key. Every tensor is a contiguous CPU tensor; tensors that are contiguous
/// views of one storage share it, as torch.load's do. Malformed input (truncation, unknown
/// opcodes or dtypes, views beyond their storage, zip CRC mismatches) throws c10::Error naming
/// the file and, where one is known, the tensor key.
std::map<std::string, at::Tensor> load_torch_file(const std::string& path);

/// The tensors of a torch.save file as its pickle describes them (name, dtype, shape; offsets
/// unset), without reading their data: the pickle is run and every storage is checked to be in the
/// file with enough bytes for its views, but no storage byte is touched (and no CRC computed), so a
/// gigabyte checkpoint costs its pickle alone. Same keys and errors as load_torch_file otherwise.
std::vector<TensorInfo> load_torch_shapes(const std::string& path);

/// Weights file by extension: `.safetensors` and sharded `.index.json` checkpoints go to
/// io::load_file, everything else (`.pt`, `.pth`, `.bin`, ...) to load_torch_file. This is what
/// loaders of upstream checkpoints call so that the original release files load unconverted.
std::map<std::string, at::Tensor> load_weights_file(const std::string& path);

}  // namespace lookahead::model::io
