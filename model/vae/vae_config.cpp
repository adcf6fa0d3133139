// Parsing and validation of diffusers AutoencoderTiny and AutoencoderKL configs.
#include "model/vae/vae_config.h"

#include <c10/util/Exception.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "model/io/config_json.h"
#include "model/io/config_keys.h"

namespace lookahead::model::vae {

using json = nlohmann::json;
using io::get_or;

namespace {

json parse_object(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    TORCH_CHECK(false, origin, ": not valid JSON: ", e.what());
  }
  TORCH_CHECK(j.is_object(), origin, ": an autoencoder config must be a JSON object");
  return j;
}

std::string read_text(const std::string& path, const char* what) {
  std::ifstream in(path);
  TORCH_CHECK(in, "cannot open ", what, " config '", path, "'");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<int64_t> int_list(const json& j, const char* key, std::vector<int64_t> fallback, const std::string& origin) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  TORCH_CHECK(it->is_array(), origin, ": '", key, "' must be a list of integers");
  std::vector<int64_t> out;
  for (const auto& e : *it) {
    TORCH_CHECK(e.is_number_integer(), origin, ": '", key, "' must hold integers");
    out.push_back(e.get<int64_t>());
  }
  return out;
}

void check_activation(const std::string& act, const std::string& origin) {
  TORCH_CHECK(act == "relu" || act == "silu" || act == "swish" || act == "gelu" || act == "mish", origin,
              ": unsupported 'act_fn' = '", act, "' (supported: relu, silu, swish, gelu, mish)");
}

void check_class(const json& j, const char* expected, const std::string& origin) {
  auto cls = get_or<std::string>(j, "_class_name", expected, origin);
  TORCH_CHECK(cls == expected, origin, ": '_class_name' is ", cls, ", expected ", expected);
}

void check_positive(const std::vector<int64_t>& v, const char* key, const std::string& origin) {
  TORCH_CHECK(!v.empty(), origin, ": '", key, "' must not be empty");
  for (int64_t x : v) TORCH_CHECK(x > 0, origin, ": '", key, "' must hold positive integers");
}

// Every key of diffusers' AutoencoderTiny.__init__ (0.42) plus the metadata diffusers writes.
constexpr io::ConfigKey kTinyKeys[] = {
    {"_class_name", io::KeyUse::kHonoured, nullptr, "must be AutoencoderTiny"},
    {"_diffusers_version", io::KeyUse::kMetadata, nullptr, "the writer's version"},
    {"_name_or_path", io::KeyUse::kMetadata, nullptr, "where the config was loaded from"},
    {"in_channels", io::KeyUse::kHonoured, nullptr, "image channels"},
    {"out_channels", io::KeyUse::kHonoured, nullptr, "decoded image channels"},
    {"encoder_block_out_channels", io::KeyUse::kHonoured, nullptr, "encoder widths (all equal, as diffusers can run)"},
    {"decoder_block_out_channels", io::KeyUse::kHonoured, nullptr, "decoder widths (all equal, as diffusers can run)"},
    {"act_fn", io::KeyUse::kHonoured, nullptr, "block activation: relu | silu | swish | gelu | mish"},
    {"upsample_fn", io::KeyUse::kHonoured, nullptr, "decoder upsampling mode: nearest; others are refused"},
    {"latent_channels", io::KeyUse::kHonoured, nullptr, "latent channels"},
    {"upsampling_scaling_factor", io::KeyUse::kHonoured, nullptr, "decoder upsampling factor"},
    {"num_encoder_blocks", io::KeyUse::kHonoured, nullptr, "blocks per encoder stage"},
    {"num_decoder_blocks", io::KeyUse::kHonoured, nullptr, "blocks per decoder stage"},
    {"latent_magnitude", io::KeyUse::kHonoured, nullptr, "8-bit latent packing (scale_latents / unscale_latents)"},
    {"latent_shift", io::KeyUse::kHonoured, nullptr, "8-bit latent packing (scale_latents / unscale_latents)"},
    {"force_upcast", io::KeyUse::kMetadata, nullptr,
     "a pipeline hint (float32 instead of float16), not read by the model; `model run` follows it"},
    {"scaling_factor", io::KeyUse::kDefaultOnly, "1.0",
     "diffusers' pipelines divide UNet latents by it before decoding; AutoencoderTiny decodes them as they are"},
    {"shift_factor", io::KeyUse::kDefaultOnly, "0.0",
     "the SDXL pipelines ignore it while SD3/Flux ones subtract it: no single reference meaning"},
};

// Every key of diffusers' AutoencoderKL.__init__ (0.42) plus the metadata diffusers writes.
constexpr io::ConfigKey kKLKeys[] = {
    {"_class_name", io::KeyUse::kHonoured, nullptr, "must be AutoencoderKL"},
    {"_diffusers_version", io::KeyUse::kMetadata, nullptr, "the writer's version"},
    {"_name_or_path", io::KeyUse::kMetadata, nullptr, "where the config was loaded from"},
    {"in_channels", io::KeyUse::kHonoured, nullptr, "image channels"},
    {"out_channels", io::KeyUse::kHonoured, nullptr, "decoded image channels"},
    {"down_block_types", io::KeyUse::kHonoured, nullptr, "DownEncoderBlock2D; others are refused"},
    {"up_block_types", io::KeyUse::kHonoured, nullptr, "UpDecoderBlock2D; others are refused"},
    {"block_out_channels", io::KeyUse::kHonoured, nullptr, "channels per stage"},
    {"layers_per_block", io::KeyUse::kHonoured, nullptr, "encoder resnets per stage (decoder: one more)"},
    {"act_fn", io::KeyUse::kHonoured, nullptr,
     "resnet activation: relu | silu | swish | gelu | mish (conv_act stays SiLU, as in diffusers)"},
    {"latent_channels", io::KeyUse::kHonoured, nullptr, "latent channels"},
    {"norm_num_groups", io::KeyUse::kHonoured, nullptr, "GroupNorm groups"},
    {"sample_size", io::KeyUse::kMetadata, nullptr, "tile size of diffusers' tiled decoding, which this port does not do"},
    {"scaling_factor", io::KeyUse::kHonoured, nullptr, "UNet latents = VAE latents * scaling_factor"},
    {"shift_factor", io::KeyUse::kDefaultOnly, "0.0",
     "the SDXL pipelines ignore it while SD3/Flux ones subtract it: no single reference meaning"},
    {"latents_mean", io::KeyUse::kDefaultOnly, "null", "the SDXL pipeline's per-channel latent normalization"},
    {"latents_std", io::KeyUse::kDefaultOnly, "null", "the SDXL pipeline's per-channel latent normalization"},
    {"force_upcast", io::KeyUse::kMetadata, nullptr,
     "a pipeline hint (float32 instead of float16), not read by the model; `model run` follows it"},
    {"use_quant_conv", io::KeyUse::kHonoured, nullptr, "quant_conv after the encoder"},
    {"use_post_quant_conv", io::KeyUse::kHonoured, nullptr, "post_quant_conv before the decoder"},
    {"mid_block_add_attention", io::KeyUse::kHonoured, nullptr, "attention in the mid blocks"},
};

}  // namespace

