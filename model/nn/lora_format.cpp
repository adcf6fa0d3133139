// LoRA file layouts: detection, SGM -> diffusers names, PEFT and pre-PEFT keys, alpha rules.
#include "model/nn/lora_format.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <memory>
#include <regex>
#include <set>
#include <tuple>

namespace lookahead::model::nn {

namespace {

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string underscored(std::string path) {
  std::replace(path.begin(), path.end(), '.', '_');
  return path;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out(1);
  for (char c : s) {
    if (c == sep)
      out.emplace_back();
    else
      out.back() += c;
  }
  return out;
}

std::string join(const std::vector<std::string>& parts, size_t from, char sep) {
  std::string out;
  for (size_t i = from; i < parts.size(); ++i) out += (i > from ? std::string(1, sep) : "") + parts[i];
  return out;
}

bool is_number(const std::string& s) {
  return !s.empty() && s.size() < 9 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool is_text_encoder_key(const std::string& key) {
  return starts_with(key, "lora_te_") || starts_with(key, "lora_te1_") || starts_with(key, "lora_te2_") ||
         starts_with(key, "text_encoder.") || starts_with(key, "text_encoder_2.");
}

/// Resnets per down block, read off the network's layer paths (diffusers reads the config's
/// `layers_per_block`; the module tree holds the same number). -1 when the network has no down
/// blocks; throws when the blocks differ, since the SGM numbering then has no single stride.
int64_t layers_per_block(const std::vector<std::string>& layer_paths, const std::string& origin) {
  std::map<std::string, int64_t> resnets;  // down block index -> resnets
  for (const auto& path : layer_paths) {
    auto p = split(path, '.');
    if (p.size() > 3 && p[0] == "down_blocks" && p[2] == "resnets" && is_number(p[3]))
      resnets[p[1]] = std::max<int64_t>(resnets[p[1]], std::stoll(p[3]) + 1);
  }
  if (resnets.empty()) return -1;
  for (const auto& [block, n] : resnets)
    TORCH_CHECK(n == resnets.begin()->second, origin, ": SGM block names need the same number of resnets in every "
                "down block; down block ", block, " has ", n, ", down block 0 has ", resnets.begin()->second);
  return resnets.begin()->second;
}

/// PEFT's rule for rank_pattern / alpha_pattern: the first pattern (in the file's order) that
/// matches the whole module path or a tail of it after a '.'.
const nlohmann::ordered_json* pattern_value(const nlohmann::ordered_json& patterns, const std::string& path,
                                            const std::string& origin) {
  if (!patterns.is_object()) return nullptr;
  for (const auto& [pattern, value] : patterns.items()) {
    bool match = false;
    try {
      match = std::regex_match(path, std::regex("(.*\\.)?(" + pattern + ")"));
    } catch (const std::regex_error& e) {
      TORCH_CHECK(false, origin, ": lora_adapter_metadata pattern '", pattern, "' is not a valid regex: ", e.what());
    }
    if (match) return &value;
  }
  return nullptr;
}

/// The adapter config diffusers stores in the safetensors header (`lora_adapter_metadata`: the
/// PEFT LoraConfig, keys prefixed `unet.`), or null when the file has none for the UNet. Without
/// it diffusers and PEFT use alpha = rank (factor 1).
struct PeftConfig {
  double r = 8, lora_alpha = 8;  // LoraConfig's defaults for keys the header leaves out
  nlohmann::ordered_json rank_pattern, alpha_pattern;
};

std::unique_ptr<PeftConfig> peft_config(const std::map<std::string, std::string>& metadata, const std::string& origin) {
  auto it = metadata.find("lora_adapter_metadata");
  if (it == metadata.end()) return nullptr;
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, origin, ": safetensors metadata 'lora_adapter_metadata' is not valid JSON: ", e.what());
  }
  TORCH_CHECK(j.is_object(), origin, ": safetensors metadata 'lora_adapter_metadata' is not a JSON object");
  auto config = std::make_unique<PeftConfig>();
  bool any = false;
  for (const auto& [name, value] : j.items()) {
    if (!starts_with(name, "unet.")) continue;  // text encoders' configs
    any = true;
    const std::string field = name.substr(5);
    auto number = [&]() {
      TORCH_CHECK(value.is_number(), origin, ": lora_adapter_metadata '", name, "' must be a number");
      return value.get<double>();
    };
    auto flag = [&]() { return value.is_boolean() && value.get<bool>(); };
    if (field == "r") config->r = number();
    if (field == "lora_alpha") config->lora_alpha = number();
    if (field == "rank_pattern") config->rank_pattern = value;
    if (field == "alpha_pattern") config->alpha_pattern = value;
    // Variants whose update is not alpha / r * up(down(x)): refused rather than run wrongly.
    TORCH_CHECK(!(field == "use_dora" && flag()), origin, ": DoRA adapters ('", name, "' = true) are not supported");
    TORCH_CHECK(!(field == "use_rslora" && flag()), origin, ": rsLoRA scaling ('", name, "' = true) is not supported");
    TORCH_CHECK(!(field == "lora_bias" && flag()), origin, ": LoRA bias ('", name, "' = true) is not supported");
  }
  if (!any) return nullptr;
  return config;
}

/// Down / up / alpha tensors of one adapter as the file names them.
struct Parts {
  std::string down_key, up_key, alpha_key;
  at::Tensor down, up, alpha;
};

void put(Parts& parts, const std::string& role, const std::string& key, const at::Tensor& t) {
  if (role == "down") {
    parts.down_key = key;
    parts.down = t;
  } else if (role == "up") {
    parts.up_key = key;
    parts.up = t;
  } else {
    parts.alpha_key = key;
    parts.alpha = t;
  }
}

/// Checks the parts of each adapter and turns them into entries for `layer_of(group)`.
std::vector<LoraEntry> assemble(const std::map<std::string, Parts>& groups,
                                const std::map<std::string, std::string>& layer_of, const std::string& origin) {
  std::vector<LoraEntry> entries;
  std::map<std::string, std::string> claimed;  // layer -> down key
  for (const auto& [group, parts] : groups) {
    const std::string& any_key = !parts.down_key.empty() ? parts.down_key
                                 : !parts.up_key.empty() ? parts.up_key
                                                         : parts.alpha_key;
    TORCH_CHECK(parts.down.defined(), origin, ": LoRA key '", any_key, "' has no matching down matrix");
    TORCH_CHECK(parts.up.defined(), origin, ": LoRA '", parts.down_key, "' has a down matrix but no up matrix");
    TORCH_CHECK(parts.down.dim() >= 2, origin, ": LoRA '", parts.down_key, "' must be a matrix or a conv weight, got ",
                parts.down.dim(), " dimensions");
    const std::string& layer = layer_of.at(group);
    auto [other, fresh] = claimed.emplace(layer, parts.down_key);
    TORCH_CHECK(fresh, origin, ": LoRA keys '", other->second, "' and '", parts.down_key, "' both adapt layer '",
                layer, "'");
    LoraEntry e;
    e.layer = layer;
    e.key = parts.down_key;
    e.down = parts.down;
    e.up = parts.up;
    e.alpha = static_cast<double>(parts.down.size(0));  // no alpha: factor 1
    if (parts.alpha.defined()) {
      TORCH_CHECK(parts.alpha.numel() == 1, origin, ": LoRA alpha '", parts.alpha_key, "' must be a scalar");
      // Shape-only (meta) tensors cannot be read; `model inspect` loads the alphas themselves.
      if (!parts.alpha.is_meta()) e.alpha = parts.alpha.to(at::kDouble).item<double>();
    }
    entries.push_back(std::move(e));
  }
  return entries;
}

LoraMapping map_kohya(const std::map<std::string, at::Tensor>& unet, const std::vector<std::string>& layer_paths,
                      const std::string& origin) {
  std::string sgm_key, diffusers_key;  // one example of each block naming
  for (const auto& [key, t] : unet) {
    const std::string name = key.substr(10);
    if (starts_with(name, "input_blocks_") || starts_with(name, "middle_block_") || starts_with(name, "output_blocks_"))
      sgm_key = key;
    if (starts_with(name, "down_blocks_") || starts_with(name, "mid_block_") || starts_with(name, "up_blocks_"))
      diffusers_key = key;
  }
  // diffusers drops the SGM keys of such a file without a word; we never drop a UNet key.
  TORCH_CHECK(sgm_key.empty() || diffusers_key.empty(), origin, ": LoRA mixes SGM block names ('", sgm_key,
              "') with diffusers block names ('", diffusers_key, "')");
  LoraMapping m;
  m.format = sgm_key.empty() ? LoraFormat::kKohya : LoraFormat::kKohyaSgm;
  const int64_t lpb = sgm_key.empty() ? 0 : layers_per_block(layer_paths, origin);
  TORCH_CHECK(sgm_key.empty() || lpb > 0, origin, ": LoRA key '", sgm_key,
              "' uses SGM block names, but the network has no down blocks to map them to");
  std::map<std::string, std::string> by_name;  // underscored path -> path
  for (const auto& path : layer_paths) by_name[underscored(path)] = path;

  std::map<std::string, Parts> groups;
  std::map<std::string, std::string> layer_of;
  bool any_alpha = false;
  for (const auto& [key, t] : unet) {
    const auto dot = key.find('.');
    const std::string base = key.substr(0, dot), suffix = dot == std::string::npos ? "" : key.substr(dot + 1);
    std::string role = suffix == "lora_down.weight" ? "down" : suffix == "lora_up.weight" ? "up" : suffix == "alpha" ? "alpha" : "";
    TORCH_CHECK(suffix != "dora_scale", origin, ": LoRA key '", key, "' is a DoRA magnitude; DoRA is not supported");
    TORCH_CHECK(!role.empty(), origin, ": unexpected LoRA key '", key,
                "' (expected .lora_down.weight, .lora_up.weight or .alpha)");
    any_alpha = any_alpha || role == "alpha";
    put(groups[base], role, key, t);
    if (layer_of.count(base)) continue;
    const std::string name = base.substr(10);
    std::string mapped = sgm_to_diffusers(name, lpb, origin, key);
    if (mapped.empty()) mapped = name;
    auto layer = by_name.find(mapped);
    TORCH_CHECK(layer != by_name.end(), origin, ": LoRA '", base, "' matches no layer of the network",
                mapped != name ? " (read as '" + mapped + "')" : std::string());
    layer_of[base] = layer->second;
  }
  m.entries = assemble(groups, layer_of, origin);
  m.alpha_source = any_alpha ? ".alpha keys" : "alpha = rank";
  return m;
}

/// The layer path and role ("down" / "up") of a PEFT or pre-PEFT key without its `unet.` prefix,
/// and whether it is PEFT; throws for keys of neither.
void parse_peft_key(const std::string& key, std::string& path, std::string& role, bool& peft, const std::string& origin) {
  std::string rest = key.substr(5);
  // diffusers removes ".processor." from every key before reading it.
  for (size_t at; (at = rest.find(".processor.")) != std::string::npos;) rest.erase(at, 10);
  static const std::regex attn_proc(R"((.*)\.to_(q|k|v|out)_lora\.(down|up)\.weight)");
  std::smatch m;
  for (const auto& [suffix, r, is_peft] : std::vector<std::tuple<std::string, std::string, bool>>{
           {".lora_A.weight", "down", true}, {".lora_B.weight", "up", true},
           {".lora.down.weight", "down", false}, {".lora.up.weight", "up", false}}) {
    if (ends_with(rest, suffix)) {
      path = rest.substr(0, rest.size() - suffix.size());
      role = r;
      peft = is_peft;
      return;
    }
  }
  if (std::regex_match(rest, m, attn_proc)) {  // diffusers' attention-processor names
    path = m[1].str() + ".to_" + m[2].str() + (m[2] == "out" ? ".0" : "");
    role = m[3].str();
    peft = false;
    return;
  }
  TORCH_CHECK(key.find("lora_magnitude_vector") == std::string::npos, origin, ": LoRA key '", key,
              "' is a DoRA magnitude; DoRA is not supported");
  TORCH_CHECK(!ends_with(key, ".lora_B.bias"), origin, ": LoRA key '", key, "' is a LoRA bias; not supported");
  TORCH_CHECK(!ends_with(key, ".alpha"), origin, ": LoRA key '", key,
              "': PEFT-format files keep alpha in the safetensors metadata 'lora_adapter_metadata', not in keys "
              "(diffusers rejects such files too)");
  TORCH_CHECK(false, origin, ": unexpected LoRA key '", key,
              "' (expected unet.<path>.lora_A.weight / .lora_B.weight, or diffusers' unet.<path>.lora.down.weight / "
              ".lora.up.weight)");
}

LoraMapping map_peft(const std::map<std::string, at::Tensor>& unet, const std::map<std::string, std::string>& metadata,
                     const std::vector<std::string>& layer_paths, const std::string& origin) {
  const std::set<std::string> layers(layer_paths.begin(), layer_paths.end());
  std::map<std::string, Parts> groups;  // by layer path
  std::map<std::string, std::string> layer_of;
  std::string peft_key, old_key;
  for (const auto& [key, t] : unet) {
    std::string path, role;
    bool peft = false;
    parse_peft_key(key, path, role, peft, origin);
    (peft ? peft_key : old_key) = key;
    TORCH_CHECK(layers.count(path), origin, ": LoRA '", key, "' matches no layer of the network (layer '", path, "')");
    put(groups[path], role, key, t);
    layer_of[path] = path;
  }
  // diffusers converts a file's keys by its first key; mixing the two namings is not a layout.
  TORCH_CHECK(peft_key.empty() || old_key.empty(), origin, ": LoRA mixes PEFT keys ('", peft_key,
              "') with diffusers' pre-PEFT keys ('", old_key, "')");
  LoraMapping m;
  m.format = peft_key.empty() ? LoraFormat::kDiffusersOld : LoraFormat::kPeft;
  m.entries = assemble(groups, layer_of, origin);
  m.alpha_source = "alpha = rank";
  if (auto config = peft_config(metadata, origin)) {
    m.alpha_source = "lora_adapter_metadata";
    for (auto& e : m.entries) {
      const auto* r = pattern_value(config->rank_pattern, e.layer, origin);
      const auto* a = pattern_value(config->alpha_pattern, e.layer, origin);
      const double rank = r && r->is_number() ? r->get<double>() : config->r;
      TORCH_CHECK(rank == static_cast<double>(e.down.size(0)), origin, ": LoRA '", e.key, "' has rank ",
                  e.down.size(0), ", but lora_adapter_metadata gives rank ", rank, " for layer '", e.layer, "'");
      e.alpha = a && a->is_number() ? a->get<double>() : config->lora_alpha;
    }
  }
  return m;
}

}  // namespace

