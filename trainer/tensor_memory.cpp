// The counting CPU allocator: c10's aligned CPU allocation with the block's size in front of it.
#include "trainer/tensor_memory.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/alignment.h>
#include <c10/core/impl/alloc_cpu.h>

#include <atomic>
#include <mutex>

namespace lookahead::trainer {
namespace {

std::atomic<int64_t> g_current{0};
std::atomic<int64_t> g_peak{0};

void raise_peak(int64_t now) {
  int64_t seen = g_peak.load(std::memory_order_relaxed);
  while (now > seen && !g_peak.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
  }
}

// Each block carries its size in a header one alignment unit long, so that the data pointer is
// its own context (c10's raw_allocate, used by some kernels for scratch space, requires that) and
// the deleter needs no lookup.
constexpr size_t kHeader = c10::gAlignment;

void delete_counted(void* data) {
  if (data == nullptr) return;
  void* base = static_cast<char*>(data) - kHeader;
  const auto bytes = static_cast<int64_t>(*static_cast<size_t*>(base));
  g_current.fetch_sub(bytes, std::memory_order_relaxed);
  c10::free_cpu(base);
}

class CountingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    void* base = c10::alloc_cpu(n + kHeader);
    *static_cast<size_t*>(base) = n;
    void* data = static_cast<char*>(base) + kHeader;
    const auto bytes = static_cast<int64_t>(n);
    raise_peak(g_current.fetch_add(bytes, std::memory_order_relaxed) + bytes);
    return {data, data, &delete_counted, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &delete_counted; }
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }
};

std::once_flag g_installed;
std::atomic<bool> g_counting{false};

}  // namespace

void count_cpu_tensor_bytes() {
  std::call_once(g_installed, [] {
    // Leaked on purpose: tensors freed during static destruction still call its deleter.
    static auto* counting = new CountingAllocator();
    // A priority above the default registration's, so that it is the CPU allocator from now on.
    c10::SetAllocator(c10::DeviceType::CPU, counting, /*priority=*/100);
    g_counting = true;
  });
}

bool counting_cpu_tensor_bytes() { return g_counting.load(); }

TensorBytes cpu_tensor_bytes() { return {g_current.load(), g_peak.load()}; }

void reset_cpu_tensor_peak() { g_peak.store(g_current.load()); }

}  // namespace lookahead::trainer
