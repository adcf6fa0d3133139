// `lookahead model init`: parses the command line, checks --out, writes the preset's public weight
// set (model/init/public_weights.h) and a copy of the preset's INI whose [model] weight paths point
// into --out, and prints those lines for pasting into another configuration.
#include "launch/model_init.h"

#include <boost/program_options/options_description.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <boost/program_options/variables_map.hpp>

#include <c10/core/ScalarType.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "launch/cli.h"
#include "lookahead/source_dir.h"
#include "model/init/public_weights.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace lookahead::launch {

namespace {

const std::string kSourceDir = LA_SOURCE_DIR;

std::optional<at::ScalarType> parse_init_dtype(const std::string& s) {
  if (s == "auto") return std::nullopt;
  if (s == "fp32") return at::kFloat;
  if (s == "fp16") return at::kHalf;
  if (s == "bf16") return at::kBFloat16;
  throw std::invalid_argument("--dtype must be auto, fp32, fp16 or bf16, got '" + s + "'");
}

/// Creates --out (or accepts an empty one, or any with --force) and proves it writable.
void prepare_out(const fs::path& out, bool force) {
  std::error_code ec;
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec))
      throw std::invalid_argument("--out " + out.string() + ": exists and is not a folder");
    if (!force && !fs::is_empty(out, ec))
      throw std::invalid_argument("--out " + out.string() + ": folder is not empty (pass --force to write into it)");
  } else {
    fs::create_directories(out, ec);
    if (ec) throw std::invalid_argument("--out " + out.string() + ": cannot create the folder: " + ec.message());
  }
  const fs::path probe = out / ".lookahead-init-probe";
  std::ofstream f(probe);
  if (!f) throw std::invalid_argument("--out " + out.string() + ": folder is not writable");
  f.close();
  fs::remove(probe, ec);
}

/// The [model] lines that point a configuration at the written files.
std::vector<std::pair<std::string, std::string>> model_lines(const model::init::InitFiles& f, bool tiny) {
  std::vector<std::pair<std::string, std::string>> lines{{"unet_weights", f.unet_weights},
                                                         {"ip_adapter", f.ip_adapter},
                                                         {"lcm_lora", f.lcm_lora},
                                                         {"taesd", f.taesd},
                                                         // The tiny preset's ArcFace is its iresnet.
                                                         {"arcface", tiny ? f.arcface_iresnet : f.arcface}};
  if (!tiny) lines.emplace_back("arcface_network", "irse50");
  lines.emplace_back("mtcnn", f.mtcnn);
  lines.emplace_back("sdxl_folder", f.sdxl_folder);
  lines.emplace_back("vae", f.vae);
  lines.emplace_back("image_encoder", f.image_encoder);
  lines.emplace_back("dreamsim", f.dreamsim);
  return lines;
}

/// `ini` with every key of `lines` set in its `[section]`: existing lines get the new value,
/// missing keys are added at the section's end.
std::string rewrite_section(const std::string& ini, const std::string& section,
                            const std::vector<std::pair<std::string, std::string>>& lines) {
  std::vector<std::string> in;
  std::stringstream stream(ini);
  for (std::string l; std::getline(stream, l);) in.push_back(l);
  auto key_of = [](const std::string& l) {
    const size_t eq = l.find('=');
    if (eq == std::string::npos || l.empty() || l[0] == '#' || l[0] == ';' || l[0] == '[') return std::string();
    std::string k = l.substr(0, eq);
    k.erase(k.find_last_not_of(" \t") + 1);
    k.erase(0, k.find_first_not_of(" \t"));
    return k;
  };
  std::vector<std::string> out;
  std::vector<bool> written(lines.size(), false);
  bool in_model = false;
  auto flush_missing = [&] {
    // Before the blank lines that separate the section from the next one.
    size_t insert_at = out.size();
    while (insert_at > 0 && out[insert_at - 1].find_first_not_of(" \t") == std::string::npos) --insert_at;
    std::vector<std::string> add;
    for (size_t i = 0; i < lines.size(); ++i)
      if (!written[i]) {
        add.push_back(lines[i].first + " = " + lines[i].second);
        written[i] = true;
      }
    out.insert(out.begin() + static_cast<std::ptrdiff_t>(insert_at), add.begin(), add.end());
  };
  for (const std::string& l : in) {
    if (!l.empty() && l[0] == '[') {
      if (in_model) flush_missing();
      in_model = l.rfind("[" + section + "]", 0) == 0;
      out.push_back(l);
      continue;
    }
    if (in_model) {
      const std::string k = key_of(l);
      bool replaced = false;
      for (size_t i = 0; i < lines.size() && !k.empty(); ++i)
        if (lines[i].first == k) {
          out.push_back(k + " = " + lines[i].second);
          written[i] = replaced = true;
        }
      if (replaced) continue;
    }
    out.push_back(l);
  }
  if (in_model) flush_missing();
  std::string text;
  for (const auto& l : out) text += l + "\n";
  return text;
}

std::string human_bytes(uint64_t b) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(b >= (uint64_t{1} << 30) ? 2 : 1);
  if (b >= (uint64_t{1} << 30))
    s << static_cast<double>(b) / (1 << 30) << " GiB";
  else
    s << static_cast<double>(b) / (1 << 20) << " MiB";
  return s.str();
}

}  // namespace

