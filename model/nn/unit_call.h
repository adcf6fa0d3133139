// Calling a sharding unit through the network's UnitRunner (dist/unit_runner.h): directly when no
// runner is installed, otherwise by name with the caller's adapter selection carried into the
// function, so the engine's recompute in backward runs the same adapters as the forward did.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <string>
#include <vector>

#include "dist/unit_runner.h"
#include "model/nn/attention.h"

namespace lookahead::model::nn {

/// Runs `fn(inputs)` as the unit registered for `module` in `ctx.unit_names`.
std::vector<at::Tensor> call_unit(const AttentionContext* ctx, const torch::nn::Module& module, dist::UnitFn fn,
                                  const std::vector<at::Tensor>& inputs);
/// Runs `fn(inputs)` as unit `unit` through `runner` (null: in place).
std::vector<at::Tensor> call_unit(dist::UnitRunner* runner, const std::string& unit, dist::UnitFn fn,
                                  const std::vector<at::Tensor>& inputs);
/// Same, for a unit named explicitly (stems made of several modules).
std::vector<at::Tensor> call_unit(const AttentionContext* ctx, const std::string& unit, dist::UnitFn fn,
                                  const std::vector<at::Tensor>& inputs);

}  // namespace lookahead::model::nn
