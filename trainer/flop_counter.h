// Counts the floating-point operations of a scope's matrix products, convolutions and attention
// from the shapes the operators see (a RecordFunction observer on this thread), so the step traced
// on the meta device yields the FLOPs it would run. Each counted operator also yields the FLOPs its
// backward would take, from which of its operands need a gradient: the data gradient of an input
// that needs one, the weight gradient of a weight that needs one. Element-wise operations
// (normalizations, activations, additions) are left out, as in the usual MFU accounting; one
// multiply-add is two FLOPs.
#pragma once

#include <cstdint>

namespace lookahead::trainer {

/// FLOPs counted in a scope.
struct Flops {
  double forward = 0;
  double backward = 0;  ///< what the backward of the counted operations would take
  Flops& operator+=(const Flops& o) {
    forward += o.forward;
    backward += o.backward;
    return *this;
  }
};

/// Counts what runs on the constructing thread while it lives. Counters nest: an operation
/// counts in the innermost live counter only. An operation nested in a counted one (the matrix
/// products inside an attention, the kernels of a convolution) counts once, at the outer one.
///
/// Example:
///   FlopCounter counter;
///   auto y = linear(x);        // addmm: 2 * M * K * N forward
///   Flops f = counter.flops();
class FlopCounter {
 public:
  FlopCounter();
  ~FlopCounter();
  FlopCounter(const FlopCounter&) = delete;
  FlopCounter& operator=(const FlopCounter&) = delete;

  const Flops& flops() const { return flops_; }
  /// Called by the observer.
  void add(double forward, double backward) {
    flops_.forward += forward;
    flops_.backward += backward;
  }

 private:
  Flops flops_;
  FlopCounter* outer_ = nullptr;
  uint64_t handle_ = 0;  ///< the observer's handle (the outermost counter installs it)
};

}  // namespace lookahead::trainer
