// CudaEvent: the RAII owner of a cudaEvent_t, for code that records and waits on CUDA events
// directly (the NCCL communicator, the step's phase clock, benchmarks). Include it only where
// torch has CUDA (LA_TORCH_HAS_CUDA): it needs the CUDA runtime's headers.
#pragma once

#include <cuda_runtime_api.h>

#include <utility>

#include "dist/cuda_check.h"

namespace lookahead::dist {

/// Move-only owner of a cudaEvent_t. Without `timing` the event is created with
/// cudaEventDisableTiming (cheaper to record and to wait on; cudaEventElapsedTime refuses it).
class CudaEvent {
 public:
  explicit CudaEvent(bool timing = false) {
    LA_CUDA_CHECK(cudaEventCreateWithFlags(&event_, timing ? cudaEventDefault : cudaEventDisableTiming));
  }
  ~CudaEvent() { reset(); }
  CudaEvent(CudaEvent&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}
  CudaEvent& operator=(CudaEvent&& other) noexcept {
    if (this != &other) {
      reset();
      event_ = std::exchange(other.event_, nullptr);
    }
    return *this;
  }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  void reset() noexcept {
    if (event_) (void)cudaEventDestroy(event_);  // a destructor does not throw
    event_ = nullptr;
  }
  cudaEvent_t event_ = nullptr;
};

}  // namespace lookahead::dist
