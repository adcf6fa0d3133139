// Parsing and validation of diffusers UNet2DConditionModel configs.
#include "model/unet/unet_config.h"

#include <c10/util/Exception.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace lookahead::model::unet {

using json = nlohmann::json;

namespace {

// int or list -> list of `n` values (diffusers accepts both).
std::vector<int64_t> per_block(const json& j, const char* key, size_t n, const std::string& origin) {
  const json& v = j.at(key);
  if (v.is_number_integer()) return std::vector<int64_t>(n, v.get<int64_t>());
  TORCH_CHECK(v.is_array(), origin, ": '", key, "' must be an integer or a list of integers");
  TORCH_CHECK(v.size() == n, origin, ": '", key, "' has ", v.size(), " entries but there are ", n, " down blocks");
  std::vector<int64_t> out;
  for (const auto& e : v) {
    TORCH_CHECK(e.is_number_integer(), origin, ": '", key, "' must hold integers (nested lists are not supported)");
    out.push_back(e.get<int64_t>());
  }
  return out;
}

template <typename T>
T get_or(const json& j, const char* key, T fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return it->get<T>();
}

void require_null_or(const json& j, const char* key, const json& allowed, const std::string& origin) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null() || *it == allowed) return;
  TORCH_CHECK(false, origin, ": unsupported '", key, "' = ", it->dump(), " (supported: null or ", allowed.dump(), ")");
}

}  // namespace

UNetConfig UNetConfig::sdxl_base() {
  UNetConfig c;
  c.block_out_channels = {320, 640, 1280};
  c.down_block_types = {"DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"};
  c.up_block_types = {"CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"};
  c.layers_per_block = {2, 2, 2};
  c.transformer_layers_per_block = {1, 2, 10};
  c.reverse_transformer_layers_per_block = {10, 2, 1};
  c.num_attention_heads = {5, 10, 20};
  c.cross_attention_dim = {2048, 2048, 2048};
  return c;
}

UNetConfig UNetConfig::from_json(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    TORCH_CHECK(false, origin, ": not valid JSON: ", e.what());
  }
  TORCH_CHECK(j.is_object(), origin, ": a UNet config must be a JSON object");
  try {
    auto cls = get_or<std::string>(j, "_class_name", "UNet2DConditionModel");
    TORCH_CHECK(cls == "UNet2DConditionModel", origin, ": '_class_name' is ", cls, ", expected UNet2DConditionModel");
    UNetConfig c;
    c.in_channels = get_or<int64_t>(j, "in_channels", 4);
    c.out_channels = get_or<int64_t>(j, "out_channels", 4);
    c.block_out_channels = j.at("block_out_channels").get<std::vector<int64_t>>();
    c.down_block_types = j.at("down_block_types").get<std::vector<std::string>>();
    c.up_block_types = j.at("up_block_types").get<std::vector<std::string>>();
    const size_t n = c.block_out_channels.size();
    TORCH_CHECK(n > 0 && c.down_block_types.size() == n && c.up_block_types.size() == n, origin,
                ": block_out_channels, down_block_types and up_block_types must have the same length");
    for (const auto& t : c.down_block_types)
      TORCH_CHECK(t == "DownBlock2D" || t == "CrossAttnDownBlock2D", origin, ": unsupported down block type '", t, "'");
    for (const auto& t : c.up_block_types)
      TORCH_CHECK(t == "UpBlock2D" || t == "CrossAttnUpBlock2D", origin, ": unsupported up block type '", t, "'");
    c.mid_block_type = get_or<std::string>(j, "mid_block_type", "UNetMidBlock2DCrossAttn");
    TORCH_CHECK(c.mid_block_type == "UNetMidBlock2DCrossAttn", origin, ": unsupported mid_block_type '",
                c.mid_block_type, "'");
    c.layers_per_block = per_block(j, "layers_per_block", n, origin);
    c.transformer_layers_per_block =
        j.contains("transformer_layers_per_block") ? per_block(j, "transformer_layers_per_block", n, origin)
                                                   : std::vector<int64_t>(n, 1);
    if (j.contains("reverse_transformer_layers_per_block") && !j["reverse_transformer_layers_per_block"].is_null())
      c.reverse_transformer_layers_per_block = per_block(j, "reverse_transformer_layers_per_block", n, origin);
    else
      c.reverse_transformer_layers_per_block.assign(c.transformer_layers_per_block.rbegin(),
                                                    c.transformer_layers_per_block.rend());
    // diffusers quirk: `attention_head_dim` holds head counts unless num_attention_heads is given.
    const char* heads_key =
        j.contains("num_attention_heads") && !j["num_attention_heads"].is_null() ? "num_attention_heads"
                                                                                : "attention_head_dim";
    c.num_attention_heads = per_block(j, heads_key, n, origin);
    c.cross_attention_dim = per_block(j, "cross_attention_dim", n, origin);
    c.norm_num_groups = get_or<int64_t>(j, "norm_num_groups", 32);
    c.norm_eps = get_or<double>(j, "norm_eps", 1e-5);
    c.flip_sin_to_cos = get_or<bool>(j, "flip_sin_to_cos", true);
    c.freq_shift = get_or<double>(j, "freq_shift", 0.0);
    c.downsample_padding = get_or<int64_t>(j, "downsample_padding", 1);
    c.mid_block_scale_factor = get_or<double>(j, "mid_block_scale_factor", 1.0);
    c.resnet_out_scale_factor = get_or<double>(j, "resnet_out_scale_factor", 1.0);
    c.use_linear_projection = get_or<bool>(j, "use_linear_projection", false);
    c.center_input_sample = get_or<bool>(j, "center_input_sample", false);
    c.conv_in_kernel = get_or<int64_t>(j, "conv_in_kernel", 3);
    c.conv_out_kernel = get_or<int64_t>(j, "conv_out_kernel", 3);
    c.addition_embed_type = get_or<std::string>(j, "addition_embed_type", "");
    TORCH_CHECK(c.addition_embed_type.empty() || c.addition_embed_type == "text_time", origin,
                ": unsupported addition_embed_type '", c.addition_embed_type, "'");
    c.addition_time_embed_dim = get_or<int64_t>(j, "addition_time_embed_dim", 256);
    c.projection_class_embeddings_input_dim = get_or<int64_t>(j, "projection_class_embeddings_input_dim", 0);
    TORCH_CHECK(c.addition_embed_type.empty() || c.projection_class_embeddings_input_dim > 0, origin,
                ": text_time conditioning needs projection_class_embeddings_input_dim");
    TORCH_CHECK(get_or<std::string>(j, "act_fn", "silu") == "silu", origin, ": only act_fn 'silu' is supported");
    TORCH_CHECK(get_or<std::string>(j, "time_embedding_type", "positional") == "positional", origin,
                ": only time_embedding_type 'positional' is supported");
    TORCH_CHECK(get_or<std::string>(j, "resnet_time_scale_shift", "default") == "default", origin,
                ": only resnet_time_scale_shift 'default' is supported");
    TORCH_CHECK(!get_or<bool>(j, "upcast_attention", false), origin, ": upcast_attention is not supported");
    TORCH_CHECK(!get_or<bool>(j, "dual_cross_attention", false), origin, ": dual_cross_attention is not supported");
    auto only_cross = j.find("only_cross_attention");
    TORCH_CHECK(only_cross == j.end() || only_cross->is_null() || *only_cross == false, origin,
                ": only_cross_attention is not supported");
    for (const char* key : {"class_embed_type", "encoder_hid_dim", "encoder_hid_dim_type", "time_cond_proj_dim",
                            "num_class_embeds", "time_embedding_dim", "time_embedding_act_fn", "timestep_post_act",
                            "cross_attention_norm", "mid_block_only_cross_attention", "attention_type"})
      require_null_or(j, key, key == std::string("attention_type") ? json("default") : json(nullptr), origin);
    for (size_t i = 0; i < n; ++i) {
      TORCH_CHECK(c.block_out_channels[i] % c.norm_num_groups == 0, origin, ": block_out_channels[", i, "] = ",
                  c.block_out_channels[i], " is not divisible by norm_num_groups = ", c.norm_num_groups);
      TORCH_CHECK(c.num_attention_heads[i] > 0 && c.block_out_channels[i] % c.num_attention_heads[i] == 0, origin,
                  ": block_out_channels[", i, "] = ", c.block_out_channels[i], " does not split into ",
                  c.num_attention_heads[i], " heads");
      TORCH_CHECK(c.layers_per_block[i] > 0, origin, ": layers_per_block must be positive");
    }
    return c;
  } catch (const json::exception& e) {
    TORCH_CHECK(false, origin, ": malformed UNet config: ", e.what());
  }
}

