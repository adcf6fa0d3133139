// Bytes of CPU tensors as the allocator sees them: a counting allocator in place of c10's CPU one,
// so a step can report the tensor memory it really used (live bytes and their peak) apart from
// what the process holds for other reasons (libraries, the C heap's retained pages), which the
// resident set size (common/process_memory.h) lumps together. GPU memory has its own allocator
// statistics; this counts host tensors only.
#pragma once

#include <cstdint>

namespace lookahead::trainer {

/// Starts counting CPU tensor allocations (process-wide; idempotent). Tensors allocated before the
/// first call are not counted, and neither are their frees.
void count_cpu_tensor_bytes();
/// Whether count_cpu_tensor_bytes() has run.
bool counting_cpu_tensor_bytes();

struct TensorBytes {
  int64_t current = 0;  ///< live bytes of counted CPU tensor allocations
  int64_t peak = 0;     ///< their maximum since counting began or the last reset
};
TensorBytes cpu_tensor_bytes();
/// Restarts the peak at the current live bytes.
void reset_cpu_tensor_peak();

}  // namespace lookahead::trainer
