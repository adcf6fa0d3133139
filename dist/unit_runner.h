// The sharding-unit interface: the one thing model/ knows about distribution. A network calls its
// UnitRunner at every unit boundary with a function of the unit's inputs; the default runs it in
// place, the sharded engine gathers the unit's weights, runs it as a checkpointed function and
// releases them. Header only, so model/ does not link dist/.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

namespace lookahead::dist {

/// Maps a unit's inputs to its outputs. It may read the unit's parameters and values captured by
/// value, but every tensor that needs a gradient must come in through `inputs`, and it must give
/// the same result when called again (the engine recomputes it in backward).
using UnitFn = std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>& inputs)>;

/// Runs sharding units. `unit` is the unit's name as the network lists it (e.g.
/// "down_blocks.1.attentions.0"). Inputs may be undefined tensors (absent optional inputs);
/// outputs are defined.
class UnitRunner {
 public:
  virtual ~UnitRunner() = default;
  virtual std::vector<at::Tensor> run(const std::string& unit, const UnitFn& fn, const std::vector<at::Tensor>& inputs) = 0;
};

}  // namespace lookahead::dist
