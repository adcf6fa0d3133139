// Transformer2DModel and BasicTransformerBlock.
#include "model/unet/transformer_2d.h"

#include <ATen/ATen.h>

#include "model/nn/unit_call.h"

namespace lookahead::model::unet {

BasicTransformerBlockImpl::BasicTransformerBlockImpl(int64_t dim_, int64_t heads_, int64_t head_dim_,
                                                     int64_t cross_dim_, at::TensorOptions t,
                                                     std::shared_ptr<nn::AttentionContext> context_)
    : dim(dim_), heads(heads_), head_dim(head_dim_), cross_attention_dim(cross_dim_), tensor_options(t),
      context(std::move(context_)) {
  reset();
}

void BasicTransformerBlockImpl::reset() {
  auto t = tensor_options;
  norm1 = register_module("norm1", nn::LayerNorm(nn::LayerNormOptions(dim).tensor_options(t)));
  attn1 = register_module("attn1", nn::Attention(nn::AttentionOptions(dim, heads, head_dim).tensor_options(t)));
  norm2 = register_module("norm2", nn::LayerNorm(nn::LayerNormOptions(dim).tensor_options(t)));
  attn2 = register_module(
      "attn2",
      nn::Attention(nn::AttentionOptions(dim, heads, head_dim)
                        .cross_attention_dim(cross_attention_dim)
                        .tensor_options(t)
                        .context(context)));
  norm3 = register_module("norm3", nn::LayerNorm(nn::LayerNormOptions(dim).tensor_options(t)));
  ff = register_module("ff", nn::FeedForward(dim, t));
}

at::Tensor BasicTransformerBlockImpl::forward(const at::Tensor& x, const at::Tensor& context) {
  at::Tensor n1 = norm1->forward(x);  // [B, N, C]
  const nn::BlockKv* shared = nullptr;
  if (this->context) {
    if (this->context->extraction) record_reference(n1, *this->context->extraction);
    if (this->context->reference) shared = this->context->reference->block(index);
  }
  const nn::BatchSharing* sharing = this->context ? this->context->batch_sharing.get() : nullptr;
  at::Tensor h = x + (sharing && sharing->active() ? nn::shared_self_attention(*attn1, n1, *sharing, index)
                                                   : attn1->forward(n1, {}, shared));
  h = h + attn2->forward(norm2->forward(h), context, shared);
  return h + ff->forward(norm3->forward(h));
}

void BasicTransformerBlockImpl::record_reference(const at::Tensor& n1, nn::KvExtraction& extraction) {
  TORCH_INTERNAL_ASSERT(index >= 0, "transformer block without an index");
  const auto& heads = *extraction.heads;
  if (index >= static_cast<int64_t>(heads.size())) return;
  const nn::KvHeadLora& lora = heads[static_cast<size_t>(index)];
  auto& blocks = extraction.out->blocks;
  if (blocks.size() < heads.size()) blocks.resize(heads.size());
  nn::BlockKv& kv = blocks[static_cast<size_t>(index)];
  // extract_kv1: a copy of attn1's to_k / to_v that is frozen except for its LoRA, so the frozen
  // part is attn1's own weight (no second copy) and the encoder LoRA on attn1 is not part of it.
  kv.k = at::linear(n1, attn1->to_k->weight) + at::linear(at::linear(n1, lora.k_down.to(n1.scalar_type())),
                                                          lora.k_up.to(n1.scalar_type()));  // [B, N, C]
  kv.v = at::linear(n1, attn1->to_v->weight) + at::linear(at::linear(n1, lora.v_down.to(n1.scalar_type())),
                                                          lora.v_up.to(n1.scalar_type()));
  const auto& ip = attn2->ip_branch();
  if (ip && extraction.ip_tokens.defined()) {
    at::Tensor tokens = extraction.ip_tokens.to(n1.scalar_type());  // [B, T, D_ip]
    kv.ip_k = ip->to_k_ip->forward(tokens);                          // [B, T, C]
    kv.ip_v = ip->to_v_ip->forward(tokens);
  }
}

Transformer2DModelImpl::Transformer2DModelImpl(const Transformer2DOptions& options_) : options(options_) { reset(); }

void Transformer2DModelImpl::reset() {
  const auto& o = options;
  auto t = o.tensor_options();
  TORCH_CHECK(o.channels() % o.heads() == 0, "Transformer2DModel: ", o.channels(), " channels do not split into ",
              o.heads(), " heads");
  norm = register_module("norm", nn::GroupNorm(nn::GroupNormOptions(o.groups(), o.channels()).eps(1e-6).tensor_options(t)));
  if (o.use_linear_projection()) {
    proj_in = register_module("proj_in", nn::LoraLinear(nn::LinearOptions(o.channels(), o.channels()).tensor_options(t)).ptr());
  } else {
    proj_in = register_module("proj_in", nn::LoraConv2d(nn::Conv2dOptions(o.channels(), o.channels(), 1).tensor_options(t)).ptr());
  }
  transformer_blocks = register_module("transformer_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.depth(); ++i)
    transformer_blocks->push_back(
        BasicTransformerBlock(o.channels(), o.heads(), o.channels() / o.heads(), o.cross_attention_dim(), t, o.context()));
  if (o.use_linear_projection()) {
    proj_out = register_module("proj_out", nn::LoraLinear(nn::LinearOptions(o.channels(), o.channels()).tensor_options(t)).ptr());
  } else {
    proj_out = register_module("proj_out", nn::LoraConv2d(nn::Conv2dOptions(o.channels(), o.channels(), 1).tensor_options(t)).ptr());
  }
}

at::Tensor Transformer2DModelImpl::forward(const at::Tensor& x, const at::Tensor& context) {
  nn::AttentionContext* ctx = options.context().get();
  if (!ctx || !ctx->runner) return forward_local(x, context);
  // Everything the blocks read from the shared context that may need a gradient becomes an
  // input of the unit: [x, text context, image tokens, then k, v, ip_k, ip_v per block].
  const int64_t first = block(0).index, depth = static_cast<int64_t>(transformer_blocks->size());
  nn::KvExtraction* extraction = ctx->extraction;
  std::vector<at::Tensor> inputs{x, context, extraction ? extraction->ip_tokens : ctx->ip_tokens};
  const nn::ReferenceKv* reference = ctx->reference.get();
  for (int64_t i = 0; i < depth; ++i) {
    const nn::BlockKv* kv = reference ? reference->block(first + i) : nullptr;
    inputs.push_back(kv ? kv->k : at::Tensor());
    inputs.push_back(kv ? kv->v : at::Tensor());
    inputs.push_back(kv ? kv->ip_k : at::Tensor());
    inputs.push_back(kv ? kv->ip_v : at::Tensor());
  }
  const double ip_scale = ctx->ip_scale;
  const std::vector<nn::KvHeadLora>* heads = extraction ? extraction->heads : nullptr;
  const bool has_reference = reference != nullptr;
  std::shared_ptr<const nn::BatchSharing> sharing = ctx->batch_sharing;  // holds no tensors: captured as is
  auto fn = [this, ctx, first, depth, ip_scale, heads, has_reference, sharing](const std::vector<at::Tensor>& in) {
    // Run with a context built from the inputs only (the engine calls this again in backward,
    // when the caller's context has moved on), and put the caller's back afterwards.
    struct Restore {
      nn::AttentionContext& ctx;
      nn::AttentionContext saved;
      ~Restore() {
        ctx.ip_tokens = saved.ip_tokens;
        ctx.ip_scale = saved.ip_scale;
        ctx.reference = saved.reference;
        ctx.extraction = saved.extraction;
        ctx.batch_sharing = saved.batch_sharing;
      }
    } restore{*ctx, *ctx};
    auto local_reference = std::make_shared<nn::ReferenceKv>();
    if (has_reference) {
      local_reference->blocks.resize(static_cast<size_t>(first + depth));
      for (int64_t i = 0; i < depth; ++i) {
        nn::BlockKv& kv = local_reference->blocks[static_cast<size_t>(first + i)];
        kv.k = in[3 + 4 * i];
        kv.v = in[4 + 4 * i];
        kv.ip_k = in[5 + 4 * i];
        kv.ip_v = in[6 + 4 * i];
      }
    }
    nn::ReferenceKv recorded;
    nn::KvExtraction local_extraction;
    ctx->ip_scale = ip_scale;
    ctx->reference = has_reference ? local_reference : nullptr;
    ctx->batch_sharing = sharing;
    if (heads) {
      local_extraction.heads = heads;
      local_extraction.ip_tokens = in[2];
      local_extraction.out = &recorded;
      ctx->extraction = &local_extraction;
      ctx->ip_tokens = at::Tensor();
    } else {
      ctx->extraction = nullptr;
      ctx->ip_tokens = in[2];
    }
    std::vector<at::Tensor> out{forward_local(in[0], in[1])};
    if (heads) {
      for (int64_t i = 0; i < depth; ++i) {
        const nn::BlockKv* kv = recorded.block(first + i);
        if (!kv) {
          out.insert(out.end(), 4, at::Tensor());
          continue;
        }
        for (const at::Tensor* t : {&kv->k, &kv->v, &kv->ip_k, &kv->ip_v}) out.push_back(*t);
      }
    }
    return out;
  };
  std::vector<at::Tensor> out = nn::call_unit(ctx, *this, fn, inputs);
  if (extraction) {
    auto& blocks = extraction->out->blocks;
    if (blocks.size() < extraction->heads->size()) blocks.resize(extraction->heads->size());
    for (int64_t i = 0; i < depth && first + i < static_cast<int64_t>(blocks.size()); ++i) {
      nn::BlockKv& kv = blocks[static_cast<size_t>(first + i)];
      kv.k = out[1 + 4 * i];
      kv.v = out[2 + 4 * i];
      kv.ip_k = out[3 + 4 * i];
      kv.ip_v = out[4 + 4 * i];
    }
  }
  return out[0];
}

at::Tensor Transformer2DModelImpl::forward_local(const at::Tensor& x, const at::Tensor& context) {
  const int64_t b = x.size(0), c = x.size(1), hh = x.size(2), ww = x.size(3);
  at::Tensor h = norm->forward(x);
  if (options.use_linear_projection()) {
    h = h.permute({0, 2, 3, 1}).reshape({b, hh * ww, c});  // [B, HW, C]
    h = std::static_pointer_cast<nn::LoraLinearImpl>(proj_in)->forward(h);
  } else {
    h = std::static_pointer_cast<nn::LoraConv2dImpl>(proj_in)->forward(h);
    h = h.permute({0, 2, 3, 1}).reshape({b, hh * ww, c});
  }
  for (size_t i = 0; i < transformer_blocks->size(); ++i) h = block(i).forward(h, context);
  if (options.use_linear_projection()) {
    h = std::static_pointer_cast<nn::LoraLinearImpl>(proj_out)->forward(h);
    h = h.reshape({b, hh, ww, c}).permute({0, 3, 1, 2});
  } else {
    h = h.reshape({b, hh, ww, c}).permute({0, 3, 1, 2});
    h = std::static_pointer_cast<nn::LoraConv2dImpl>(proj_out)->forward(h.contiguous());
  }
  return h + x;
}

}  // namespace lookahead::model::unet
