// Parsing and validation of diffusers UNet2DConditionModel configs.
#include "model/unet/unet_config.h"

#include <c10/util/Exception.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "model/io/config_json.h"
#include "model/io/config_keys.h"

namespace lookahead::model::unet {

using json = nlohmann::json;
using io::get_or;

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

// Every key of diffusers' UNet2DConditionModel.__init__ (0.42) plus the metadata diffusers writes.
// The block types this port builds are DownBlock2D / CrossAttnDownBlock2D, UpBlock2D /
// CrossAttnUpBlock2D and UNetMidBlock2DCrossAttn; keys diffusers only passes to other blocks are
// inert here (diffusers ignores them for these blocks too).
constexpr io::ConfigKey kKeys[] = {
    {"_class_name", io::KeyUse::kHonoured, nullptr, "must be UNet2DConditionModel"},
    {"_diffusers_version", io::KeyUse::kMetadata, nullptr, "the writer's version"},
    {"_name_or_path", io::KeyUse::kMetadata, nullptr, "where the config was loaded from"},
    {"sample_size", io::KeyUse::kMetadata, nullptr, "pipelines' default resolution; the forward takes any size"},
    {"in_channels", io::KeyUse::kHonoured, nullptr, "conv_in input channels"},
    {"out_channels", io::KeyUse::kHonoured, nullptr, "conv_out output channels"},
    {"center_input_sample", io::KeyUse::kHonoured, nullptr, "sample -> 2 * sample - 1"},
    {"flip_sin_to_cos", io::KeyUse::kHonoured, nullptr, "sinusoidal embedding order"},
    {"freq_shift", io::KeyUse::kHonoured, nullptr, "sinusoidal embedding frequency shift"},
    {"down_block_types", io::KeyUse::kHonoured, nullptr,
     "DownBlock2D | CrossAttnDownBlock2D (a UNetRes prefix is dropped, as diffusers does); others are refused"},
    {"mid_block_type", io::KeyUse::kHonoured, nullptr, "UNetMidBlock2DCrossAttn; null and others are refused"},
    {"up_block_types", io::KeyUse::kHonoured, nullptr,
     "UpBlock2D | CrossAttnUpBlock2D (a UNetRes prefix is dropped, as diffusers does); others are refused"},
    {"only_cross_attention", io::KeyUse::kDefaultOnly, "false", "attn1 attending to the text instead of the image"},
    {"block_out_channels", io::KeyUse::kHonoured, nullptr, "channels per block"},
    {"layers_per_block", io::KeyUse::kHonoured, nullptr, "resnets per down block (int or per-block list)"},
    {"downsample_padding", io::KeyUse::kHonoured, nullptr, "downsampler padding (0: diffusers' asymmetric pad)"},
    {"mid_block_scale_factor", io::KeyUse::kHonoured, nullptr, "the mid block's resnet output_scale_factor"},
    {"dropout", io::KeyUse::kDefaultOnly, "0.0", "resnet and feed-forward dropout, active while training"},
    {"act_fn", io::KeyUse::kDefaultOnly, "\"silu\"", "resnet and time-embedding activation"},
    {"norm_num_groups", io::KeyUse::kHonoured, nullptr, "GroupNorm groups (null is refused: diffusers' blocks need it)"},
    {"norm_eps", io::KeyUse::kHonoured, nullptr, "GroupNorm epsilon"},
    {"cross_attention_dim", io::KeyUse::kHonoured, nullptr, "text context width (int or per-block list)"},
    {"transformer_layers_per_block", io::KeyUse::kHonoured, nullptr,
     "transformer depth per down block (int or list; nested per-layer lists are refused)"},
    {"reverse_transformer_layers_per_block", io::KeyUse::kHonoured, nullptr,
     "transformer depth per up block (null: the reversed down depths; nested lists are refused)"},
    {"encoder_hid_dim", io::KeyUse::kDefaultOnly, "null", "a projection of encoder_hidden_states"},
    {"encoder_hid_dim_type", io::KeyUse::kDefaultOnly, "null", "a projection of encoder_hidden_states"},
    {"attention_head_dim", io::KeyUse::kHonoured, nullptr,
     "diffusers' quirk: the number of heads per block when num_attention_heads is null"},
    {"num_attention_heads", io::KeyUse::kHonoured, nullptr,
     "heads per block (diffusers 0.42 raises for a non-null value; read as the head count it names)"},
    {"dual_cross_attention", io::KeyUse::kDefaultOnly, "false", "DualTransformer2DModel"},
    {"use_linear_projection", io::KeyUse::kHonoured, nullptr, "Linear instead of 1x1 Conv proj_in/proj_out"},
    {"class_embed_type", io::KeyUse::kDefaultOnly, "null", "class embeddings added to the time embedding"},
    {"addition_embed_type", io::KeyUse::kHonoured, nullptr, "null | text_time (SDXL); others are refused"},
    {"addition_time_embed_dim", io::KeyUse::kHonoured, nullptr, "text_time: sinusoidal width per time id"},
    {"num_class_embeds", io::KeyUse::kDefaultOnly, "null", "a class-embedding table"},
    {"upcast_attention", io::KeyUse::kDefaultOnly, "false", "float32 attention scores"},
    {"resnet_time_scale_shift", io::KeyUse::kDefaultOnly, "\"default\"", "scale-shift time conditioning"},
    {"resnet_skip_time_act", io::KeyUse::kInert, nullptr,
     "diffusers passes it only to ResnetDownsample/SimpleCrossAttn blocks and the simple mid block"},
    {"resnet_out_scale_factor", io::KeyUse::kInert, nullptr,
     "diffusers passes it only to ResnetDownsample/SimpleCrossAttn blocks; DownBlock2D, CrossAttn*Block2D and "
     "UpBlock2D keep output_scale_factor 1"},
    {"time_embedding_type", io::KeyUse::kDefaultOnly, "\"positional\"", "Fourier time embedding"},
    {"time_embedding_dim", io::KeyUse::kDefaultOnly, "null", "a time-embedding width other than 4 * channels"},
    {"time_embedding_act_fn", io::KeyUse::kDefaultOnly, "null", "an activation after the time embedding"},
    {"timestep_post_act", io::KeyUse::kDefaultOnly, "null", "an activation inside the time embedding"},
    {"time_cond_proj_dim", io::KeyUse::kDefaultOnly, "null", "LCM guidance-scale conditioning (w embedding)"},
    {"conv_in_kernel", io::KeyUse::kHonoured, nullptr, "conv_in kernel (padding (k - 1) / 2)"},
    {"conv_out_kernel", io::KeyUse::kHonoured, nullptr, "conv_out kernel (padding (k - 1) / 2)"},
    {"projection_class_embeddings_input_dim", io::KeyUse::kHonoured, nullptr,
     "text_time: add_embedding input width (unused without text_time, as in diffusers)"},
    {"attention_type", io::KeyUse::kDefaultOnly, "\"default\"", "GLIGEN gated attention"},
    {"class_embeddings_concat", io::KeyUse::kDefaultOnly, "false",
     "doubles every resnet's time-embedding width"},
    {"mid_block_only_cross_attention", io::KeyUse::kInert, nullptr,
     "diffusers passes it only to UNetMidBlock2DSimpleCrossAttn"},
    {"cross_attention_norm", io::KeyUse::kInert, nullptr,
     "diffusers passes it only to SimpleCrossAttn blocks"},
    {"addition_embed_type_num_heads", io::KeyUse::kInert, nullptr,
     "diffusers reads it only for addition_embed_type 'text'"},
};

// diffusers' get_down_block / get_up_block drop a leading "UNetRes".
std::string block_type(std::string t) { return t.rfind("UNetRes", 0) == 0 ? t.substr(7) : t; }

}  // namespace

