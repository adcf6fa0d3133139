// LA_CUDA_CHECK: the CUDA runtime counterpart of LA_MPI_CHECK (dist/error.h), for code that calls
// CUDA directly (the NCCL communicator, the trainer's GPU memory statistics, benchmarks). Include
// it only where torch has CUDA (LA_TORCH_HAS_CUDA): it needs the CUDA runtime's headers.
#pragma once

#include <cuda_runtime_api.h>

#include "dist/error.h"

/// Checks a CUDA runtime result; throws DistError(kBackend) naming the call, the rank and the host.
#define LA_CUDA_CHECK(call)                                                                                            \
  do {                                                                                                                 \
    cudaError_t la_cuda_rc_ = (call);                                                                                  \
    if (la_cuda_rc_ != cudaSuccess)                                                                                    \
      ::lookahead::dist::detail::throw_call_error("CUDA", #call, cudaGetErrorString(la_cuda_rc_), __FILE__, __LINE__); \
  } while (0)
