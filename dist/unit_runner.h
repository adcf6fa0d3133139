// The sharding-unit interface: the one thing model/ knows about distribution. A network calls its
// UnitRunner at every unit boundary with a function of the unit's inputs; the default runs it in
// place, the sharded engine gathers the unit's weights, runs it as a checkpointed function and
// releases them. Header only, so model/ does not link dist/.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace lookahead::dist {

/// Maps a unit's inputs to its outputs. It may read the unit's parameters and values captured by
/// value, but every tensor that needs a gradient must come in through `inputs`, and it must give
/// the same result when called again (the engine recomputes it in backward).
using UnitFn = std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>& inputs)>;

/// One sharding unit's tensors by role: what a sharded engine gathers, runs and releases together.
/// The tensors are the LIVE ones the modules compute with (the same TensorImpl), so an engine that
/// replaces their data with set_data re-points the network. Frozen roles are stored in the frozen
/// dtype and sharded by placement; trainable roles are fp32 masters sharded over all ranks, and
/// their role name is the optimizer's learning-rate group (and part of every checkpoint key).
struct ShardingUnit {
  std::string name;
  std::vector<std::pair<std::string, at::Tensor>> frozen;   ///< frozen base weights (and buffers)
  std::vector<std::pair<std::string, at::Tensor>> lcm;      ///< frozen adapter weights (the LCM-LoRA)
  std::vector<std::pair<std::string, at::Tensor>> adapter;  ///< trainable, lr group "adapter"
  std::vector<std::pair<std::string, at::Tensor>> lora;     ///< trainable, lr group "lora"
};

/// Runs sharding units. `unit` is the unit's name as the network lists it (e.g.
/// "down_blocks.1.attentions.0"). Inputs may be undefined tensors (absent optional inputs);
/// outputs are defined.
class UnitRunner {
 public:
  virtual ~UnitRunner() = default;
  virtual std::vector<at::Tensor> run(const std::string& unit, const UnitFn& fn, const std::vector<at::Tensor>& inputs) = 0;
};

}  // namespace lookahead::dist
