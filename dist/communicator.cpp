// Argument validation, sequencing and recording shared by every backend.
#include "dist/communicator.h"

#include <c10/core/ScalarType.h>

#include <algorithm>
#include <cstring>
#include <sstream>

namespace lookahead::dist {

namespace {

bool ranges_overlap(const at::Tensor& a, const at::Tensor& b) {
  auto a0 = reinterpret_cast<uintptr_t>(a.data_ptr());
  auto b0 = reinterpret_cast<uintptr_t>(b.data_ptr());
  auto a1 = a0 + a.nbytes();
  auto b1 = b0 + b.nbytes();
  return a.nbytes() > 0 && b.nbytes() > 0 && a0 < b1 && b0 < a1;
}

}  // namespace

std::vector<double> all_reduce_values(Communicator& comm, const std::vector<double>& values, ReduceOp op) {
  // An owned buffer, not a view of `values`: a failed collective keeps its tensors alive (a stuck
  // backend may still write them) beyond this call.
  at::Tensor t = at::tensor(c10::ArrayRef<double>(values), at::TensorOptions().dtype(at::kDouble));
  comm.all_reduce(t, op)->wait();
  const double* p = t.data_ptr<double>();
  return std::vector<double>(p, p + t.numel());
}

std::vector<std::string> all_gather_strings(Communicator& comm, const std::string& mine) {
  const int n = comm.size();
  at::Tensor length = at::tensor({static_cast<int64_t>(mine.size())}, at::kLong);
  at::Tensor lengths = at::empty({n}, at::kLong);
  comm.all_gather(lengths, length)->wait();
  const int64_t longest = std::max<int64_t>(lengths.max().item<int64_t>(), 1);
  at::Tensor local = at::zeros({longest}, at::kByte);
  if (!mine.empty()) std::memcpy(local.data_ptr(), mine.data(), mine.size());
  at::Tensor all = at::empty({n * longest}, at::kByte);
  comm.all_gather(all, local)->wait();
  std::vector<std::string> out;
  out.reserve(static_cast<size_t>(n));
  const auto* base = static_cast<const char*>(all.data_ptr());
  const auto* len = lengths.data_ptr<int64_t>();
  for (int r = 0; r < n; ++r) out.emplace_back(base + r * longest, static_cast<size_t>(len[r]));
  return out;
}

void broadcast_string(Communicator& comm, int root, std::string& text) {
  at::Tensor length = at::tensor({static_cast<int64_t>(text.size())}, at::kLong);
  comm.broadcast(length, root)->wait();
  const int64_t n = length.item<int64_t>();
  at::Tensor bytes = at::zeros({std::max<int64_t>(n, 1)}, at::kByte);
  if (comm.rank() == root && n > 0) std::memcpy(bytes.data_ptr(), text.data(), static_cast<size_t>(n));
  comm.broadcast(bytes, root)->wait();
  text.assign(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(n));
}

std::string OpSignature::to_string() const {
  std::ostringstream s;
  s << "#" << seq << " " << dist::to_string(static_cast<OpType>(op)) << " "
    << dtype_name(static_cast<at::ScalarType>(dtype)) << " in " << in_numel << " out " << out_numel;
  if (static_cast<OpType>(op) == OpType::kBroadcast) s << " root " << root;
  if (static_cast<OpType>(op) == OpType::kReduceScatter || static_cast<OpType>(op) == OpType::kAllReduce)
    s << " " << dist::to_string(static_cast<ReduceOp>(root));
  return s.str();
}

Communicator::Communicator(std::string name, int rank, int size, std::shared_ptr<CommServices> services)
    : services_(std::move(services)), name_(std::move(name)), rank_(rank), size_(size) {
  TORCH_INTERNAL_ASSERT(services_ && services_->recorder && services_->watchdog);
  TORCH_INTERNAL_ASSERT(rank_ >= 0 && rank_ < size_);
}

void Communicator::fail_argument(const std::string& message) const {
  throw DistError(ErrorKind::kInvalidArgument,
                  message + " (communicator '" + name_ + "', " + backend() + ", " + where() + ")");
}

void Communicator::check_tensor(const at::Tensor& t, const char* what) const {
  if (!t.defined()) fail_argument(std::string(what) + " is an undefined tensor");
  if (!t.is_contiguous()) {
    std::ostringstream s;
    s << what << " must be contiguous (sizes " << t.sizes() << ", strides " << t.strides() << ")";
    fail_argument(s.str());
  }
  if (t.is_sparse() || t.is_quantized()) fail_argument(std::string(what) + " must be a dense tensor");
  check_device(t, what);
}

WorkHandle Communicator::all_gather(const at::Tensor& output, const at::Tensor& input) {
  check_tensor(output, "all_gather output");
  check_tensor(input, "all_gather input");
  if (output.scalar_type() != input.scalar_type())
    fail_argument(std::string("all_gather dtypes differ: output ") + dtype_name(output.scalar_type()) +
                  ", input " + dtype_name(input.scalar_type()));
  if (output.device() != input.device()) fail_argument("all_gather output and input are on different devices");
  if (output.numel() != input.numel() * size_)
    fail_argument("all_gather output has " + std::to_string(output.numel()) + " elements; expected size (" +
                  std::to_string(size_) + ") x input (" + std::to_string(input.numel()) + ")");
  Op op;
  op.type = OpType::kAllGather;
  op.output = output;
  op.input = input;
  if (ranges_overlap(output, input)) {
    auto chunk = static_cast<char*>(output.data_ptr()) + rank_ * input.nbytes();
    if (input.data_ptr() != chunk)
      fail_argument("all_gather input overlaps output but is not this rank's chunk of it");
    op.in_place = true;
  }
  op.signature = {0, int64_t(OpType::kAllGather), int64_t(input.scalar_type()), input.numel(), output.numel(), 0};
  return issue(std::move(op));
}

WorkHandle Communicator::reduce_scatter(const at::Tensor& output, const at::Tensor& input, ReduceOp reduce) {
  check_tensor(output, "reduce_scatter output");
  check_tensor(input, "reduce_scatter input");
  if (output.scalar_type() != input.scalar_type())
    fail_argument(std::string("reduce_scatter dtypes differ: output ") + dtype_name(output.scalar_type()) +
                  ", input " + dtype_name(input.scalar_type()));
  if (output.device() != input.device())
    fail_argument("reduce_scatter output and input are on different devices");
  if (input.numel() != output.numel() * size_)
    fail_argument("reduce_scatter input has " + std::to_string(input.numel()) +
                  " elements, which is not size (" + std::to_string(size_) + ") x output (" +
                  std::to_string(output.numel()) + "); pad the input to a multiple of the size");
  if (reduce == ReduceOp::kAvg && !at::isFloatingType(input.scalar_type()))
    fail_argument(std::string("reduce_scatter avg needs a floating-point dtype, got ") +
                  dtype_name(input.scalar_type()));
  if (ranges_overlap(output, input)) fail_argument("reduce_scatter output overlaps its input");
  Op op;
  op.type = OpType::kReduceScatter;
  op.output = output;
  op.input = input;
  op.reduce = reduce;
  op.signature = {0, int64_t(OpType::kReduceScatter), int64_t(input.scalar_type()), input.numel(), output.numel(),
                  int64_t(reduce)};
  return issue(std::move(op));
}

WorkHandle Communicator::all_reduce(const at::Tensor& tensor, ReduceOp reduce) {
  check_tensor(tensor, "all_reduce tensor");
  if (reduce == ReduceOp::kAvg && !at::isFloatingType(tensor.scalar_type()))
    fail_argument(std::string("all_reduce avg needs a floating-point dtype, got ") +
                  dtype_name(tensor.scalar_type()));
  Op op;
  op.type = OpType::kAllReduce;
  op.output = tensor;
  op.reduce = reduce;
  op.signature = {0, int64_t(OpType::kAllReduce), int64_t(tensor.scalar_type()), tensor.numel(), tensor.numel(),
                  int64_t(reduce)};
  return issue(std::move(op));
}

WorkHandle Communicator::broadcast(const at::Tensor& tensor, int root) {
  check_tensor(tensor, "broadcast tensor");
  if (root < 0 || root >= size_)
    fail_argument("broadcast root " + std::to_string(root) + " is outside [0, " + std::to_string(size_) + ")");
  Op op;
  op.type = OpType::kBroadcast;
  op.output = tensor;
  op.root = root;
  op.signature = {0, int64_t(OpType::kBroadcast), int64_t(tensor.scalar_type()), tensor.numel(), tensor.numel(),
                  root};
  return issue(std::move(op));
}

WorkHandle Communicator::barrier() {
  Op op;
  op.type = OpType::kBarrier;
  op.signature = {0, int64_t(OpType::kBarrier), 0, 0, 0, 0};
  return issue(std::move(op));
}

WorkHandle Communicator::issue(Op op) {
  if (aborted())
    throw DistError(ErrorKind::kAborted, "communicator '" + name_ + "' was aborted at " + where() +
                                             " after an earlier failure:\n" + aborted_reason());
  WorkInfo info;
  info.seq = next_seq_.fetch_add(1);
  info.op = op.type;
  info.comm_name = name_;
  info.backend = backend();
  op.signature.seq = static_cast<int64_t>(info.seq);
  if (op.output.defined()) {
    info.dtype = op.output.scalar_type();
    // nccl-tests convention: the size of the larger buffer of the collective.
    const at::Tensor& big = op.type == OpType::kReduceScatter ? op.input : op.output;
    info.numel = big.numel();
    info.bytes = static_cast<int64_t>(big.nbytes());
  }
  WorkHandle work = start(std::move(op), std::move(info));
  services_->recorder->add(work);
  services_->watchdog->watch(work, weak_from_this(), services_->config.timeout_s);
  return work;
}

std::string Communicator::mismatch_report(const Op& op, const std::vector<OpSignature>& all) const {
  std::ostringstream s;
  s << "ranks issued different collectives on communicator '" << name_ << "' (" << backend()
    << "), seen at " << where() << ":\n";
  for (size_t r = 0; r < all.size(); ++r) {
    bool differs = all[r].values() != all[0].values();
    s << "  rank " << r << ": " << all[r].to_string() << (differs ? "   <-- differs from rank 0" : "") << "\n";
  }
  s << "Every rank must issue the same collectives, in the same order, with the same dtypes and sizes.";
  return s.str();
}

std::string Communicator::aborted_reason() const {
  std::lock_guard<std::mutex> lock(abort_mutex_);
  return abort_reason_;
}

void Communicator::set_aborted(const std::string& reason) {
  std::lock_guard<std::mutex> lock(abort_mutex_);
  if (aborted_.load()) return;
  abort_reason_ = reason;
  aborted_.store(true);
}

}  // namespace lookahead::dist