io::ConfigKeyTable TinyConfig::keys() { return kTinyKeys; }
io::ConfigKeyTable KLConfig::keys() { return kKLKeys; }

std::string config_class_name(const std::string& json_text, const std::string& origin) {
  return get_or<std::string>(parse_object(json_text, origin), "_class_name", "", origin);
}

// ---- AutoencoderTiny ----------------------------------------------------------------------------

TinyConfig TinyConfig::taesdxl() { return TinyConfig{}; }

TinyConfig TinyConfig::from_json(const std::string& text, const std::string& origin) {
  json j = parse_object(text, origin);
  try {
    check_class(j, "AutoencoderTiny", origin);
    io::refuse_unsupported(j, kTinyKeys, origin);
    TinyConfig c;
    c.in_channels = get_or<int64_t>(j, "in_channels", 3, origin);
    c.out_channels = get_or<int64_t>(j, "out_channels", 3, origin);
    c.encoder_block_out_channels = int_list(j, "encoder_block_out_channels", c.encoder_block_out_channels, origin);
    c.decoder_block_out_channels = int_list(j, "decoder_block_out_channels", c.decoder_block_out_channels, origin);
    c.num_encoder_blocks = int_list(j, "num_encoder_blocks", c.num_encoder_blocks, origin);
    c.num_decoder_blocks = int_list(j, "num_decoder_blocks", c.num_decoder_blocks, origin);
    c.act_fn = get_or<std::string>(j, "act_fn", "relu", origin);
    c.upsample_fn = get_or<std::string>(j, "upsample_fn", "nearest", origin);
    c.latent_channels = get_or<int64_t>(j, "latent_channels", 4, origin);
    c.upsampling_scaling_factor = get_or<int64_t>(j, "upsampling_scaling_factor", 2, origin);
    c.latent_magnitude = get_or<double>(j, "latent_magnitude", 3.0, origin);
    c.latent_shift = get_or<double>(j, "latent_shift", 0.5, origin);
    c.scaling_factor = get_or<double>(j, "scaling_factor", 1.0, origin);
    c.shift_factor = get_or<double>(j, "shift_factor", 0.0, origin);
    c.force_upcast = get_or<bool>(j, "force_upcast", false, origin);

    check_activation(c.act_fn, origin);
    TORCH_CHECK(c.upsample_fn == "nearest", origin, ": unsupported 'upsample_fn' = '", c.upsample_fn,
                "' (supported: nearest)");
    TORCH_CHECK(c.in_channels > 0 && c.out_channels > 0 && c.latent_channels > 0, origin,
                ": in_channels, out_channels and latent_channels must be positive");
    TORCH_CHECK(c.upsampling_scaling_factor > 0, origin, ": 'upsampling_scaling_factor' must be positive");
    check_positive(c.encoder_block_out_channels, "encoder_block_out_channels", origin);
    check_positive(c.decoder_block_out_channels, "decoder_block_out_channels", origin);
    TORCH_CHECK(c.encoder_block_out_channels.size() == c.num_encoder_blocks.size(), origin,
                ": 'encoder_block_out_channels' and 'num_encoder_blocks' must have the same length");
    TORCH_CHECK(c.decoder_block_out_channels.size() == c.num_decoder_blocks.size(), origin,
                ": 'decoder_block_out_channels' and 'num_decoder_blocks' must have the same length");
    for (int64_t n : c.num_encoder_blocks) TORCH_CHECK(n >= 0, origin, ": 'num_encoder_blocks' must be >= 0");
    for (int64_t n : c.num_decoder_blocks) TORCH_CHECK(n >= 0, origin, ": 'num_decoder_blocks' must be >= 0");
    // diffusers chains stage i's convolution from stage i's own width, so only equal widths run.
    for (int64_t ch : c.encoder_block_out_channels)
      TORCH_CHECK(ch == c.encoder_block_out_channels[0], origin,
                  ": 'encoder_block_out_channels' must all be equal (diffusers' EncoderTiny cannot run otherwise)");
    for (int64_t ch : c.decoder_block_out_channels)
      TORCH_CHECK(ch == c.decoder_block_out_channels[0], origin,
                  ": 'decoder_block_out_channels' must all be equal (diffusers' DecoderTiny cannot run otherwise)");
    return c;
  } catch (const json::exception& e) {
    TORCH_CHECK(false, origin, ": malformed AutoencoderTiny config: ", e.what());
  }
}

