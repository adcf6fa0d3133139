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

#include "model/io/safetensors.h"
#include "model/io/state_dict.h"
#include "model/run/model_runners.h"
#include "model/text/clip_text.h"
#include "model/vision/clip_vision.h"

namespace lookahead::model::run {

namespace {

NamedOutputs run_text(const NetworkRun& run, const NamedTensors& inputs) {
  auto it = inputs.find("input_ids");
  TORCH_CHECK(it != inputs.end(), run.inputs, ": needs an input tensor 'input_ids' [B, 77] (int64)");
  const at::Tensor ids = it->second.to(at::kLong);
  TORCH_CHECK(ids.dim() == 2, run.inputs, ": input_ids must be [B, S], got ", ids.sizes());
  const auto config = text::ClipTextConfig::from_file(run.config);
  auto weights = text::normalize_clip_text_keys(io::load_file(run.weights));
  const bool with_projection = weights.count("text_projection.weight") > 0;
  text::ClipTextModel encoder(config, with_projection, at::TensorOptions().dtype(run.dtype));
  auto report = text::load_clip_text_weights(encoder, weights, run.weights);
  std::cerr << "model run: " << run.weights << ": " << report.summary() << "\n";
  encoder->eval();
  at::NoGradGuard no_grad;
  const text::ClipTextOutput out = encoder->forward(ids);
  NamedOutputs outputs;
  outputs.emplace_back("last_hidden_state", float_output(out.last_hidden_state));
  outputs.emplace_back("penultimate_hidden_state", float_output(out.penultimate_hidden_state));
  outputs.emplace_back("pooler_output", float_output(out.pooler_output));
  if (with_projection) outputs.emplace_back("text_embeds", float_output(out.text_embeds));
  return outputs;
}

NamedOutputs run_vision(const NetworkRun& run, const NamedTensors& inputs) {
  at::Tensor pixels;
  if (auto it = inputs.find("pixel_values"); it != inputs.end()) {
    pixels = it->second;
  } else if (auto image = inputs.find("image"); image != inputs.end()) {
    pixels = vision::clip_preprocess(image->second);
  }
  TORCH_CHECK(pixels.defined(), run.inputs, ": needs an input tensor 'pixel_values' [B, 3, 224, 224] or 'image' ",
              "[B, 3, H, W] in [0, 1]");
  auto config = vision::ClipVisionConfig::from_file(run.config);
  auto weights = vision::drop_position_ids(io::load_file(run.weights));
  const bool with_projection = weights.count("visual_projection.weight") > 0;
  vision::ClipVisionModel encoder(config, with_projection, at::TensorOptions().dtype(run.dtype));
  auto report = io::load_state_dict(*encoder, weights, run.weights);
  std::cerr << "model run: " << run.weights << ": " << report.summary() << "\n";
  encoder->eval();
  at::NoGradGuard no_grad;
  const vision::ClipVisionOutput out = encoder->forward(pixels.to(run.dtype));
  NamedOutputs outputs;
  outputs.emplace_back("last_hidden_state", float_output(out.last_hidden_state));
  outputs.emplace_back("penultimate_hidden_state", float_output(out.penultimate_hidden_state));
  outputs.emplace_back("pooler_output", float_output(out.pooler_output));
  if (with_projection) outputs.emplace_back("image_embeds", float_output(out.image_embeds));
  return outputs;
}

}  // namespace

/// Runs the CLIP text or vision encoder of `run.config` / `run.weights` on `run.inputs`, writing the
/// outputs described in this file's header to `run.out`.
int run_clip_network(const NetworkRun& run) {
  TORCH_CHECK(run.model == "clip-text" || run.model == "clip-vision", "run_clip_network: unsupported model '",
              run.model, "' (supported: clip-text, clip-vision)");
  const auto inputs = io::load_file(run.inputs);
  const auto outputs = run.model == "clip-text" ? run_text(run, inputs) : run_vision(run, inputs);
  write_outputs(run.out, outputs);
  return 0;
}

}  // namespace lookahead::model::run
