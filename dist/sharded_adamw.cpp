// AdamW on local shards: the update of torch.optim.AdamW (decoupled weight decay, bias
// correction, amsgrad off) applied to fp32 shard tensors, and global-norm clipping through one
// all_reduce of the local sums of squares.
#include "dist/sharded_adamw.h"

#include <ATen/ATen.h>

#include <cmath>
#include <string_view>

namespace lookahead::dist {

ShardedAdamW::ShardedAdamW(std::vector<AdamWGroupOptions> lr_groups, AdamWOptions options)
    : lr_groups_(std::move(lr_groups)), options_(options) {
  TORCH_CHECK(!lr_groups_.empty(), "ShardedAdamW: no parameter groups");
  for (size_t i = 0; i < lr_groups_.size(); ++i) {
    TORCH_CHECK(lr_groups_[i].lr >= 0 && lr_groups_[i].weight_decay >= 0, "ShardedAdamW: group '",
                lr_groups_[i].name, "' has a negative lr or weight decay");
    for (size_t j = 0; j < i; ++j)
      TORCH_CHECK(lr_groups_[j].name != lr_groups_[i].name, "ShardedAdamW: group name '", lr_groups_[i].name,
                  "' appears twice");
  }
  TORCH_CHECK(options_.beta1 >= 0 && options_.beta1 < 1 && options_.beta2 >= 0 && options_.beta2 < 1,
              "ShardedAdamW: betas must lie in [0, 1)");
  TORCH_CHECK(options_.eps >= 0, "ShardedAdamW: eps must be >= 0");
}

size_t ShardedAdamW::lr_group_index(const std::string& name) const {
  for (size_t i = 0; i < lr_groups_.size(); ++i)
    if (lr_groups_[i].name == name) return i;
  TORCH_CHECK(false, "ShardedAdamW: no parameter group named '", name, "'");
}

void ShardedAdamW::add(std::shared_ptr<FlatParamGroup> group, const std::string& lr_group) {
  TORCH_CHECK(group, "ShardedAdamW::add: null group");
  TORCH_CHECK(group->trainable(), "ShardedAdamW::add: group '", group->name(),
              "' is frozen; frozen parameters get no optimizer state");
  for (const auto& e : entries_)
    TORCH_CHECK(e.group != group && e.group->name() != group->name(), "ShardedAdamW::add: group '", group->name(),
                "' added twice");
  Entry e;
  e.lr_group = lr_group_index(lr_group);
  const at::Tensor& shard = group->local_shard();
  const auto fp32 = shard.options().dtype(at::kFloat);
  // An fp32 shard is its own master copy; any other storage dtype gets an fp32 master here.
  e.master = shard.scalar_type() == at::kFloat ? shard : shard.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
  e.exp_avg = at::zeros_like(shard, fp32);
  e.exp_avg_sq = at::zeros_like(shard, fp32);
  e.group = std::move(group);
  entries_.push_back(std::move(e));
}

at::Tensor ShardedAdamW::local_sum_of_squares(const CommunicatorPtr& world) {
  // Accumulated on the groups' device without host round trips (one sync per step, not one per
  // group); squares in fp32, sums in fp64.
  at::Tensor sum;  // [] fp64
  for (auto& e : entries_) {
    e.group->finish();
    const at::Tensor& g = e.group->grad_shard();
    if (!g.defined()) continue;
    // A group sharded over a subgroup of `world` is present (identically) on world/shard_count
    // ranks; weight it so that the all_reduce counts it once.
    const double weight = static_cast<double>(e.group->layout().shard_count) / world->size();
    at::Tensor part = g.pow(2).sum(at::kDouble) * weight;
    sum = sum.defined() ? sum + part.to(sum.device()) : part;
  }
  return sum;
}

double ShardedAdamW::grad_norm(const CommunicatorPtr& world) {
  TORCH_CHECK(world, "ShardedAdamW::grad_norm: null communicator");
  at::Tensor local = local_sum_of_squares(world);
  // The NCCL backend reduces device tensors, the MPI backend host tensors.
  c10::Device device(c10::kCPU);
  if (std::string_view(world->backend()) == "nccl" && !entries_.empty()) device = entries_.front().group->device();
  const auto options = at::TensorOptions().dtype(at::kDouble).device(device);
  at::Tensor total = local.defined() ? local.reshape({1}).to(options, /*non_blocking=*/false, /*copy=*/true)
                                     : at::zeros({1}, options);
  world->all_reduce(total, ReduceOp::kSum)->wait();
  return std::sqrt(total.item<double>());
}

double ShardedAdamW::clip_grad_norm(double max_norm, const CommunicatorPtr& world) {
  TORCH_CHECK(max_norm > 0, "ShardedAdamW::clip_grad_norm: max_norm must be positive, got ", max_norm);
  const double norm = grad_norm(world);
  // Same coefficient as torch.nn.utils.clip_grad_norm_.
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1) {
    at::NoGradGuard no_grad;
    for (auto& e : entries_)
      if (e.group->grad_shard().defined()) e.group->grad_shard().mul_(coef);
  }
  return norm;
}