int run_model_init(const std::vector<std::string>& args) {
  po::options_description d("lookahead model init --preset sdxl|sdxl-turbo|tiny --out DIR");
  d.add_options()("preset", po::value<std::string>()->required(),
                  "sdxl (full-size SDXL base set), sdxl-turbo (the same with an sdxl-turbo folder) or tiny "
                  "(the tiny preset's sizes)")("out", po::value<std::string>()->required(),
                                               "folder to write into (created; must be empty without --force)")(
      "seed", po::value<uint64_t>()->default_value(0), "values are a function of (seed, tensor name)")(
      "dtype", po::value<std::string>()->default_value("auto"),
      "storage dtype of every floating tensor: auto (as the published files: fp16 SDXL folders, IP-Adapter and "
      "LCM-LoRA; fp32 image encoder, TAESDXL, face networks), fp32, fp16 or bf16")(
      "force", po::bool_switch(), "write into a non-empty --out (files of the set are replaced)")(
      "vocab",
      po::value<std::string>()->default_value(kSourceDir + "/third_party/open_clip/bpe_simple_vocab_16e6.txt.gz"),
      "open_clip's CLIP BPE vocabulary, from which tokenizer/ and tokenizer_2/ are derived")(
      "mtcnn", po::value<std::string>()->default_value(kSourceDir + "/third_party/facenet_pytorch/data"),
      "facenet-pytorch's pnet.pt / rnet.pt / onet.pt folder (copied: the real MTCNN weights)")(
      "template", po::value<std::string>()->default_value(""),
      "INI to copy with the weight paths replaced (default: launch/configs/sdxl-lookahead.ini, or tiny.ini for tiny)");
  auto vm = parse(args, d);
  const std::string preset_name = vm["preset"].as<std::string>();
  const auto preset = model::init::parse_init_preset(preset_name);
  if (!preset) throw std::invalid_argument("--preset must be sdxl, sdxl-turbo or tiny, got '" + preset_name + "'");
  const bool tiny = *preset == model::init::InitPreset::kTiny;
  std::string template_path = vm["template"].as<std::string>();
  if (template_path.empty())
    template_path = kSourceDir + (tiny ? "/launch/configs/tiny.ini" : "/launch/configs/sdxl-lookahead.ini");
  std::ifstream template_in(template_path);
  if (!template_in) throw std::invalid_argument("--template " + template_path + ": cannot read the INI");
  std::stringstream template_text;
  template_text << template_in.rdbuf();

  model::init::InitOptions o;
  o.preset = *preset;
  o.seed = vm["seed"].as<uint64_t>();
  o.dtype = parse_init_dtype(vm["dtype"].as<std::string>());
  o.bpe_vocab = vm["vocab"].as<std::string>();
  o.mtcnn = vm["mtcnn"].as<std::string>();
  if (!fs::is_regular_file(o.bpe_vocab)) throw std::invalid_argument("--vocab " + o.bpe_vocab + ": no such file");
  if (!fs::is_directory(o.mtcnn)) throw std::invalid_argument("--mtcnn " + o.mtcnn + ": no such folder");
  const fs::path out = fs::absolute(vm["out"].as<std::string>()).lexically_normal();
  prepare_out(out, vm["force"].as<bool>());
  o.out = out.string();
  const auto start = std::chrono::steady_clock::now();
  o.on_file = [&](const std::string& path, uint64_t bytes) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << "  " << std::fixed << std::setprecision(1) << std::setw(6) << s << " s  " << std::setw(10)
              << human_bytes(bytes) << "  " << fs::relative(path, out).string() << "\n"
              << std::flush;
  };
  std::cout << "lookahead model init: preset " << preset_name << ", seed " << o.seed << " -> " << o.out
            << " (random weights in the public layouts)\n";
  const model::init::InitFiles files = model::init::write_public_weights(o);

  const auto lines = model_lines(files, tiny);
  const std::string ini_path = (out / "lookahead.ini").string();
  std::string header = "# Written by `lookahead model init --preset " + preset_name + " --seed " +
                       std::to_string(o.seed) + "`: RANDOM weights in the public layouts under\n# " + o.out +
                       ", not the published ones. A copy of " + template_path + ".\n";
  std::ofstream ini(ini_path);
  const std::vector<std::pair<std::string, std::string>> eval_lines{
      {"clip_model", files.clip_model}, {"clip_model_name", "openai/clip-vit-large-patch14"}};
  ini << header << rewrite_section(rewrite_section(template_text.str(), "model", lines), "eval", eval_lines);
  ini.close();
  if (!ini) throw std::runtime_error("cannot write " + ini_path);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "wrote " << files.files.size() << " files, " << human_bytes(files.bytes) << " in " << std::fixed
            << std::setprecision(1) << seconds << " s\n\n"
            << "configuration: " << ini_path << " (lookahead train --config " << ini_path << ")\n"
            << "or paste into your own [model] section:\n\n[model]\n";
  for (const auto& [k, v] : lines) std::cout << k << " = " << v << "\n";
  std::cout << "\n[eval]\n";
  for (const auto& [k, v] : eval_lines) std::cout << k << " = " << v << "\n";
  return kExitOk;
}

}  // namespace lookahead::launch
