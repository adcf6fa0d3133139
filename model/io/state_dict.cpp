// State-dict loading with a key report.
#include "model/io/state_dict.h"

#include <ATen/ATen.h>

#include <set>
#include <sstream>

namespace lookahead::model::io {

std::string LoadReport::summary(size_t limit) const {
  std::ostringstream s;
  s << loaded << " tensors loaded";
  auto list = [&](const char* what, const std::vector<std::string>& names) {
    if (names.empty()) return;
    s << "; " << names.size() << " " << what << ":";
    for (size_t i = 0; i < names.size() && i < limit; ++i) s << "\n    " << names[i];
    if (names.size() > limit) s << "\n    ... (" << names.size() - limit << " more)";
  };
  list("missing", missing);
  list("unexpected", unexpected);
  list("with mismatched shapes", mismatched);
  return s.str();
}

LoadReport load_state_dict(torch::nn::Module& module, const std::map<std::string, at::Tensor>& tensors,
                           const std::string& origin, bool strict) {
  LoadReport report;
  std::map<std::string, at::Tensor> targets;
  for (const auto& p : module.named_parameters()) targets[p.key()] = p.value();
  for (const auto& b : module.named_buffers()) targets[b.key()] = b.value();
  std::set<std::string> seen;
  at::NoGradGuard no_grad;
  for (const auto& [key, src] : tensors) {
    auto it = targets.find(key);
    if (it == targets.end()) {
      report.unexpected.push_back(key);
      continue;
    }
    seen.insert(key);
    at::Tensor& dst = it->second;
    if (dst.sizes() != src.sizes()) {
      std::ostringstream s;
      s << key << ": file " << src.sizes() << " vs module " << dst.sizes();
      report.mismatched.push_back(s.str());
      continue;
    }
    if (dst.is_meta()) {
      ++report.loaded;  // shape-only module: nothing to copy
      continue;
    }
    dst.copy_(src);
    ++report.loaded;
  }
  for (const auto& [key, dst] : targets)
    if (!seen.count(key)) report.missing.push_back(key);
  TORCH_CHECK(!strict || report.ok(), origin, " does not match the network: ", report.summary());
  return report;
}

}  // namespace lookahead::model::io