void ShardedAdamW::step() {
  at::NoGradGuard no_grad;
  const double beta1 = options_.beta1, beta2 = options_.beta2;
  for (auto& e : entries_) {
    e.group->finish();
    const at::Tensor& grad = e.group->grad_shard();  // [shard_numel] fp32
    if (!grad.defined()) continue;
    const AdamWGroupOptions& hp = lr_groups_[e.lr_group];
    ++e.step;
    // Decoupled weight decay, then the moments, then the bias-corrected update — the order and
    // the operations of torch::optim::AdamW, so that results agree to rounding.
    e.master.mul_(1 - hp.lr * hp.weight_decay);
    e.exp_avg.mul_(beta1).add_(grad, 1 - beta1);
    e.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
    const double bias_correction1 = 1 - std::pow(beta1, static_cast<double>(e.step));
    const double bias_correction2 = 1 - std::pow(beta2, static_cast<double>(e.step));
    at::Tensor denom = (e.exp_avg_sq.sqrt() / std::sqrt(bias_correction2)).add_(options_.eps);
    e.master.addcdiv_(e.exp_avg, denom, -hp.lr / bias_correction1);
    if (!e.master.is_same(e.group->local_shard())) {
      at::Tensor shard = e.group->local_shard();
      shard.copy_(e.master);
    }
  }
  ++step_count_;
}

void ShardedAdamW::zero_grad() {
  for (auto& e : entries_) e.group->zero_grad();
}

int64_t ShardedAdamW::state_bytes() const {
  int64_t total = 0;
  for (const auto& e : entries_)
    total += static_cast<int64_t>(e.master.nbytes() + e.exp_avg.nbytes() + e.exp_avg_sq.nbytes());
  return total;
}

void ShardedAdamW::set_lr(const std::string& name, double lr) {
  TORCH_CHECK(lr >= 0, "ShardedAdamW::set_lr: negative lr for group '", name, "'");
  lr_groups_[lr_group_index(name)].lr = lr;
}

std::vector<ShardedAdamWGroupState> ShardedAdamW::state() const {
  std::vector<ShardedAdamWGroupState> out;
  out.reserve(entries_.size());
  for (const auto& e : entries_)
    out.push_back({e.group->name(), lr_groups_[e.lr_group].name, e.step, e.master, e.exp_avg, e.exp_avg_sq});
  return out;
}

void ShardedAdamW::load_state(int64_t step_count, const std::vector<ShardedAdamWGroupState>& groups) {
  TORCH_CHECK(step_count >= 0, "ShardedAdamW::load_state: negative step count");
  TORCH_CHECK(groups.size() == entries_.size(), "ShardedAdamW::load_state: ", groups.size(),
              " group states for ", entries_.size(), " groups");
  // Validate everything before changing anything, so that a bad checkpoint leaves the state intact.
  std::vector<const ShardedAdamWGroupState*> match(entries_.size(), nullptr);
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    for (const auto& s : groups)
      if (s.group == e.group->name()) match[i] = &s;
    TORCH_CHECK(match[i], "ShardedAdamW::load_state: no state for group '", e.group->name(), "'");
    const auto* s = match[i];
    TORCH_CHECK(s->step >= 0, "ShardedAdamW::load_state: negative step for group '", s->group, "'");
    for (const at::Tensor* t : {&s->master, &s->exp_avg, &s->exp_avg_sq})
      TORCH_CHECK(t->defined() && t->sizes() == e.master.sizes(), "ShardedAdamW::load_state: group '", s->group,
                  "' state has shape ", t->defined() ? t->sizes() : at::IntArrayRef{}, ", this rank's shard ",
                  e.master.sizes());
    if (!s->lr_group.empty())
      TORCH_CHECK(s->lr_group == lr_groups_[e.lr_group].name, "ShardedAdamW::load_state: group '", s->group,
                  "' was in lr group '", s->lr_group, "', now in '", lr_groups_[e.lr_group].name, "'");
  }
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < entries_.size(); ++i) {
    Entry& e = entries_[i];
    const auto* s = match[i];
    e.step = s->step;
    e.master.copy_(s->master);
    e.exp_avg.copy_(s->exp_avg);
    e.exp_avg_sq.copy_(s->exp_avg_sq);
    if (!e.master.is_same(e.group->local_shard())) {
      at::Tensor shard = e.group->local_shard();
      shard.copy_(e.master);
    }
  }
  step_count_ = step_count;
}

}  // namespace lookahead::dist
