#include "trainer/eval/report_format.h"

#include <cstdio>
#include <sstream>

namespace lookahead::trainer::report {

using nlohmann::json;

std::string fixed(double value, int digits) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.*f", digits, value);
  return buffer;
}

std::string format_stat(const Stat& s, int digits) {
  if (!s.mean) return kDash;
  std::string text = fixed(*s.mean, digits);
  if (auto half = s.half_width()) text += kPlusMinus + fixed(*half, digits);
  return text;
}

std::string format_rate(const json& rate) {
  if (auto r = number(rate)) return fixed(*r * 100, 1) + " %";
  return kDash;
}

std::string short_number(const json& value) {
  if (value.is_number_integer()) return std::to_string(value.get<int64_t>());
  if (value.is_number()) {
    std::ostringstream out;
    out << value.get<double>();
    return out.str();
  }
  if (value.is_string()) return value.get<std::string>();
  return value.dump();
}

std::string guidance_text(const json& guidance) {
  const std::string mode = guidance.at("mode").get<std::string>();
  if (mode == "lookahead")
    return "lookahead " + short_number(guidance.at("scale_nokv")) + " / " + short_number(guidance.at("scale_full")) +
           " / " + short_number(guidance.at("scale_kv"));
  if (mode == "cfg") return "cfg " + short_number(guidance.at("cfg_scale"));
  return mode;
}

std::string setting_text(const json& settings, const char* key) {
  if (!settings.contains(key) || settings.at(key).is_null()) return kDash;
  return short_number(settings.at(key));
}

}  // namespace lookahead::trainer::report
