// Linear and Conv2d layers that can carry LoRA adapters applied unfused at run time:
//   y = W x + b + sum_a scale_a * (alpha_a / r_a) * up_a(down_a(x))
// The base weight keeps its diffusers name (`weight`, `bias`); adapters live outside the module
// tree, so named_parameters() stay the checkpoint keys, and each adapter's scale is a shared
// value that can change every step at no cost (no re-fusing).
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <string>
#include <vector>

namespace lookahead::model::nn {

/// Run-time multiplier shared by every layer of one adapter (e.g. the LCM-LoRA scale α).
struct LoraScale {
  double value = 1.0;
};

/// One low-rank update of a layer. For Linear: down [r, in], up [out, r]. For Conv2d: down
/// [r, in, kh, kw] with the base conv's stride and padding, up [out, r, 1, 1].
struct LoraAdapter {
  std::string name;                    ///< adapter name ("lcm", "encoder", ...)
  at::Tensor down;
  at::Tensor up;
  double alpha = 0;                    ///< kohya `.alpha`; scale factor is alpha / rank
  std::shared_ptr<LoraScale> scale;    ///< run-time multiplier
  /// Runs only where an AdapterSelection names it (the KV encoder's LoRAs); otherwise it also runs
  /// outside every selection.
  bool explicit_only = false;
  int64_t rank() const { return down.size(0); }
  double factor() const { return scale->value * alpha / static_cast<double>(rank()); }
};

/// Which adapters run on this thread while the scope lives (by adapter name); outside every scope
/// all attached adapters run except the `explicit_only` ones. One set of frozen base layers serves several networks this way: the
/// KV encoder runs with {"encoder"}, the decoder with {}, the LCM branch with {"lcm"}.
///
/// Example: { AdapterSelection only({"lcm"}); eps = unet->forward(in); }
class AdapterSelection {
 public:
  explicit AdapterSelection(std::vector<std::string> names);
  ~AdapterSelection();
  AdapterSelection(const AdapterSelection&) = delete;
  AdapterSelection& operator=(const AdapterSelection&) = delete;
  /// Whether an adapter called `name` runs on this thread now.
  static bool active(const std::string& name, bool explicit_only = false);
  /// The innermost selection of this thread, or null when none is in force.
  static const std::vector<std::string>* current();

 private:
  std::vector<std::string> names_;
  const AdapterSelection* previous_;
};

/// Options of LoraLinear: in -> out features, optional bias, where the weights live.
struct LinearOptions {
  LinearOptions(int64_t in, int64_t out) : in_features_(in), out_features_(out) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCH_ARG(bool, bias) = true;
  TORCH_ARG(at::TensorOptions, tensor_options) = at::TensorOptions();
};

/// nn.Linear with LoRA adapters. Example: LoraLinear to_q(LinearOptions(640, 640).bias(false));
class LoraLinearImpl : public torch::nn::Cloneable<LoraLinearImpl> {
 public:
  explicit LoraLinearImpl(const LinearOptions& options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [..., in] -> [..., out]
  /// Adds an adapter; its shapes are checked against this layer.
  void add_adapter(LoraAdapter adapter);
  /// Removes every adapter called `name`; returns how many were removed.
  int remove_adapter(const std::string& name);
  const std::vector<LoraAdapter>& adapters() const { return adapters_; }
  void pretty_print(std::ostream& stream) const override;

  LinearOptions options;
  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out] or undefined

 private:
  std::vector<LoraAdapter> adapters_;
};
TORCH_MODULE(LoraLinear);

/// Options of LoraConv2d (square kernels, as every UNet conv is).
struct Conv2dOptions {
  Conv2dOptions(int64_t in, int64_t out, int64_t kernel) : in_channels_(in), out_channels_(out), kernel_size_(kernel) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, kernel_size);
  TORCH_ARG(int64_t, stride) = 1;
  TORCH_ARG(int64_t, padding) = 0;
  TORCH_ARG(bool, bias) = true;
  TORCH_ARG(at::TensorOptions, tensor_options) = at::TensorOptions();
};

/// nn.Conv2d with LoRA adapters (conv LoRA: down keeps kernel/stride/padding, up is 1x1).
class LoraConv2dImpl : public torch::nn::Cloneable<LoraConv2dImpl> {
 public:
  explicit LoraConv2dImpl(const Conv2dOptions& options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [B, in, H, W] -> [B, out, H', W']
  void add_adapter(LoraAdapter adapter);
  int remove_adapter(const std::string& name);
  const std::vector<LoraAdapter>& adapters() const { return adapters_; }
  void pretty_print(std::ostream& stream) const override;

  Conv2dOptions options;
  at::Tensor weight;  // [out, in, k, k]
  at::Tensor bias;    // [out] or undefined

 private:
  std::vector<LoraAdapter> adapters_;
};
TORCH_MODULE(LoraConv2d);

/// PyTorch's default initialization (kaiming-uniform weights, uniform bias in ±1/sqrt(fan_in)),
/// skipped for meta tensors and under SkipInit.
void default_init(at::Tensor& weight, at::Tensor& bias, int64_t fan_in);

}  // namespace lookahead::model::nn
