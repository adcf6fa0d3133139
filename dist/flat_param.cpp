// Flat, padded, sharded parameter storage: layout arithmetic, shard construction, gather/bind/
// release through set_data, and gradient reduce-scatter with accumulation.
#include "dist/flat_param.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <set>
#include <thread>

namespace lookahead::dist {

namespace {

int64_t round_up(int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

/// A Work that is already complete, for operations that needed no communication (replicated
/// groups), so that callers handle every case the same way.
WorkHandle completed_work(OpType op, const std::string& group, at::ScalarType dtype, int64_t numel) {
  WorkInfo info;
  info.op = op;
  info.comm_name = group;
  info.backend = "local";
  info.dtype = dtype;
  info.numel = numel;
  info.bytes = numel * static_cast<int64_t>(c10::elementSize(dtype));
  auto work = std::make_shared<Work>(std::move(info));
  work->mark_running();
  work->mark_done();
  return work;
}

}  // namespace

// --- FlatLayout ----------------------------------------------------------------------------------

FlatLayout::FlatLayout(const std::vector<std::pair<std::string, std::vector<int64_t>>>& items, int64_t shards,
                       at::ScalarType dt)
    : dtype(dt), shard_count(shards) {
  TORCH_CHECK(shard_count >= 1, "FlatLayout: shard_count must be >= 1, got ", shard_count);
  std::set<std::string> seen;
  entries.reserve(items.size());
  for (const auto& [name, shape] : items) {
    TORCH_CHECK(seen.insert(name).second, "FlatLayout: parameter name '", name, "' appears twice");
    int64_t n = 1;
    for (int64_t d : shape) {
      TORCH_CHECK(d >= 0, "FlatLayout: parameter '", name, "' has a negative dimension");
      n *= d;
    }
    entries.push_back(Entry{name, shape, numel, n});
    numel += n;
  }
  // At least one aligned element per shard, so that even an empty group has well-formed shards.
  padded_numel = round_up(std::max<int64_t>(numel, 1), kAlignment * shard_count);
  shard_numel = padded_numel / shard_count;
}

size_t FlatLayout::index(const std::string& name) const {
  for (size_t i = 0; i < entries.size(); ++i)
    if (entries[i].name == name) return i;
  TORCH_CHECK(false, "FlatLayout: no parameter named '", name, "'");
}

// --- FlatParamGroup ------------------------------------------------------------------------------

FlatParamGroup::FlatParamGroup(std::string name, std::vector<std::pair<std::string, at::Tensor>> params,
                               CommunicatorPtr comm, at::ScalarType storage_dtype, c10::Device device,
                               std::optional<at::ScalarType> compute_dtype)
    : name_(std::move(name)),
      comm_(std::move(comm)),
      compute_dtype_(compute_dtype.value_or(storage_dtype)),
      device_(device) {
  TORCH_CHECK(!params.empty(), "FlatParamGroup '", name_, "': no parameters");
  TORCH_CHECK(at::isFloatingType(storage_dtype) && at::isFloatingType(compute_dtype_), "FlatParamGroup '", name_,
              "': storage and compute dtypes must be floating point");
  const int64_t shards = comm_ ? comm_->size() : 1;
  shard_rank_ = comm_ ? comm_->rank() : 0;

  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  shapes.reserve(params.size());
  trainable_ = params.front().second.requires_grad();
  for (const auto& [pname, t] : params) {
    TORCH_CHECK(t.defined(), "FlatParamGroup '", name_, "': parameter '", pname, "' is undefined");
    TORCH_CHECK(t.requires_grad() == trainable_, "FlatParamGroup '", name_,
                "': parameters disagree on requires_grad ('", pname,
                "'); a group holds parameters of one role, frozen or trainable");
    shapes.emplace_back(pname, t.sizes().vec());
  }
  layout_ = FlatLayout(shapes, shards, storage_dtype);

  // Copy this rank's slice [begin, end) of the virtual concatenation; the rest of the shard is
  // padding and stays zero.
  const auto options = at::TensorOptions().dtype(storage_dtype).device(device_);
  shard_ = at::zeros({layout_.shard_numel}, options);  // [shard_numel]
  const int64_t begin = shard_rank_ * layout_.shard_numel, end = begin + layout_.shard_numel;
  {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) {
      const auto& e = layout_.entries[i];
      const int64_t lo = std::max(begin, e.offset), hi = std::min(end, e.offset + e.numel);
      if (lo >= hi) continue;
      at::Tensor flat = params[i].second.detach().reshape({-1});
      shard_.narrow(0, lo - begin, hi - lo).copy_(flat.narrow(0, lo - e.offset, hi - lo));
    }
  }

