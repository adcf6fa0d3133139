// trainer/cuda_memory: nothing for a CPU device (so a CPU run logs no mem_cuda_* values), and on a
// GPU the allocator's peaks and the driver's free/total describe a tensor allocated after a reset
// (skipped without one).
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <ATen/ATen.h>

#include "trainer/cuda_memory.h"

namespace lookahead::trainer {
namespace {

TEST(CudaMemory, NothingForTheCpu) {
  reset_cuda_memory_peaks(c10::Device(c10::kCPU));  // a no-op, not an error
  EXPECT_FALSE(cuda_memory(c10::Device(c10::kCPU)).has_value());
}

TEST(CudaMemory, PeaksAfterAResetSeeANewTensor) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: the allocator's statistics need a GPU";
  const c10::Device gpu(c10::kCUDA, 0);
  constexpr int64_t kBytes = int64_t{64} << 20;
  reset_cuda_memory_peaks(gpu);
  const std::optional<CudaMemory> before = cuda_memory(gpu);
  ASSERT_TRUE(before.has_value());
  {
    at::Tensor t = at::empty({kBytes}, at::TensorOptions().dtype(at::kByte).device(gpu));
    const std::optional<CudaMemory> during = cuda_memory(gpu);
    ASSERT_TRUE(during.has_value());
    EXPECT_GE(during->peak_allocated, before->peak_allocated + kBytes);
    EXPECT_GE(during->peak_reserved, during->peak_allocated);
    EXPECT_GT(during->total, 0);
    EXPECT_GT(during->free, 0);
    EXPECT_LE(during->free, during->total);
  }
  // Freed, the tensor is still in the peak until the next reset, which brings it back down.
  EXPECT_GE(cuda_memory(gpu)->peak_allocated, before->peak_allocated + kBytes);
  reset_cuda_memory_peaks(gpu);
  EXPECT_LT(cuda_memory(gpu)->peak_allocated, before->peak_allocated + kBytes);
}

}  // namespace
}  // namespace lookahead::trainer