UNetConfig UNetConfig::from_file(const std::string& path) {
  std::ifstream in(path);
  TORCH_CHECK(in, "cannot open UNet config '", path, "'");
  std::stringstream text;
  text << in.rdbuf();
  return from_json(text.str(), path);
}

std::string UNetConfig::to_json() const {
  json j;
  j["_class_name"] = "UNet2DConditionModel";
  j["in_channels"] = in_channels;
  j["out_channels"] = out_channels;
  j["block_out_channels"] = block_out_channels;
  j["down_block_types"] = down_block_types;
  j["up_block_types"] = up_block_types;
  j["mid_block_type"] = mid_block_type;
  j["layers_per_block"] = layers_per_block;
  j["transformer_layers_per_block"] = transformer_layers_per_block;
  j["reverse_transformer_layers_per_block"] = reverse_transformer_layers_per_block;
  j["num_attention_heads"] = num_attention_heads;
  j["attention_head_dim"] = num_attention_heads;
  j["cross_attention_dim"] = cross_attention_dim;
  j["norm_num_groups"] = norm_num_groups;
  j["norm_eps"] = norm_eps;
  j["flip_sin_to_cos"] = flip_sin_to_cos;
  j["freq_shift"] = freq_shift;
  j["downsample_padding"] = downsample_padding;
  j["mid_block_scale_factor"] = mid_block_scale_factor;
  j["resnet_out_scale_factor"] = resnet_out_scale_factor;
  j["use_linear_projection"] = use_linear_projection;
  j["center_input_sample"] = center_input_sample;
  j["conv_in_kernel"] = conv_in_kernel;
  j["conv_out_kernel"] = conv_out_kernel;
  j["act_fn"] = "silu";
  if (addition_embed_type.empty()) {
    j["addition_embed_type"] = nullptr;
  } else {
    j["addition_embed_type"] = addition_embed_type;
    j["addition_time_embed_dim"] = addition_time_embed_dim;
    j["projection_class_embeddings_input_dim"] = projection_class_embeddings_input_dim;
  }
  return j.dump(2);
}

}  // namespace lookahead::model::unet