  empty_ = at::empty({0}, compute_options());
  params_.reserve(params.size());
  for (auto& [pname, t] : params) params_.push_back(std::move(t));
  point_at_empty();
  // Gradients the parameters carried in belong to the full tensors that are gone now.
  for (auto& p : params_) p.mutable_grad() = at::Tensor();
}

at::TensorOptions FlatParamGroup::compute_options() const {
  return at::TensorOptions().dtype(compute_dtype_).device(device_);
}

void FlatParamGroup::point_at_empty() {
  // set_data swaps the storage of the existing TensorImpl, so every holder of the tensor (module
  // member fields and the module's parameter dict alike) sees the change.
  for (auto& p : params_) p.set_data(empty_);
  bound_ = false;
}

void FlatParamGroup::delay() const {
  if (debug_delay_.count() > 0) std::this_thread::sleep_for(debug_delay_);
}

WorkHandle FlatParamGroup::gather(const at::Tensor& buffer) {
  TORCH_CHECK(!bound_ && !gather_work_, "FlatParamGroup '", name_, "': gather() while ",
              bound_ ? "bound" : "a gather is in flight", "; release() first");
  const int64_t n = layout_.padded_numel;
  at::Tensor full;
  if (buffer.defined()) {
    TORCH_CHECK(buffer.is_contiguous() && buffer.scalar_type() == compute_dtype_ && buffer.device() == device_ &&
                    buffer.numel() >= n,
                "FlatParamGroup '", name_, "': gather buffer must be a contiguous ", dtype_name(compute_dtype_),
                " tensor on ", device_.str(), " with at least ", n, " elements");
    full = buffer.reshape({-1}).narrow(0, 0, n);
  }
  if (replicated()) {
    // Nothing to communicate: the shard is the whole buffer. Bind straight onto it when no
    // conversion or caller buffer asks for a copy.
    if (!full.defined() && compute_dtype_ == layout_.dtype) {
      full = shard_;
    } else {
      if (!full.defined()) full = at::empty({n}, compute_options());
      at::NoGradGuard no_grad;
      full.copy_(shard_);
    }
    gathered_ = full;
    gather_work_ = completed_work(OpType::kAllGather, name_, compute_dtype_, n);
    return gather_work_;
  }
  if (!full.defined()) full = at::empty({n}, compute_options());  // [padded_numel]
  at::Tensor input = shard_;
  if (compute_dtype_ != layout_.dtype) {
    // Send the cast copy: write it into this rank's chunk of the output and gather in place,
    // which needs no extra buffer.
    input = full.narrow(0, shard_rank_ * layout_.shard_numel, layout_.shard_numel);
    at::NoGradGuard no_grad;
    input.copy_(shard_);
  }
  delay();
  gathered_ = full;
  gather_work_ = comm_->all_gather(full, input);
  return gather_work_;
}

void FlatParamGroup::bind() {
  TORCH_CHECK(gather_work_, "FlatParamGroup '", name_, "': bind() without a gather()");
  gather_work_->wait();
  gather_work_.reset();
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& e = layout_.entries[i];
    params_[i].set_data(gathered_.narrow(0, e.offset, e.numel).view(e.shape));
  }
  bound_ = true;
}

void FlatParamGroup::release() {
  if (gather_work_) {
    // The collective still writes into the buffer: it must finish before the buffer can go.
    gather_work_->wait();
    gather_work_.reset();
  }
  point_at_empty();
  gathered_ = at::Tensor();
}

void FlatParamGroup::abandon() noexcept {
  gather_work_.reset();
  gathered_ = at::Tensor();
  try {
    point_at_empty();
  } catch (const std::exception&) {
    // Only reachable on a broken allocator; the modules are being destroyed anyway.
  }
}