TinyConfig TinyConfig::from_file(const std::string& path) { return from_json(read_text(path, "AutoencoderTiny"), path); }

std::string TinyConfig::to_json() const {
  json j;
  j["_class_name"] = "AutoencoderTiny";
  j["in_channels"] = in_channels;
  j["out_channels"] = out_channels;
  j["encoder_block_out_channels"] = encoder_block_out_channels;
  j["decoder_block_out_channels"] = decoder_block_out_channels;
  j["block_out_channels"] = decoder_block_out_channels;
  j["num_encoder_blocks"] = num_encoder_blocks;
  j["num_decoder_blocks"] = num_decoder_blocks;
  j["act_fn"] = act_fn;
  j["upsample_fn"] = upsample_fn;
  j["latent_channels"] = latent_channels;
  j["upsampling_scaling_factor"] = upsampling_scaling_factor;
  j["latent_magnitude"] = latent_magnitude;
  j["latent_shift"] = latent_shift;
  j["scaling_factor"] = scaling_factor;
  j["shift_factor"] = shift_factor;
  j["force_upcast"] = force_upcast;
  return j.dump(2);
}

// ---- AutoencoderKL ------------------------------------------------------------------------------

KLConfig KLConfig::sdxl() { return KLConfig{}; }

KLConfig KLConfig::from_json(const std::string& text, const std::string& origin) {
  json j = parse_object(text, origin);
  try {
    check_class(j, "AutoencoderKL", origin);
    io::refuse_unsupported(j, kKLKeys, origin);
    KLConfig c;
    c.in_channels = get_or<int64_t>(j, "in_channels", 3, origin);
    c.out_channels = get_or<int64_t>(j, "out_channels", 3, origin);
    c.block_out_channels = int_list(j, "block_out_channels", {64}, origin);
    const size_t n = c.block_out_channels.size();
    check_positive(c.block_out_channels, "block_out_channels", origin);
    auto down = get_or<std::vector<std::string>>(j, "down_block_types", {"DownEncoderBlock2D"}, origin);
    auto up = get_or<std::vector<std::string>>(j, "up_block_types", {"UpDecoderBlock2D"}, origin);
    TORCH_CHECK(down.size() == n && up.size() == n, origin,
                ": 'block_out_channels', 'down_block_types' and 'up_block_types' must have the same length");
    for (const auto& t : down)
      TORCH_CHECK(t == "DownEncoderBlock2D", origin, ": unsupported 'down_block_types' entry '", t,
                  "' (supported: DownEncoderBlock2D)");
    for (const auto& t : up)
      TORCH_CHECK(t == "UpDecoderBlock2D", origin, ": unsupported 'up_block_types' entry '", t,
                  "' (supported: UpDecoderBlock2D)");
    c.layers_per_block = get_or<int64_t>(j, "layers_per_block", 1, origin);
    c.latent_channels = get_or<int64_t>(j, "latent_channels", 4, origin);
    c.norm_num_groups = get_or<int64_t>(j, "norm_num_groups", 32, origin);
    c.act_fn = get_or<std::string>(j, "act_fn", "silu", origin);
    c.sample_size = get_or<int64_t>(j, "sample_size", 32, origin);
    c.scaling_factor = get_or<double>(j, "scaling_factor", 0.18215, origin);
    c.shift_factor = get_or<double>(j, "shift_factor", 0.0, origin);
    c.force_upcast = get_or<bool>(j, "force_upcast", true, origin);
    c.use_quant_conv = get_or<bool>(j, "use_quant_conv", true, origin);
    c.use_post_quant_conv = get_or<bool>(j, "use_post_quant_conv", true, origin);
    c.mid_block_add_attention = get_or<bool>(j, "mid_block_add_attention", true, origin);

    check_activation(c.act_fn, origin);
    TORCH_CHECK(c.in_channels > 0 && c.out_channels > 0 && c.latent_channels > 0, origin,
                ": in_channels, out_channels and latent_channels must be positive");
    TORCH_CHECK(c.layers_per_block > 0, origin, ": 'layers_per_block' must be positive");
    TORCH_CHECK(c.norm_num_groups > 0, origin, ": 'norm_num_groups' must be positive");
    for (size_t i = 0; i < n; ++i)
      TORCH_CHECK(c.block_out_channels[i] % c.norm_num_groups == 0, origin, ": block_out_channels[", i, "] = ",
                  c.block_out_channels[i], " is not divisible by norm_num_groups = ", c.norm_num_groups);
    return c;
  } catch (const json::exception& e) {
    TORCH_CHECK(false, origin, ": malformed AutoencoderKL config: ", e.what());
  }
}

