// LookaheadModel: construction on one shared UNet, weight loading, sharding units and both losses.
#include "model/lookahead/lookahead_model.h"

#include <ATen/ATen.h>

#include <map>
#include <set>
#include <string>
#include <string_view>

#include "model/face/align.h"
#include "model/face/arcface_iresnet.h"
#include "model/face/arcface_irse.h"
#include "model/io/safetensors.h"
#include "model/io/state_dict.h"
#include "model/io/torch_checkpoint.h"
#include "model/nn/lora_loader.h"
#include "model/nn/skip_init.h"
#include "model/nn/unit_call.h"
#include "model/sched/lcm_preview.h"

namespace lookahead::model {

namespace {

constexpr const char* kLcmAdapter = "lcm";

using Named = std::vector<std::pair<std::string, at::Tensor>>;

/// The adapters of a LoraLinear / LoraConv2d (empty for other modules).
const std::vector<nn::LoraAdapter>* adapters_of(torch::nn::Module& layer) {
  if (auto* lin = dynamic_cast<nn::LoraLinearImpl*>(&layer)) return &lin->adapters();
  if (auto* conv = dynamic_cast<nn::LoraConv2dImpl*>(&layer)) return &conv->adapters();
  return nullptr;
}

/// Parameters and buffers of `module` as "<prefix><key>" (buffers: BatchNorm statistics of the
/// face networks are weights a sharded engine must gather too).
void append_state(Named& out, torch::nn::Module& module, const std::string& prefix) {
  for (const auto& p : module.named_parameters()) out.emplace_back(prefix + p.key(), p.value());
  for (const auto& b : module.named_buffers()) out.emplace_back(prefix + b.key(), b.value());
}

/// `landmarks` [B, 5, 2] with the rows that are not all finite (no face found) replaced by the
/// `size` x `size` template's, and the [B] bool mask of the rows kept.
std::pair<at::Tensor, at::Tensor> landmarks_or_template(const at::Tensor& landmarks, double size) {
  const at::Tensor lm = landmarks.to(at::kCPU, at::kDouble);  // [B, 5, 2]
  const at::Tensor valid = at::isfinite(lm).flatten(1).all(1);  // [B] bool
  const at::Tensor fallback = face::arcface_template(size).unsqueeze(0).expand_as(lm);
  return {at::where(valid.view({-1, 1, 1}), lm, fallback), valid};
}

}  // namespace

LookaheadModelConfig LookaheadModelConfig::sdxl() { return LookaheadModelConfig{}; }

bool LookaheadModelConfig::lcm_lora_sdxl_target(const std::string& path) {
  static constexpr std::string_view kSuffixes[] = {"to_q",
                                                   "to_k",
                                                   "to_v",
                                                   "to_out.0",
                                                   "proj_in",
                                                   "proj_out",
                                                   "ff.net.0.proj",
                                                   "ff.net.2",
                                                   "conv1",
                                                   "conv2",
                                                   "conv_shortcut",
                                                   "downsamplers.0.conv",
                                                   "upsamplers.0.conv",
                                                   "time_emb_proj"};
  for (const std::string_view suf : kSuffixes) {
    if (path.size() >= suf.size() && path.compare(path.size() - suf.size(), suf.size(), suf) == 0 &&
        (path.size() == suf.size() || path[path.size() - suf.size() - 1] == '.'))
      return true;
  }
  return false;
}

LookaheadModelConfig LookaheadModelConfig::tiny() {
  LookaheadModelConfig c;
  // The tiny UNet of the gradient-path test: SDXL's stage layout (the last up block has no
  // attention), 3 stages of 16/32/32 channels, cross dim 24, pooled text 16 (+ 6 x 4 time ids).
  c.unet = unet::UNetConfig::from_json(R"({"block_out_channels": [16, 32, 32],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1, "transformer_layers_per_block": [1, 1, 1], "attention_head_dim": 2,
    "cross_attention_dim": 24, "norm_num_groups": 4, "use_linear_projection": true,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 4, "projection_class_embeddings_input_dim": 40})",
                                       "LookaheadModelConfig::tiny");
  c.resampler = adapters::ResamplerOptions().dim(16).heads(1).depth(1).num_queries(4).embedding_dim(12).output_dim(24);
  c.taesd = vae::TinyConfig{.encoder_block_out_channels = {8, 8, 8, 8}, .decoder_block_out_channels = {8, 8, 8, 8}};
  c.dreamsim = vision::DreamSimOptions::tiny();
  c.arcface = "iresnet50";
  c.arcface_layers = {1, 1, 1, 1};
  c.lcm_lora_rank = 4;
  c.lcm_lora_select = [](const std::string& p) {
    return p.ends_with("to_q") || p.ends_with("to_out.0") || p.ends_with("proj_in") || p.ends_with("conv1");
  };
  return c;
}

