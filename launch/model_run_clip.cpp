// `lookahead model run --model clip-text|clip-vision`: CLIP encoders (transformers layout) on
// named tensors. clip-text (SDXL text_encoder / text_encoder_2): input `input_ids` int64 [B, 77]
// -> `last_hidden_state`, `penultimate_hidden_state` (hidden_states[-2], what SDXL conditions on),
// `pooler_output`, and `text_embeds` when the weights carry `text_projection`. clip-vision (the
// IP-Adapter image encoder): input `pixel_values` [B, 3, 224, 224] (already normalized) or `image`
// [B, 3, H, W] in [0, 1] (CLIP-preprocessed here) -> `last_hidden_state`,
// `penultimate_hidden_state`, `pooler_output`, and `image_embeds` with `visual_projection`.
#include <ATen/ATen.h>

#include <iostream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "launch/cli.h"
#include "launch/model_runners.h"
#include "model/io/safetensors.h"
#include "model/io/state_dict.h"
#include "model/text/clip_text.h"
#include "model/vision/clip_vision.h"

namespace lookahead::launch {

namespace {

at::Tensor clip_output(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

std::vector<std::pair<std::string, at::Tensor>> run_text(const NetworkRun& run,
                                                         const std::map<std::string, at::Tensor>& inputs) {
  auto it = inputs.find("input_ids");
  TORCH_CHECK(it != inputs.end(), run.inputs, ": needs an input tensor 'input_ids' [B, 77] (int64)");
  const at::Tensor ids = it->second.to(at::kLong);
  TORCH_CHECK(ids.dim() == 2, run.inputs, ": input_ids must be [B, S], got ", ids.sizes());
  const auto config = model::text::ClipTextConfig::from_file(run.config);
  auto weights = model::text::normalize_clip_text_keys(model::io::load_file(run.weights));
  const bool with_projection = weights.count("text_projection.weight") > 0;
  model::text::ClipTextModel encoder(config, with_projection, at::TensorOptions().dtype(run.dtype));
  auto report = model::text::load_clip_text_weights(encoder, weights, run.weights);
  std::cerr << "model run: " << run.weights << ": " << report.summary() << "\n";
  encoder->eval();
  at::NoGradGuard no_grad;
  const model::text::ClipTextOutput out = encoder->forward(ids);
  std::vector<std::pair<std::string, at::Tensor>> outputs;
  outputs.emplace_back("last_hidden_state", clip_output(out.last_hidden_state));
  outputs.emplace_back("penultimate_hidden_state", clip_output(out.penultimate_hidden_state));
  outputs.emplace_back("pooler_output", clip_output(out.pooler_output));
  if (with_projection) outputs.emplace_back("text_embeds", clip_output(out.text_embeds));
  return outputs;
}

std::vector<std::pair<std::string, at::Tensor>> run_vision(const NetworkRun& run,
                                                           const std::map<std::string, at::Tensor>& inputs) {
  at::Tensor pixels;
  if (auto it = inputs.find("pixel_values"); it != inputs.end()) {
    pixels = it->second;
  } else if (auto image = inputs.find("image"); image != inputs.end()) {
    pixels = model::vision::clip_preprocess(image->second);
  }
  TORCH_CHECK(pixels.defined(), run.inputs, ": needs an input tensor 'pixel_values' [B, 3, 224, 224] or 'image' ",
              "[B, 3, H, W] in [0, 1]");
  auto config = model::vision::ClipVisionConfig::from_file(run.config);
  auto weights = model::vision::drop_position_ids(model::io::load_file(run.weights));
  const bool with_projection = weights.count("visual_projection.weight") > 0;
  model::vision::ClipVisionModel encoder(config, with_projection, at::TensorOptions().dtype(run.dtype));
  auto report = model::io::load_state_dict(*encoder, weights, run.weights);
  std::cerr << "model run: " << run.weights << ": " << report.summary() << "\n";
  encoder->eval();
  at::NoGradGuard no_grad;
  const model::vision::ClipVisionOutput out = encoder->forward(pixels.to(run.dtype));
  std::vector<std::pair<std::string, at::Tensor>> outputs;
  outputs.emplace_back("last_hidden_state", clip_output(out.last_hidden_state));
  outputs.emplace_back("penultimate_hidden_state", clip_output(out.penultimate_hidden_state));
  outputs.emplace_back("pooler_output", clip_output(out.pooler_output));
  if (with_projection) outputs.emplace_back("image_embeds", clip_output(out.image_embeds));
  return outputs;
}

}  // namespace

/// Runs the CLIP text or vision encoder of `run.config` / `run.weights` on `run.inputs`, writing the
/// outputs described in this file's header to `run.out`.
int run_clip_network(const NetworkRun& run) {
  TORCH_CHECK(run.model == "clip-text" || run.model == "clip-vision", "run_clip_network: unsupported model '",
              run.model, "' (supported: clip-text, clip-vision)");
  const auto inputs = model::io::load_file(run.inputs);
  const auto outputs = run.model == "clip-text" ? run_text(run, inputs) : run_vision(run, inputs);
  model::io::save_file(run.out, outputs);
  std::cerr << "model run: wrote " << run.out << " (";
  for (size_t i = 0; i < outputs.size(); ++i)
    std::cerr << (i ? ", " : "") << outputs[i].first << " " << outputs[i].second.sizes();
  std::cerr << ")\n";
  return kExitOk;
}

}  // namespace lookahead::launch
