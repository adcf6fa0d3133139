// Loading named tensors into a module whose named_parameters() are checkpoint keys, with a report
// of missing, unexpected and shape-mismatched keys instead of a silent partial load.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <map>
#include <string>
#include <vector>

namespace lookahead::model::io {

/// What a load found.
struct LoadReport {
  std::vector<std::string> missing;     ///< module parameters the file lacks
  std::vector<std::string> unexpected;  ///< file tensors the module has no parameter for
  std::vector<std::string> mismatched;  ///< "key: file [a, b] vs module [c, d]"
  size_t loaded = 0;
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  /// Multi-line summary (first `limit` names of each list).
  std::string summary(size_t limit = 10) const;
};

/// Copies every tensor of `tensors` whose key and shape match a parameter (or buffer) of
/// `module` into it (converting dtype, keeping the module's device). With `strict`, throws
/// c10::Error naming `origin` and the summary unless the report is ok().
LoadReport load_state_dict(torch::nn::Module& module, const std::map<std::string, at::Tensor>& tensors,
                           const std::string& origin, bool strict = true);

}  // namespace lookahead::model::io
