// Numbers and settings as text, as the report page and comparison.json show them: fixed digits,
// mean ± half-width of the 95 % interval, rates in percent, guidance settings in one line.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "trainer/eval/report_schema.h"

namespace lookahead::trainer::report {

inline constexpr const char* kDash = "\xE2\x80\x94";      // —
inline constexpr const char* kPlusMinus = " \xC2\xB1 ";  // ±
inline constexpr const char* kTimes = "\xC3\x97";         // ×

/// `value` with `digits` decimals.
std::string fixed(double value, int digits);

/// "mean ± half-width" (the half-width of the 95 % interval when there is one); a dash without a mean.
std::string format_stat(const Stat& s, int digits);

/// A rate (0..1) in percent with one decimal; a dash for null.
std::string format_rate(const nlohmann::json& rate);

/// A short number for settings (3 rather than 3.000000).
std::string short_number(const nlohmann::json& value);

/// The guidance setting in one line ("lookahead 1 / 2 / 3", "cfg 5", or the mode).
std::string guidance_text(const nlohmann::json& guidance);

/// settings[key] as a short number or text; a dash when it is missing or null.
std::string setting_text(const nlohmann::json& settings, const char* key);

}  // namespace lookahead::trainer::report
