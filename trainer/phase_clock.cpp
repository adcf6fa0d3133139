// PhaseClock: host times on the CPU, CUDA events on a GPU.
#include "trainer/phase_clock.h"

#include <c10/util/Exception.h>

#include "lookahead/build_config.h"
#if LA_TORCH_HAS_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "dist/cuda_event.h"
#endif

namespace lookahead::trainer {

struct PhaseClock::DeviceEvents {
#if LA_TORCH_HAS_CUDA
  std::vector<dist::CudaEvent> events;  // one per mark, with timing
#endif
};

PhaseClock::PhaseClock(c10::Device device) : device_(device), events_(std::make_unique<DeviceEvents>()) {
#if !LA_TORCH_HAS_CUDA
  TORCH_CHECK(!device.is_cuda(), "PhaseClock: this build has no CUDA");
#endif
}

PhaseClock::~PhaseClock() = default;

size_t PhaseClock::mark() {
  host_.push_back(std::chrono::steady_clock::now());
#if LA_TORCH_HAS_CUDA
  if (device_.is_cuda()) {
    c10::cuda::CUDAGuard guard(device_);
    events_->events.emplace_back(/*timing=*/true);
    LA_CUDA_CHECK(
        cudaEventRecord(events_->events.back().get(), c10::cuda::getCurrentCUDAStream(device_.index()).stream()));
  }
#endif
  return host_.size() - 1;
}

double PhaseClock::seconds(size_t from, size_t to) {
  TORCH_CHECK(from < host_.size() && to < host_.size(), "PhaseClock: marks ", from, " and ", to, " of ", host_.size());
#if LA_TORCH_HAS_CUDA
  if (device_.is_cuda()) {
    c10::cuda::CUDAGuard guard(device_);
    const cudaEvent_t a = events_->events[from].get(), b = events_->events[to].get();
    LA_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    LA_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    return static_cast<double>(ms) / 1e3;
  }
#endif
  return std::chrono::duration<double>(host_[to] - host_[from]).count();
}

}  // namespace lookahead::trainer