LookaheadModelConfig LookaheadModelConfig::mid() {
  LookaheadModelConfig c = tiny();
  // SDXL's block structure (2 resnets per down block, 3 per up block, no attention in the outer
  // stage) at 64/128/128 channels with 2 transformer layers in the inner stages.
  c.unet = unet::UNetConfig::from_json(R"({"block_out_channels": [64, 128, 128],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 2, "transformer_layers_per_block": [1, 2, 2], "attention_head_dim": [2, 4, 4],
    "cross_attention_dim": 24, "norm_num_groups": 32, "use_linear_projection": true,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 4, "projection_class_embeddings_input_dim": 40})",
                                       "LookaheadModelConfig::mid");
  c.taesd =
      vae::TinyConfig{.encoder_block_out_channels = {16, 16, 16, 16}, .decoder_block_out_channels = {16, 16, 16, 16}};
  return c;
}

LookaheadModel::LookaheadModel(LookaheadModelConfig config, at::Device device, const LookaheadWeightFiles& files)
    : config_(std::move(config)),
      options_(at::TensorOptions().dtype(config_.dtype).device(device)),
      schedule_(config_.schedule) {
  const bool any_file = !files.unet.empty() || !files.ip_adapter.empty() || !files.lcm_lora.empty() ||
                        !files.taesd.empty() || !files.arcface.empty() ||
                        (!files.dreamsim.empty() && config_.lambda_dreamsim > 0);
  TORCH_CHECK(!(any_file && device == at::kMeta), "LookaheadModel: weight files cannot be loaded on the meta device");
  // A network whose file follows is built without values (its strict load fills every one).
  auto maybe_skip = [](const std::string& file) { return file.empty() ? nullptr : std::make_unique<nn::SkipInit>(); };
  {
    auto skip = maybe_skip(files.unet);
    unet_ = unet::UNet2DConditionModel(config_.unet, options_);
  }
  {
    auto skip = maybe_skip(files.ip_adapter);
    auto resampler = config_.resampler;
    resampler.tensor_options(options_);
    ip_ = adapters::IpAdapter(*unet_, resampler);
    ip_->attach(*unet_);
  }
  if (config_.use_kv_encoder) encoder_ = std::make_unique<adapters::KvEncoder>(unet_, config_.kv_encoder);
  {
    auto skip = maybe_skip(files.taesd);
    taesd_decoder_ = vae::DecoderTiny(config_.taesd, options_);
  }
  auto skip_arcface = maybe_skip(files.arcface);
  const std::string& name = config_.arcface;
  if (name == "irse50") {
    TORCH_CHECK(config_.arcface_layers.empty(), "LookaheadModel: arcface_layers applies to iresnet only");
    face::IRSE net(face::IRSEOptions().num_layers(50).tensor_options(options_));
    arcface_module_ = net.ptr();
    arcface_forward_ = [net](const at::Tensor& x) mutable { return net->forward(x); };
  } else if (name == "iresnet50" || name == "iresnet100") {
    auto opts = face::IResNetOptions::named(name).tensor_options(options_);
    if (!config_.arcface_layers.empty()) opts.layers(config_.arcface_layers);
    face::IResNet net(opts);
    arcface_module_ = net.ptr();
    arcface_forward_ = [net](const at::Tensor& x) mutable { return net->forward(x); };
  } else {
    TORCH_CHECK(false, "LookaheadModel: unknown ArcFace network '", name,
                "' (expected irse50, iresnet50 or iresnet100)");
  }
  arcface_module_->eval();
  skip_arcface.reset();
  if (config_.lambda_dreamsim > 0) {
    if (!files.dreamsim.empty()) {
      // The loader reads the architecture from the files (ensemble or tiny) and merges the LoRA.
      dreamsim_ = vision::load_dreamsim(files.dreamsim, device, config_.dtype);
    } else {
      auto opts = config_.dreamsim;
      opts.tensor_options = options_;
      dreamsim_ = vision::DreamSim(opts);
    }
    dreamsim_->eval();
  }

  // The LCM-LoRA exists only where it runs: an x0 preview or a run without the lookahead branch
  // neither creates nor loads it.
  if (config_.lcm_lora_rank > 0 && config_.uses_lcm()) {
    TORCH_CHECK(config_.lcm_lora_select, "LookaheadModel: lcm_lora_rank > 0 needs lcm_lora_select");
    const auto r = config_.lcm_lora_rank;
    nn::TrainableLora lcm =
        nn::create_trainable_lora(*unet_, kLcmAdapter, r, static_cast<double>(r), config_.lcm_lora_select);
    lcm_scale_ = lcm.scale;
    // Random up matrices too: a zero up (the trainable-LoRA init) would make α irrelevant.
    if (device != at::kMeta) {
      at::NoGradGuard no_grad;
      for (auto& [key, t] : lcm.parameters) {
        at::Tensor live = t;
        live.normal_(0.0, config_.lcm_lora_init_std);
      }
    }
    lcm_attached_ = true;
  } else {
    lcm_scale_ = std::make_shared<nn::LoraScale>();
  }
  if (any_file) load_weights(files);
  freeze();
}

