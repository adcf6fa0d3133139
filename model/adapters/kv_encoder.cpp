// KV encoder: encoder LoRAs on the shared UNet, KV-head LoRAs, and the truncated reference run.
#include "model/adapters/kv_encoder.h"

#include <ATen/ATen.h>

namespace lookahead::model::adapters {

namespace {

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

/// Index of the up block a path lies in, or -1 for down / mid blocks.
int64_t up_block_of(const std::string& path) {
  if (!starts_with(path, "up_blocks.")) return -1;
  return std::stoll(path.substr(10, path.find('.', 10) - 10));
}

}  // namespace

KvEncoder::KvEncoder(unet::UNet2DConditionModel unet, const KvEncoderOptions& options, at::Generator generator)
    : unet_(std::move(unet)), options_(options) {
  const auto n_up = static_cast<int64_t>(unet_->up_blocks->size());
  last_up_block_ = options.last_up_block() < 0 ? n_up + options.last_up_block() : options.last_up_block();
  TORCH_CHECK(last_up_block_ >= -1 && last_up_block_ < n_up, "KV encoder: last_up_block ", options.last_up_block(),
              " does not name one of the UNet's ", n_up, " up blocks");
  TORCH_CHECK(options.lora_rank() > 0 && options.kv_lora_rank() > 0, "KV encoder: LoRA ranks must be positive, got ",
              options.lora_rank(), " and ", options.kv_lora_rank());

  // Blocks are indexed in module order (down, mid, up), so the encoder's range is a prefix.
  for (auto& [path, block] : unet_->transformer_blocks()) {
    if (up_block_of(path) > last_up_block_) break;
    TORCH_INTERNAL_ASSERT(block->index == static_cast<int64_t>(block_paths_.size()));
    block_paths_.push_back(path);
    const int64_t c = block->dim, r = options.kv_lora_rank();
    auto opts = block->attn1->to_k->weight.options().requires_grad(false);
    nn::KvHeadLora head;
    head.k_down = at::empty({r, c}, opts);
    head.v_down = at::empty({r, c}, opts);
    head.k_up = at::zeros({c, r}, opts);
    head.v_up = at::zeros({c, r}, opts);
    if (!opts.device().is_meta()) {
      head.k_down.normal_(0.0, 1.0 / static_cast<double>(r), generator);
      head.v_down.normal_(0.0, 1.0 / static_cast<double>(r), generator);
    }
    for (at::Tensor* t : {&head.k_down, &head.k_up, &head.v_down, &head.v_up}) t->set_requires_grad(true);
    heads_.push_back(std::move(head));
  }
  TORCH_CHECK(!block_paths_.empty(), "KV encoder: the UNet has no transformer block up to up_blocks.", last_up_block_);

  // Encoder LoRAs on every block in range but the last one: nothing it computes after its norm1
  // reaches any recorded K/V.
  const std::string& last = block_paths_.back();
  auto selected = [&](const std::string& path) {
    if (starts_with(path, last + ".")) return false;
    bool in_range = false;
    for (const auto& block : block_paths_) in_range = in_range || starts_with(path, block + ".");
    if (!in_range) return false;
    for (const char* attn : {".attn1.", ".attn2."})
      for (const char* proj : {"to_q", "to_k", "to_v", "to_out.0"})
        if (path.ends_with(std::string(attn) + proj)) return true;
    return false;
  };
  const auto rank = options.lora_rank();
  lora_ = nn::create_trainable_lora(*unet_, kAdapterName, rank, static_cast<double>(rank), selected, generator,
                                   /*explicit_only=*/true);
}

KvEncoder::~KvEncoder() { nn::detach_lora(*unet_, kAdapterName); }

nn::ReferenceKv KvEncoder::forward(const unet::UNetInputs& reference, const at::Tensor& ip_tokens) {
  unet::UNetInputs in = reference;
  in.adapters = std::vector<std::string>{kAdapterName};
  in.ip_tokens = at::Tensor();
  in.reference.reset();
  nn::ReferenceKv out;
  nn::KvExtraction extraction;
  extraction.heads = &heads_;
  extraction.ip_tokens = ip_tokens;
  extraction.out = &out;
  unet_->forward_encoder(in, last_up_block_, extraction);
  TORCH_INTERNAL_ASSERT(out.blocks.size() == heads_.size(), "KV encoder recorded ", out.blocks.size(), " of ",
                        heads_.size(), " blocks");
  return out;
}

std::map<std::string, at::Tensor> KvEncoder::trainable_parameters() const {
  std::map<std::string, at::Tensor> out = lora_.parameters;
  for (size_t i = 0; i < heads_.size(); ++i) {
    const std::string p = block_paths_[i] + ".extract_kv1.";
    out[p + "to_k.lora_down.weight"] = heads_[i].k_down;
    out[p + "to_k.lora_up.weight"] = heads_[i].k_up;
    out[p + "to_v.lora_down.weight"] = heads_[i].v_down;
    out[p + "to_v.lora_up.weight"] = heads_[i].v_up;
  }
  return out;
}

void KvEncoder::load_trainable(const std::map<std::string, at::Tensor>& tensors, const std::string& origin) {
  at::NoGradGuard no_grad;
  for (auto& [key, dst] : trainable_parameters()) {
    auto it = tensors.find(key);
    TORCH_CHECK(it != tensors.end(), origin, ": KV-encoder tensor '", key, "' is missing");
    TORCH_CHECK(it->second.sizes() == dst.sizes(), origin, ": KV-encoder tensor '", key, "' has shape ",
                it->second.sizes(), ", expected ", dst.sizes());
    at::Tensor target = dst;  // shares the live tensor
    target.copy_(it->second);
  }
}

std::vector<std::string> KvEncoder::lora_layer_paths() const {
  std::vector<std::string> out;
  const std::string suffix = ".lora_down.weight";
  for (const auto& [key, t] : lora_.parameters)
    if (key.ends_with(suffix)) out.push_back(key.substr(0, key.size() - suffix.size()));
  return out;
}

}  // namespace lookahead::model::adapters