const char* format_name(LoraFormat format) {
  switch (format) {
    case LoraFormat::kKohya:
      return "kohya LoRA";
    case LoraFormat::kKohyaSgm:
      return "kohya LoRA (SGM block names)";
    case LoraFormat::kPeft:
      return "PEFT LoRA";
    case LoraFormat::kDiffusersOld:
      return "diffusers LoRA (pre-PEFT keys)";
  }
  return "LoRA";
}

std::string sgm_to_diffusers(const std::string& name, int64_t layers_per_block, const std::string& origin,
                             const std::string& key) {
  // Stems outside the block structure (diffusers maps these in any kohya file).
  static const std::map<std::string, std::string> stems = {
      {"input_blocks_0_0", "conv_in"},
      {"out_2", "conv_out"},
      {"time_embed_0", "time_embedding_linear_1"},
      {"time_embed_2", "time_embedding_linear_2"},
      {"label_emb_0_0", "add_embedding_linear_1"},
      {"label_emb_0_2", "add_embedding_linear_2"}};
  if (auto it = stems.find(name); it != stems.end()) return it->second;
  auto p = split(name, '_');
  const bool input = starts_with(name, "input_blocks_"), middle = starts_with(name, "middle_block_"),
             output = starts_with(name, "output_blocks_");
  if (!input && !middle && !output) return "";
  const size_t j_at = middle ? 2 : 3;  // index of the layer-in-block number
  TORCH_CHECK(p.size() > j_at + 1 && is_number(p[2]) && (middle || is_number(p[3])), origin, ": LoRA key '", key,
              "' has an SGM block name without its block and layer numbers");
  TORCH_CHECK(layers_per_block > 0, origin, ": LoRA key '", key, "' uses SGM block names, which need a UNet");
  const int64_t stride = layers_per_block + 1;  // per down block: its resnets (+ attentions), then a downsampler
  const int64_t i = std::stoll(p[2]), j = std::stoll(p[j_at]);
  std::string rest = join(p, j_at + 1, '_');
  static const char* kinds[3] = {"resnets", "attentions", "upsamplers"};
  std::string prefix;
  std::string kind;
  int64_t layer = 0;
  if (middle) {
    TORCH_CHECK(i <= 2, origin, ": LoRA key '", key, "': middle_block has layers 0 to 2, not ", i);
    prefix = "mid_block";
    kind = i == 1 ? "attentions" : "resnets";
    layer = i == 2 ? 1 : 0;
  } else if (input) {
    TORCH_CHECK(i >= 1, origin, ": LoRA key '", key, "': input_blocks_0 is conv_in, which has no layer ", j);
    prefix = "down_blocks_" + std::to_string((i - 1) / stride);
    if (rest == "op") {  // the downsampler's conv
      kind = "downsamplers";
      rest = "conv";
    } else {
      TORCH_CHECK(j <= 2, origin, ": LoRA key '", key, "': an SGM block has layers 0 to 2, not ", j);
      kind = kinds[j];
      layer = (i - 1) % stride;
    }
  } else {
    TORCH_CHECK(j <= 2, origin, ": LoRA key '", key, "': an SGM block has layers 0 to 2, not ", j);
    prefix = "up_blocks_" + std::to_string(i / stride);
    kind = kinds[j];
    layer = j == 2 ? 0 : i % stride;  // diffusers places an upsampler at index 2 (after an attention)
  }
  if (kind == "resnets") {  // SGM ResBlock layer names
    static const std::map<std::string, std::string> resnet = {{"in_layers_2", "conv1"},
                                                              {"out_layers_3", "conv2"},
                                                              {"emb_layers_1", "time_emb_proj"},
                                                              {"skip_connection", "conv_shortcut"}};
    if (auto it = resnet.find(rest); it != resnet.end()) rest = it->second;
  }
  return prefix + "_" + kind + "_" + std::to_string(layer) + "_" + rest;
}

