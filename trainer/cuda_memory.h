// GPU memory of a rank's device, as CUDA sees it: the caching allocator's peaks (the bytes tensors
// really used, and what the allocator held from the driver to serve them) and the driver's free
// and total bytes. The CPU analogue is trainer/tensor_memory.h. The CUDA headers stay in the .cpp:
// this header is cheap to include anywhere.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <optional>

namespace lookahead::trainer {

struct CudaMemory {
  int64_t peak_allocated = 0;  ///< caching allocator: peak bytes of live tensors since the last reset
  int64_t peak_reserved = 0;   ///< caching allocator: peak bytes held from the driver (cached blocks included)
  int64_t free = 0;            ///< cudaMemGetInfo: free bytes on the device now (other processes count too)
  int64_t total = 0;           ///< cudaMemGetInfo: the device's memory
};

/// Restarts the caching allocator's peaks on `device` at its current values. Does nothing for a
/// CPU device or a build without CUDA.
void reset_cuda_memory_peaks(c10::Device device);

/// The numbers above for `device`; nullopt for a CPU device or a build without CUDA.
std::optional<CudaMemory> cuda_memory(c10::Device device);

}  // namespace lookahead::trainer