KLConfig KLConfig::from_file(const std::string& path) { return from_json(read_text(path, "AutoencoderKL"), path); }

std::string KLConfig::to_json() const {
  json j;
  j["_class_name"] = "AutoencoderKL";
  j["in_channels"] = in_channels;
  j["out_channels"] = out_channels;
  j["block_out_channels"] = block_out_channels;
  j["down_block_types"] = std::vector<std::string>(block_out_channels.size(), "DownEncoderBlock2D");
  j["up_block_types"] = std::vector<std::string>(block_out_channels.size(), "UpDecoderBlock2D");
  j["layers_per_block"] = layers_per_block;
  j["latent_channels"] = latent_channels;
  j["norm_num_groups"] = norm_num_groups;
  j["act_fn"] = act_fn;
  j["sample_size"] = sample_size;
  j["scaling_factor"] = scaling_factor;
  j["shift_factor"] = shift_factor == 0.0 ? json(nullptr) : json(shift_factor);
  j["latents_mean"] = nullptr;
  j["latents_std"] = nullptr;
  j["force_upcast"] = force_upcast;
  j["use_quant_conv"] = use_quant_conv;
  j["use_post_quant_conv"] = use_post_quant_conv;
  j["mid_block_add_attention"] = mid_block_add_attention;
  return j.dump(2);
}

}  // namespace lookahead::model::vae
