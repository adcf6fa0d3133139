// GPU memory statistics from the CUDA caching allocator and the driver; nothing without CUDA.
#include "trainer/cuda_memory.h"

#include "lookahead/build_config.h"
#if LA_TORCH_HAS_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>

#include "dist/cuda_check.h"
#endif

namespace lookahead::trainer {

void reset_cuda_memory_peaks(c10::Device device) {
#if LA_TORCH_HAS_CUDA
  if (!device.is_cuda()) return;
  c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#else
  (void)device;
#endif
}

std::optional<CudaMemory> cuda_memory(c10::Device device) {
#if LA_TORCH_HAS_CUDA
  if (!device.is_cuda()) return std::nullopt;
  // The aggregate over the allocator's small and large pools.
  constexpr auto kAll = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  const c10::CachingDeviceAllocator::DeviceStats stats =
      c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
  CudaMemory m;
  m.peak_allocated = stats.allocated_bytes[kAll].peak;
  m.peak_reserved = stats.reserved_bytes[kAll].peak;
  // cudaMemGetInfo reports on the current device: select ours.
  c10::cuda::CUDAGuard guard(device);
  size_t free = 0, total = 0;
  LA_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  m.free = static_cast<int64_t>(free);
  m.total = static_cast<int64_t>(total);
  return m;
#else
  (void)device;
  return std::nullopt;
#endif
}

}  // namespace lookahead::trainer
