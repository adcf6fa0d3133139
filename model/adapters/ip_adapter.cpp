// IP-Adapter Plus construction, attachment and checkpoint reading.
#include "model/adapters/ip_adapter.h"

#include <ATen/ATen.h>

#include "model/io/safetensors.h"
#include "model/io/torch_checkpoint.h"

namespace lookahead::model::adapters {

namespace {

/// One attn2 layer's image K/V projections (keys to_k_ip, to_v_ip).
class IpAttnLayerImpl : public torch::nn::Cloneable<IpAttnLayerImpl> {
 public:
  IpAttnLayerImpl(int64_t cross_dim, int64_t channels, at::TensorOptions t)
      : cross_dim_(cross_dim), channels_(channels), tensor_options_(t) {
    reset();
  }
  void reset() override {
    to_k_ip = register_module(
        "to_k_ip", nn::LoraLinear(nn::LinearOptions(cross_dim_, channels_).bias(false).tensor_options(tensor_options_)));
    to_v_ip = register_module(
        "to_v_ip", nn::LoraLinear(nn::LinearOptions(cross_dim_, channels_).bias(false).tensor_options(tensor_options_)));
  }
  nn::LoraLinear to_k_ip{nullptr}, to_v_ip{nullptr};

 private:
  int64_t cross_dim_, channels_;
  at::TensorOptions tensor_options_;
};
TORCH_MODULE(IpAttnLayer);

}  // namespace

IpAdapterImpl::IpAdapterImpl(unet::UNet2DConditionModelImpl& unet, const ResamplerOptions& resampler)
    : resampler_options(resampler) {
  for (auto& [path, attn] : unet.cross_attention_layers())
    layers_.push_back({path, attn->options.heads() * attn->options.head_dim()});
  reset();
}

void IpAdapterImpl::reset() {
  image_proj = register_module("image_proj", Resampler(resampler_options));
  ip_adapter = register_module("ip_adapter", std::make_shared<torch::nn::Module>());
  for (size_t j = 0; j < layers_.size(); ++j)
    ip_adapter->register_module(std::to_string(2 * j + 1),
                                IpAttnLayer(resampler_options.output_dim(), layers_[j].channels,
                                            resampler_options.tensor_options()));
}

void IpAdapterImpl::attach(unet::UNet2DConditionModelImpl& unet) {
  auto attns = unet.cross_attention_layers();
  TORCH_CHECK(attns.size() == layers_.size(), "IP-Adapter was built for ", layers_.size(),
              " cross-attention layers, this UNet has ", attns.size());
  for (size_t j = 0; j < attns.size(); ++j) {
    TORCH_CHECK(attns[j].first == layers_[j].path, "IP-Adapter layer ", 2 * j + 1, " belongs to ", layers_[j].path,
                ", not ", attns[j].first);
    auto layer = std::dynamic_pointer_cast<IpAttnLayerImpl>(ip_adapter->named_children()[std::to_string(2 * j + 1)]);
    TORCH_CHECK(attns[j].second->options.cross_attention_dim() == resampler_options.output_dim(),
                "IP-Adapter tokens have ", resampler_options.output_dim(), " features but ", attns[j].first,
                " attends over ", attns[j].second->options.cross_attention_dim());
    auto branch = std::make_shared<nn::IpBranch>();
    branch->to_k_ip = layer->to_k_ip.ptr();
    branch->to_v_ip = layer->to_v_ip.ptr();
    attns[j].second->set_ip_branch(std::move(branch));
  }
}

void IpAdapterImpl::detach(unet::UNet2DConditionModelImpl& unet) {
  for (auto& [path, attn] : unet.cross_attention_layers()) attn->set_ip_branch(nullptr);
}

ResamplerOptions infer_resampler_options(const std::map<std::string, at::Tensor>& t, const std::string& origin) {
  auto get = [&](const std::string& key) -> const at::Tensor& {
    auto it = t.find(key);
    TORCH_CHECK(it != t.end(), origin, ": not an IP-Adapter Plus checkpoint (missing '", key, "')");
    return it->second;
  };
  const at::Tensor& latents = get("image_proj.latents");    // [1, Q, dim]
  const at::Tensor& proj_in = get("image_proj.proj_in.weight");   // [dim, emb]
  const at::Tensor& proj_out = get("image_proj.proj_out.weight"); // [out, dim]
  const at::Tensor& to_q = get("image_proj.layers.0.0.to_q.weight");     // [heads*64, dim]
  const at::Tensor& ff = get("image_proj.layers.0.1.1.weight");          // [dim*mult, dim]
  TORCH_CHECK(latents.dim() == 3 && to_q.size(0) % 64 == 0, origin, ": unexpected Resampler shapes");
  int64_t depth = 0;
  while (t.count("image_proj.layers." + std::to_string(depth) + ".0.to_q.weight")) ++depth;
  ResamplerOptions o;
  o.dim(latents.size(2))
      .num_queries(latents.size(1))
      .embedding_dim(proj_in.size(1))
      .output_dim(proj_out.size(0))
      .dim_head(64)
      .heads(to_q.size(0) / 64)
      .depth(depth)
      .ff_mult(ff.size(0) / latents.size(2));
  return o;
}

std::map<std::string, at::Tensor> load_ip_adapter_file(const std::string& path) {
  const bool is_bin = path.size() > 4 && path.substr(path.size() - 4) == ".bin";
  if (!is_bin) return io::load_file(path);
  // torch.save of {"image_proj": {...}, "ip_adapter": {...}}: the reader flattens it to
  // "image_proj.X" / "ip_adapter.X" keys and refuses anything but dicts, tensors and plain values.
  auto out = io::load_torch_file(path);
  for (const auto& entry : out) {
    const std::string& key = entry.first;
    const std::string prefix = key.substr(0, key.find('.'));
    TORCH_CHECK(prefix == "image_proj" || prefix == "ip_adapter", path, ": unexpected top-level key '", prefix, "'");
    TORCH_CHECK(key.size() > prefix.size(), path, ": '", prefix, "' must map names to tensors");
  }
  return out;
}

}  // namespace lookahead::model::adapters
