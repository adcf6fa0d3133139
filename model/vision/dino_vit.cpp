// The dreamsim package's DINO-style VisionTransformer (see dino_vit.h).
#include "model/vision/dino_vit.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <memory>
#include <string>

#include "model/nn/skip_init.h"

namespace lookahead::model::vision {
namespace {

nn::LayerNorm dino_vit_layer_norm(const DinoVitOptions& o) {
  return nn::LayerNorm(nn::LayerNormOptions(o.embed_dim()).eps(o.layer_norm_eps()).tensor_options(o.tensor_options()));
}

}  // namespace

DinoVitOptions DinoVitOptions::dino_vitb16() { return DinoVitOptions(); }

DinoVitOptions DinoVitOptions::clip_vitb16() {
  return DinoVitOptions().layer_norm_eps(1e-5).activation(DinoVitActivation::kQuickGelu).pre_norm(true);
}

DinoVitOptions DinoVitOptions::open_clip_vitb16() { return DinoVitOptions().layer_norm_eps(1e-5).pre_norm(true); }

int64_t DinoVitOptions::num_tokens() const {
  const int64_t grid = image_size() / patch_size();
  return grid * grid + 1;
}

DinoVitAttentionImpl::DinoVitAttentionImpl(const DinoVitOptions& options_) : options(options_) { reset(); }

void DinoVitAttentionImpl::reset() {
  const int64_t c = options.embed_dim();
  TORCH_CHECK(options.num_heads() > 0 && c % options.num_heads() == 0, "dino_vit: embed_dim ", c,
              " is not a multiple of num_heads ", options.num_heads());
  qkv = register_module(
      "qkv",
      nn::LoraLinear(nn::LinearOptions(c, 3 * c).bias(options.qkv_bias()).tensor_options(options.tensor_options())));
  proj = register_module("proj", nn::LoraLinear(nn::LinearOptions(c, c).tensor_options(options.tensor_options())));
}

at::Tensor DinoVitAttentionImpl::forward(const at::Tensor& x) {
  const int64_t b = x.size(0), t = x.size(1), c = x.size(2), heads = options.num_heads();
  // The package splits qkv's output as (3, heads, head_dim), in that order.
  const at::Tensor qkv_heads =
      qkv->forward(x).view({b, t, 3, heads, c / heads}).permute({2, 0, 3, 1, 4});  // [3, B, H, T, d]
  // SDPA's default scale is 1/sqrt(head_dim), the package's qk_scale default.
  const at::Tensor o = at::scaled_dot_product_attention(qkv_heads[0], qkv_heads[1], qkv_heads[2]);  // [B, H, T, d]
  return proj->forward(o.transpose(1, 2).reshape({b, t, c}));
}

DinoVitMlpImpl::DinoVitMlpImpl(const DinoVitOptions& options_) : options(options_) { reset(); }

void DinoVitMlpImpl::reset() {
  const auto& t = options.tensor_options();
  fc1 = register_module("fc1",
                        nn::LoraLinear(nn::LinearOptions(options.embed_dim(), options.mlp_hidden()).tensor_options(t)));
  fc2 = register_module("fc2",
                        nn::LoraLinear(nn::LinearOptions(options.mlp_hidden(), options.embed_dim()).tensor_options(t)));
}

at::Tensor DinoVitMlpImpl::forward(const at::Tensor& x) {
  at::Tensor h = fc1->forward(x);  // [B, T, hidden]
  h = options.activation() == DinoVitActivation::kQuickGelu ? h * at::sigmoid(1.702 * h) : at::gelu(h);
  return fc2->forward(h);
}

DinoVitBlockImpl::DinoVitBlockImpl(const DinoVitOptions& options_) : options(options_) { reset(); }

void DinoVitBlockImpl::reset() {
  norm1 = register_module("norm1", dino_vit_layer_norm(options));
  attn = register_module("attn", DinoVitAttention(options));
  norm2 = register_module("norm2", dino_vit_layer_norm(options));
  mlp = register_module("mlp", DinoVitMlp(options));
}

at::Tensor DinoVitBlockImpl::forward(const at::Tensor& x) {
  at::Tensor h = x + attn->forward(norm1->forward(x));
  return h + mlp->forward(norm2->forward(h));
}

DinoVisionTransformerImpl::DinoVisionTransformerImpl(const DinoVitOptions& options_) : options(options_) { reset(); }

void DinoVisionTransformerImpl::reset() {
  const auto& o = options;
  TORCH_CHECK(o.patch_size() > 0 && o.image_size() % o.patch_size() == 0, "dino_vit: image_size ", o.image_size(),
              " is not a multiple of patch_size ", o.patch_size());
  const int64_t c = o.embed_dim();
  cls_token = register_parameter("cls_token", at::empty({1, 1, c}, o.tensor_options()));
  pos_embed = register_parameter("pos_embed", at::empty({1, o.num_tokens(), c}, o.tensor_options()));
  if (!cls_token.is_meta() && !nn::SkipInit::active()) {
    // The package starts both at zero (its trunc_normal_ is a no-op); checkpoints overwrite them.
    at::NoGradGuard no_grad;
    cls_token.zero_();
    pos_embed.zero_();
  }
  auto patch_embed = register_module("patch_embed", std::make_shared<torch::nn::Module>("PatchEmbed"));
  patch_proj = patch_embed->register_module("proj", nn::LoraConv2d(nn::Conv2dOptions(o.in_chans(), c, o.patch_size())
                                                                       .stride(o.patch_size())
                                                                       .tensor_options(o.tensor_options())));
  if (o.pre_norm()) pos_drop = register_module("pos_drop", dino_vit_layer_norm(o));
  auto holder = register_module("blocks", std::make_shared<torch::nn::Module>("ModuleList"));
  blocks.clear();
  for (int64_t i = 0; i < o.depth(); ++i) blocks.push_back(holder->register_module(std::to_string(i), DinoVitBlock(o)));
  norm = register_module("norm", dino_vit_layer_norm(o));
}

at::Tensor DinoVisionTransformerImpl::prepare_tokens(const at::Tensor& x) {
  const auto& o = options;
  TORCH_CHECK(x.dim() == 4 && x.size(1) == o.in_chans() && x.size(2) == o.image_size() && x.size(3) == o.image_size(),
              "dino_vit: input must be [B, ", o.in_chans(), ", ", o.image_size(), ", ", o.image_size(), "], got ",
              x.sizes());
  const int64_t b = x.size(0);
  at::Tensor h = patch_proj->forward(x.to(patch_proj->weight.scalar_type()));  // [B, C, g, g]
  h = h.flatten(2).transpose(1, 2);                                            // [B, g*g, C]
  h = at::cat({cls_token.expand({b, 1, o.embed_dim()}), h}, 1) + pos_embed;    // [B, T, C]
  return o.pre_norm() ? pos_drop->forward(h) : h;
}

at::Tensor DinoVisionTransformerImpl::block_tokens(const at::Tensor& x, int64_t layer) {
  TORCH_CHECK(layer >= 0 && layer < static_cast<int64_t>(blocks.size()), "dino_vit: block ", layer,
              " does not exist (depth ", blocks.size(), ")");
  at::Tensor h = prepare_tokens(x);
  for (int64_t i = 0; i <= layer; ++i) h = blocks[static_cast<size_t>(i)]->forward(h);
  return h;
}

at::Tensor DinoVisionTransformerImpl::forward(const at::Tensor& x) {
  at::Tensor h = block_tokens(x, options.depth() - 1);
  return norm->forward(h.select(1, 0));  // LayerNorm is per token: the class token alone suffices
}

}  // namespace lookahead::model::vision
