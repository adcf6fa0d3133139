// torch.save checkpoints written without Python: the zip layout torch.save produces (stored
// members <archive>/data.pkl, <archive>/byteorder, <archive>/data/<N>, <archive>/version) with a
// protocol-2 pickle of (nested) state dicts whose tensors reference one storage each. The reader
// of the same files is torch_checkpoint.h.
#pragma once

#include <string>
#include <vector>

#include "model/io/safetensors.h"

namespace lookahead::model::io {

/// How the flat names of save_torch_file are arranged in the pickled object.
enum class TorchSaveNesting {
  kFlat,      ///< one OrderedDict {name: tensor} (a module's state_dict())
  kTopLevel,  ///< a dict of OrderedDicts split at the first '.': {"image_proj": {"latents": t}, ...}
};

/// Writes a torch.save file (zip format, pickle protocol 2) that `torch.load(weights_only=True)`
/// and load_torch_file read, holding `entries` (names, dtypes, shapes) in their order. `source`
/// is called once per entry for its tensor (the declared dtype and shape); only one tensor is
/// alive at a time, and each storage is 64-byte aligned in the archive as torch aligns them. The
/// archive folder is named "archive" as recent torch names it. Written to a temporary name and
/// renamed, like save_file. Throws c10::Error naming `path` for duplicate names, names without a
/// '.' under kTopLevel, dtypes without a torch storage class, a source tensor of another dtype or
/// shape, archives beyond 4 GiB (zip64 is not written) and I/O failures.
void save_torch_file(const std::string& path, const std::vector<TensorInfo>& entries, const TensorSource& source,
                     TorchSaveNesting nesting = TorchSaveNesting::kFlat);

}  // namespace lookahead::model::io