LookaheadModel::~LookaheadModel() = default;

void LookaheadModel::freeze() {
  for (auto& p : unet_->parameters()) p.set_requires_grad(false);
  for (auto& p : taesd_decoder_->parameters()) p.set_requires_grad(false);
  for (auto& p : arcface_module_->parameters()) p.set_requires_grad(false);
  if (dreamsim_)
    for (auto& p : dreamsim_->parameters()) p.set_requires_grad(false);
  for (auto& p : ip_->parameters()) p.set_requires_grad(true);
  for (auto& [path, layer] : nn::lora_layers(*unet_))
    for (const auto& a : *adapters_of(*layer))
      if (a.name == kLcmAdapter) {
        at::Tensor down = a.down, up = a.up;  // live handles
        down.set_requires_grad(false);
        up.set_requires_grad(false);
      }
}

void LookaheadModel::load_weights(const LookaheadWeightFiles& files) {
  std::map<std::string, at::Tensor>& trainable = file_trainables_;
  if (!files.unet.empty()) io::load_state_dict(*unet_, io::load_file(files.unet), files.unet);
  if (!files.ip_adapter.empty()) {
    // The IpAdapter's own keys ("image_proj.…", "ip_adapter.N.…") are those of units().
    trainable = adapters::load_ip_adapter_file(files.ip_adapter);
    io::load_state_dict(*ip_, trainable, files.ip_adapter);
  }
  if (!files.lcm_lora.empty() && config_.uses_lcm()) {
    TORCH_CHECK(!lcm_attached_, "LookaheadModel: an LCM-LoRA is already attached (", files.lcm_lora,
                ")");
    nn::attach_lora_file(*unet_, files.lcm_lora, kLcmAdapter, lcm_scale_);
    lcm_attached_ = true;
  }
  if (!files.taesd.empty()) {
    // Only the decoder is part of the model: the encoder half of the file is not ours to check.
    std::map<std::string, at::Tensor> decoder;
    for (auto& [key, t] : io::load_file(files.taesd))
      if (key.rfind("decoder.", 0) == 0) decoder.emplace(key.substr(8), t);
    io::load_state_dict(*taesd_decoder_, decoder, files.taesd);
  }
  if (!files.arcface.empty())
    io::load_state_dict(*arcface_module_, io::load_weights_file(files.arcface), files.arcface);
}