LoraMapping map_lora_file(const std::map<std::string, at::Tensor>& tensors,
                          const std::map<std::string, std::string>& metadata,
                          const std::vector<std::string>& layer_paths, const std::string& origin) {
  std::map<std::string, at::Tensor> kohya, peft;
  std::vector<std::string> ignored;
  for (const auto& [key, t] : tensors) {
    if (starts_with(key, "lora_unet_")) {
      kohya.emplace(key, t);
    } else if (starts_with(key, "unet.")) {
      peft.emplace(key, t);
    } else {
      TORCH_CHECK(is_text_encoder_key(key), origin, ": LoRA key '", key,
                  "' is in no layout this loader reads (kohya 'lora_unet_<path>.lora_down.weight', PEFT "
                  "'unet.<path>.lora_A.weight', diffusers 'unet.<path>.lora.down.weight'; text-encoder keys "
                  "'lora_te*', 'text_encoder.*', 'text_encoder_2.*' are ignored)");
      ignored.push_back(key);
    }
  }
  TORCH_CHECK(kohya.empty() || peft.empty(), origin, ": LoRA mixes kohya keys ('", kohya.begin()->first,
              "') with PEFT/diffusers keys ('", peft.begin()->first, "')");
  TORCH_CHECK(!kohya.empty() || !peft.empty(), origin, ": no UNet LoRA entries ('lora_unet_*' or 'unet.*') in ",
              tensors.size(), " keys");
  LoraMapping m = !kohya.empty() ? map_kohya(kohya, layer_paths, origin) : map_peft(peft, metadata, layer_paths, origin);
  m.ignored = std::move(ignored);
  return m;
}

}  // namespace lookahead::model::nn
