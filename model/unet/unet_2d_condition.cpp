// UNet2DConditionModel construction (diffusers' __init__ rules) and forward pass.
#include "model/unet/unet_2d_condition.h"

#include <ATen/ATen.h>

#include "model/nn/unit_call.h"

namespace lookahead::model::unet {

UNet2DConditionModelImpl::UNet2DConditionModelImpl(UNetConfig config, at::TensorOptions tensor_options)
    : config_(std::move(config)), tensor_options_(tensor_options) {
  reset();
}

void UNet2DConditionModelImpl::reset() {
  const UNetConfig& c = config_;
  const auto t = tensor_options_;
  const size_t n = c.block_out_channels.size();
  const int64_t temb = c.time_embed_dim();
  attention_context_ = std::make_shared<nn::AttentionContext>();

  conv_in = register_module("conv_in", nn::LoraConv2d(nn::Conv2dOptions(c.in_channels, c.block_out_channels[0], c.conv_in_kernel)
                                                          .padding((c.conv_in_kernel - 1) / 2)
                                                          .tensor_options(t)));
  time_embedding = register_module("time_embedding", nn::TimestepEmbedding(c.block_out_channels[0], temb, t));
  if (c.addition_embed_type == "text_time")
    add_embedding = register_module("add_embedding", nn::TimestepEmbedding(c.projection_class_embeddings_input_dim, temb, t));

  auto base = [&] {
    BlockOptions o;
    o.temb_channels = temb;
    o.groups = c.norm_num_groups;
    o.eps = c.norm_eps;
    o.downsample_padding = c.downsample_padding;
    o.use_linear_projection = c.use_linear_projection;
    o.tensor_options = t;
    o.attention_context = attention_context_;
    return o;
  };

  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  int64_t out_ch = c.block_out_channels[0];
  for (size_t i = 0; i < n; ++i) {
    BlockOptions o = base();
    o.in_channels = out_ch;
    out_ch = c.block_out_channels[i];
    o.out_channels = out_ch;
    o.num_layers = c.layers_per_block[i];
    o.cross_attention = c.down_block_types[i] == "CrossAttnDownBlock2D";
    o.transformer_depth = c.transformer_layers_per_block[i];
    o.heads = c.num_attention_heads[i];
    o.cross_attention_dim = c.cross_attention_dim[i];
    o.add_sampler = i + 1 < n;
    down_blocks->push_back(DownBlock(o));
  }

  BlockOptions mid = base();
  mid.in_channels = mid.out_channels = c.block_out_channels.back();
  mid.num_layers = 1;
  mid.cross_attention = true;
  mid.transformer_depth = c.transformer_layers_per_block.back();
  mid.heads = c.num_attention_heads.back();
  mid.cross_attention_dim = c.cross_attention_dim.back();
  mid.output_scale_factor = c.mid_block_scale_factor;
  mid_block = register_module("mid_block", MidBlock(mid));

  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  std::vector<int64_t> rev_channels(c.block_out_channels.rbegin(), c.block_out_channels.rend());
  std::vector<int64_t> rev_heads(c.num_attention_heads.rbegin(), c.num_attention_heads.rend());
  std::vector<int64_t> rev_layers(c.layers_per_block.rbegin(), c.layers_per_block.rend());
  std::vector<int64_t> rev_cross(c.cross_attention_dim.rbegin(), c.cross_attention_dim.rend());
  int64_t prev_out = rev_channels[0];
  for (size_t i = 0; i < n; ++i) {
    BlockOptions o = base();
    o.prev_output_channels = prev_out;
    o.out_channels = rev_channels[i];
    o.in_channels = rev_channels[std::min(i + 1, n - 1)];
    o.num_layers = rev_layers[i] + 1;
    o.cross_attention = c.up_block_types[i] == "CrossAttnUpBlock2D";
    o.transformer_depth = c.reverse_transformer_layers_per_block[i];
    o.heads = rev_heads[i];
    o.cross_attention_dim = rev_cross[i];
    o.add_sampler = i + 1 < n;
    up_blocks->push_back(UpBlock(o));
    prev_out = o.out_channels;
  }

  conv_norm_out = register_module(
      "conv_norm_out",
      nn::GroupNorm(nn::GroupNormOptions(c.norm_num_groups, c.block_out_channels[0]).eps(c.norm_eps).tensor_options(t)));
  conv_out = register_module("conv_out", nn::LoraConv2d(nn::Conv2dOptions(c.block_out_channels[0], c.out_channels, c.conv_out_kernel)
                                                            .padding((c.conv_out_kernel - 1) / 2)
                                                            .tensor_options(t)));
  int64_t index = 0;
  for (auto& [path, block] : transformer_blocks()) block->index = index++;
  for (const Unit& unit : units())
    if (unit.module) attention_context_->unit_names[unit.module.get()] = unit.name;
}

void UNet2DConditionModelImpl::set_unit_runner(dist::UnitRunner* runner) { attention_context_->runner = runner; }

at::Tensor UNet2DConditionModelImpl::embed_time(const UNetInputs& in) {
  const int64_t b = in.sample.size(0);
  at::Tensor t = in.timestep;
  TORCH_CHECK(t.defined(), "UNet: timestep is required");
  t = t.to(in.sample.device());
  if (t.dim() == 0) t = t.reshape({1});
  TORCH_CHECK(t.dim() == 1 && (t.size(0) == b || t.size(0) == 1), "UNet: timestep must be a scalar or [B=", b,
              "], got ", t.sizes());
  t = t.expand({b});
  const auto dtype = conv_in->weight.scalar_type();
  at::Tensor t_emb = nn::timestep_embedding(t, config_.block_out_channels[0], config_.flip_sin_to_cos, config_.freq_shift);
  at::Tensor emb = time_embedding->forward(t_emb.to(dtype));  // [B, temb]
  if (add_embedding) {
    TORCH_CHECK(in.text_embeds.defined() && in.time_ids.defined(),
                "UNet: addition_embed_type 'text_time' needs text_embeds and time_ids");
    TORCH_CHECK(in.time_ids.dim() == 2 && in.time_ids.size(0) == b, "UNet: time_ids must be [B, n], got ",
                in.time_ids.sizes());
    at::Tensor ids = nn::timestep_embedding(in.time_ids.flatten(), config_.addition_time_embed_dim,
                                            config_.flip_sin_to_cos, config_.freq_shift)
                         .reshape({b, -1});                           // [B, n * 256]
    at::Tensor add = at::cat({in.text_embeds.to(ids.dtype()), ids}, -1);  // text_embeds first
    TORCH_CHECK(add.size(1) == config_.projection_class_embeddings_input_dim, "UNet: text_embeds (",
                in.text_embeds.size(-1), ") + time_ids embedding (", ids.size(1), ") = ", add.size(1),
                " features, but add_embedding expects ", config_.projection_class_embeddings_input_dim);
    emb = emb + add_embedding->forward(add.to(dtype));
  }
  return emb;
}

at::Tensor UNet2DConditionModelImpl::forward(const UNetInputs& in) {
  return run(in, static_cast<int64_t>(up_blocks->size()) - 1, nullptr);
}

at::Tensor UNet2DConditionModelImpl::forward_encoder(const UNetInputs& in, int64_t last_up_block,
                                                     nn::KvExtraction& extraction) {
  TORCH_CHECK(last_up_block >= -1 && last_up_block < static_cast<int64_t>(up_blocks->size()),
              "UNet: the encoder's last up block must be in [-1, ", up_blocks->size() - 1, "], got ", last_up_block);
  TORCH_CHECK(extraction.heads && extraction.out, "UNet: KV extraction needs heads and an output");
  TORCH_CHECK(!in.reference, "UNet: a KV-encoder run cannot itself attend to reference K/V");
  TORCH_CHECK(!in.batch_sharing, "UNet: a KV-encoder run cannot share self-attention across the batch");
  return run(in, last_up_block, &extraction);
}

at::Tensor UNet2DConditionModelImpl::run(const UNetInputs& in, int64_t last_up_block, nn::KvExtraction* extraction) {
  TORCH_CHECK(in.sample.dim() == 4 && in.sample.size(1) == config_.in_channels, "UNet: sample must be [B, ",
              config_.in_channels, ", h, w], got ", in.sample.sizes());
  TORCH_CHECK(in.encoder_hidden_states.defined() && in.encoder_hidden_states.dim() == 3,
              "UNet: encoder_hidden_states must be [B, M, D]");
  TORCH_CHECK(!(in.reference && in.batch_sharing),
              "UNet: batch sharing and reference K/V do not compose; set at most one of them");
  if (in.batch_sharing) in.batch_sharing->check(in.sample.size(0));
  std::optional<nn::AdapterSelection> selection;  // before embed_time: LoRAs may cover the embeddings
  if (in.adapters) selection.emplace(*in.adapters);
  // The attention layers read this call's image tokens from the shared context; cleared on exit
  // so a later call without tokens cannot see stale ones.
  struct ContextScope {
    nn::AttentionContext& ctx;
    ~ContextScope() {
      ctx.ip_tokens = at::Tensor();
      ctx.reference.reset();
      ctx.batch_sharing.reset();
      ctx.extraction = nullptr;
    }
  } scope{*attention_context_};
  // The KV encoder has no image cross-attention of its own: its image tokens only feed the
  // recorded IP K/V.
  attention_context_->ip_tokens = extraction ? at::Tensor() : in.ip_tokens;
  attention_context_->ip_scale = in.ip_scale;
  attention_context_->reference = in.reference;
  attention_context_->extraction = extraction;
  const auto dtype = conv_in->weight.scalar_type();
  at::Tensor context = in.encoder_hidden_states.to(dtype);
  // Odd latent sizes: upsamplers must restore the skip's size instead of doubling.
  const int64_t factor = int64_t{1} << (config_.block_out_channels.size() - 1);
  const bool forward_upsample_size = in.sample.size(2) % factor != 0 || in.sample.size(3) % factor != 0;

  const nn::AttentionContext* ctx = attention_context_.get();
  auto stem_in = nn::call_unit(
      ctx, "stem_in",
      [this](const std::vector<at::Tensor>& s) {
        UNetInputs e;
        e.sample = s[0];
        e.timestep = s[1];
        e.text_embeds = s[2];
        e.time_ids = s[3];
        at::Tensor emb = embed_time(e);  // [B, time_embed_dim]
        at::Tensor x = s[0].to(conv_in->weight.scalar_type());
        if (config_.center_input_sample) x = 2 * x - 1.0;
        return std::vector<at::Tensor>{conv_in->forward(x), emb};
      },
      {in.sample, in.timestep, in.text_embeds, in.time_ids});
  at::Tensor h = stem_in[0];
  const at::Tensor emb = stem_in[1];
  std::vector<at::Tensor> skips{h};
  for (size_t i = 0; i < down_blocks->size(); ++i) h = down_blocks->ptr<DownBlockImpl>(i)->forward(h, emb, context, skips);
  h = mid_block->forward(h, emb, context);
  // StoryDiffusion shares tokens in the up blocks only: the down and mid blocks lay out each image
  // on its own.
  attention_context_->batch_sharing = in.batch_sharing;
  for (size_t i = 0; i < up_blocks->size(); ++i) {
    if (extraction && static_cast<int64_t>(i) > last_up_block) break;
    auto* up = up_blocks->ptr<UpBlockImpl>(i).get();
    c10::optional<std::vector<int64_t>> size;
    size_t consumed = up->resnets->size();
    if (forward_upsample_size && up->upsamplers && skips.size() > consumed) {
      const at::Tensor& next_skip = skips[skips.size() - consumed - 1];
      size = std::vector<int64_t>{next_skip.size(2), next_skip.size(3)};
    }
    // The KV encoder's output is its recorded K/V; the hidden state after its last stage is unused.
    const bool last_of_encoder = extraction && static_cast<int64_t>(i) == last_up_block;
    h = up->forward(h, emb, context, skips, size, /*run_upsampler=*/!last_of_encoder);
  }
  if (extraction) return h;
  return nn::call_unit(ctx, "stem_out",
                       [this](const std::vector<at::Tensor>& s) {
                         return std::vector<at::Tensor>{conv_out->forward(at::silu(conv_norm_out->forward(s[0])))};
                       },
                       {h})[0];
}

std::vector<std::pair<std::string, BasicTransformerBlock>> UNet2DConditionModelImpl::transformer_blocks() {
  std::vector<std::pair<std::string, BasicTransformerBlock>> out;
  // named_modules follows registration order: down_blocks, mid_block, up_blocks.
  for (const auto& item : named_modules("", /*include_self=*/false))
    if (auto block = std::dynamic_pointer_cast<BasicTransformerBlockImpl>(item.value()))
      out.emplace_back(item.key(), BasicTransformerBlock(block));
  return out;
}

std::vector<Unit> UNet2DConditionModelImpl::units() {
  std::vector<Unit> out;
  std::vector<std::string> stem_in{"conv_in", "time_embedding"};
  if (add_embedding) stem_in.push_back("add_embedding");
  out.push_back(Unit{"stem_in", nullptr, stem_in});
  auto add_block = [&](const std::string& prefix, torch::nn::Module& block) {
    // Execution order inside a stage: resnet i, attention i, ..., then the sampler.
    auto children = block.named_children();
    auto list = [&](const char* name) -> torch::nn::ModuleList {
      return children.contains(name) ? torch::nn::ModuleList(std::dynamic_pointer_cast<torch::nn::ModuleListImpl>(children[name]))
                                     : torch::nn::ModuleList(nullptr);
    };
    auto resnets = list("resnets"), attentions = list("attentions");
    bool is_mid = prefix == "mid_block";
    for (size_t i = 0; i < resnets->size(); ++i) {
      if (is_mid && i > 0) out.push_back(Unit{prefix + ".attentions." + std::to_string(i - 1), attentions[i - 1], {}});
      out.push_back(Unit{prefix + ".resnets." + std::to_string(i), resnets[i], {}});
      if (!is_mid && attentions) out.push_back(Unit{prefix + ".attentions." + std::to_string(i), attentions[i], {}});
    }
    for (const char* sampler : {"downsamplers", "upsamplers"})
      if (auto s = list(sampler)) out.push_back(Unit{prefix + "." + sampler + ".0", s[0], {}});
  };
  for (size_t i = 0; i < down_blocks->size(); ++i) add_block("down_blocks." + std::to_string(i), *down_blocks[i]);
  add_block("mid_block", *mid_block);
  for (size_t i = 0; i < up_blocks->size(); ++i) add_block("up_blocks." + std::to_string(i), *up_blocks[i]);
  out.push_back(Unit{"stem_out", nullptr, {"conv_norm_out", "conv_out"}});
  return out;
}

std::vector<std::pair<std::string, nn::Attention>> UNet2DConditionModelImpl::cross_attention_layers() {
  std::vector<std::pair<std::string, nn::Attention>> out;
  auto collect = [&](const std::string& prefix, torch::nn::Module& root) {
    for (const auto& item : root.named_modules(prefix, /*include_self=*/false)) {
      const std::string& path = item.key();
      if (path.size() > 6 && path.compare(path.size() - 6, 6, ".attn2") == 0)
        out.emplace_back(path, nn::Attention(std::dynamic_pointer_cast<nn::AttentionImpl>(item.value())));
    }
  };
  collect("down_blocks", *down_blocks);
  collect("up_blocks", *up_blocks);
  collect("mid_block", *mid_block);
  return out;
}

std::pair<int64_t, int64_t> count_parameters(const torch::nn::Module& module) {
  int64_t tensors = 0, elements = 0;
  for (const auto& p : module.named_parameters()) {
    ++tensors;
    elements += p.value().numel();
  }
  return {tensors, elements};
}

}  // namespace lookahead::model::unet
