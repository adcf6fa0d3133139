// RunVariant: the ablation keys of a configuration, and the resume rule between two of them.
#include "trainer/run_variant.h"

#include <charconv>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace lookahead::trainer {

namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

std::string short_number(double v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

template <typename E>
E parse_or_throw(const std::string& key, const std::string& value) {
  const auto v = parse_config_name<E>(value);
  TORCH_CHECK(v, "configuration: ", key, " = '", value, "' (expected ", config_choices<E>(), ")");
  return *v;
}

}  // namespace

RunVariant RunVariant::of(const TrainConfig& c) {
  return RunVariant{c.model.kv_encoder, c.loss.preview, c.loss.lambda_id, c.loss.lambda_dreamsim};
}

RunVariant RunVariant::from_ini(const std::string& text) {
  RunVariant v;
  std::istringstream in(text);
  std::string section;
  for (std::string line; std::getline(in, line);) {
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[' && line.back() == ']') {
      section = line.substr(1, line.size() - 2);
      continue;
    }
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    const std::string key = section + "." + trim(line.substr(0, eq));
    const std::string value = trim(line.substr(eq + 1));
    if (key == "model.kv_encoder") {
      v.kv_encoder = parse_or_throw<model::KvEncoderMode>(key, value);
    } else if (key == "loss.preview") {
      v.preview = parse_or_throw<model::PreviewKind>(key, value);
    } else if (key == "loss.lambda_id" || key == "loss.lambda_dreamsim") {
      double x = 0;
      const auto r = std::from_chars(value.data(), value.data() + value.size(), x);
      TORCH_CHECK(r.ec == std::errc() && r.ptr == value.data() + value.size(), "configuration: ", key, " = '", value,
                  "' is not a number");
      (key == "loss.lambda_id" ? v.lambda_id : v.lambda_dreamsim) = x;
    }
  }
  return v;
}

RunVariant RunVariant::from_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("cannot open the configuration '" + path + "'");
  std::stringstream text;
  text << in.rdbuf();
  try {
    return from_ini(text.str());
  } catch (const c10::Error& e) {
    throw std::invalid_argument(path + ": " + e.what_without_backtrace());
  }
}

void RunVariant::apply(TrainConfig& c) const {
  c.model.kv_encoder = kv_encoder;
  c.loss.preview = preview;
  c.loss.lambda_id = lambda_id;
  c.loss.lambda_dreamsim = lambda_dreamsim;
}

std::string RunVariant::describe() const {
  return "preview=" + std::string(config_name(preview)) + " kv_encoder=" + std::string(config_name(kv_encoder)) +
         " lambda_id=" + short_number(lambda_id) + " lambda_dreamsim=" + short_number(lambda_dreamsim);
}

std::string variant_mismatch(const RunVariant& saved, const RunVariant& now) {
  auto differs = [](const std::string& key, const std::string& was, const std::string& is, const std::string& why) {
    return key + ": the checkpoint's run had " + was + ", this run has " + is + " (" + why +
           "); a checkpoint does not resume into another variant: start a fresh run (train.resume = \"\") or set " +
           key + " = " + was;
  };
  if (saved.kv_encoder != now.kv_encoder)
    return differs("model.kv_encoder", std::string(config_name(saved.kv_encoder)),
                   std::string(config_name(now.kv_encoder)), "the KV encoder's LoRAs exist only with it on");
  auto on_off = [&](const char* key, double was, double is, const char* what) -> std::string {
    if ((was > 0) == (is > 0)) return "";
    return differs(key, short_number(was), short_number(is),
                   std::string(what) + (was > 0 ? " ran" : " did not run") + " in the checkpoint's run");
  };
  if (auto m = on_off("loss.lambda_id", saved.lambda_id, now.lambda_id, "the identity loss"); !m.empty()) return m;
  if (auto m = on_off("loss.lambda_dreamsim", saved.lambda_dreamsim, now.lambda_dreamsim, "the DreamSim term");
      !m.empty())
    return m;
  const bool branch = saved.lambda_id > 0 || saved.lambda_dreamsim > 0;
  if (branch && saved.preview != now.preview)
    return differs("loss.preview", std::string(config_name(saved.preview)), std::string(config_name(now.preview)),
                   "the losses were computed on another image");
  return "";
}

}  // namespace lookahead::trainer
