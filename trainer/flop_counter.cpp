// The observer: operator name -> FLOPs from its operands' shapes.
#include "trainer/flop_counter.h"

#include <ATen/record_function.h>

#include <cstring>
#include <memory>

namespace lookahead::trainer {
namespace {

thread_local FlopCounter* tl_counter = nullptr;
thread_local int tl_counted_depth = 0;  // counted operations open on this thread

/// Marks a counted operation, so its end closes it.
struct Counted final : at::ObserverContext {};

const at::Tensor* tensor_at(const at::RecordFunction& fn, size_t i) {
  const auto inputs = fn.inputs();
  if (i >= inputs.size() || !inputs[i].isTensor()) return nullptr;
  return &inputs[i].toTensor();
}

bool needs_grad(const at::Tensor* t) { return t != nullptr && t->defined() && t->requires_grad(); }

double d(int64_t v) { return static_cast<double>(v); }

/// A (batched) product a [.., M, K] x b [.., K, N]: 2 B M K N each for the forward, the gradient
/// of a and the gradient of b.
void product(const at::Tensor* a, const at::Tensor* b, double& fwd, double& bwd) {
  if (a == nullptr || b == nullptr || a->dim() < 2 || b->dim() < 2) return;
  double batch = 1;
  for (int64_t i = 0; i + 2 < a->dim(); ++i) batch *= d(a->size(i));
  const double f = 2 * batch * d(a->size(-2)) * d(a->size(-1)) * d(b->size(-1));
  fwd = f;
  bwd = f * (needs_grad(a) + needs_grad(b));
}

/// aten::convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding,
/// groups): 2 * (output elements) * (input channels per group) * (kernel elements), or for a
/// transposed convolution the same over the input's elements.
void convolution(const at::RecordFunction& fn, double& fwd, double& bwd) {
  const at::Tensor* x = tensor_at(fn, 0);
  const at::Tensor* w = tensor_at(fn, 1);
  const auto in = fn.inputs();
  if (x == nullptr || w == nullptr || in.size() < 9 || x->dim() < 3) return;
  const auto stride = in[3].toIntVector(), padding = in[4].toIntVector(), dilation = in[5].toIntVector();
  const bool transposed = in[6].toBool();
  const int64_t spatial = x->dim() - 2;
  auto at_or = [](const std::vector<int64_t>& v, int64_t i) { return v.size() == 1 ? v[0] : v.at(i); };
  double kernel = 1, out_positions = 1, in_positions = 1;
  for (int64_t i = 0; i < spatial; ++i) {
    const int64_t k = w->size(2 + i), h = x->size(2 + i);
    kernel *= d(k);
    in_positions *= d(h);
    out_positions *= d((h + 2 * at_or(padding, i) - at_or(dilation, i) * (k - 1) - 1) / at_or(stride, i) + 1);
  }
  // weight: [C_out, C_in / groups, k...] (transposed: [C_in, C_out / groups, k...])
  const double n = d(x->size(0));
  const double f = transposed ? 2 * n * in_positions * d(w->size(0)) * d(w->size(1)) * kernel
                              : 2 * n * out_positions * d(w->size(0)) * d(w->size(1)) * kernel;
  fwd = f;
  bwd = f * (needs_grad(x) + needs_grad(w));
}

/// scaled_dot_product_attention(q [.., L, E], k [.., S, E], v [.., S, Ev]): scores Q K^T and the
/// weighted sum P V. Backward: dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q, each as needed.
void attention(const at::RecordFunction& fn, double& fwd, double& bwd) {
  const at::Tensor* q = tensor_at(fn, 0);
  const at::Tensor* k = tensor_at(fn, 1);
  const at::Tensor* v = tensor_at(fn, 2);
  if (q == nullptr || k == nullptr || v == nullptr || q->dim() < 2) return;
  double batch = 1;
  for (int64_t i = 0; i + 2 < q->dim(); ++i) batch *= d(q->size(i));
  const double l = d(q->size(-2)), s = d(k->size(-2)), e = d(q->size(-1)), ev = d(v->size(-1));
  const double qk = 2 * batch * l * s * e, pv = 2 * batch * l * s * ev;
  fwd = qk + pv;
  const bool gq = needs_grad(q), gk = needs_grad(k), gv = needs_grad(v);
  bwd = (gv ? pv : 0) + (gq || gk ? pv : 0) + (gq ? qk : 0) + (gk ? qk : 0);
}

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  const char* name = fn.name();
  enum { kNone, kMm, kAddmm, kConv, kAttention } op = kNone;
  if (std::strcmp(name, "aten::mm") == 0 || std::strcmp(name, "aten::bmm") == 0)
    op = kMm;
  else if (std::strcmp(name, "aten::addmm") == 0 || std::strcmp(name, "aten::baddbmm") == 0)
    op = kAddmm;
  else if (std::strcmp(name, "aten::convolution") == 0)
    op = kConv;
  else if (std::strcmp(name, "aten::scaled_dot_product_attention") == 0)
    op = kAttention;
  if (op == kNone) return nullptr;
  if (tl_counted_depth++ == 0 && tl_counter != nullptr) {
    double fwd = 0, bwd = 0;
    switch (op) {
      case kMm: product(tensor_at(fn, 0), tensor_at(fn, 1), fwd, bwd); break;
      case kAddmm: product(tensor_at(fn, 1), tensor_at(fn, 2), fwd, bwd); break;
      case kConv: convolution(fn, fwd, bwd); break;
      case kAttention: attention(fn, fwd, bwd); break;
      case kNone: break;
    }
    tl_counter->add(fwd, bwd);
  }
  return std::make_unique<Counted>();
}

void on_end(const at::RecordFunction& /*fn*/, at::ObserverContext* ctx) {
  if (ctx != nullptr) --tl_counted_depth;
}

}  // namespace

FlopCounter::FlopCounter() : outer_(tl_counter) {
  if (outer_ == nullptr) {
    handle_ = at::addThreadLocalCallback(
        at::RecordFunctionCallback(&on_start, &on_end).needsInputs(true).scopes({at::RecordScope::FUNCTION}));
  }
  tl_counter = this;
}

FlopCounter::~FlopCounter() {
  tl_counter = outer_;
  if (outer_ == nullptr) {
    at::removeCallback(handle_);
    tl_counted_depth = 0;
  }
}

}  // namespace lookahead::trainer
