// LoRA-capable Linear and Conv2d.
#include "model/nn/lora.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "model/nn/skip_init.h"

namespace lookahead::model::nn {

void default_init(at::Tensor& weight, at::Tensor& bias, int64_t fan_in) {
  if (weight.is_meta() || SkipInit::active()) return;
  at::NoGradGuard no_grad;
  // kaiming_uniform_(a=sqrt(5)) reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the bias bound too.
  double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
  weight.uniform_(-bound, bound);
  if (bias.defined()) bias.uniform_(-bound, bound);
}

namespace {

thread_local const AdapterSelection* current_selection = nullptr;

}  // namespace

AdapterSelection::AdapterSelection(std::vector<std::string> names)
    : names_(std::move(names)), previous_(current_selection) {
  current_selection = this;
}

AdapterSelection::~AdapterSelection() { current_selection = previous_; }

bool AdapterSelection::active(const std::string& name, bool explicit_only) {
  if (current_selection == nullptr) return !explicit_only;
  const auto& n = current_selection->names_;
  return std::find(n.begin(), n.end(), name) != n.end();
}

const std::vector<std::string>* AdapterSelection::current() {
  return current_selection ? &current_selection->names_ : nullptr;
}

namespace {

void check_same_adapter_name(const std::vector<LoraAdapter>& adapters, const std::string& name) {
  for (const auto& a : adapters)
    TORCH_CHECK(a.name != name, "LoRA adapter '", name, "' is already attached to this layer");
}

}  // namespace

// ---- Linear -------------------------------------------------------------------------------------

LoraLinearImpl::LoraLinearImpl(const LinearOptions& options_) : options(options_) { reset(); }

void LoraLinearImpl::reset() {
  const auto& o = options;
  weight = register_parameter("weight", at::empty({o.out_features(), o.in_features()}, o.tensor_options()));
  if (o.bias())
    bias = register_parameter("bias", at::empty({o.out_features()}, o.tensor_options()));
  else
    bias = at::Tensor();
  default_init(weight, bias, o.in_features());
}

at::Tensor LoraLinearImpl::forward(const at::Tensor& x) {
  at::Tensor y = at::linear(x, weight, bias);
  for (const auto& a : adapters_) {
    double f = a.factor();
    if (f == 0.0 || !AdapterSelection::active(a.name, a.explicit_only)) continue;
    y = y + at::linear(at::linear(x, a.down), a.up) * f;
  }
  return y;
}

void LoraLinearImpl::add_adapter(LoraAdapter adapter) {
  check_same_adapter_name(adapters_, adapter.name);
  TORCH_CHECK(adapter.down.dim() == 2 && adapter.down.size(1) == options.in_features(), "LoRA '", adapter.name,
              "': lora_down must be [rank, ", options.in_features(), "] for this Linear, got ", adapter.down.sizes());
  TORCH_CHECK(adapter.up.dim() == 2 && adapter.up.size(0) == options.out_features() &&
                  adapter.up.size(1) == adapter.down.size(0),
              "LoRA '", adapter.name, "': lora_up must be [", options.out_features(), ", ", adapter.down.size(0),
              "] for this Linear, got ", adapter.up.sizes());
  TORCH_CHECK(adapter.scale, "LoRA '", adapter.name, "' has no scale");
  adapters_.push_back(std::move(adapter));
}

int LoraLinearImpl::remove_adapter(const std::string& name) {
  return static_cast<int>(std::erase_if(adapters_, [&](const LoraAdapter& a) { return a.name == name; }));
}

void LoraLinearImpl::pretty_print(std::ostream& stream) const {
  stream << "LoraLinear(in=" << options.in_features() << ", out=" << options.out_features()
         << ", bias=" << options.bias() << ", adapters=" << adapters_.size() << ")";
}

// ---- Conv2d -------------------------------------------------------------------------------------

LoraConv2dImpl::LoraConv2dImpl(const Conv2dOptions& options_) : options(options_) { reset(); }

void LoraConv2dImpl::reset() {
  const auto& o = options;
  weight = register_parameter(
      "weight", at::empty({o.out_channels(), o.in_channels(), o.kernel_size(), o.kernel_size()}, o.tensor_options()));
  if (o.bias())
    bias = register_parameter("bias", at::empty({o.out_channels()}, o.tensor_options()));
  else
    bias = at::Tensor();
  default_init(weight, bias, o.in_channels() * o.kernel_size() * o.kernel_size());
}

at::Tensor LoraConv2dImpl::forward(const at::Tensor& x) {
  const auto& o = options;
  at::Tensor y = at::conv2d(x, weight, bias, {o.stride(), o.stride()}, {o.padding(), o.padding()});
  for (const auto& a : adapters_) {
    double f = a.factor();
    if (f == 0.0 || !AdapterSelection::active(a.name, a.explicit_only)) continue;
    at::Tensor d = at::conv2d(x, a.down, {}, {o.stride(), o.stride()}, {o.padding(), o.padding()});
    y = y + at::conv2d(d, a.up) * f;
  }
  return y;
}

void LoraConv2dImpl::add_adapter(LoraAdapter adapter) {
  check_same_adapter_name(adapters_, adapter.name);
  const auto& o = options;
  TORCH_CHECK(adapter.down.dim() == 4 && adapter.down.size(1) == o.in_channels() &&
                  adapter.down.size(2) == o.kernel_size() && adapter.down.size(3) == o.kernel_size(),
              "LoRA '", adapter.name, "': lora_down must be [rank, ", o.in_channels(), ", ", o.kernel_size(), ", ",
              o.kernel_size(), "] for this Conv2d, got ", adapter.down.sizes());
  TORCH_CHECK(adapter.up.dim() == 4 && adapter.up.size(0) == o.out_channels() &&
                  adapter.up.size(1) == adapter.down.size(0) && adapter.up.size(2) == 1 && adapter.up.size(3) == 1,
              "LoRA '", adapter.name, "': lora_up must be [", o.out_channels(), ", ", adapter.down.size(0),
              ", 1, 1] for this Conv2d, got ", adapter.up.sizes());
  TORCH_CHECK(adapter.scale, "LoRA '", adapter.name, "' has no scale");
  adapters_.push_back(std::move(adapter));
}

int LoraConv2dImpl::remove_adapter(const std::string& name) {
  return static_cast<int>(std::erase_if(adapters_, [&](const LoraAdapter& a) { return a.name == name; }));
}

void LoraConv2dImpl::pretty_print(std::ostream& stream) const {
  stream << "LoraConv2d(" << options.in_channels() << ", " << options.out_channels() << ", k=" << options.kernel_size()
         << ", stride=" << options.stride() << ", padding=" << options.padding() << ", adapters=" << adapters_.size()
         << ")";
}

}  // namespace lookahead::model::nn
