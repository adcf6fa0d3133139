// `lookahead model run --model kv-encoder`: the KV encoder (LCM-Lookahead §4) and the decoder that
// attends to its reference K/V, on named tensors, for parity checks.
//
// Inputs: the reference stream `ref_sample`, `ref_timestep`, `ref_encoder_hidden_states`,
// `ref_text_embeds`, `ref_time_ids`; the target stream `sample`, `timestep`,
// `encoder_hidden_states`, `text_embeds`, `time_ids`; `image_embeds` (CLIP penultimate tokens for
// the Resampler); optional scalars `drop_p` and `drop_seed` (reference-token dropout of the K/V the
// decoder sees, CPU generator seeded with drop_seed).
// Outputs: `ref_k.<i>`, `ref_v.<i>`, `ip_k.<i>`, `ip_v.<i>` per transformer block i of the encoder
// (before dropout); `sample` (decoder with the reference), `sample_no_reference` (IP K/V only);
// `sample_lcm` with --lora (adapter "lora" at --lora-scale, with the reference).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/adapters/ip_adapter.h"
#include "model/adapters/kv_encoder.h"
#include "model/io/safetensors.h"
#include "model/run/model_runners.h"
#include "model/unet/unet_2d_condition.h"

namespace lookahead::model::run {

namespace {

unet::UNetInputs stream(const NamedTensors& in, const std::string& prefix, const std::string& file) {
  unet::UNetInputs x;
  x.sample = required_input(in, prefix + "sample", file);
  x.timestep = required_input(in, prefix + "timestep", file);
  x.encoder_hidden_states = required_input(in, prefix + "encoder_hidden_states", file);
  x.text_embeds = optional_input(in, prefix + "text_embeds");
  x.time_ids = optional_input(in, prefix + "time_ids");
  return x;
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

/// Ranks of the encoder LoRAs and the KV-head LoRAs, read off the trainables' lora_down shapes.
std::pair<int64_t, int64_t> trainable_ranks(const NamedTensors& tensors, const std::string& file) {
  int64_t rank = 0, kv_rank = 0;
  for (const auto& [key, t] : tensors) {
    if (!key.ends_with(".lora_down.weight")) continue;
    TORCH_CHECK(t.dim() == 2, file, ": '", key, "' must be a matrix, got ", t.sizes());
    int64_t& r = has(key, ".extract_kv1.") ? kv_rank : rank;
    TORCH_CHECK(r == 0 || r == t.size(0), file, ": LoRAs of different ranks (", r, " and ", t.size(0), " at '", key, "')");
    r = t.size(0);
  }
  TORCH_CHECK(rank > 0 && kv_rank > 0, file, ": not a KV-encoder trainables file (needs encoder LoRA and ",
              "'.extract_kv1.' KV-head LoRA keys)");
  return {rank, kv_rank};
}

}  // namespace

/// Runs the KV encoder and the decoder as described in this file's header.
int run_kv_network(const NetworkRun& o) {
  TORCH_CHECK(o.model == "kv-encoder", "run_kv_network: unsupported model '", o.model, "'");
  TORCH_CHECK(!o.ip_adapter.empty(), "--model kv-encoder needs --ip-adapter (the IP K/V come from its to_k_ip/to_v_ip)");
  TORCH_CHECK(!o.encoder_weights.empty(), "--model kv-encoder needs --encoder-weights");
  unet::UNet2DConditionModel unet = load_unet(o);
  adapters::IpAdapter ip = attach_ip_adapter(unet, o);

  auto trainables = io::load_file(o.encoder_weights);
  auto [rank, kv_rank] = trainable_ranks(trainables, o.encoder_weights);
  adapters::KvEncoder encoder(unet, adapters::KvEncoderOptions().lora_rank(rank).kv_lora_rank(kv_rank));
  encoder.load_trainable(trainables, o.encoder_weights);
  {  // load_trainable ignores extra keys; a file for another layout must not pass silently.
    auto expected = encoder.trainable_parameters();
    for (const auto& [key, t] : trainables)
      TORCH_CHECK(expected.count(key), o.encoder_weights, ": unexpected KV-encoder tensor '", key, "'");
  }
  std::cerr << "model run: " << o.encoder_weights << ": " << encoder.block_paths().size() << " blocks, "
            << encoder.lora_layer_paths().size() << " LoRA layers, rank " << rank << " / KV rank " << kv_rank << "\n";
  unet->eval();

  auto in = io::load_file(o.inputs);
  at::NoGradGuard no_grad;
  unet::UNetInputs ref = stream(in, "ref_", o.inputs);
  unet::UNetInputs tgt = stream(in, "", o.inputs);
  at::Tensor ip_tokens = ip->image_tokens(required_input(in, "image_embeds", o.inputs).to(o.dtype));
  nn::ReferenceKv kv = encoder.forward(ref, ip_tokens);

  NamedOutputs outputs;
  auto output = [&](const std::string& name, const at::Tensor& t) { outputs.emplace_back(name, float_output(t)); };
  for (size_t i = 0; i < kv.blocks.size(); ++i) {
    const auto& b = kv.blocks[i];
    const std::string idx = std::to_string(i);
    if (b.k.defined()) output("ref_k." + idx, b.k);
    if (b.v.defined()) output("ref_v." + idx, b.v);
    if (b.ip_k.defined()) output("ip_k." + idx, b.ip_k);
    if (b.ip_v.defined()) output("ip_v." + idx, b.ip_v);
  }

  nn::ReferenceKv used = kv;
  at::Tensor drop_p = optional_input(in, "drop_p");
  if (drop_p.defined()) {
    const int64_t seed = required_input(in, "drop_seed", o.inputs).item<int64_t>();
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seed));
    used = kv.drop_tokens(drop_p.item<double>(), gen);
    std::cerr << "model run: reference-token dropout p " << drop_p.item<double>() << ", seed " << seed << "\n";
  }
  auto decode = [&](nn::ReferenceKv reference, std::vector<std::string> adapters) {
    unet::UNetInputs x = tgt;
    x.ip_tokens = ip_tokens;  // blocks outside the encoder's range use the image tokens themselves
    x.ip_scale = o.ip_scale;
    x.reference = std::make_shared<const nn::ReferenceKv>(std::move(reference));
    x.adapters = std::move(adapters);
    return unet->forward(x);
  };
  output("sample", decode(used, {}));
  output("sample_no_reference", decode(kv.without_reference(), {}));
  if (!o.lora.empty()) output("sample_lcm", decode(used, {"lora"}));

  io::save_file(o.out, outputs);
  std::cerr << "model run: wrote " << o.out << " (" << outputs.size() << " tensors, " << kv.blocks.size()
            << " blocks)\n";
  return 0;
}

}  // namespace lookahead::model::run
