// The sharded engine's schedule of one training step, replayed with costs instead of kernels: a
// compute stream runs the unit calls (the reference identity, branch 1's forward and backward,
// branch 2's forward and backward, as TrainState::step orders them) and one communication
// channel runs the gathers and reduce-scatters in the order the engine issues them (the engine
// has one communication thread, and a NCCL stream is a queue too). The rules are the engine's
// (dist/sharded_engine.cpp): a forward call waits for its unit's gather and then issues the gathers
// of the next ring - 1 recorded calls; a backward call waits for its gather (none for a kept unit)
// and issues those of the ring - 1 backward calls before it, then its reduce-scatter when its
// gradients are done; at most `ring` units are gathered at once; in sum mode branch 1's reductions are waited for after
// branch 2's forward, and every reduction before the optimizer step. What it returns is where the
// step's time goes, so the scaling model can put a measured or a projected cost on each part.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "trainer/train_config.h"

namespace lookahead::trainer {

/// What one unit call costs.
struct TimedCall {
  std::string unit;
  int branch = 0;          ///< 0: the reference identity (no backward), 1, 2: the loss branches
  bool with_grad = false;  ///< gets a backward
  double forward_s = 0;    ///< its forward's compute
  double backward_s = 0;   ///< its backward's compute, the recompute of its forward included if it has one
  double gather_s = 0;     ///< one gather of its unit (0: the unit is whole on every rank)
  double reduce_s = 0;     ///< the reduce-scatter of its trainable gradients after a backward (0: none)
  bool kept = false;       ///< keeps its activations: gathered from its forward to its backward
};

struct TimelineOptions {
  bool prefetch = true;
  int64_t ring = 2;            ///< dist.max_gathered_units
  bool keep_gathered = false;  ///< dist.keep_gathered
  LossMode mode = LossMode::kSum;
  double optimizer_s = 0;  ///< the optimizer step after the last reduction
};

/// Where one step's time goes, in seconds.
struct Timeline {
  double step = 0;           ///< from the first call to the end of the optimizer step
  double compute = 0;        ///< forward and backward compute
  double gather = 0;         ///< the channel's time on gathers
  double reduce = 0;         ///< the channel's time on reduce-scatters
  double gather_wait = 0;    ///< compute waiting for gathers
  double reduce_wait = 0;    ///< waiting for reductions (between the branches, before the optimizer)
  double exposed_first = 0;  ///< of gather_wait: the step's first gather, which nothing can hide
  int64_t gathers = 0;       ///< gathers issued (prefetches that were not used included)
  /// Each time compute waited for a gather: the unit, its branch, forward or backward, seconds.
  struct Wait {
    std::string unit;
    int branch = 0;
    bool backward = false;
    double seconds = 0;
  };
  std::vector<Wait> waits;
  /// Gathers issued for, and waits of, the forward or the backward of one branch.
  struct Phase {
    double gather = 0, gather_wait = 0;
    double hidden_fraction() const { return gather > 0 ? std::max(0.0, 1.0 - gather_wait / gather) : 1.0; }
  };
  Phase phases[3][2];  ///< [branch][backward]
  Phase& phase(int branch, bool backward) { return phases[branch][backward ? 1 : 0]; }
  const Phase& phase(int branch, bool backward) const { return phases[branch][backward ? 1 : 0]; }
  /// Of the channel's time (gathers and reductions), the part that ran under compute. (Compute
  /// waits only while the channel is busy, so the waits never exceed its time.)
  double hidden_fraction() const {
    return gather + reduce > 0 ? 1.0 - (gather_wait + reduce_wait) / (gather + reduce) : 1.0;
  }
};

/// Replays one step of `calls` (in forward call order, as the trace records them).
Timeline simulate_step(const std::vector<TimedCall>& calls, const TimelineOptions& options);

}  // namespace lookahead::trainer