WorkHandle FlatParamGroup::reduce_scatter_grads(ReduceOp op) {
  TORCH_CHECK(trainable_, "FlatParamGroup '", name_,
              "': reduce_scatter_grads on a frozen group (frozen parameters have no gradients)");
  TORCH_CHECK(op == ReduceOp::kSum || op == ReduceOp::kAvg, "FlatParamGroup '", name_,
              "': gradients are reduced with kSum or kAvg, not ", to_string(op));
  const auto fp32 = at::TensorOptions().dtype(at::kFloat).device(device_);
  at::Tensor flat = at::zeros({layout_.padded_numel}, fp32);  // [padded_numel]
  {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params_.size(); ++i) {
      const at::Tensor& g = params_[i].grad();
      if (!g.defined()) continue;
      const auto& e = layout_.entries[i];
      TORCH_CHECK(g.numel() == e.numel, "FlatParamGroup '", name_, "': gradient of '", e.name, "' has ", g.numel(),
                  " elements, the parameter ", e.numel);
      flat.narrow(0, e.offset, e.numel).copy_(g.reshape({-1}));
    }
  }
  for (auto& p : params_) p.mutable_grad() = at::Tensor();
  reduced_elements_ += layout_.numel;
  ++reduce_calls_;

  if (replicated()) {
    // One rank: the sum and the average of one contribution are the contribution itself. It goes
    // into the gradient shard at once (the order finish() would add in), so that a second backward
    // of the step adds into it rather than holding another full buffer until finish().
    at::NoGradGuard no_grad;
    if (grad_shard_.defined())
      grad_shard_.add_(flat);
    else
      grad_shard_ = flat;
    return completed_work(OpType::kReduceScatter, name_, at::kFloat, layout_.padded_numel);
  }
  PendingReduce pending;
  pending.input = flat;
  pending.output = at::empty({layout_.shard_numel}, fp32);  // [shard_numel]
  delay();
  pending.work = comm_->reduce_scatter(pending.output, flat, op);
  WorkHandle work = pending.work;
  pending_.push_back(std::move(pending));
  return work;
}

void FlatParamGroup::finish() {
  // Wait in issue order; on failure the remaining entries stay pending (their buffers held).
  while (!pending_.empty()) {
    PendingReduce& p = pending_.front();
    p.work->wait();
    at::NoGradGuard no_grad;
    if (grad_shard_.defined())
      grad_shard_.add_(p.output);
    else
      grad_shard_ = p.output;
    pending_.erase(pending_.begin());
  }
}

void FlatParamGroup::zero_grad() {
  finish();  // an in-flight reduction would otherwise land after the reset
  grad_shard_ = at::Tensor();
  for (auto& p : params_) p.mutable_grad() = at::Tensor();
}

std::vector<ShardRange> FlatParamGroup::shard_ranges(std::optional<int64_t> rank) const {
  const int64_t r = rank.value_or(shard_rank_);
  TORCH_CHECK(r >= 0 && r < layout_.shard_count, "FlatParamGroup '", name_, "': shard rank ", r, " out of range");
  const int64_t begin = r * layout_.shard_numel, end = begin + layout_.shard_numel;
  std::vector<ShardRange> out;
  for (const auto& e : layout_.entries) {
    const int64_t lo = std::max(begin, e.offset), hi = std::min(end, e.offset + e.numel);
    if (lo < hi) out.push_back(ShardRange{e.name, lo - e.offset, lo - begin, hi - lo});
  }
  return out;
}

void FlatParamGroup::assign(const std::string& pname, const at::Tensor& value) {
  TORCH_CHECK(!bound_ && !gather_work_, "FlatParamGroup '", name_, "': assign('", pname,
              "') while gathered; release() first");
  const auto& e = layout_.entries[layout_.index(pname)];
  TORCH_CHECK(value.defined() && value.sizes() == at::IntArrayRef(e.shape), "FlatParamGroup '", name_, "': assign('",
              pname, "') of shape ", value.defined() ? value.sizes() : at::IntArrayRef{}, ", the parameter has ",
              at::IntArrayRef(e.shape));
  const int64_t begin = shard_rank_ * layout_.shard_numel;
  const int64_t lo = std::max(begin, e.offset), hi = std::min(begin + layout_.shard_numel, e.offset + e.numel);
  if (lo >= hi) return;  // the parameter lies in other ranks' shards
  at::NoGradGuard no_grad;
  shard_.narrow(0, lo - begin, hi - lo).copy_(value.reshape({-1}).narrow(0, lo - e.offset, hi - lo));
}

FlatParamBytes FlatParamGroup::bytes() const {
  FlatParamBytes b;
  b.shard_param_bytes = static_cast<int64_t>(shard_.nbytes());
  b.shard_grad_bytes = grad_shard_.defined() ? static_cast<int64_t>(grad_shard_.nbytes()) : 0;
  // A replicated group bound straight onto its shard holds no extra buffer.
  const bool aliases_shard = gathered_.defined() && gathered_.is_same(shard_);
  b.gathered_bytes = gathered_.defined() && !aliases_shard ? static_cast<int64_t>(gathered_.nbytes()) : 0;
  b.padding_elements = layout_.padding();
  return b;
}

at::Tensor FlatParamGroup::full_tensor(const std::string& pname) {
  const auto& e = layout_.entries[layout_.index(pname)];
  at::Tensor full;
  if (replicated()) {
    full = shard_;
  } else {
    full = at::empty({layout_.padded_numel}, shard_.options());  // [padded_numel] storage dtype
    delay();
    comm_->all_gather(full, shard_)->wait();
  }
  return full.narrow(0, e.offset, e.numel).view(e.shape).clone();
}

}  // namespace lookahead::dist