io::ConfigKeyTable UNetConfig::keys() { return kKeys; }

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
    auto cls = get_or<std::string>(j, "_class_name", "UNet2DConditionModel", origin);
    TORCH_CHECK(cls == "UNet2DConditionModel", origin, ": '_class_name' is ", cls, ", expected UNet2DConditionModel");
    io::refuse_unsupported(j, kKeys, origin);
    UNetConfig c;
    c.in_channels = get_or<int64_t>(j, "in_channels", 4, origin);
    c.out_channels = get_or<int64_t>(j, "out_channels", 4, origin);
    c.block_out_channels = j.at("block_out_channels").get<std::vector<int64_t>>();
    for (const char* key : {"down_block_types", "up_block_types"})
      TORCH_CHECK(j.contains(key) && j[key].is_array(), origin, ": ", key, " must be a list of block types");
    for (const auto& t : j["down_block_types"]) c.down_block_types.push_back(block_type(t.get<std::string>()));
    for (const auto& t : j["up_block_types"]) c.up_block_types.push_back(block_type(t.get<std::string>()));
    const size_t n = c.block_out_channels.size();
    TORCH_CHECK(n > 0 && c.down_block_types.size() == n && c.up_block_types.size() == n, origin,
                ": block_out_channels, down_block_types and up_block_types must have the same length");
    for (const auto& t : c.down_block_types)
      TORCH_CHECK(t == "DownBlock2D" || t == "CrossAttnDownBlock2D", origin, ": down_block_types entry '", t,
                  "' is not supported (DownBlock2D | CrossAttnDownBlock2D)");
    for (const auto& t : c.up_block_types)
      TORCH_CHECK(t == "UpBlock2D" || t == "CrossAttnUpBlock2D", origin, ": up_block_types entry '", t,
                  "' is not supported (UpBlock2D | CrossAttnUpBlock2D)");
    // null is not the default here: diffusers builds no mid block at all.
    auto mid = j.find("mid_block_type");
    TORCH_CHECK(mid == j.end() || *mid == "UNetMidBlock2DCrossAttn", origin, ": mid_block_type = ",
                mid == j.end() ? "" : mid->dump(), " is not supported (only \"UNetMidBlock2DCrossAttn\")");
    c.mid_block_type = "UNetMidBlock2DCrossAttn";
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
    TORCH_CHECK(!j.contains("norm_num_groups") || !j["norm_num_groups"].is_null(), origin,
                ": norm_num_groups = null is not supported (diffusers' resnet blocks need a group count)");
    c.norm_num_groups = get_or<int64_t>(j, "norm_num_groups", 32, origin);
    c.norm_eps = get_or<double>(j, "norm_eps", 1e-5, origin);
    c.flip_sin_to_cos = get_or<bool>(j, "flip_sin_to_cos", true, origin);
    c.freq_shift = get_or<double>(j, "freq_shift", 0.0, origin);
    c.downsample_padding = get_or<int64_t>(j, "downsample_padding", 1, origin);
    c.mid_block_scale_factor = get_or<double>(j, "mid_block_scale_factor", 1.0, origin);
    c.use_linear_projection = get_or<bool>(j, "use_linear_projection", false, origin);
    c.center_input_sample = get_or<bool>(j, "center_input_sample", false, origin);
    c.conv_in_kernel = get_or<int64_t>(j, "conv_in_kernel", 3, origin);
    c.conv_out_kernel = get_or<int64_t>(j, "conv_out_kernel", 3, origin);
    c.addition_embed_type = get_or<std::string>(j, "addition_embed_type", "", origin);
    TORCH_CHECK(c.addition_embed_type.empty() || c.addition_embed_type == "text_time", origin,
                ": addition_embed_type = \"", c.addition_embed_type, "\" is not supported (null | \"text_time\")");
    // diffusers' default is null, which its text_time embedding cannot run with: no value is made up here.
    TORCH_CHECK(c.addition_embed_type.empty() || (j.contains("addition_time_embed_dim") &&
                                                  !j["addition_time_embed_dim"].is_null()),
                origin, ": text_time conditioning needs addition_time_embed_dim");
    c.addition_time_embed_dim = get_or<int64_t>(j, "addition_time_embed_dim", 256, origin);
    c.projection_class_embeddings_input_dim = get_or<int64_t>(j, "projection_class_embeddings_input_dim", 0, origin);
    TORCH_CHECK(c.addition_embed_type.empty() || c.projection_class_embeddings_input_dim > 0, origin,
                ": text_time conditioning needs projection_class_embeddings_input_dim");
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
  // diffusers raises for a non-null num_attention_heads: the head counts go where it reads them.
  j["attention_head_dim"] = num_attention_heads;
  j["cross_attention_dim"] = cross_attention_dim;
  j["norm_num_groups"] = norm_num_groups;
  j["norm_eps"] = norm_eps;
  j["flip_sin_to_cos"] = flip_sin_to_cos;
  j["freq_shift"] = freq_shift;
  j["downsample_padding"] = downsample_padding;
  j["mid_block_scale_factor"] = mid_block_scale_factor;
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
