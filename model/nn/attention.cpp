// Multi-head attention and GEGLU feed-forward in diffusers' layout.
#include "model/nn/attention.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/dropout.h>

namespace lookahead::model::nn {

AttentionImpl::AttentionImpl(const AttentionOptions& options_) : options(options_) { reset(); }

void AttentionImpl::reset() {
  const auto& o = options;
  int64_t inner = o.heads() * o.head_dim();
  auto t = o.tensor_options();
  to_q = register_module("to_q", LoraLinear(LinearOptions(o.query_dim(), inner).bias(false).tensor_options(t)));
  to_k = register_module("to_k",
                         LoraLinear(LinearOptions(o.cross_attention_dim(), inner).bias(false).tensor_options(t)));
  to_v = register_module("to_v",
                         LoraLinear(LinearOptions(o.cross_attention_dim(), inner).bias(false).tensor_options(t)));
  to_out = register_module("to_out", torch::nn::ModuleList());
  to_out->push_back(LoraLinear(LinearOptions(inner, o.query_dim()).tensor_options(t)));
}

LoraLinear AttentionImpl::out_proj() const { return LoraLinear(to_out->ptr<LoraLinearImpl>(0)); }

at::Tensor AttentionImpl::attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) const {
  const int64_t b = q.size(0), n = q.size(1), m = k.size(1), h = options.heads(), d = options.head_dim();
  // Heads are contiguous channel slices: c = head * d + i.
  auto qh = q.view({b, n, h, d}).transpose(1, 2);  // [B, H, N, d]
  auto kh = k.view({b, m, h, d}).transpose(1, 2);  // [B, H, M, d]
  auto vh = v.view({b, m, h, d}).transpose(1, 2);
  auto o = at::scaled_dot_product_attention(qh, kh, vh);  // [B, H, N, d], scale 1/sqrt(d)
  return o.transpose(1, 2).reshape({b, n, h * d});
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const at::Tensor& context, const BlockKv* shared) {
  const bool self_attention = !context.defined();
  const at::Tensor& ctx = self_attention ? x : context;
  at::Tensor q = to_q->forward(x);
  at::Tensor k = to_k->forward(ctx), v = to_v->forward(ctx);  // [B, M, C]
  if (self_attention && shared && shared->k.defined()) {
    TORCH_CHECK(shared->k.size(0) == x.size(0) && shared->k.size(2) == k.size(2),
                "reference K/V must be [B=", x.size(0), ", M, ", k.size(2), "], got ", shared->k.sizes());
    k = at::cat({k, shared->k.to(k.scalar_type())}, 1);  // [B, N + M_ref, C]
    v = at::cat({v, shared->v.to(v.scalar_type())}, 1);
  }
  at::Tensor o = attend(q, k, v);
  const auto& ctx_shared = options.context();
  const double ip_scale = ctx_shared ? ctx_shared->ip_scale : 1.0;
  if (!self_attention && shared && shared->ip_k.defined()) {
    TORCH_CHECK(shared->ip_k.size(0) == x.size(0), "IP K/V must have batch ", x.size(0), ", got ", shared->ip_k.sizes());
    o = o + attend(q, shared->ip_k.to(q.scalar_type()), shared->ip_v.to(q.scalar_type())) * ip_scale;
  } else if (ip_ && ctx_shared && ctx_shared->ip_tokens.defined()) {
    const at::Tensor& ip = ctx_shared->ip_tokens;  // [B, T_ip, D_ip]
    TORCH_CHECK(ip.dim() == 3 && ip.size(0) == x.size(0), "IP-Adapter tokens must be [B=", x.size(0),
                ", T, D], got ", ip.sizes());
    at::Tensor ip_in = ip.to(q.scalar_type());
    o = o + attend(q, ip_->to_k_ip->forward(ip_in), ip_->to_v_ip->forward(ip_in)) * ip_scale;
  }
  return out_proj()->forward(o);
}

GegluImpl::GegluImpl(int64_t dim_in_, int64_t dim_out_, at::TensorOptions tensor_options_)
    : dim_in(dim_in_), dim_out(dim_out_), tensor_options(tensor_options_) {
  reset();
}

void GegluImpl::reset() {
  proj = register_module("proj", LoraLinear(LinearOptions(dim_in, 2 * dim_out).tensor_options(tensor_options)));
}

at::Tensor GegluImpl::forward(const at::Tensor& x) {
  auto parts = proj->forward(x).chunk(2, -1);  // value first, gate second
  return parts[0] * at::gelu(parts[1]);
}

FeedForwardImpl::FeedForwardImpl(int64_t dim_, at::TensorOptions tensor_options_)
    : dim(dim_), tensor_options(tensor_options_) {
  reset();
}

void FeedForwardImpl::reset() {
  net = register_module("net", torch::nn::ModuleList());
  net->push_back(Geglu(dim, 4 * dim, tensor_options));
  net->push_back(torch::nn::Dropout(0.0));  // keeps diffusers' index of the output Linear at 2
  net->push_back(LoraLinear(LinearOptions(4 * dim, dim).tensor_options(tensor_options)));
}

at::Tensor FeedForwardImpl::forward(const at::Tensor& x) {
  at::Tensor h = net->ptr<GegluImpl>(0)->forward(x);
  return net->ptr<LoraLinearImpl>(2)->forward(h);
}

}  // namespace lookahead::model::nn