std::vector<dist::ShardingUnit> LookaheadModel::units() {
  std::vector<dist::ShardingUnit> out;
  {
    dist::ShardingUnit proj{"image_proj", {}, {}, {}, {}};
    for (const auto& p : ip_->image_proj->named_parameters())
      proj.adapter.emplace_back("image_proj." + p.key(), p.value());
    out.push_back(std::move(proj));
  }

  // UNet units: each owns the keys under its path (stems: under their members' paths).
  const size_t first_unet = out.size();
  std::vector<std::vector<std::string>> prefixes;
  for (const auto& u : unet_->units()) {
    out.push_back(dist::ShardingUnit{u.name, {}, {}, {}, {}});
    std::vector<std::string> p;
    if (u.members.empty()) p.push_back(u.name + ".");
    for (const auto& m : u.members) p.push_back(m + ".");
    prefixes.push_back(std::move(p));
  }
  auto unit_of = [&](const std::string& key) -> dist::ShardingUnit& {
    int found = -1;
    for (size_t i = 0; i < prefixes.size(); ++i)
      for (const auto& p : prefixes[i])
        if (key.rfind(p, 0) == 0) {
          TORCH_INTERNAL_ASSERT(found < 0, "UNet key '", key, "' lies in two units");
          found = static_cast<int>(i);
        }
    TORCH_INTERNAL_ASSERT(found >= 0, "UNet key '", key, "' lies in no unit");
    return out[first_unet + found];
  };
  for (const auto& p : unet_->named_parameters()) unit_of(p.key()).frozen.emplace_back(p.key(), p.value());
  for (const auto& b : unet_->named_buffers()) unit_of(b.key()).frozen.emplace_back(b.key(), b.value());
  for (auto& [path, layer] : nn::lora_layers(*unet_))
    for (const auto& a : *adapters_of(*layer)) {
      if (a.name != kLcmAdapter) continue;  // encoder LoRAs: KvEncoder::trainable_parameters below
      auto& unit = unit_of(path + ".");
      unit.lcm.emplace_back(path + ".lcm.lora_down.weight", a.down);
      unit.lcm.emplace_back(path + ".lcm.lora_up.weight", a.up);
    }
  // ip_adapter.<2j+1> belongs to the j-th attn2 layer in attn_processors order.
  const auto attns = unet_->cross_attention_layers();
  for (const auto& p : ip_->ip_adapter->named_parameters()) {
    const std::string& key = p.key();  // "<N>.to_k_ip.weight"
    const int64_t n = std::stoll(key.substr(0, key.find('.')));
    TORCH_INTERNAL_ASSERT(n % 2 == 1 && (n - 1) / 2 < static_cast<int64_t>(attns.size()));
    unit_of(attns[(n - 1) / 2].first + ".").adapter.emplace_back("ip_adapter." + key, p.value());
  }
  if (encoder_)
    for (auto& [key, t] : encoder_->trainable_parameters()) unit_of(key).lora.emplace_back(key, t);

  dist::ShardingUnit taesd{"taesd.decoder", {}, {}, {}, {}};
  append_state(taesd.frozen, *taesd_decoder_, "taesd.decoder.");
  out.push_back(std::move(taesd));
  dist::ShardingUnit arc{"arcface", {}, {}, {}, {}};
  append_state(arc.frozen, *arcface_module_, "arcface.");
  out.push_back(std::move(arc));
  if (dreamsim_) {
    size_t held = 0;
    for (int64_t i = 0; i < dreamsim_->num_extractors(); ++i) {
      const std::string prefix = "dreamsim." + dreamsim_->extractor_prefix(i);  // "dreamsim.extractor_list.<i>."
      dist::ShardingUnit u{prefix.substr(0, prefix.size() - 1), {}, {}, {}, {}};
      append_state(u.frozen, dreamsim_->extractor(i), prefix);
      held += u.frozen.size();
      out.push_back(std::move(u));
    }
    TORCH_INTERNAL_ASSERT(held == dreamsim_->named_parameters().size() + dreamsim_->named_buffers().size(),
                          "DreamSim tensors outside its extractors");
  }
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> LookaheadModel::adapter_parameters() {
  Named out;
  for (const auto& p : ip_->named_parameters()) out.emplace_back(p.key(), p.value());
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> LookaheadModel::lora_parameters() {
  Named out;
  if (encoder_)
    for (auto& [key, t] : encoder_->trainable_parameters()) out.emplace_back(key, t);
  return out;
}

adapters::KvEncoder& LookaheadModel::encoder() {
  TORCH_CHECK(encoder_, "LookaheadModel: this model has no KV encoder (model.kv_encoder = off)");
  return *encoder_;
}

StepDraw LookaheadModel::draw(uint64_t seed, int64_t step, int64_t global_batch, int64_t first, int64_t count,
                              at::IntArrayRef latent_shape) const {
  StepDrawOptions o;
  o.adapter_drop_p = config_.adapter_drop_p;
  o.diffusion_timestep_a = config_.diffusion_timestep_a;
  o.lcm_timestep_a = config_.lcm_timestep_a;
  o.num_train_timesteps = config_.schedule.num_train_timesteps;
  return draw_step(o, seed, step, global_batch, first, count, latent_shape);
}

unet::UNetInputs LookaheadModel::unet_inputs(const at::Tensor& sample, const at::Tensor& t, const at::Tensor& prompt,
                                             const at::Tensor& pooled, const at::Tensor& time_ids) const {
  unet::UNetInputs in;
  in.sample = sample.to(options_);
  in.timestep = t;
  in.encoder_hidden_states = prompt.to(options_);
  if (pooled.defined()) in.text_embeds = pooled.to(options_);
  if (time_ids.defined()) in.time_ids = time_ids.to(options_);
  in.ip_scale = config_.ip_scale;
  return in;
}

void LookaheadModel::check_batch(const Batch& b, const StepDraw& d) const {
  TORCH_CHECK(b.z_tgt.defined() && b.z_tgt.dim() == 4, "LookaheadModel: z_tgt must be [B, C, h, w]");
  const int64_t n = b.z_tgt.size(0);
  TORCH_CHECK(b.z_ref.defined() && b.z_ref.sizes() == b.z_tgt.sizes(), "LookaheadModel: z_ref ",
              b.z_ref.defined() ? b.z_ref.sizes() : at::IntArrayRef{}, " must match z_tgt ", b.z_tgt.sizes());
  TORCH_CHECK(d.size() == n && d.noise.sizes() == b.z_tgt.sizes(), "LookaheadModel: the step draw holds ", d.size(),
              " samples of noise ", d.noise.defined() ? d.noise.sizes() : at::IntArrayRef{}, ", the batch is ",
              b.z_tgt.sizes());
  TORCH_CHECK(b.clip_ref.defined() && b.clip_ref.dim() == 3 && b.clip_ref.size(0) == n,
              "LookaheadModel: clip_ref must be [B, T, D] with B = ", n);
  TORCH_CHECK(b.clip_uncond.defined() && b.clip_uncond.dim() == 3 && b.clip_uncond.size(0) == 1 &&
                  b.clip_uncond.sizes().slice(1) == b.clip_ref.sizes().slice(1),
              "LookaheadModel: clip_uncond must be [1, T, D] like clip_ref's samples");
  for (const at::Tensor* t : {&b.tgt_prompt, &b.ref_prompt})
    TORCH_CHECK(t->defined() && t->dim() == 3 && t->size(0) == n,
                "LookaheadModel: prompt embeddings must be [B, M, D] with B = ", n);
}

at::Tensor LookaheadModel::image_tokens(const at::Tensor& clip_ref, const at::Tensor& clip_uncond,
                                        const at::Tensor& drop) {
  const int64_t n = clip_ref.size(0);
  // One Resampler run for conditional and unconditional features: every rank runs the same
  // modules in the same order whatever its drop mask (a sharded engine gathers by that order).
  at::Tensor tokens = nn::call_unit(runner_, "image_proj",
                                    [this](const std::vector<at::Tensor>& in) {
                                      return std::vector<at::Tensor>{ip_->image_tokens(in[0])};
                                    },
                                    {at::cat({clip_ref, clip_uncond}).to(options_)})[0];  // [B + 1, Q, D]
  at::Tensor cond = tokens.narrow(0, 0, n);
  if (!drop.defined()) return cond;
  TORCH_CHECK(drop.dim() == 1 && drop.size(0) == n, "LookaheadModel: adapter-drop mask must be [", n, "], got ",
              drop.sizes());
  at::Tensor mask = drop.to(tokens.device(), at::kBool).view({n, 1, 1});
  return at::where(mask, tokens.narrow(0, n, 1).expand_as(cond), cond);  // [B, Q, D]
}

at::Tensor LookaheadModel::arcface(const at::Tensor& faces) {
  return nn::call_unit(runner_, "arcface",
                       [this](const std::vector<at::Tensor>& in) { return std::vector<at::Tensor>{arcface_forward_(in[0])}; },
                       {faces.to(options_)})[0];
}

void LookaheadModel::set_unit_runner(dist::UnitRunner* runner) {
  runner_ = runner;
  unet_->set_unit_runner(runner);
}

unet::UNetInputs LookaheadModel::branch_inputs(const Batch& batch, const at::Tensor& eps, const at::Tensor& t,
                                               const at::Tensor& ip, uint64_t kv_drop_seed) {
  auto noised = [&](const at::Tensor& z0) {
    return schedule_.add_noise(z0.to(options_.device(), at::kFloat), eps, t);  // [B, C, h, w] float32
  };
  unet::UNetInputs in = unet_inputs(noised(batch.z_tgt), t, batch.tgt_prompt, batch.tgt_pooled, batch.time_ids);
  if (encoder_) {
    // The encoder carries the IP K/V (its to_k_ip / to_v_ip of the tokens) with the reference's.
    unet::UNetInputs ref = unet_inputs(noised(batch.z_ref), t, batch.ref_prompt, batch.ref_pooled, batch.time_ids);
    in.reference = std::make_shared<nn::ReferenceKv>(
        encoder_->forward(ref, ip).drop_tokens(config_.kv_drop_p, cpu_generator(kv_drop_seed)));
  } else {
    in.ip_tokens = ip;  // IP-Adapter Plus alone: the decoder's own IP attention
  }
  return in;
}

DiffusionBranch LookaheadModel::diffusion_branch(const Batch& batch, const StepDraw& draw, bool with_x0) {
  check_batch(batch, draw);
  // ε and the noised latents in float32 (the loss target keeps full precision); the UNet inputs
  // are cast to the model's dtype in unet_inputs.
  const at::Tensor eps = draw.noise.to(options_.device(), at::kFloat);  // [B, C, h, w]
  const at::Tensor t = draw.timesteps.to(options_.device());            // [B]
  const at::Tensor ip = image_tokens(batch.clip_ref, batch.clip_uncond, draw.adapter_drop);
  unet::UNetInputs in = branch_inputs(batch, eps, t, ip, draw.kv_drop_seed);
  in.adapters = std::vector<std::string>{};  // the frozen base: no LCM-LoRA, no encoder LoRA
  const at::Tensor eps_hat = unet_->forward(in);  // [B, C, h, w]
  DiffusionBranch out;
  out.loss = at::mse_loss(eps_hat.to(at::kFloat), eps);
  if (with_x0) out.x0 = schedule_.predict_x0(in.sample.to(at::kFloat), eps_hat.to(at::kFloat), t);  // [B, C, h, w]
  return out;
}

LookaheadLoss LookaheadModel::lookahead_loss(const Batch& batch, const StepDraw& draw, double alpha) {
  check_batch(batch, draw);
  TORCH_CHECK(alpha >= 0.0, "LookaheadModel: LCM-LoRA scale must be non-negative, got ", alpha);
  TORCH_CHECK(config_.uses_lcm(), "LookaheadModel: the LCM preview is off (loss.preview = x0 or no lookahead loss)");
  TORCH_CHECK(lcm_attached_, "LookaheadModel: no LCM-LoRA is attached (load_weights with lcm_lora, or lcm_lora_rank)");
  lcm_scale_->value = alpha;

  const at::Tensor eps = draw.noise.to(options_.device(), at::kFloat);
  const at::Tensor t = draw.lcm_timesteps.to(options_.device());
  const at::Tensor ip = image_tokens(batch.clip_ref, batch.clip_uncond, at::Tensor());  // no adapter drop here
  unet::UNetInputs in = branch_inputs(batch, eps, t, ip, draw.lcm_kv_drop_seed);
  in.adapters = std::vector<std::string>{kLcmAdapter};
  const at::Tensor eps_hat = unet_->forward(in);                               // [B, C, h, w]
  const at::Tensor z0 = sched::lcm_preview(schedule_, in.sample, eps_hat, t);  // [B, C, h, w] float32
  return preview_losses(batch, z0, alpha);
}

LookaheadLoss LookaheadModel::x0_lookahead_loss(const Batch& batch, const DiffusionBranch& diffusion) {
  TORCH_CHECK(diffusion.x0.defined(), "LookaheadModel: x0_lookahead_loss needs diffusion_branch(..., with_x0 = true)");
  TORCH_CHECK(diffusion.x0.size(0) == batch.size(), "LookaheadModel: x̂0 of ", diffusion.x0.size(0),
              " samples for a batch of ", batch.size());
  return preview_losses(batch, diffusion.x0, 1.0);
}

LookaheadLoss LookaheadModel::preview_losses(const Batch& batch, const at::Tensor& z0, double scale) {
  const int64_t n = batch.size();
  TORCH_CHECK(batch.ref_landmarks.defined() && batch.ref_landmarks.dim() == 3 && batch.ref_landmarks.size(0) == n &&
                  batch.ref_landmarks.size(1) == 5 && batch.ref_landmarks.size(2) == 2,
              "LookaheadModel: ref_landmarks must be [B, 5, 2]");
  const at::Tensor image =
      nn::call_unit(runner_, "taesd.decoder",
                    [this](const std::vector<at::Tensor>& in) { return std::vector<at::Tensor>{taesd_decoder_->forward(in[0])}; },
                    {z0.to(options_)})[0];  // [B, 3, H, W] in [-1, 1]

  LookaheadLoss out;
  out.preview = image.detach();
  const at::TensorOptions f32 = at::TensorOptions().dtype(at::kFloat).device(options_.device());
  out.id_loss = at::zeros({}, f32);
  out.per_sample = at::zeros({n}, f32);
  out.valid = at::zeros({n}, at::kBool);
  if (config_.lambda_id > 0) {
    TORCH_CHECK(batch.ref_id.defined() && batch.ref_id.dim() == 2 && batch.ref_id.size(0) == n,
                "LookaheadModel: ref_id must be [B, 512]");
    // Samples without usable landmarks still run (every rank runs the same modules); they are
    // aligned on the template's position and masked out of the loss.
    const auto [safe, valid] = landmarks_or_template(batch.ref_landmarks, static_cast<double>(image.size(3)));
    const at::Tensor faces = face::align_faces(image, safe);           // [B, 3, 112, 112]
    const at::Tensor e = arcface(faces).to(at::kFloat);                // [B, 512]
    const at::Tensor cos = (e * batch.ref_id.to(e.options())).sum(1);  // [B]
    const at::Tensor mask = valid.to(e.device(), at::kFloat);
    out.valid = valid;
    out.valid_count = valid.sum().item<int64_t>();
    out.per_sample = (1.0 - cos) * mask * (scale * config_.lambda_id);
    out.id_loss = out.per_sample.sum() / static_cast<double>(std::max<int64_t>(out.valid_count, 1));
  }
  out.loss = out.id_loss;
  if (config_.lambda_dreamsim > 0) {
    // Whole images, every sample (no face crop, no mask), as the official DreamSIMLoss.
    TORCH_CHECK(batch.ref_dreamsim.defined() && batch.ref_dreamsim.dim() == 2 && batch.ref_dreamsim.size(0) == n,
                "LookaheadModel: ref_dreamsim must be [B, D] (set_reference with lambda_dreamsim > 0)");
    const at::Tensor e = dreamsim_embedding(image);  // [B, D] float32
    const at::Tensor distance = 1.0 - at::cosine_similarity(e, batch.ref_dreamsim.to(e.options()), 1, 1e-8);  // [B]
    out.dreamsim_loss = distance.mean() * (scale * config_.lambda_dreamsim);
    out.loss = out.loss + out.dreamsim_loss;
  }
  return out;
}

at::Tensor LookaheadModel::dreamsim_embedding(const at::Tensor& images) {
  TORCH_CHECK(dreamsim_, "LookaheadModel: no DreamSim network (loss.lambda_dreamsim = 0)");
  const at::Tensor x = vision::dreamsim_input(images.to(at::kFloat), dreamsim_->options.image_size());  // [B, 3, S, S]
  std::vector<at::Tensor> features;
  for (int64_t i = 0; i < dreamsim_->num_extractors(); ++i) {
    const std::string prefix = dreamsim_->extractor_prefix(i);
    features.push_back(nn::call_unit(runner_, "dreamsim." + prefix.substr(0, prefix.size() - 1),
                                     [this, i](const std::vector<at::Tensor>& in) {
                                       return std::vector<at::Tensor>{dreamsim_->features(i, in[0])};
                                     },
                                     {x.to(options_)})[0]
                           .to(at::kFloat));  // [B, d_i]
  }
  return dreamsim_->combine(features);  // [B, D]
}

void LookaheadModel::set_reference(Batch& batch, const at::Tensor& ref_pixels, const at::Tensor& landmarks) {
  if (config_.lambda_id > 0) {
    set_reference_identity(batch, ref_pixels, landmarks);
  } else {
    TORCH_CHECK(landmarks.dim() == 3 && ref_pixels.dim() == 4 && batch.z_tgt.defined(),
                "set_reference: expected ref_pixels [B, 3, S, S], landmarks [B, 5, 2] and the batch's z_tgt");
    const double preview = 8.0 * static_cast<double>(batch.z_tgt.size(-1));  // TAESD decodes 8x
    batch.ref_landmarks = landmarks.to(at::kCPU, at::kDouble) * (preview / static_cast<double>(ref_pixels.size(-1)));
  }
  if (config_.lambda_dreamsim > 0) {
    at::NoGradGuard no_grad;
    batch.ref_dreamsim = dreamsim_embedding(ref_pixels.to(options_));  // [B, D] float32
  }
}

void LookaheadModel::set_reference_identity(Batch& batch, const at::Tensor& ref_pixels, const at::Tensor& landmarks) {
  TORCH_CHECK(ref_pixels.dim() == 4 && landmarks.dim() == 3 && ref_pixels.size(0) == landmarks.size(0),
              "set_reference_identity: expected ref_pixels [B, 3, S, S] and landmarks [B, 5, 2], got ",
              ref_pixels.sizes(), " and ", landmarks.sizes());
  TORCH_CHECK(batch.z_tgt.defined(), "set_reference_identity: the batch has no target latents (z_tgt)");
  const double ref_size = static_cast<double>(ref_pixels.size(-1));
  const double preview = 8.0 * static_cast<double>(batch.z_tgt.size(-1));  // TAESD decodes 8x
  const at::Tensor lm = landmarks.to(at::kCPU, at::kDouble);  // [B, 5, 2]
  {
    at::NoGradGuard no_grad;
    const at::Tensor faces = face::align_faces(ref_pixels.to(options_), landmarks_or_template(lm, ref_size).first);
    batch.ref_id = arcface(faces).to(at::kFloat);  // [B, 512]
  }
  batch.ref_landmarks = lm * (preview / ref_size);  // non-finite rows stay non-finite
}

}  // namespace lookahead::model
