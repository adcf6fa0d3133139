// Unit calls with the adapter selection captured.
#include "model/nn/unit_call.h"

#include <optional>

namespace lookahead::model::nn {

std::vector<at::Tensor> call_unit(const AttentionContext* ctx, const std::string& unit, dist::UnitFn fn,
                                  const std::vector<at::Tensor>& inputs) {
  return call_unit(ctx ? ctx->runner : nullptr, unit, std::move(fn), inputs);
}

std::vector<at::Tensor> call_unit(dist::UnitRunner* runner, const std::string& unit, dist::UnitFn fn,
                                  const std::vector<at::Tensor>& inputs) {
  if (!runner) return fn(inputs);
  std::optional<std::vector<std::string>> selection;
  if (const auto* current = AdapterSelection::current()) selection = *current;
  dist::UnitFn wrapped = [fn = std::move(fn), selection](const std::vector<at::Tensor>& in) {
    std::optional<AdapterSelection> scope;
    if (selection) scope.emplace(*selection);
    return fn(in);
  };
  return runner->run(unit, wrapped, inputs);
}

std::vector<at::Tensor> call_unit(const AttentionContext* ctx, const torch::nn::Module& module, dist::UnitFn fn,
                                  const std::vector<at::Tensor>& inputs) {
  if (!ctx || !ctx->runner) return fn(inputs);
  auto it = ctx->unit_names.find(&module);
  TORCH_INTERNAL_ASSERT(it != ctx->unit_names.end(), "module of type ", module.name(), " is not a sharding unit");
  return call_unit(ctx, it->second, std::move(fn), inputs);
}

}  // namespace lookahead::model::nn
