// Collective agreement for checkpoint save / load (see agreement.h).
#include "checkpoints/agreement.h"

#include <ATen/ATen.h>

#include <cstring>

#include "checkpoints/checkpoint.h"

namespace lookahead::ckpt::detail {

using dist::CommunicatorPtr;
using dist::ReduceOp;

void broadcast_string(const CommunicatorPtr& comm, int root, std::string& text) {
  if (is_multi(comm)) dist::broadcast_string(*comm, root, text);
}

void agree(const CommunicatorPtr& comm, const std::optional<std::string>& error) {
  if (!is_multi(comm)) {
    if (error) throw CheckpointError(*error);
    return;
  }
  at::Tensor first = at::tensor({static_cast<int64_t>(error ? comm->rank() : comm->size())}, at::kLong);
  comm->all_reduce(first, ReduceOp::kMin)->wait();
  const int failing = static_cast<int>(first.item<int64_t>());
  if (failing == comm->size()) return;
  std::string message = error ? *error : std::string();
  broadcast_string(comm, failing, message);
  if (failing != comm->rank()) message += " [reported by rank " + std::to_string(failing) + "]";
  throw CheckpointError(message);
}

std::optional<std::string> capture(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return std::string(e.what());
  }
  return std::nullopt;
}

void check_same(const CommunicatorPtr& comm, const std::string& what, uint64_t value) {
  if (!is_multi(comm)) return;
  int64_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  at::Tensor lo = at::tensor({bits}, at::kLong), hi = at::tensor({bits}, at::kLong);
  comm->all_reduce(lo, ReduceOp::kMin)->wait();
  comm->all_reduce(hi, ReduceOp::kMax)->wait();
  if (lo.item<int64_t>() != hi.item<int64_t>())
    throw CheckpointError("checkpoint: ranks disagree on " + what +
                          " (every rank must pass the same groups, in the same order)");
}
}  // namespace lookahead::ckpt::detail
